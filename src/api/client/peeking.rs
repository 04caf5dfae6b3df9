//! Looking into a room: `GET /rooms/{roomId}/initialSync`, a snapshot of its state and latest
//! messages, and `GET /events?room_id=`, its new events, long-polled. Both serve members and,
//! for rooms whose history is `world_readable`, anyone (the spec's [room previews]); a user who
//! left sees the room as it was when they left.
//!
//! [room previews]: https://spec.matrix.org/v1.19/client-server-api/#room-previews

use std::sync::Arc;

use ruma::{
    RoomId,
    api::client::{
        peeking::{get_current_state, listen_to_new_events},
        room::Visibility,
    },
    events::room::member::MembershipState,
};

use super::events::{raws, require_room, visible_page};
use crate::{
    Error, Result,
    api::router::{Router, User},
    rooms::{
        format::{Format, Viewer, client_events},
        visibility::HistoryView,
    },
    services::Services,
    store::{Direction, EventRecord},
    sync::{EventFilter, MAX_TIMEOUT, RoomWatch, parse_token, token},
};

/// The messages a room snapshot holds.
const SNAPSHOT_MESSAGES: usize = 20;
/// The most events one `/events` answer holds.
const EVENTS_PAGE: usize = 100;

pub fn routes(router: &mut Router) {
    router.add(get_current_state).add(listen_to_new_events);
}

/// Where a user's view of a room ends: `None` to see it as it is now (a member, or anyone when
/// its history is world-readable), the position of their leave or ban otherwise.
fn view_end(view: &HistoryView) -> Result<Option<i64>> {
    if view.can_read_current() {
        return Ok(None);
    }
    match view.current_membership() {
        Some("leave" | "ban") => Ok(view.end()),
        _ => Err(Error::forbidden("You are not a member of this room")),
    }
}

async fn get_current_state(
    services: Arc<Services>,
    user: User,
    request: get_current_state::v3::Request,
) -> Result<get_current_state::v3::Response> {
    let room_id = &request.room_id;
    require_room(&services, room_id).await?;
    let view = services.rooms.history_view(room_id, &user.user_id).await?;
    let end = view_end(&view)?;
    let upto = match end {
        Some(end) => end,
        None => services.store.current_position().await?,
    };
    let state = match end {
        Some(end) => services.store.state_at(room_id, end).await?,
        None => services.store.current_state(room_id).await?,
    };
    let query = EventFilter::default().query(
        room_id,
        upto + 1,
        None,
        Direction::Backward,
        SNAPSHOT_MESSAGES,
    );
    let (mut messages, more) = visible_page(&services, &user, query).await?;
    messages.reverse();

    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let chunk = client_events(&services.store, viewer, &messages, Format::Client).await?;
    let state = client_events(&services.store, viewer, &state, Format::Client).await?;
    let mut pagination = get_current_state::v3::PaginationChunk::new(raws(&chunk)?, token(upto));
    pagination.start = more.and(messages.first()).map(|first| token(first.stream_position - 1));

    let mut response = get_current_state::v3::Response::new(request.room_id.clone());
    response.membership = view.current_membership().map(MembershipState::from);
    response.messages = Some(pagination);
    response.state = raws(&state)?;
    response.account_data = room_account_data(&services, &user, room_id).await?;
    response.visibility = Some(match services.rooms.is_published(room_id).await? {
        true => Visibility::Public,
        false => Visibility::Private,
    });
    Ok(response)
}

/// The user's account data of the room, as `m.fully_read` and tags are shown in `/sync`.
async fn room_account_data(
    services: &Services,
    user: &User,
    room_id: &RoomId,
) -> Result<Vec<ruma::serde::Raw<ruma::events::AnyRoomAccountDataEvent>>> {
    let stored = services.store.account_data_since(&user.user_id, 0).await?;
    let events: Vec<serde_json::Value> = stored
        .into_iter()
        .filter(|data| data.room_id.as_deref() == Some(room_id))
        .map(|data| serde_json::json!({ "type": data.data_type, "content": data.content }))
        .collect();
    raws(&events)
}

async fn listen_to_new_events(
    services: Arc<Services>,
    user: User,
    request: listen_to_new_events::v3::Request,
) -> Result<listen_to_new_events::v3::Response> {
    let room_id = &request.room_id;
    require_room(&services, room_id).await?;
    let mut watch = RoomWatch::new(&services.bus, room_id);
    let current = services.store.current_position().await?;
    let from = match request.from.as_deref() {
        Some(from) => parse_token(from)?.min(current),
        None => current,
    };
    let timeout = request.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let events = new_events(&services, &user, room_id, from).await?;
        let timed_out = tokio::time::Instant::now() >= deadline;
        if !events.is_empty() || timed_out {
            return events_response(&services, &user, from, &events).await;
        }
        if tokio::time::timeout_at(deadline, watch.changed()).await.is_err() {
            return events_response(&services, &user, from, &events).await;
        }
    }
}

/// The room's events after `from` that the user may see now, oldest first. The check is made on
/// every round, so a peeker whose access ended (a member who left, a room no longer
/// world-readable) is refused rather than kept waiting.
async fn new_events(
    services: &Services,
    user: &User,
    room_id: &RoomId,
    from: i64,
) -> Result<Vec<EventRecord>> {
    let view = services.rooms.history_view(room_id, &user.user_id).await?;
    let end = view_end(&view)?;
    let query = EventFilter::default().query(
        room_id,
        from,
        end.map(|end| end + 1),
        Direction::Forward,
        EVENTS_PAGE,
    );
    Ok(visible_page(services, user, query).await?.0)
}

async fn events_response(
    services: &Services,
    user: &User,
    from: i64,
    events: &[EventRecord],
) -> Result<listen_to_new_events::v3::Response> {
    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let chunk = client_events(&services.store, viewer, events, Format::Client).await?;
    let mut response = listen_to_new_events::v3::Response::new();
    response.start = Some(token(from));
    response.end = Some(token(events.last().map_or(from, |e| e.stream_position)));
    response.chunk = raws(&chunk)?;
    Ok(response)
}
