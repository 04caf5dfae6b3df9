//! Server-side search (client-server API, "Server Side Search"): `POST /search` in its one
//! category, `room_events`.
//!
//! The store finds the matching events ([`crate::store::SearchStore`], full-text on both
//! backends); this module decides what is searched ([`text`]), in which rooms (those the user
//! has a membership in and has not forgotten), and which matches the user may see: each one
//! passes the room's history visibility at the event for the user, and events of ignored users
//! are left out. It then adds what the request asks for: the context around each result, the
//! senders' profiles, the rooms' state, groupings and highlights.
//!
//! `next_batch` tokens say where the next page starts in the order asked for: `r<n>` (rank
//! order) skips the first `n` matches, `p<n>` (recent order) starts before stream position `n`.
//! A token of the other order, or not made here, is refused.

mod results;
pub mod text;

use std::collections::BTreeMap;

use ruma::{
    OwnedRoomId, OwnedUserId, UInt,
    api::client::search::search_events::v3::{
        Criteria, GroupingKey, OrderBy, ResultRoomEvents, SearchKeys,
    },
};

pub use self::text::text_of;
use crate::{
    Error, Result,
    rooms::visibility::HistoryView,
    services::Services,
    store::{EventRecord, SearchOrder, SearchQuery},
    sync::{EventFilter, MAX_POSITION},
};

/// The longest search term accepted, in bytes.
pub const MAX_TERM_BYTES: usize = 1000;
/// The most words a search term may have: each is one more condition of the query.
pub const MAX_TERMS: usize = 32;
/// Results per page when the filter gives no limit, and the most a page holds.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// How many pages of matches one request reads at most while skipping those the user may not
/// see; past that it answers what it found with a `next_batch`.
const MAX_ROUNDS: usize = 20;
/// The fewest matches read at a time, so that a small page skipping many matches the user may
/// not see does not take a round each.
const MIN_BATCH: usize = 20;

/// A search request of the `room_events` category.
pub struct SearchRequest {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub criteria: Criteria,
    pub next_batch: Option<String>,
}

/// The checked request: what the store is asked and what the answer carries.
struct Plan {
    terms: Vec<String>,
    keys: Vec<String>,
    filter: EventFilter,
    order: SearchOrder,
    limit: usize,
    groupings: Vec<GroupingKey>,
}

/// Answers a search of the `room_events` category.
pub async fn search_room_events(
    services: &Services,
    request: SearchRequest,
) -> Result<ResultRoomEvents> {
    let plan = plan(&request.criteria, request.next_batch.as_deref())?;
    let mut answer = ResultRoomEvents::new();
    if plan.terms.is_empty() {
        answer.count = Some(UInt::MIN);
        return Ok(answer);
    }
    let rooms = searchable_rooms(services, &request.user_id, &plan.filter).await?;
    let found = find(services, &request.user_id, &plan, rooms).await?;
    answer.count = Some(UInt::try_from(found.count).unwrap_or(UInt::MAX));
    answer.next_batch = found.next.map(batch_token);
    answer.highlights = results::highlights(&plan.terms, &found.matches);
    answer.groups = results::groups(&plan.groupings, &found.matches);
    let viewer = results::Viewer { user_id: &request.user_id, device_id: &request.device_id };
    answer.results =
        results::search_results(services, viewer, &found, &request.criteria.event_context).await?;
    if request.criteria.include_state == Some(true) {
        answer.state = results::room_states(services, viewer, &found).await?;
    }
    Ok(answer)
}

