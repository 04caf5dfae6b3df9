//! Filters as `/sync` and `/messages` apply them, converted from ruma's filter definitions.
//!
//! See <https://spec.matrix.org/v1.19/client-server-api/#filtering>.

use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};

use crate::store::{Direction, EventRecord, RoomEventsQuery};

/// The default number of timeline events per room in `/sync`.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The most events one page may hold, whatever the client asks.
pub const MAX_LIMIT: usize = 1000;

/// A filter on room events.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub limit: Option<usize>,
    /// Only the members needed to show the returned events (lazy-loading members).
    pub lazy_load_members: bool,
}

impl EventFilter {
    pub fn from_ruma(filter: &RoomEventFilter) -> Self {
        let strings = |ids: &[ruma::OwnedUserId]| ids.iter().map(|id| id.to_string()).collect();
        Self {
            types: filter.types.clone(),
            not_types: filter.not_types.clone(),
            senders: filter.senders.as_deref().map(strings),
            not_senders: strings(&filter.not_senders),
            rooms: filter.rooms.as_ref().map(|r| r.iter().map(|id| id.to_string()).collect()),
            not_rooms: filter.not_rooms.iter().map(|id| id.to_string()).collect(),
            limit: filter
                .limit
                .map(|l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
            lazy_load_members: !filter.lazy_load_options.is_disabled(),
        }
    }

    /// A store query for this filter's types and senders.
    pub fn query(
        &self,
        room_id: &ruma::RoomId,
        from: i64,
        to: Option<i64>,
        direction: Direction,
        limit: usize,
    ) -> RoomEventsQuery {
        RoomEventsQuery {
            room_id: room_id.to_owned(),
            from,
            to,
            direction,
            limit,
            types: self.types.clone(),
            not_types: self.not_types.clone(),
            senders: self.senders.clone(),
            not_senders: self.not_senders.clone(),
            relates_to: None,
        }
    }

    /// Whether an event passes the type and sender parts (for state, filtered in memory).
    pub fn matches(&self, event: &EventRecord) -> bool {
        let type_ok =
            self.types.as_ref().is_none_or(|t| t.iter().any(|p| glob(p, &event.event_type)))
                && !self.not_types.iter().any(|p| glob(p, &event.event_type));
        let sender = event.sender.as_str();
        let sender_ok = self.senders.as_ref().is_none_or(|s| s.iter().any(|x| x == sender))
            && !self.not_senders.iter().any(|x| x == sender);
        type_ok && sender_ok
    }

    /// Whether a room passes the room lists.
    pub fn allows_room(&self, room_id: &str) -> bool {
        self.rooms.as_ref().is_none_or(|r| r.iter().any(|x| x == room_id))
            && !self.not_rooms.iter().any(|x| x == room_id)
    }
}

/// The parts of a filter definition `/sync` uses.
#[derive(Clone, Debug, Default)]
pub struct SyncFilter {
    pub timeline: EventFilter,
    pub state: EventFilter,
    pub room_account_data: EventFilter,
    /// Ephemeral room events (`m.typing`).
    pub ephemeral: EventFilter,
    /// Presence events (the top-level `presence` filter).
    pub presence: EventFilter,
    pub account_data: EventFilter,
    pub include_leave: bool,
    /// Room lists from the top-level room filter.
    pub rooms: EventFilter,
    /// Whether unread counts are split per thread (the timeline filter's
    /// `unread_thread_notifications`).
    pub unread_thread_notifications: bool,
}

impl SyncFilter {
    pub fn from_ruma(definition: &FilterDefinition) -> Self {
        let strings = |ids: &[ruma::OwnedUserId]| ids.iter().map(|id| id.to_string()).collect();
        let room = &definition.room;
        let account_data = &definition.account_data;
        Self {
            timeline: EventFilter::from_ruma(&room.timeline),
            state: EventFilter::from_ruma(&room.state),
            room_account_data: EventFilter::from_ruma(&room.account_data),
            ephemeral: EventFilter::from_ruma(&room.ephemeral),
            presence: EventFilter {
                types: definition.presence.types.clone(),
                not_types: definition.presence.not_types.clone(),
                senders: definition.presence.senders.as_ref().map(|s| strings(s)),
                not_senders: strings(&definition.presence.not_senders),
                limit: definition
                    .presence
                    .limit
                    .map(|l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
                ..EventFilter::default()
            },
            account_data: EventFilter {
                types: account_data.types.clone(),
                not_types: account_data.not_types.clone(),
                ..EventFilter::default()
            },
            include_leave: room.include_leave,
            rooms: EventFilter {
                rooms: room.rooms.as_ref().map(|r| r.iter().map(|id| id.to_string()).collect()),
                not_rooms: room.not_rooms.iter().map(|id| id.to_string()).collect(),
                ..EventFilter::default()
            },
            unread_thread_notifications: room.timeline.unread_thread_notifications,
        }
    }

    pub fn timeline_limit(&self) -> usize {
        self.timeline.limit.unwrap_or(DEFAULT_TIMELINE_LIMIT)
    }
}

/// Matches `text` against a pattern where `*` stands for any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else { return pattern == text };
    let Some(mut remaining) = text.strip_prefix(first) else { return false };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or("");
    for part in parts {
        match remaining.find(part) {
            Some(index) => remaining = &remaining[index + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last) && remaining.len() >= last.len()
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_like_the_spec_filters() {
        let cases = [
            ("m.room.message", "m.room.message", true),
            ("m.room.*", "m.room.message", true),
            ("m.*.message", "m.room.message", true),
            ("m.room.*", "m.call.invite", false),
            ("*", "anything", true),
            ("m.room.message", "m.room.messages", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob(pattern, text), expected, "{pattern} vs {text}");
        }
    }
}
