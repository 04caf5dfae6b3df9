//! Devices: list, get, rename, delete (with user-interactive authentication, which a bridge
//! acting as one of its users skips, as the spec allows application services).

use std::sync::Arc;

use ruma::api::client::device::{
    self as ruma_device, delete_device, delete_devices, get_device, get_devices, update_device,
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    services::Services,
    store::DeviceRecord,
};

pub fn routes(router: &mut Router) {
    router
        .add(get_devices)
        .add(get_device)
        .add(update_device)
        .add(delete_device)
        .add(delete_devices);
}

fn to_ruma(device: DeviceRecord) -> ruma_device::Device {
    let mut out = ruma_device::Device::new(device.device_id.into());
    out.display_name = device.display_name;
    out.last_seen_ip = device.last_seen_ip;
    out.last_seen_ts = device
        .last_seen_ts
        .and_then(|ts| ruma::UInt::try_from(ts).ok())
        .map(ruma::MilliSecondsSinceUnixEpoch);
    out
}

async fn get_devices(
    services: Arc<Services>,
    user: User,
    _: get_devices::v3::Request,
) -> Result<get_devices::v3::Response> {
    let devices = services.users.devices(&user.user_id).await?;
    Ok(get_devices::v3::Response::new(devices.into_iter().map(to_ruma).collect()))
}

async fn get_device(
    services: Arc<Services>,
    user: User,
    request: get_device::v3::Request,
) -> Result<get_device::v3::Response> {
    let device = services.users.device(&user.user_id, request.device_id.as_str()).await?;
    Ok(get_device::v3::Response::new(to_ruma(device)))
}

async fn update_device(
    services: Arc<Services>,
    user: User,
    request: update_device::v3::Request,
) -> Result<update_device::v3::Response> {
    if let Some(name) = &request.display_name
        && name.len() > 255
    {
        return Err(Error::invalid_param("The device name is longer than 255 bytes"));
    }
    if request.display_name.as_deref().is_some_and(|name| name.contains('\0')) {
        return Err(Error::invalid_param("The device name contains a NUL character"));
    }
    let name = request.display_name.as_deref();
    services.users.rename_device(&user.user_id, request.device_id.as_str(), name).await?;
    Ok(update_device::v3::Response::new())
}

async fn delete_device(
    services: Arc<Services>,
    user: User,
    request: delete_device::v3::Request,
) -> Result<delete_device::v3::Response> {
    services.users.device(&user.user_id, request.device_id.as_str()).await?;
    confirm_unless_bridge(&services, &user, request.auth.as_ref()).await?;
    services.users.delete_devices(&user.user_id, &[request.device_id.to_string()]).await?;
    Ok(delete_device::v3::Response::new())
}

async fn delete_devices(
    services: Arc<Services>,
    user: User,
    request: delete_devices::v3::Request,
) -> Result<delete_devices::v3::Response> {
    confirm_unless_bridge(&services, &user, request.auth.as_ref()).await?;
    let ids: Vec<String> = request.devices.iter().map(ToString::to_string).collect();
    services.users.delete_devices(&user.user_id, &ids).await?;
    Ok(delete_devices::v3::Response::new())
}

/// Asks for the password, except of a bridge acting as one of its users (they have none).
async fn confirm_unless_bridge(
    services: &Services,
    user: &User,
    auth: Option<&ruma::api::client::uiaa::AuthData>,
) -> Result<()> {
    if user.appservice.is_some() {
        return Ok(());
    }
    super::confirm_with_password(services, user, auth).await
}
