//! History visibility: which events of a room a user may see.
//!
//! Follows the spec's algorithm ([history visibility]) per event, from two timelines of the room:
//! the user's membership changes and the `m.room.history_visibility` changes. Both come from the
//! room's state history, so deciding for a whole page of events costs two queries.
//!
//! [history visibility]: https://spec.matrix.org/v1.19/client-server-api/#history-visibility

use ruma::{RoomId, UserId};
use serde::Deserialize;

use super::power::content_of;
use crate::{
    Result,
    store::{EventRecord, Store},
};

/// A user's view of one room's history.
#[derive(Clone, Debug)]
pub struct HistoryView {
    /// The user's membership changes: (stream position, membership), oldest first.
    memberships: Vec<(i64, String)>,
    /// The history visibility changes: (stream position, visibility), oldest first.
    visibilities: Vec<(i64, String)>,
    user_id: String,
}

#[derive(Deserialize)]
struct VisibilityContent {
    history_visibility: String,
}

#[derive(Deserialize)]
struct MemberContent {
    membership: String,
}

impl HistoryView {
    /// Loads the user's view of a room. A room the user forgot is seen as by someone who was
    /// never in it: the spec's `/forget` ends the user's access to its history.
    pub async fn load(store: &Store, room_id: &RoomId, user_id: &UserId) -> Result<Self> {
        let forgotten = store.forgotten_rooms(user_id).await?.iter().any(|room| room == room_id);
        let members = match forgotten {
            true => Vec::new(),
            false => store.state_key_history(room_id, "m.room.member", user_id.as_str()).await?,
        };
        let visibility = store.state_key_history(room_id, "m.room.history_visibility", "").await?;
        Ok(Self {
            memberships: timeline(&members, |pdu| {
                content_of::<MemberContent>(pdu).map(|c| c.membership)
            }),
            visibilities: timeline(&visibility, |pdu| {
                content_of::<VisibilityContent>(pdu).map(|c| c.history_visibility)
            }),
            user_id: user_id.to_string(),
        })
    }

    /// The user's current membership, if any.
    pub fn current_membership(&self) -> Option<&str> {
        self.memberships.last().map(|(_, m)| m.as_str())
    }

    /// Whether the user may see an event.
    pub fn allows(&self, event: &EventRecord) -> bool {
        let at = event.stream_position;
        if event.event_type == "m.room.member" && event.state_key.as_deref() == Some(&self.user_id)
        {
            return true;
        }
        let visibility = value_at(&self.visibilities, at).unwrap_or("shared");
        let membership = value_at(&self.memberships, at);
        match visibility {
            "world_readable" => true,
            _ if membership == Some("join") => true,
            "shared" => self.current_membership() == Some("join"),
            "invited" => membership == Some("invite"),
            _ => false,
        }
    }

    /// Whether the user may read the room at all (members, state) right now.
    pub fn can_read_current(&self) -> bool {
        self.current_membership() == Some("join")
            || self.visibilities.last().is_some_and(|(_, v)| v == "world_readable")
    }

    /// The last stream position the user may see, if their view of the room ended (they left or
    /// were banned); `None` while joined.
    pub fn end(&self) -> Option<i64> {
        match self.memberships.last() {
            Some((_, membership)) if membership == "join" => None,
            Some((position, _)) => Some(*position),
            None => Some(0),
        }
    }
}

fn timeline(events: &[EventRecord], value: impl Fn(&str) -> Option<String>) -> Vec<(i64, String)> {
    events.iter().filter_map(|e| value(&e.pdu).map(|v| (e.stream_position, v))).collect()
}

/// The value in force at `position`: the latest change at or before it.
fn value_at(changes: &[(i64, String)], position: i64) -> Option<&str> {
    let index = changes.partition_point(|(at, _)| *at <= position);
    index.checked_sub(1).map(|i| changes[i].1.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(memberships: &[(i64, &str)], visibilities: &[(i64, &str)]) -> HistoryView {
        let own = |v: &[(i64, &str)]| v.iter().map(|(p, s)| (*p, (*s).to_owned())).collect();
        HistoryView {
            memberships: own(memberships),
            visibilities: own(visibilities),
            user_id: "@u:x".into(),
        }
    }

    fn message(position: i64) -> EventRecord {
        EventRecord {
            stream_position: position,
            event_id: "$e".try_into().unwrap(),
            room_id: "!r:x".try_into().unwrap(),
            event_type: "m.room.message".into(),
            state_key: None,
            sender: "@o:x".try_into().unwrap(),
            origin_server_ts: 0,
            depth: 0,
            pdu: "{}".into(),
            redacted_by: None,
            replaces_state: None,
        }
    }

    #[test]
    fn shared_history_is_visible_to_current_members_only() {
        let joined = view(&[(10, "join")], &[(2, "shared")]);
        assert!(joined.allows(&message(5)), "events before the join");
        let left = view(&[(10, "join"), (20, "leave")], &[(2, "shared")]);
        assert!(!left.allows(&message(5)), "before the join, after leaving");
        assert!(left.allows(&message(15)), "while joined");
        assert!(!left.allows(&message(25)), "after leaving");
    }

    #[test]
    fn joined_history_starts_at_the_join() {
        let joined = view(&[(10, "join")], &[(2, "joined")]);
        assert!(!joined.allows(&message(5)));
        assert!(joined.allows(&message(11)));
    }

    #[test]
    fn invited_history_starts_at_the_invite() {
        let invited = view(&[(8, "invite"), (10, "join")], &[(2, "invited")]);
        assert!(!invited.allows(&message(5)));
        assert!(invited.allows(&message(9)));
    }

    #[test]
    fn world_readable_is_visible_to_anyone() {
        let stranger = view(&[], &[(2, "world_readable")]);
        assert!(stranger.allows(&message(5)));
        assert!(stranger.can_read_current());
    }
}
