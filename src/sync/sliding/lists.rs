//! Sliding sync lists: which of the user's rooms pass a list's filters, in what order, and which
//! of them its ranges select; with the room subscriptions, what each selected room is to show
//! (the largest `timeline_limit` and the union of the `required_state` asking for it).

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    OwnedRoomId, UInt,
    api::client::sync::sync_events::v5::{Request, request},
};

use super::summary::RoomSummary;
use crate::{Error, Result, sync::MAX_LIMIT};

/// The most lists one request may have.
pub const MAX_LISTS: usize = 100;
/// The most ranges one list may have.
pub const MAX_RANGES: usize = 100;
/// The most room subscriptions one request may have.
pub const MAX_SUBSCRIPTIONS: usize = 1000;
/// The most `required_state` entries of one list or subscription.
pub const MAX_REQUIRED_STATE: usize = 1000;
/// The longest list name, `conn_id` or `txn_id`.
pub const MAX_NAME_LENGTH: usize = 200;

/// What a selected room is to show.
#[derive(Clone, Debug, Default)]
pub struct RoomConfig {
    pub timeline_limit: usize,
    /// (type, state key) patterns: `*` for any, `$ME` and `$LAZY` as the MSC says.
    pub required_state: BTreeSet<(String, String)>,
}

impl RoomConfig {
    fn new(
        timeline_limit: UInt,
        required_state: &[(ruma::events::StateEventType, String)],
    ) -> Self {
        let limit = usize::try_from(u64::from(timeline_limit)).unwrap_or(MAX_LIMIT);
        Self {
            timeline_limit: limit.min(MAX_LIMIT),
            required_state: required_state
                .iter()
                .map(|(t, k)| (t.to_string(), k.clone()))
                .collect(),
        }
    }

    fn merge(&mut self, other: &RoomConfig) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        self.required_state.extend(other.required_state.iter().cloned());
    }
}

/// The rooms a request selects.
#[derive(Debug, Default)]
pub struct Selection {
    /// Each list's count: how many rooms pass its filters.
    pub counts: BTreeMap<String, u64>,
    /// The rooms each list's ranges select.
    pub list_rooms: BTreeMap<String, Vec<OwnedRoomId>>,
    /// The subscribed rooms the user is in.
    pub subscribed: BTreeSet<OwnedRoomId>,
    /// Every selected room and what it is to show.
    pub rooms: BTreeMap<OwnedRoomId, RoomConfig>,
    /// The rooms the user is joined to: only they show typing and receipts (an invited or
    /// knocking user is no member yet, and sees only the stripped state).
    pub joined: BTreeSet<OwnedRoomId>,
}

/// Refuses requests larger than Hearth serves and ranges that make no sense.
pub fn check(request: &Request) -> Result<()> {
    let too_long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > MAX_NAME_LENGTH);
    if too_long(&request.conn_id) || too_long(&request.txn_id) {
        return Err(Error::invalid_param(format!(
            "conn_id and txn_id are at most {MAX_NAME_LENGTH} bytes"
        )));
    }
    if request.lists.len() > MAX_LISTS || request.room_subscriptions.len() > MAX_SUBSCRIPTIONS {
        return Err(Error::invalid_param(format!(
            "At most {MAX_LISTS} lists and {MAX_SUBSCRIPTIONS} room subscriptions"
        )));
    }
    for (name, list) in &request.lists {
        check_list(name, list)?;
    }
    let required_states = request.room_subscriptions.values().map(|s| s.required_state.len());
    if required_states.into_iter().any(|n| n > MAX_REQUIRED_STATE) {
        return Err(too_much_required_state());
    }
    Ok(())
}

