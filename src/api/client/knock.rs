//! `POST /knock/{roomIdOrAlias}`: asking to join a room whose join rule is `knock` (or
//! `knock_restricted`). Whether the knock is allowed is the room version's auth rules' call; a
//! member with the power to invite accepts it with an invite, or refuses it by kicking.

use std::sync::Arc;

use ruma::{OwnedRoomId, api::client::knock::knock_room};

use crate::{
    Error, Result,
    api::router::{Router, User},
    rooms::MembershipChange,
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(knock_room);
}

async fn knock_room(
    services: Arc<Services>,
    user: User,
    request: knock_room::v3::Request,
) -> Result<knock_room::v3::Response> {
    user.require_not_suspended()?;
    let room_id = match OwnedRoomId::try_from(request.room_id_or_alias) {
        Ok(room_id) => room_id,
        Err(alias) => services.resolve_alias(&alias).await?,
    };
    if !services.rooms.exists(&room_id).await? {
        // FIXME: knocking on a room of another server needs make_knock/send_knock; `via` is
        // ignored until then.
        return Err(Error::not_found(
            "This room is unknown to this server; knocking over federation is not supported yet",
        ));
    }
    let change = MembershipChange {
        room_id: room_id.clone(),
        sender: user.user_id.clone(),
        target: user.user_id,
        membership: "knock",
        reason: request.reason,
        is_direct: false,
    };
    services.rooms.change_membership(change).await?;
    Ok(knock_room::v3::Response::new(room_id))
}
