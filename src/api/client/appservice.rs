//! The client-server endpoints only application services call, with their `as_token`: the ping
//! through the server to the service, and the service's own room directory per network.

use std::sync::Arc;

use ruma::api::client::{
    appservice::{request_ping, set_room_visibility},
    room::Visibility,
};

use crate::{
    Error, Result,
    api::router::{AppserviceToken, Router},
    appservice::client::ping_error,
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(request_ping).add(set_room_visibility);
}

/// Pings the service through the server: only the service itself may; another service's token,
/// or an ID no service has, is 403 `M_FORBIDDEN`, as the spec lists it.
async fn request_ping(
    services: Arc<Services>,
    AppserviceToken(caller): AppserviceToken,
    request: request_ping::v1::Request,
) -> Result<request_ping::v1::Response> {
    if caller.id() != request.appservice_id {
        return Err(Error::forbidden("Provided access token is not the appservice's as_token"));
    }
    let duration = services
        .appservice_client
        .ping(&caller, request.transaction_id)
        .await
        .map_err(ping_error)?;
    Ok(request_ping::v1::Response::new(duration))
}

async fn set_room_visibility(
    services: Arc<Services>,
    AppserviceToken(caller): AppserviceToken,
    request: set_room_visibility::v3::Request,
) -> Result<set_room_visibility::v3::Response> {
    let published = match request.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility must be \"public\" or \"private\"")),
    };
    let rooms = &services.rooms;
    rooms
        .set_appservice_published(caller.id(), &request.network_id, &request.room_id, published)
        .await?;
    Ok(set_room_visibility::v3::Response::new())
}
