//! `PUT` and `GET /presence/{userId}/status`: a user sets their own presence, and reads that of
//! users they share a room with (their own always).
//!
//! With presence disabled in the configuration, setting it is accepted and changes nothing, and
//! everyone reads as offline: the spec's answers of a server that does not track presence.

use std::sync::Arc;

use ruma::{
    UserId,
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState::{Offline, Online, Unavailable},
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    presence::MAX_STATUS_BYTES,
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(set_presence).add(get_presence);
}

async fn set_presence(
    services: Arc<Services>,
    user: User,
    request: set_presence::v3::Request,
) -> Result<set_presence::v3::Response> {
    if request.user_id != user.user_id {
        return Err(Error::forbidden("You may only set your own presence"));
    }
    if !matches!(request.presence, Online | Unavailable | Offline) {
        return Err(Error::invalid_param("presence must be online, unavailable or offline"));
    }
    if request.status_msg.as_ref().is_some_and(|s| s.len() > MAX_STATUS_BYTES) {
        return Err(Error::invalid_param(format!(
            "status_msg is longer than {MAX_STATUS_BYTES} bytes"
        )));
    }
    let status_msg = request.status_msg.filter(|s| !s.is_empty());
    services.presence.set(&user.user_id, request.presence, status_msg).await;
    Ok(set_presence::v3::Response::new())
}

async fn get_presence(
    services: Arc<Services>,
    user: User,
    request: get_presence::v3::Request,
) -> Result<get_presence::v3::Response> {
    if request.user_id != user.user_id {
        require_shared_room(&services, &user.user_id, &request.user_id).await?;
    }
    let view = services.presence.get(&request.user_id);
    let mut response = get_presence::v3::Response::new(view.presence);
    response.status_msg = view.status_msg;
    response.last_active_ago = view.last_active_ago;
    response.currently_active = Some(view.currently_active);
    Ok(response)
}

/// Refuses unless `target` is a local user joined to a room `reader` is joined to: 404 for a
/// user this server does not have, 403 for one the reader shares no room with.
async fn require_shared_room(services: &Services, reader: &UserId, target: &UserId) -> Result<()> {
    let store = &services.store;
    let local = target.server_name() == services.server_name();
    if !local || store.user(target).await?.is_none() {
        return Err(Error::not_found("No presence is known for this user"));
    }
    let joined = |m: &crate::store::MembershipRecord| m.membership == "join";
    let theirs = store.memberships_of(target).await?;
    let mine = store.memberships_of(reader).await?;
    let shared = mine
        .iter()
        .filter(|m| joined(m))
        .any(|m| theirs.iter().any(|t| joined(t) && t.room_id == m.room_id));
    if !shared {
        return Err(Error::forbidden("You share no room with this user"));
    }
    Ok(())
}
