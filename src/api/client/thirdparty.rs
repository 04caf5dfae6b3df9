//! Third-party networks (`/thirdparty/*`): the protocols a homeserver's application services
//! bridge to (IRC, Slack, ...), and lookups of users and rooms on them.
//!
//! These lookups do not reach the application services yet (see the README): the protocol list
//! is empty, every named protocol is unknown (404 `M_NOT_FOUND`, as the spec answers an unknown
//! protocol), and the reverse lookups by room alias or user ID find nothing (`[]`). They are
//! served rather than left unrecognized so that clients that ask (Element's room directory does)
//! get the answer of a server without bridges instead of an error.

use std::sync::Arc;

use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
    get_user_for_protocol, get_user_for_user_id,
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router
        .add(get_protocols)
        .add(get_protocol)
        .add(get_location_for_protocol)
        .add(get_location_for_room_alias)
        .add(get_user_for_protocol)
        .add(get_user_for_user_id);
}

/// 404 `M_NOT_FOUND` for any protocol: no lookup reaches an application service yet.
fn unknown_protocol(protocol: &str) -> Error {
    Error::not_found(format!("No bridge to the protocol {protocol:?} runs on this server"))
}

async fn get_protocols(
    _: Arc<Services>,
    _: User,
    _: get_protocols::v3::Request,
) -> Result<get_protocols::v3::Response> {
    Ok(get_protocols::v3::Response::new(Default::default()))
}

async fn get_protocol(
    _: Arc<Services>,
    _: User,
    request: get_protocol::v3::Request,
) -> Result<get_protocol::v3::Response> {
    Err(unknown_protocol(&request.protocol))
}

async fn get_location_for_protocol(
    _: Arc<Services>,
    _: User,
    request: get_location_for_protocol::v3::Request,
) -> Result<get_location_for_protocol::v3::Response> {
    Err(unknown_protocol(&request.protocol))
}

async fn get_user_for_protocol(
    _: Arc<Services>,
    _: User,
    request: get_user_for_protocol::v3::Request,
) -> Result<get_user_for_protocol::v3::Response> {
    Err(unknown_protocol(&request.protocol))
}

/// No room is a portal to a third-party location.
async fn get_location_for_room_alias(
    _: Arc<Services>,
    _: User,
    _: get_location_for_room_alias::v3::Request,
) -> Result<get_location_for_room_alias::v3::Response> {
    Ok(get_location_for_room_alias::v3::Response::new(Vec::new()))
}

/// No user is a bridged third-party user.
async fn get_user_for_user_id(
    _: Arc<Services>,
    _: User,
    _: get_user_for_user_id::v3::Request,
) -> Result<get_user_for_user_id::v3::Response> {
    Ok(get_user_for_user_id::v3::Response::new(Vec::new()))
}
