//! `GET /rooms/{roomId}/timestamp_to_event`: the event of a room nearest to a point in time, as
//! a client jumps to a date. Only events the user may see count; with federation, a server may
//! also ask the room's other servers (FIXME: this one only looks at the events it has).

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::{Direction as RumaDirection, client::room::get_event_by_timestamp},
};

use crate::{
    Error, Result,
    api::router::{Router, User},
    services::Services,
    store::{Direction, TimestampQuery},
};

/// How many events are read at a time while looking for one the user may see.
const BATCH: usize = 50;
/// How many the search reads at most before it says there is none.
const SEARCH_LIMIT: usize = 1_000;

pub fn routes(router: &mut Router) {
    router.add(get_event_by_timestamp);
}

async fn get_event_by_timestamp(
    services: Arc<Services>,
    user: User,
    request: get_event_by_timestamp::v1::Request,
) -> Result<get_event_by_timestamp::v1::Response> {
    let view = services.rooms.history_view(&request.room_id, &user.user_id).await?;
    if view.current_membership().is_none() && !view.can_read_current() {
        return Err(Error::forbidden("You are not a member of this room"));
    }
    let direction = match request.dir {
        RumaDirection::Forward => Direction::Forward,
        RumaDirection::Backward => Direction::Backward,
    };
    let ts = i64::from(request.ts.get());
    let mut query =
        TimestampQuery { room_id: request.room_id, ts, direction, offset: 0, limit: BATCH };
    while query.offset < SEARCH_LIMIT {
        let batch = services.store.events_by_timestamp(query.clone()).await?;
        if let Some(event) = batch.iter().find(|event| view.allows(event)) {
            let origin_server_ts = UInt::try_from(event.origin_server_ts).unwrap_or_default();
            return Ok(get_event_by_timestamp::v1::Response::new(
                event.event_id.clone(),
                MilliSecondsSinceUnixEpoch(origin_server_ts),
            ));
        }
        if batch.len() < BATCH {
            break;
        }
        query.offset += BATCH;
    }
    Err(Error::not_found("No event was found in that direction from that time"))
}
