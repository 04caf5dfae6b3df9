//! `/relations` (all three forms) and `/threads`: the events that relate to an event, and the
//! thread roots of a room, newest activity first. Pagination tokens are stream positions, as
//! `/messages` uses.

use std::sync::Arc;

use ruma::{
    OwnedEventId, OwnedRoomId, UInt,
    api::{
        Direction as RumaDirection,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
};

use super::events::{page_limit, raws, visible_page};
use crate::{
    Error, Result,
    api::router::{Router, User},
    rooms::format::{Format, Viewer, client_events},
    services::Services,
    store::{Direction, RelationFilter, RoomEventsQuery, ThreadsQuery},
    sync::{parse_token, token},
};

/// How deep `recurse=true` follows relations of relations (the spec leaves it to the server).
const RECURSION_DEPTH: u32 = 3;

pub fn routes(router: &mut Router) {
    router
        .add(get_relating_events)
        .add(get_relating_events_with_rel_type)
        .add(get_relating_events_with_rel_type_and_event_type)
        .add(get_threads);
}

/// One `/relations` request, whichever of the three forms it came as.
struct RelationsPage {
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    dir: RumaDirection,
    limit: Option<UInt>,
    recurse: bool,
}

/// What every form answers.
struct RelationsChunk {
    chunk: Vec<ruma::serde::Raw<ruma::events::AnyMessageLikeEvent>>,
    next_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

async fn get_relating_events(
    services: Arc<Services>,
    user: User,
    request: get_relating_events::v1::Request,
) -> Result<get_relating_events::v1::Response> {
    let page = RelationsPage {
        room_id: request.room_id,
        event_id: request.event_id,
        rel_type: None,
        event_type: None,
        from: request.from,
        to: request.to,
        dir: request.dir,
        limit: request.limit,
        recurse: request.recurse,
    };
    let answer = relations_page(&services, &user, page).await?;
    let mut response = get_relating_events::v1::Response::new(answer.chunk);
    response.next_batch = answer.next_batch;
    response.recursion_depth = answer.recursion_depth;
    Ok(response)
}

async fn get_relating_events_with_rel_type(
    services: Arc<Services>,
    user: User,
    request: get_relating_events_with_rel_type::v1::Request,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let page = RelationsPage {
        room_id: request.room_id,
        event_id: request.event_id,
        rel_type: Some(request.rel_type.to_string()),
        event_type: None,
        from: request.from,
        to: request.to,
        dir: request.dir,
        limit: request.limit,
        recurse: request.recurse,
    };
    let answer = relations_page(&services, &user, page).await?;
    let mut response = get_relating_events_with_rel_type::v1::Response::new(answer.chunk);
    response.next_batch = answer.next_batch;
    response.recursion_depth = answer.recursion_depth;
    Ok(response)
}

async fn get_relating_events_with_rel_type_and_event_type(
    services: Arc<Services>,
    user: User,
    request: get_relating_events_with_rel_type_and_event_type::v1::Request,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let page = RelationsPage {
        room_id: request.room_id,
        event_id: request.event_id,
        rel_type: Some(request.rel_type.to_string()),
        event_type: Some(request.event_type.to_string()),
        from: request.from,
        to: request.to,
        dir: request.dir,
        limit: request.limit,
        recurse: request.recurse,
    };
    let answer = relations_page(&services, &user, page).await?;
    let mut response =
        get_relating_events_with_rel_type_and_event_type::v1::Response::new(answer.chunk);
    response.next_batch = answer.next_batch;
    response.recursion_depth = answer.recursion_depth;
    Ok(response)
}

/// Pages through the visible events relating to a visible event of the room.
async fn relations_page(
    services: &Services,
    user: &User,
    page: RelationsPage,
) -> Result<RelationsChunk> {
    let parent = services.rooms.visible_event(&user.user_id, &page.event_id).await?;
    if parent.room_id != page.room_id {
        return Err(Error::not_found("Event not found"));
    }
    let direction = match page.dir {
        RumaDirection::Forward => Direction::Forward,
        RumaDirection::Backward => Direction::Backward,
    };
    let from = match &page.from {
        Some(from) => parse_token(from)?,
        None if direction == Direction::Backward => services.store.current_position().await?,
        None => 0,
    };
    let to = page.to.as_deref().map(parse_token).transpose()?;
    // As in `/messages`: a token T lies between positions T and T+1.
    let (query_from, query_to) = match direction {
        Direction::Backward => (from + 1, to),
        Direction::Forward => (from, to.map(|t| t + 1)),
    };
    let query = RoomEventsQuery {
        room_id: page.room_id,
        from: query_from,
        to: query_to,
        direction,
        limit: page_limit(page.limit.unwrap_or(UInt::MIN), 50),
        types: page.event_type.map(|t| vec![t]),
        not_types: Vec::new(),
        senders: None,
        not_senders: Vec::new(),
        relates_to: Some(RelationFilter {
            event_id: page.event_id,
            rel_type: page.rel_type,
            depth: if page.recurse { RECURSION_DEPTH } else { 1 },
        }),
    };
    let (events, more) = visible_page(services, user, query).await?;
    let next_batch = more.and(events.last()).map(|last| match direction {
        Direction::Backward => token(last.stream_position - 1),
        Direction::Forward => token(last.stream_position),
    });
    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let chunk = client_events(&services.store, viewer, &events, Format::Client).await?;
    Ok(RelationsChunk {
        chunk: raws(&chunk)?,
        next_batch,
        recursion_depth: page.recurse.then(|| RECURSION_DEPTH.into()),
    })
}

async fn get_threads(
    services: Arc<Services>,
    user: User,
    request: get_threads::v1::Request,
) -> Result<get_threads::v1::Response> {
    let view = services.rooms.history_view(&request.room_id, &user.user_id).await?;
    if view.current_membership().is_none() && !view.can_read_current() {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    let participant = match request.include {
        IncludeThreads::All => None,
        IncludeThreads::Participated => Some(user.user_id.clone()),
        _ => return Err(Error::invalid_param("include must be all or participated")),
    };
    let limit = page_limit(request.limit.unwrap_or(UInt::MIN), 10);
    let before = request.from.as_deref().map(parse_token).transpose()?.map(|t| t + 1);
    let query = ThreadsQuery { room_id: request.room_id.clone(), participant, before, limit };
    let roots = services.store.thread_roots(query).await?;
    let next_batch = (roots.len() == limit)
        .then(|| roots.last().map(|r| token(r.latest_position - 1)))
        .flatten();
    let ids: Vec<OwnedEventId> = roots.into_iter().map(|r| r.root).collect();
    let mut records = services.store.events(&ids).await?;
    // `events` answers in stream order; the page is in order of latest activity.
    records.sort_by_key(|r| ids.iter().position(|id| *id == r.event_id));
    records.retain(|record| view.allows(record) && record.room_id == request.room_id);
    let viewer = Viewer { user_id: &user.user_id, device_id: user.device_id.as_str() };
    let chunk = client_events(&services.store, viewer, &records, Format::Client).await?;
    let mut response = get_threads::v1::Response::new(raws(&chunk)?);
    response.next_batch = next_batch;
    Ok(response)
}
