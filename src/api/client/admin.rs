//! The client-server API's server administration endpoints: `GET /admin/whois/{userId}` and
//! account locking and suspension (`/v1/admin/lock/{userId}`, `/v1/admin/suspend/{userId}`).
//! Who may ask what is decided in `crate::users::moderation`; an administrator is an account
//! with the admin flag (`hearth user add --admin`).

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::admin::{
        get_user_info, is_user_locked, is_user_suspended, lock_user, suspend_user,
    },
};

use crate::{
    Result,
    api::router::{Router, User},
    services::Services,
    store::DeviceRecord,
    users::moderation::RestrictionChange,
};

pub fn routes(router: &mut Router) {
    router
        .add(get_user_info)
        .add(is_user_locked)
        .add(lock_user)
        .add(is_user_suspended)
        .add(suspend_user);
}

/// Each device is one session (Hearth keeps one access token per device), with one connection:
/// the address, time and user agent of its last recorded request, if it made any.
async fn get_user_info(
    services: Arc<Services>,
    user: User,
    request: get_user_info::v3::Request,
) -> Result<get_user_info::v3::Response> {
    let devices = services.users.whois(&user.user_id, &request.user_id).await?;
    let mut response = get_user_info::v3::Response::new();
    response.user_id = Some(request.user_id);
    response.devices = devices.into_iter().map(|d| (d.device_id.clone(), device_info(d))).collect();
    Ok(response)
}

fn device_info(device: DeviceRecord) -> get_user_info::v3::DeviceInfo {
    use get_user_info::v3::{ConnectionInfo, DeviceInfo, SessionInfo};
    let mut session = SessionInfo::new();
    if let (Some(ip), Some(ts)) = (device.last_seen_ip, device.last_seen_ts) {
        let mut connection = ConnectionInfo::new();
        connection.ip = Some(ip);
        connection.last_seen = UInt::try_from(ts).ok().map(MilliSecondsSinceUnixEpoch);
        connection.user_agent = device.last_seen_user_agent;
        session.connections.push(connection);
    }
    let mut info = DeviceInfo::new();
    info.sessions.push(session);
    info
}

async fn is_user_locked(
    services: Arc<Services>,
    user: User,
    request: is_user_locked::v1::Request,
) -> Result<is_user_locked::v1::Response> {
    let restrictions = services.users.restrictions(&user.user_id, &request.user_id).await?;
    Ok(is_user_locked::v1::Response::new(restrictions.locked))
}

async fn lock_user(
    services: Arc<Services>,
    user: User,
    request: lock_user::v1::Request,
) -> Result<lock_user::v1::Response> {
    let change = RestrictionChange::Lock(request.locked);
    let restrictions = services.users.restrict(&user.user_id, &request.user_id, change).await?;
    Ok(lock_user::v1::Response::new(restrictions.locked))
}

async fn is_user_suspended(
    services: Arc<Services>,
    user: User,
    request: is_user_suspended::v1::Request,
) -> Result<is_user_suspended::v1::Response> {
    let restrictions = services.users.restrictions(&user.user_id, &request.user_id).await?;
    Ok(is_user_suspended::v1::Response::new(restrictions.suspended))
}

async fn suspend_user(
    services: Arc<Services>,
    user: User,
    request: suspend_user::v1::Request,
) -> Result<suspend_user::v1::Response> {
    let change = RestrictionChange::Suspend(request.suspended);
    let restrictions = services.users.restrict(&user.user_id, &request.user_id, change).await?;
    Ok(suspend_user::v1::Response::new(restrictions.suspended))
}
