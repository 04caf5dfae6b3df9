//! `POST /rooms/{roomId}/upgrade`: replaces a room with a new one in another room version (see
//! [`crate::rooms::upgrade`]).

use std::sync::Arc;

use ruma::api::client::room::upgrade_room;

use crate::{
    Result,
    api::router::{Router, User},
    rooms::upgrade::UpgradeRequest,
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(upgrade_room);
}

async fn upgrade_room(
    services: Arc<Services>,
    user: User,
    request: upgrade_room::v3::Request,
) -> Result<upgrade_room::v3::Response> {
    user.require_not_suspended()?;
    let upgrade = UpgradeRequest {
        room_id: request.room_id,
        user_id: user.user_id,
        new_version: request.new_version,
        additional_creators: request.additional_creators,
    };
    let replacement_room = services.rooms.upgrade_room(upgrade).await?;
    Ok(upgrade_room::v3::Response::new(replacement_room))
}