/// Checks the criteria and the token.
fn plan(criteria: &Criteria, next_batch: Option<&str>) -> Result<Plan> {
    if criteria.search_term.len() > MAX_TERM_BYTES {
        return Err(Error::invalid_param(format!(
            "search_term is longer than {MAX_TERM_BYTES} bytes"
        )));
    }
    let terms = text::terms_of(&criteria.search_term);
    if terms.len() > MAX_TERMS {
        return Err(Error::invalid_param(format!("search_term has more than {MAX_TERMS} words")));
    }
    let filter = EventFilter::from_ruma(&criteria.filter);
    let order = match (&criteria.order_by, next_batch) {
        (None | Some(OrderBy::Rank), token) => SearchOrder::Rank { offset: rank_offset(token)? },
        (Some(OrderBy::Recent), token) => SearchOrder::Recent { before: recent_before(token)? },
        (Some(other), _) => {
            return Err(Error::invalid_param(format!(
                "order_by must be rank or recent, not {:?}",
                other.as_str()
            )));
        }
    };
    Ok(Plan {
        terms,
        keys: keys(criteria.keys.as_deref(), &filter)?,
        limit: filter.limit.map_or(DEFAULT_LIMIT, |limit| limit.clamp(1, MAX_LIMIT)),
        filter,
        order,
        groupings: groupings(criteria)?,
    })
}

/// The content keys searched: those asked for (all by default) whose event type the filter's
/// types let through.
fn keys(asked: Option<&[SearchKeys]>, filter: &EventFilter) -> Result<Vec<String>> {
    let asked: Vec<String> = match asked {
        None => text::KEYS.iter().map(|(key, _)| (*key).to_owned()).collect(),
        Some(asked) => asked.iter().map(|key| key.as_str().to_owned()).collect(),
    };
    let mut keys = Vec::new();
    for key in asked {
        let Some((_, event_type)) = text::KEYS.iter().find(|(known, _)| *known == key) else {
            return Err(Error::invalid_param(format!("Unknown search key {key:?}")));
        };
        if filter.matches_type(event_type) && !keys.contains(&key) {
            keys.push(key);
        }
    }
    Ok(keys)
}

fn groupings(criteria: &Criteria) -> Result<Vec<GroupingKey>> {
    let mut keys = Vec::new();
    for grouping in &criteria.groupings.group_by {
        match &grouping.key {
            Some(key @ (GroupingKey::RoomId | GroupingKey::Sender)) => keys.push(key.clone()),
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "Groupings are by room_id or sender, not {:?}",
                    other.as_str()
                )));
            }
            None => {}
        }
    }
    Ok(keys)
}

fn invalid_token() -> Error {
    Error::invalid_param("Invalid next_batch token for this search order")
}

/// The number of matches a rank-order token skips.
fn rank_offset(token: Option<&str>) -> Result<u64> {
    let Some(token) = token else { return Ok(0) };
    number_after(token, 'r').ok_or_else(invalid_token)
}

/// The stream position a recent-order token starts before.
fn recent_before(token: Option<&str>) -> Result<Option<i64>> {
    let Some(token) = token else { return Ok(None) };
    let position = number_after(token, 'p').ok_or_else(invalid_token)?;
    Ok(Some(i64::try_from(position).map_err(|_| invalid_token())?))
}

/// The number after `prefix`, digits only and at most [`MAX_POSITION`].
fn number_after(token: &str, prefix: char) -> Option<u64> {
    let digits = token.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|n| *n <= MAX_POSITION as u64)
}

fn batch_token(order: SearchOrder) -> String {
    match order {
        SearchOrder::Rank { offset } => format!("r{offset}"),
        SearchOrder::Recent { before } => format!("p{}", before.unwrap_or(0)),
    }
}

/// The rooms searched: every room the user has a membership in (a past one counts for the
/// history they saw) and has not forgotten, that the filter's room lists let through.
async fn searchable_rooms(
    services: &Services,
    user_id: &ruma::UserId,
    filter: &EventFilter,
) -> Result<Vec<OwnedRoomId>> {
    let store = &services.store;
    let forgotten = store.forgotten_rooms(user_id).await?;
    let memberships = store.memberships_of(user_id).await?;
    Ok(memberships
        .into_iter()
        .map(|membership| membership.room_id)
        .filter(|room_id| !forgotten.contains(room_id) && filter.allows_room(room_id.as_str()))
        .collect())
}

