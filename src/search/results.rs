//! The parts of a search answer built from the matches: each result with its context and the
//! senders' profiles, the rooms' state, the groupings and the highlights.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    OwnedMxcUri, OwnedRoomId, OwnedUserId, UInt,
    api::client::search::search_events::v3::{
        EventContext, EventContextResult, GroupingKey, ResultGroup, ResultGroupMap,
        ResultGroupMapsByGroupingKey, SearchResult, UserProfile,
    },
    events::AnyStateEvent,
    serde::Raw,
};
use serde::Deserialize;
use serde_json::Value as JsonValue;

use super::{Found, text};
pub(super) use crate::rooms::format::Viewer;
use crate::{
    Result,
    rooms::{
        format::{Format, client_events},
        power::content_of,
        visibility::HistoryView,
    },
    services::Services,
    store::{Direction, EventRecord, RoomEventsQuery},
    sync::token,
};

/// The most context events on either side of a result, whatever the request asks.
const MAX_CONTEXT: usize = 20;

/// The terms and the words of the results that they match, each once (none without results).
pub(super) fn highlights(terms: &[String], matches: &[(EventRecord, f64)]) -> Vec<String> {
    if matches.is_empty() {
        return Vec::new();
    }
    let mut words: BTreeSet<String> = terms.iter().cloned().collect();
    for (record, _) in matches {
        if let Some(found) = text::text_of_record(record) {
            words.extend(text::matched_words(&found.text, terms).map(str::to_owned));
        }
    }
    words.into_iter().collect()
}

/// The results of the page grouped by room or by sender, each group ordered by its best result.
///
/// FIXME: a group carries no `next_batch` of its own; a client pages the whole search with the
/// answer's `next_batch`, which keeps the grouping.
pub(super) fn groups(
    keys: &[GroupingKey],
    matches: &[(EventRecord, f64)],
) -> ResultGroupMapsByGroupingKey {
    keys.iter()
        .filter_map(|key| match key {
            GroupingKey::RoomId => {
                Some(ResultGroupMap::RoomId(group_by(matches, |r| r.room_id.clone())))
            }
            GroupingKey::Sender => {
                Some(ResultGroupMap::Sender(group_by(matches, |r| r.sender.clone())))
            }
            _ => None,
        })
        .collect()
}

fn group_by<K: Ord + Clone>(
    matches: &[(EventRecord, f64)],
    key: impl Fn(&EventRecord) -> K,
) -> BTreeMap<K, ResultGroup> {
    let mut groups: BTreeMap<K, ResultGroup> = BTreeMap::new();
    for (record, _) in matches {
        let next_order = UInt::try_from(groups.len() + 1).unwrap_or(UInt::MAX);
        let group = groups.entry(key(record)).or_insert_with(|| {
            let mut group = ResultGroup::new();
            group.order = Some(next_order);
            group
        });
        group.results.push(record.event_id.clone());
    }
    groups
}

/// Each match as a result, with its context when the request asks for any.
pub(super) async fn search_results(
    services: &Services,
    viewer: Viewer<'_>,
    found: &Found,
    context: &EventContext,
) -> Result<Vec<SearchResult>> {
    let records: Vec<EventRecord> = found.matches.iter().map(|(r, _)| r.clone()).collect();
    let events = client_events(&services.store, viewer, &records, Format::Client).await?;
    let mut results = Vec::with_capacity(records.len());
    for ((record, rank), event) in found.matches.iter().zip(events) {
        let mut result = SearchResult::new();
        result.rank = Some(*rank);
        result.result = Some(raw(&event)?);
        if let Some(view) = found.views.get(&record.room_id) {
            result.context = event_context(services, viewer, view, record, context).await?;
        }
        results.push(result);
    }
    Ok(results)
}

