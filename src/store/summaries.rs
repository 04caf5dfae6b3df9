//! The storage API for room summaries: what `/sync` shows of many rooms at once (member counts,
//! heroes, a few state events). Each read is one query per backend call on PostgreSQL and one per
//! few hundred rooms on SQLite (its lists are chunked), never one per room.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedUserId, UserId};

use super::{EventRecord, StoreResult};

/// How many heroes a room summary names at most (the spec's "first 5 members").
pub const MAX_HEROES: usize = 5;

/// The members of one room as a summary counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberSummary {
    /// Members whose current membership is `join`.
    pub joined: u64,
    /// Members whose current membership is `invite`.
    pub invited: u64,
    /// Up to [`MAX_HEROES`] joined or invited members other than the user who asks, by the stream
    /// position of their membership; when there are none, the left and banned ones.
    pub heroes: Vec<OwnedUserId>,
    /// The stream position of the room's latest membership change.
    pub changed_at: i64,
}

/// Batched reads for room summaries.
#[async_trait]
pub trait RoomSummaryStore {
    /// The member summary of each of `room_ids` that has members, heroes chosen for `user_id`.
    async fn member_summaries(
        &self,
        room_ids: &[OwnedRoomId],
        user_id: &UserId,
    ) -> StoreResult<BTreeMap<OwnedRoomId, MemberSummary>>;

    /// The current state events with an empty state key of the given types in each of
    /// `room_ids`, in no particular order.
    async fn current_state_events(
        &self,
        room_ids: &[OwnedRoomId],
        event_types: &[&str],
    ) -> StoreResult<Vec<EventRecord>>;
}

/// One row of the hero query: a member of a room, ranked within its class (0 for joined or
/// invited, 1 for left or banned).
pub(crate) struct HeroRow {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub class: i64,
}

/// Assembles the summaries from the rows of the count query (room, membership, count, latest
/// position) and of the hero query, both backends alike.
pub(crate) fn assemble(
    counts: Vec<(OwnedRoomId, String, i64, i64)>,
    heroes: Vec<HeroRow>,
) -> BTreeMap<OwnedRoomId, MemberSummary> {
    let mut summaries: BTreeMap<OwnedRoomId, MemberSummary> = BTreeMap::new();
    for (room_id, membership, count, latest) in counts {
        let summary = summaries.entry(room_id).or_default();
        let count = u64::try_from(count).unwrap_or(0);
        match membership.as_str() {
            "join" => summary.joined = count,
            "invite" => summary.invited = count,
            _ => {}
        }
        summary.changed_at = summary.changed_at.max(latest);
    }
    let mut by_class: BTreeMap<(OwnedRoomId, i64), Vec<OwnedUserId>> = BTreeMap::new();
    for row in heroes {
        by_class.entry((row.room_id, row.class)).or_default().push(row.user_id);
    }
    for (room_id, summary) in &mut summaries {
        let class = |c: i64| by_class.get(&(room_id.clone(), c)).cloned().unwrap_or_default();
        let active = class(0);
        summary.heroes = if active.is_empty() { class(1) } else { active };
        summary.heroes.truncate(MAX_HEROES);
    }
    summaries
}

/// The SQL of the hero query on both backends: `{rooms}` is where the backend's room list goes
/// (`IN (...)` or `= ANY(...)`), `{user}` the placeholder of the user who asks.
pub(crate) fn hero_sql(rooms: &str, user: &str) -> String {
    format!(
        "SELECT room_id, state_key, class FROM (
             SELECT room_id, state_key, class,
                    ROW_NUMBER() OVER (PARTITION BY room_id, class ORDER BY stream_position) AS n
             FROM (SELECT room_id, state_key, stream_position,
                          CASE WHEN membership IN ('join', 'invite') THEN 0 ELSE 1 END AS class
                   FROM current_state
                   WHERE event_type = 'm.room.member' AND room_id {rooms} AND state_key <> {user}
                     AND membership IN ('join', 'invite', 'leave', 'ban')) AS members
         ) AS ranked
         WHERE n <= {MAX_HEROES}
         ORDER BY n"
    )
}

/// The SQL of the count query on both backends (see [`hero_sql`]).
pub(crate) fn count_sql(rooms: &str) -> String {
    format!(
        "SELECT room_id, COALESCE(membership, ''), COUNT(*), MAX(stream_position)
         FROM current_state
         WHERE event_type = 'm.room.member' AND room_id {rooms}
         GROUP BY room_id, COALESCE(membership, '')"
    )
}
