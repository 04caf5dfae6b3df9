//! `PUT /sendToDevice/{eventType}/{txnId}`: messages straight to other devices, delivered by
//! `/sync`.

use std::sync::Arc;

use ruma::api::client::to_device::send_event_to_device;

use crate::{
    Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(send_event_to_device);
}

async fn send_event_to_device(
    services: Arc<Services>,
    user: User,
    request: send_event_to_device::v3::Request,
) -> Result<send_event_to_device::v3::Response> {
    services
        .e2ee
        .send_to_device(
            &user.user_id,
            user.device_id.as_str(),
            request.txn_id.as_str(),
            &request.event_type.to_string(),
            &request.messages,
        )
        .await?;
    Ok(send_event_to_device::v3::Response::new())
}
