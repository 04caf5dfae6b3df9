//! `PUT /rooms/{roomId}/typing/{userId}`: a user starts or stops typing in a room.

use std::sync::Arc;

use ruma::api::client::typing::create_typing_event::{self, v3::Typing};

use crate::{
    Error, Result,
    api::router::{Router, User},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(create_typing_event);
}

async fn create_typing_event(
    services: Arc<Services>,
    user: User,
    request: create_typing_event::v3::Request,
) -> Result<create_typing_event::v3::Response> {
    if request.user_id != user.user_id {
        return Err(Error::forbidden("You may only say whether you yourself are typing"));
    }
    services.rooms.require_joined(&request.room_id, &user.user_id).await?;
    let timeout = match request.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    services.typing.set(&request.room_id, &user.user_id, timeout).await;
    Ok(create_typing_event::v3::Response::new())
}
