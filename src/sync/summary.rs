//! The `summary` of each joined room in `/sync`: `m.joined_member_count`,
//! `m.invited_member_count` and, for a room with neither a name nor a canonical alias, the
//! `m.heroes` a client names it after.
//!
//! A summary is sent in an initial sync, for a room new to the sync, and when its members, name
//! or canonical alias changed after the token; otherwise it is left out, as the spec allows for
//! fields that did not change (client-server API, "Room summary" under `GET /sync`). It is read for
//! every shown room at once, with two queries whatever the number of rooms.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedRoomId, OwnedUserId, UInt, api::client::sync::sync_events::v3::RoomSummary};
use serde_json::Value as JsonValue;

use super::SyncRequest;
use crate::{
    Result,
    rooms::power::content_of,
    services::Services,
    store::{EventRecord, MemberSummary, MembershipRecord},
};

/// A summary to show, and the heroes it names (which lazy-loading keeps the members of).
#[derive(Clone, Debug)]
pub struct ShownSummary {
    pub summary: RoomSummary,
    pub heroes: Vec<OwnedUserId>,
}

/// What the naming state events of a room say.
#[derive(Default)]
struct Naming {
    /// The room has a non-empty name or canonical alias.
    named: bool,
    /// The stream position of the latest of those events.
    changed_at: i64,
}

/// The summaries of the joined rooms the sync is to show them for. `changed` holds the rooms
/// with events after the token (`None`: every room is read).
pub(super) async fn room_summaries(
    services: &Services,
    request: &SyncRequest,
    memberships: &[MembershipRecord],
    changed: Option<&BTreeSet<OwnedRoomId>>,
) -> Result<BTreeMap<OwnedRoomId, ShownSummary>> {
    let joined: Vec<&MembershipRecord> = memberships
        .iter()
        .filter(|m| m.membership == "join")
        .filter(|m| request.filter.rooms.allows_room(m.room_id.as_str()))
        .filter(|m| changed.is_none_or(|changed| changed.contains(&m.room_id)))
        .collect();
    if joined.is_empty() {
        return Ok(BTreeMap::new());
    }
    let room_ids: Vec<OwnedRoomId> = joined.iter().map(|m| m.room_id.clone()).collect();
    let store = &services.store;
    let members = store.member_summaries(&room_ids, &request.user_id).await?;
    let naming_events =
        store.current_state_events(&room_ids, &["m.room.name", "m.room.canonical_alias"]).await?;
    let naming = naming_of(naming_events);

    let since = request.since.filter(|_| !request.full_state);
    let after_since = |position: i64| since.is_none_or(|since| position > since);
    let mut shown = BTreeMap::new();
    for membership in joined {
        let room_id = &membership.room_id;
        let members = members.get(room_id).cloned().unwrap_or_default();
        let naming = naming.get(room_id);
        let is_new = after_since(membership.stream_position)
            || after_since(members.changed_at)
            || naming.is_some_and(|n| after_since(n.changed_at));
        if is_new {
            let named = naming.is_some_and(|n| n.named);
            shown.insert(room_id.clone(), shown_summary(members, named));
        }
    }
    Ok(shown)
}

fn shown_summary(members: MemberSummary, named: bool) -> ShownSummary {
    let count = |n: u64| Some(UInt::try_from(n).unwrap_or(UInt::MAX));
    let heroes = if named { Vec::new() } else { members.heroes };
    let mut summary = RoomSummary::new();
    summary.joined_member_count = count(members.joined);
    summary.invited_member_count = count(members.invited);
    summary.heroes = heroes.clone();
    ShownSummary { summary, heroes }
}

/// Per room: whether its name or canonical alias is set and not empty, and when either changed.
fn naming_of(events: Vec<EventRecord>) -> BTreeMap<OwnedRoomId, Naming> {
    let mut naming: BTreeMap<OwnedRoomId, Naming> = BTreeMap::new();
    for event in events {
        let field = if event.event_type == "m.room.name" { "name" } else { "alias" };
        let content = content_of::<JsonValue>(&event.pdu).unwrap_or_default();
        let set = content.get(field).and_then(JsonValue::as_str).is_some_and(|v| !v.is_empty());
        let entry = naming.entry(event.room_id.clone()).or_default();
        entry.named |= set;
        entry.changed_at = entry.changed_at.max(event.stream_position);
    }
    naming
}