fn check_list(name: &str, list: &request::List) -> Result<()> {
    if name.len() > MAX_NAME_LENGTH {
        return Err(Error::invalid_param(format!(
            "List names are at most {MAX_NAME_LENGTH} bytes"
        )));
    }
    if list.ranges.len() > MAX_RANGES {
        return Err(Error::invalid_param(format!("A list has at most {MAX_RANGES} ranges")));
    }
    if list.ranges.iter().any(|(start, end)| start > end) {
        return Err(Error::invalid_param(format!(
            "A range of list {name:?} ends before it starts"
        )));
    }
    if list.room_details.required_state.len() > MAX_REQUIRED_STATE {
        return Err(too_much_required_state());
    }
    Ok(())
}

fn too_much_required_state() -> Error {
    Error::invalid_param(format!("At most {MAX_REQUIRED_STATE} required_state entries"))
}

/// Selects the rooms of every list and subscription among the user's rooms.
pub fn select(request: &Request, rooms: &[RoomSummary]) -> Selection {
    let mut ordered: Vec<&RoomSummary> = rooms.iter().collect();
    // The most recent first; the room ID keeps the order stable between equal stamps.
    ordered
        .sort_by(|a, b| b.bump_stamp.cmp(&a.bump_stamp).then_with(|| a.room_id().cmp(b.room_id())));
    let joined = rooms
        .iter()
        .filter(|room| room.membership.membership == "join")
        .map(|room| room.room_id().clone())
        .collect();
    let mut selection = Selection { joined, ..Selection::default() };
    for (name, list) in &request.lists {
        let config =
            RoomConfig::new(list.room_details.timeline_limit, &list.room_details.required_state);
        let passing: Vec<&RoomSummary> =
            ordered.iter().copied().filter(|room| passes(list.filters.as_ref(), room)).collect();
        selection.counts.insert(name.clone(), passing.len() as u64);
        let chosen: Vec<OwnedRoomId> = passing
            .iter()
            .enumerate()
            .filter(|(index, _)| in_ranges(&list.ranges, *index))
            .map(|(_, room)| room.room_id().clone())
            .collect();
        for room_id in &chosen {
            selection.rooms.entry(room_id.clone()).or_default().merge(&config);
        }
        selection.list_rooms.insert(name.clone(), chosen);
    }
    let known: BTreeSet<&OwnedRoomId> = rooms.iter().map(RoomSummary::room_id).collect();
    for (room_id, subscription) in &request.room_subscriptions {
        // A room the user is not in is left out, as if it did not exist.
        if !known.contains(room_id) {
            continue;
        }
        let config = RoomConfig::new(subscription.timeline_limit, &subscription.required_state);
        selection.rooms.entry(room_id.clone()).or_default().merge(&config);
        selection.subscribed.insert(room_id.clone());
    }
    selection
}

fn in_ranges(ranges: &[(UInt, UInt)], index: usize) -> bool {
    let index = index as u64;
    ranges.iter().any(|(start, end)| (u64::from(*start)..=u64::from(*end)).contains(&index))
}

/// Whether a room passes a list's filters (all of those set).
fn passes(filters: Option<&request::ListFilters>, room: &RoomSummary) -> bool {
    let Some(filters) = filters else { return true };
    let is_invite = room.membership.membership == "invite";
    let room_type = room.room_type();
    let type_matches = |types: &[ruma::directory::RoomTypeFilter]| {
        types.iter().any(|t| t.as_str() == room_type.as_deref())
    };
    filters.is_dm.is_none_or(|wanted| wanted == room.is_dm)
        && filters.is_encrypted.is_none_or(|wanted| wanted == room.is_encrypted())
        && filters.is_invite.is_none_or(|wanted| wanted == is_invite)
        && (filters.room_types.is_empty() || type_matches(&filters.room_types))
        && !type_matches(&filters.not_room_types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_at_both_ends() {
        let ranges = [(UInt::from(0u32), UInt::from(1u32)), (UInt::from(5u32), UInt::from(5u32))];
        let selected: Vec<usize> = (0..8).filter(|i| in_ranges(&ranges, *i)).collect();
        assert_eq!(selected, [0, 1, 5]);
    }
}
