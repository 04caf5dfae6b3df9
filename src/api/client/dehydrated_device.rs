//! Dehydrated devices (MSC3814): `PUT`, `GET` and `DELETE
//! /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device` and `POST
//! .../dehydrated_device/{device_id}/events`.

use std::sync::Arc;

use ruma::{
    api::client::dehydrated_device::{
        delete_dehydrated_device, get_dehydrated_device, get_events, put_dehydrated_device,
    },
    serde::Raw,
};

use crate::{
    Result,
    api::router::{Router, User},
    keys::dehydrated::NewDehydratedDevice,
    services::Services,
};

pub fn routes(router: &mut Router) {
    router
        .add(put_dehydrated_device)
        .add(get_dehydrated_device)
        .add(delete_dehydrated_device)
        .add(get_events);
}

async fn put_dehydrated_device(
    services: Arc<Services>,
    user: User,
    request: put_dehydrated_device::unstable::Request,
) -> Result<put_dehydrated_device::unstable::Response> {
    let device = NewDehydratedDevice {
        device_id: request.device_id.as_str(),
        display_name: request.initial_device_display_name.as_deref(),
        device_data: request.device_data.json().get(),
        device_keys: &request.device_keys,
        one_time_keys: &request.one_time_keys,
        fallback_keys: &request.fallback_keys,
    };
    services.e2ee.put_dehydrated_device(&user.user_id, device).await?;
    Ok(put_dehydrated_device::unstable::Response::new(request.device_id))
}

async fn get_dehydrated_device(
    services: Arc<Services>,
    user: User,
    _request: get_dehydrated_device::unstable::Request,
) -> Result<get_dehydrated_device::unstable::Response> {
    let (device_id, data) = services.e2ee.dehydrated_device(&user.user_id).await?;
    let data = serde_json::value::RawValue::from_string(data).map_err(anyhow::Error::from)?;
    Ok(get_dehydrated_device::unstable::Response::new(device_id, Raw::from_json(data)))
}

async fn delete_dehydrated_device(
    services: Arc<Services>,
    user: User,
    _request: delete_dehydrated_device::unstable::Request,
) -> Result<delete_dehydrated_device::unstable::Response> {
    let device_id = services.e2ee.delete_dehydrated_device(&user.user_id).await?;
    Ok(delete_dehydrated_device::unstable::Response::new(device_id))
}

async fn get_events(
    services: Arc<Services>,
    user: User,
    request: get_events::unstable::Request,
) -> Result<get_events::unstable::Response> {
    let found = services
        .e2ee
        .dehydrated_events(&user.user_id, request.device_id.as_str(), request.next_batch.as_deref())
        .await?;
    let mut response = get_events::unstable::Response::new(found.events);
    response.next_batch = found.next_batch;
    Ok(response)
}
