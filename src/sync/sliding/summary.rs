//! What sliding sync knows of each room the user is in before choosing which to send: the state
//! the user may see, its recency (`bump_stamp`), and what list filters ask about it (DM,
//! encrypted, invite, room type), with the room's display name as the spec computes it.
//!
//! [Calculating the display name for a room]:
//! https://spec.matrix.org/v1.19/client-server-api/#calculating-the-display-name-for-a-room

use std::collections::BTreeSet;

use ruma::{OwnedMxcUri, OwnedRoomId, OwnedUserId, UserId};
use serde::Deserialize;

use crate::{
    Result,
    rooms::power::content_of,
    store::{Direction, EventRecord, MembershipRecord, RoomEventsQuery, Store},
};

/// Event types that move a room up the list: what a user would call new activity, not every
/// state change (MSC4186, "bump_stamp").
pub const BUMP_TYPES: [&str; 8] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
    "m.room.tombstone",
];

/// How many members a room's heroes are at most (the spec's `m.heroes`).
const MAX_HEROES: usize = 5;

/// A room the user has a membership in, as the lists see it.
#[derive(Clone, Debug)]
pub struct RoomSummary {
    pub membership: MembershipRecord,
    /// The state the user may see: the current state, or, after leaving, the state then.
    pub state: Vec<EventRecord>,
    pub bump_stamp: i64,
    pub is_dm: bool,
}

/// One member of a room as heroes show them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user_id: OwnedUserId,
    pub displayname: Option<String>,
    pub avatar_url: Option<OwnedMxcUri>,
}

#[derive(Deserialize)]
struct MemberContent {
    membership: String,
    displayname: Option<String>,
    avatar_url: Option<String>,
    #[serde(default)]
    is_direct: bool,
}

#[derive(Deserialize)]
struct NameContent {
    name: Option<String>,
}

#[derive(Deserialize)]
struct AliasContent {
    alias: Option<String>,
}

#[derive(Deserialize)]
struct AvatarContent {
    url: Option<String>,
}

#[derive(Deserialize)]
struct CreateContent {
    #[serde(rename = "type")]
    room_type: Option<String>,
}

impl RoomSummary {
    /// Reads a room's summary. `direct` holds the rooms the user's `m.direct` names.
    pub async fn load(
        store: &Store,
        membership: MembershipRecord,
        direct: &BTreeSet<OwnedRoomId>,
        current: i64,
    ) -> Result<Self> {
        let room_id = &membership.room_id;
        let state = match membership.membership.as_str() {
            "leave" | "ban" => store.state_at(room_id, membership.stream_position).await?,
            _ => store.current_state(room_id).await?,
        };
        let bump_stamp = match membership.membership.as_str() {
            "join" => latest_bump(store, room_id, current).await?.max(membership.stream_position),
            _ => membership.stream_position,
        };
        let invited_as_direct = membership.membership == "invite"
            && state
                .iter()
                .find(|e| e.event_id == membership.event_id)
                .and_then(|e| content_of::<MemberContent>(&e.pdu))
                .is_some_and(|c| c.is_direct);
        let is_dm = direct.contains(room_id) || invited_as_direct;
        Ok(Self { membership, state, bump_stamp, is_dm })
    }

    /// Who sent the user's invite, if the user is invited.
    pub fn inviter(&self) -> Option<&OwnedUserId> {
        let invite = self.membership.membership == "invite";
        let event = self.state.iter().find(|e| invite && e.event_id == self.membership.event_id);
        event.map(|e| &e.sender)
    }

    pub fn room_id(&self) -> &OwnedRoomId {
        &self.membership.room_id
    }

    /// The state event of a type and key, if the room has one.
    pub fn state_event(&self, event_type: &str, state_key: &str) -> Option<&EventRecord> {
        self.state
            .iter()
            .find(|e| e.event_type == event_type && e.state_key.as_deref() == Some(state_key))
    }

    pub fn is_encrypted(&self) -> bool {
        self.state_event("m.room.encryption", "").is_some()
    }

    /// The room type its creation set (`m.space`, …), `None` for a plain room.
    pub fn room_type(&self) -> Option<String> {
        let create = self.state_event("m.room.create", "")?;
        content_of::<CreateContent>(&create.pdu)?.room_type
    }

    pub fn avatar(&self) -> Option<OwnedMxcUri> {
        let event = self.state_event("m.room.avatar", "")?;
        let url = content_of::<AvatarContent>(&event.pdu)?.url?;
        (!url.is_empty()).then(|| url.into())
    }

    /// The number of members with a membership.
    pub fn count(&self, membership: &str) -> u64 {
        self.members(|m| m == membership).len() as u64
    }