/// The matches of one page, each with its rank.
pub(crate) struct Found {
    matches: Vec<(EventRecord, f64)>,
    /// Where the next page starts, if there are more matches.
    next: Option<SearchOrder>,
    /// How many matches there are in all, visible or not (the spec's count is approximate).
    count: u64,
    /// The user's view of each room with a match.
    views: BTreeMap<OwnedRoomId, HistoryView>,
}

/// Reads matches until the page is full of events the user may see, or none are left.
async fn find(
    services: &Services,
    user_id: &ruma::UserId,
    plan: &Plan,
    room_ids: Vec<OwnedRoomId>,
) -> Result<Found> {
    let ignored = services.users.ignored_users(user_id).await?;
    let mut not_senders = plan.filter.not_senders.clone();
    not_senders.extend(ignored.iter().map(|id| id.to_string()));
    let mut query = SearchQuery {
        terms: plan.terms.clone(),
        keys: plan.keys.clone(),
        room_ids,
        senders: plan.filter.senders.clone(),
        not_senders,
        order: plan.order,
        limit: plan.limit.max(MIN_BATCH),
    };
    let mut found = Found { matches: Vec::new(), next: None, count: 0, views: BTreeMap::new() };
    for round in 0..MAX_ROUNDS {
        let page = services.store.search_events(query.clone()).await?;
        if round == 0 {
            found.count = page.count;
        }
        let full = page.hits.len() == query.limit;
        let ids: Vec<_> = page.hits.iter().map(|hit| hit.event_id.clone()).collect();
        let mut records: BTreeMap<_, _> = services
            .store
            .events(&ids)
            .await?
            .into_iter()
            .map(|r| (r.event_id.clone(), r))
            .collect();
        for (index, hit) in page.hits.iter().enumerate() {
            query.order = after(query.order, hit.stream_position);
            let Some(record) = records.remove(&hit.event_id) else { continue };
            if visible(services, user_id, &mut found.views, &record).await? {
                found.matches.push((record, hit.rank));
            }
            if found.matches.len() == plan.limit {
                let more = full || index + 1 < page.hits.len();
                found.next = more.then_some(query.order);
                return Ok(found);
            }
        }
        if !full {
            return Ok(found);
        }
    }
    found.next = Some(query.order);
    Ok(found)
}

/// Where the next page starts once a match is consumed.
fn after(order: SearchOrder, stream_position: i64) -> SearchOrder {
    match order {
        SearchOrder::Rank { offset } => SearchOrder::Rank { offset: offset + 1 },
        SearchOrder::Recent { .. } => SearchOrder::Recent { before: Some(stream_position) },
    }
}

/// Whether the user may see the event, by the room's history visibility at the event.
async fn visible(
    services: &Services,
    user_id: &ruma::UserId,
    views: &mut BTreeMap<OwnedRoomId, HistoryView>,
    record: &EventRecord,
) -> Result<bool> {
    if !views.contains_key(&record.room_id) {
        let view = services.rooms.history_view(&record.room_id, user_id).await?;
        views.insert(record.room_id.clone(), view);
    }
    Ok(views.get(&record.room_id).is_some_and(|view| view.allows(record)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_order_and_garbage_is_refused() {
        assert_eq!(rank_offset(Some("r20")).unwrap(), 20);
        assert_eq!(recent_before(Some("p7")).unwrap(), Some(7));
        assert_eq!(batch_token(SearchOrder::Rank { offset: 20 }), "r20");
        assert_eq!(batch_token(SearchOrder::Recent { before: Some(7) }), "p7");
        for bad in ["", "r", "p5", "r-1", "r+1", "rx", "r99999999999999999999", "r9007199254740992"]
        {
            assert!(rank_offset(Some(bad)).is_err(), "{bad}");
        }
        for bad in ["r5", "p", "p 1", "s5"] {
            assert!(recent_before(Some(bad)).is_err(), "{bad}");
        }
    }
}
