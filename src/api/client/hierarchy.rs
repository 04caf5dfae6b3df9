//! `GET /rooms/{roomId}/hierarchy` (the rooms of a space) and `GET /room_summary/{roomIdOrAlias}`
//! (a room's preview, MSC3266); see [`crate::rooms::hierarchy`].

use std::sync::Arc;

use ruma::{
    OwnedRoomId,
    api::client::{room::get_summary, space::get_hierarchy},
    events::room::member::MembershipState,
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    rooms::hierarchy::{HierarchyQuery, MAX_HIERARCHY_LIMIT},
    services::Services,
};

pub fn routes(router: &mut Router) {
    router.add(get_hierarchy).add(get_summary);
}

async fn get_hierarchy(
    services: Arc<Services>,
    user: User,
    request: get_hierarchy::v1::Request,
) -> Result<get_hierarchy::v1::Response> {
    let limit = match request.limit.map(u64::from) {
        None => MAX_HIERARCHY_LIMIT,
        Some(0) => return Err(Error::invalid_param("limit must be greater than zero")),
        Some(limit) => usize::try_from(limit).unwrap_or(usize::MAX).min(MAX_HIERARCHY_LIMIT),
    };
    let query = HierarchyQuery {
        room_id: request.room_id,
        suggested_only: request.suggested_only,
        max_depth: request.max_depth.map(|d| usize::try_from(u64::from(d)).unwrap_or(usize::MAX)),
        limit,
        from: request.from,
    };
    let page = services.rooms.space_hierarchy(&user.user_id, query).await?;
    let mut response = get_hierarchy::v1::Response::new();
    response.rooms = page.rooms;
    response.next_batch = page.next_batch;
    Ok(response)
}

async fn get_summary(
    services: Arc<Services>,
    user: Option<User>,
    request: get_summary::v1::Request,
) -> Result<get_summary::v1::Response> {
    // FIXME: rooms of other servers (and `via`) need the federation hierarchy API.
    let room_id = match OwnedRoomId::try_from(request.room_id_or_alias) {
        Ok(room_id) => room_id,
        Err(alias) => services.resolve_alias(&alias).await?,
    };
    let user_id = user.as_ref().map(|user| user.user_id.as_ref());
    let (summary, membership) = services.rooms.room_summary(&room_id, user_id).await?;
    let mut response = get_summary::v1::Response::new(summary);
    response.membership = membership.map(|m| MembershipState::from(m.as_str()));
    Ok(response)
}