    /// Members whose membership passes, in the order they got it (stream order).
    fn members(&self, wanted: impl Fn(&str) -> bool) -> Vec<(i64, Member)> {
        let mut members: Vec<(i64, Member)> = self
            .state
            .iter()
            .filter(|e| e.event_type == "m.room.member")
            .filter_map(|e| {
                let content = content_of::<MemberContent>(&e.pdu)?;
                let user_id = OwnedUserId::try_from(e.state_key.as_deref()?).ok()?;
                wanted(&content.membership).then(|| (e.stream_position, member(user_id, content)))
            })
            .collect();
        members.sort_by_key(|(position, _)| *position);
        members
    }

    /// The room's heroes: the first members other than the user who are joined or invited, or,
    /// if there are none, who left or were banned.
    pub fn heroes(&self, user_id: &UserId) -> Vec<Member> {
        let others = |wanted: &[&str]| -> Vec<Member> {
            self.members(|m| wanted.contains(&m))
                .into_iter()
                .map(|(_, member)| member)
                .filter(|m| m.user_id != user_id)
                .take(MAX_HEROES)
                .collect()
        };
        let present = others(&["join", "invite"]);
        if present.is_empty() { others(&["leave", "ban"]) } else { present }
    }

    /// The room's display name, by the spec's rules: its name, else its canonical alias, else
    /// one made of its heroes' names.
    pub fn display_name(&self, user_id: &UserId) -> String {
        let name = self
            .state_event("m.room.name", "")
            .and_then(|e| content_of::<NameContent>(&e.pdu))
            .and_then(|c| c.name)
            .filter(|n| !n.is_empty());
        let alias = || {
            self.state_event("m.room.canonical_alias", "")
                .and_then(|e| content_of::<AliasContent>(&e.pdu))
                .and_then(|c| c.alias)
                .filter(|a| !a.is_empty())
        };
        name.or_else(alias).unwrap_or_else(|| self.name_from_heroes(user_id))
    }

    fn name_from_heroes(&self, user_id: &UserId) -> String {
        let heroes = self.heroes(user_id);
        let present = self.count("join") + self.count("invite");
        let others = present.saturating_sub(u64::from(self.is_member(user_id)));
        let names: Vec<String> = heroes.iter().map(Member::name).collect();
        if others == 0 {
            return match names.is_empty() {
                true => "Empty Room".to_owned(),
                false => format!("Empty Room (was {})", join_names(&names, 0)),
            };
        }
        let beyond = others.saturating_sub(names.len() as u64);
        join_names(&names, beyond)
    }

    fn is_member(&self, user_id: &UserId) -> bool {
        self.members(|m| m == "join" || m == "invite").iter().any(|(_, m)| m.user_id == user_id)
    }
}

fn member(user_id: OwnedUserId, content: MemberContent) -> Member {
    Member {
        user_id,
        displayname: content.displayname.filter(|n| !n.is_empty()),
        avatar_url: content.avatar_url.filter(|u| !u.is_empty()).map(Into::into),
    }
}

impl Member {
    /// The name a room's display name uses: the display name, else the user ID.
    fn name(&self) -> String {
        self.displayname.clone().unwrap_or_else(|| self.user_id.to_string())
    }
}

/// "A", "A and B", "A, B and C", or with `beyond` more: "A, B and 3 others".
fn join_names(names: &[String], beyond: u64) -> String {
    let mut parts: Vec<String> = names.to_vec();
    if beyond > 0 {
        parts.push(format!("{beyond} others"));
    }
    match parts.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// The stream position of the room's latest event of a [`BUMP_TYPES`] type, 0 if none.
async fn latest_bump(store: &Store, room_id: &ruma::RoomId, current: i64) -> Result<i64> {
    let query = RoomEventsQuery {
        room_id: room_id.to_owned(),
        from: current + 1,
        to: None,
        direction: Direction::Backward,
        limit: 1,
        types: Some(BUMP_TYPES.iter().map(|t| (*t).to_owned()).collect()),
        not_types: Vec::new(),
        senders: None,
        not_senders: Vec::new(),
        relates_to: None,
    };
    Ok(store.room_events(query).await?.first().map_or(0, |e| e.stream_position))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn names_are_joined_as_the_spec_shows() {
        assert_eq!(join_names(&names(&["Alice"]), 0), "Alice");
        assert_eq!(join_names(&names(&["Alice", "Bob"]), 0), "Alice and Bob");
        assert_eq!(join_names(&names(&["Alice", "Bob", "Carol"]), 0), "Alice, Bob and Carol");
        assert_eq!(join_names(&names(&["Alice", "Bob"]), 3), "Alice, Bob and 3 others");
    }
}