/// The events before and after a result that the user may see, the pagination tokens around
/// them and, if asked, the profiles of their senders.
async fn event_context(
    services: &Services,
    viewer: Viewer<'_>,
    view: &HistoryView,
    record: &EventRecord,
    context: &EventContext,
) -> Result<EventContextResult> {
    let limit = |n: UInt| usize::try_from(u64::from(n)).unwrap_or(MAX_CONTEXT).min(MAX_CONTEXT);
    let (before_limit, after_limit) = (limit(context.before_limit), limit(context.after_limit));
    let mut answer = EventContextResult::new();
    if before_limit == 0 && after_limit == 0 && !context.include_profile {
        return Ok(answer);
    }
    let before = around(services, view, record, Direction::Backward, before_limit).await?;
    let after = around(services, view, record, Direction::Forward, after_limit).await?;
    let position = record.stream_position;
    answer.start = Some(token(before.last().map_or(position - 1, |e| e.stream_position - 1)));
    answer.end = Some(token(after.last().map_or(position, |e| e.stream_position)));
    if context.include_profile {
        let senders = before.iter().chain(&after).chain([record]).map(|e| e.sender.clone());
        answer.profile_info = profiles(services, &record.room_id, senders.collect()).await?;
    }
    let store = &services.store;
    answer.events_before = raws(&client_events(store, viewer, &before, Format::Client).await?)?;
    answer.events_after = raws(&client_events(store, viewer, &after, Format::Client).await?)?;
    Ok(answer)
}

/// Up to `limit` visible events next to `record` in one direction, nearest first.
async fn around(
    services: &Services,
    view: &HistoryView,
    record: &EventRecord,
    direction: Direction,
    limit: usize,
) -> Result<Vec<EventRecord>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // A few more than asked, for those the user may not see.
    let query = RoomEventsQuery {
        room_id: record.room_id.clone(),
        from: record.stream_position,
        to: None,
        direction,
        limit: limit * 2,
        types: None,
        not_types: Vec::new(),
        senders: None,
        not_senders: Vec::new(),
        relates_to: None,
    };
    let mut events = services.store.room_events(query).await?;
    events.retain(|event| view.allows(event));
    events.truncate(limit);
    Ok(events)
}

#[derive(Deserialize)]
struct MemberProfile {
    displayname: Option<String>,
    avatar_url: Option<OwnedMxcUri>,
}

/// The senders' display names and avatars, from their current membership in the room.
async fn profiles(
    services: &Services,
    room_id: &ruma::RoomId,
    senders: BTreeSet<OwnedUserId>,
) -> Result<BTreeMap<OwnedUserId, UserProfile>> {
    let mut profiles = BTreeMap::new();
    for sender in senders {
        let member = services.store.current_state_event(room_id, "m.room.member", sender.as_str());
        let Some(member) = member.await? else { continue };
        let Some(content) = content_of::<MemberProfile>(&member.pdu) else { continue };
        let mut profile = UserProfile::new();
        profile.displayname = content.displayname;
        profile.avatar_url = content.avatar_url;
        profiles.insert(sender, profile);
    }
    Ok(profiles)
}

/// The state of each room with a result: the current state while the user is joined, the state
/// when they left otherwise.
pub(super) async fn room_states(
    services: &Services,
    viewer: Viewer<'_>,
    found: &Found,
) -> Result<BTreeMap<OwnedRoomId, Vec<Raw<AnyStateEvent>>>> {
    let rooms: BTreeSet<&OwnedRoomId> = found.matches.iter().map(|(r, _)| &r.room_id).collect();
    let store = &services.store;
    let mut states = BTreeMap::new();
    for room_id in rooms {
        let state = match found.views.get(room_id).and_then(HistoryView::end) {
            None => store.current_state(room_id).await?,
            Some(end) => store.state_at(room_id, end).await?,
        };
        let events = client_events(store, viewer, &state, Format::Client).await?;
        states.insert(room_id.clone(), raws(&events)?);
    }
    Ok(states)
}

fn raw<T>(value: &JsonValue) -> Result<Raw<T>> {
    let json = serde_json::value::to_raw_value(value).map_err(anyhow::Error::from)?;
    Ok(Raw::from_json(json))
}

fn raws<T>(values: &[JsonValue]) -> Result<Vec<Raw<T>>> {
    values.iter().map(raw).collect()
}
