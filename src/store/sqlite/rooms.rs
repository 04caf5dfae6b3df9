//! SQLite queries for rooms: events, state groups, current state, memberships, aliases and the
//! directory. What a state group or a change of the current state holds is decided by
//! `crate::rooms::state`; this file only writes and reads it.
//!
//! The state at a stream position is derived from `state_history`: for each (type, state key), the
//! newest entry at or before that position. SQLite returns the row holding `MAX()` for bare
//! columns, which is what these queries rely on.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ruma::{
    EventId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId,
    RoomVersionId, UserId,
};
use rusqlite::{Connection, OptionalExtension as _, ToSql, params, params_from_iter};

use super::{MAX_PARAMS, SqliteStore, current_stream_position, next_stream_position, placeholders};
use crate::store::{
    AliasRecord, AppendedEvent, AppserviceListing, CurrentStateChange, Direction, EventRecord,
    MembershipRecord, NewEvent, NewStateGroup, RelationSummary, RoomEventsQuery, RoomJob,
    RoomStore, RoomTxn, StateEntry, StateGroupDelta, StateMap, StoreResult, ThreadRoot,
    ThreadsQuery, TimestampQuery, TransactionKey, job_result, job_verdict,
};

pub(super) const EVENT_COLUMNS: &str = "e.stream_position, e.event_id, e.room_id, e.event_type, e.state_key, \
     e.sender, e.origin_server_ts, e.depth, e.pdu, e.redacted_by, e.replaces_state";

/// The latest `state_history` entry per (type, state key) in a position range of one room.
const STATE_IN_RANGE: &str = "SELECT event_id, MAX(stream_position) FROM state_history
     WHERE room_id = ?1 AND stream_position > ?2 AND stream_position <= ?3
     GROUP BY event_type, state_key";

#[async_trait]
impl RoomStore for SqliteStore {
    async fn write_rooms(&self, job: RoomJob) -> crate::Result<Vec<AppendedEvent>> {
        job_verdict(self.write(move |c| job_result(job(&Txn { c }))).await)
    }

    async fn current_position(&self) -> StoreResult<i64> {
        self.read(current_stream_position).await
    }

    async fn room_version(&self, room_id: &RoomId) -> StoreResult<Option<RoomVersionId>> {
        let room_id = room_id.to_owned();
        self.read(move |c| room_version(c, &room_id)).await
    }

    async fn event(&self, event_id: &EventId) -> StoreResult<Option<EventRecord>> {
        let event_id = event_id.to_owned();
        self.read(move |c| event_by_id(c, &event_id)).await
    }

    async fn events(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<EventRecord>> {
        let event_ids = event_ids.to_vec();
        self.read(move |c| {
            let mut events = Vec::with_capacity(event_ids.len());
            for chunk in event_ids.chunks(MAX_PARAMS) {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id IN ({})",
                    placeholders(chunk.len())
                );
                let ids = chunk.iter().map(|id| id.as_str());
                events.extend(query_events(c, &sql, params_from_iter(ids))?);
            }
            events.sort_by_key(|event| event.stream_position);
            Ok(events)
        })
        .await
    }

    async fn transaction_event(&self, key: &TransactionKey) -> StoreResult<Option<OwnedEventId>> {
        let key = key.clone();
        self.read(move |c| transaction_event(c, &key)).await
    }

    async fn transaction_ids(
        &self,
        user_id: &UserId,
        device_id: &str,
        event_ids: &[OwnedEventId],
    ) -> StoreResult<std::collections::BTreeMap<OwnedEventId, String>> {
        let (user_id, device_id, event_ids) =
            (user_id.to_owned(), device_id.to_owned(), event_ids.to_vec());
        self.read(move |c| {
            let mut found = std::collections::BTreeMap::new();
            for chunk in event_ids.chunks(MAX_PARAMS) {
                let sql = format!(
                    "SELECT event_id, txn_id FROM event_transactions
                     WHERE user_id = ? AND device_id = ? AND event_id IN ({})",
                    placeholders(chunk.len())
                );
                let user = user_id.as_str();
                let mut values: Vec<&dyn ToSql> = vec![&user, &device_id];
                let ids: Vec<&str> = chunk.iter().map(|id| id.as_str()).collect();
                values.extend(ids.iter().map(|id| id as &dyn ToSql));
                let mut statement = c.prepare(&sql)?;
                let rows = statement.query_map(values.as_slice(), |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (event_id, txn_id) = row?;
                    found.insert(OwnedEventId::try_from(event_id)?, txn_id);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn current_state(&self, room_id: &RoomId) -> StoreResult<Vec<EventRecord>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM current_state s JOIN events e ON e.event_id = s.event_id
                 WHERE s.room_id = ?1 ORDER BY e.stream_position"
            );
            query_events(c, &sql, [room_id.as_str()])
        })
        .await
    }

    async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Option<EventRecord>> {
        let (room_id, event_type, state_key) =
            (room_id.to_owned(), event_type.to_owned(), state_key.to_owned());
        self.read(move |c| current_state_event(c, &room_id, &event_type, &state_key)).await
    }

    async fn state_key_history(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Vec<EventRecord>> {
        let (room_id, event_type, state_key) =
            (room_id.to_owned(), event_type.to_owned(), state_key.to_owned());
        self.read(move |c| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM state_history s JOIN events e ON e.event_id = s.event_id
                 WHERE s.room_id = ?1 AND s.event_type = ?2 AND s.state_key = ?3
                 ORDER BY s.stream_position"
            );
            query_events(c, &sql, params![room_id.as_str(), event_type, state_key])
        })
        .await
    }

    async fn state_at(&self, room_id: &RoomId, at: i64) -> StoreResult<Vec<EventRecord>> {
        self.state_changes(room_id, 0, at).await
    }

    async fn state_changes(
        &self,
        room_id: &RoomId,
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM ({STATE_IN_RANGE}) s
                 JOIN events e ON e.event_id = s.event_id ORDER BY e.stream_position"
            );
            query_events(c, &sql, params![room_id.as_str(), from, to])
        })
        .await
    }

    async fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        at: Option<i64>,
    ) -> StoreResult<Option<MembershipRecord>> {
        let (room_id, user_id) = (room_id.to_owned(), user_id.to_owned());
        self.read(move |c| {
            let at = at.unwrap_or(i64::MAX);
            let row = c
                .query_row(
                    "SELECT membership, event_id, MAX(stream_position) FROM state_history
                     WHERE room_id = ?1 AND event_type = 'm.room.member' AND state_key = ?2
                       AND stream_position <= ?3",
                    params![room_id.as_str(), user_id.as_str(), at],
                    |row| {
                        Ok((
                            row.get::<_, Option<String>>(0)?,
                            row.get::<_, Option<String>>(1)?,
                            row.get::<_, Option<i64>>(2)?,
                        ))
                    },
                )
                .optional()?;
            let Some((Some(membership), Some(event_id), Some(stream_position))) = row else {
                return Ok(None);
            };
            Ok(Some(MembershipRecord {
                room_id,
                user_id,
                membership,
                event_id: OwnedEventId::try_from(event_id)?,
                stream_position,
            }))
        })
        .await
    }

    async fn memberships_of(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT room_id, membership, event_id, stream_position FROM current_state
                 WHERE state_key = ?1 AND event_type = 'm.room.member'
                 ORDER BY stream_position",
            )?;
            let rows = statement.query_map([user_id.as_str()], |row| {
                Ok((row.get::<_, String>(0)?, row.get(1)?, row.get::<_, String>(2)?, row.get(3)?))
            })?;
            rows.map(|row| {
                let (room_id, membership, event_id, stream_position) = row?;
                Ok(MembershipRecord {
                    room_id: OwnedRoomId::try_from(room_id)?,
                    user_id: user_id.clone(),
                    membership,
                    event_id: OwnedEventId::try_from(event_id)?,
                    stream_position,
                })
            })
            .collect()
        })
        .await
    }

    async fn members_with(
        &self,
        room_id: &RoomId,
        membership: &str,
    ) -> StoreResult<Vec<OwnedUserId>> {
        let (room_id, membership) = (room_id.to_owned(), membership.to_owned());
        self.read(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT state_key FROM current_state
                 WHERE room_id = ?1 AND event_type = 'm.room.member' AND membership = ?2
                 ORDER BY state_key",
            )?;
            let rows = statement
                .query_map(params![room_id.as_str(), membership], |row| row.get::<_, String>(0))?;
            rows.map(|user_id| Ok(OwnedUserId::try_from(user_id?)?)).collect()
        })
        .await
    }

    async fn room_events(&self, query: RoomEventsQuery) -> StoreResult<Vec<EventRecord>> {
        self.read(move |c| room_events(c, &query)).await
    }

    async fn rooms_changed(
        &self,
        room_ids: &[OwnedRoomId],
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<OwnedRoomId>> {
        let room_ids = room_ids.to_vec();
        self.read(move |c| {
            let mut changed = Vec::new();
            for chunk in room_ids.chunks(MAX_PARAMS) {
                let sql = format!(
                    "SELECT DISTINCT room_id FROM events
                     WHERE stream_position > ? AND stream_position <= ? AND room_id IN ({})",
                    placeholders(chunk.len())
                );
                let mut values: Vec<&dyn ToSql> = vec![&from, &to];
                let ids: Vec<&str> = chunk.iter().map(|id| id.as_str()).collect();
                values.extend(ids.iter().map(|id| id as &dyn ToSql));
                let mut statement = c.prepare(&sql)?;
                let rows = statement.query_map(values.as_slice(), |row| row.get::<_, String>(0))?;
                for room_id in rows {
                    changed.push(OwnedRoomId::try_from(room_id?)?);
                }
            }
            Ok(changed)
        })
        .await
    }

    async fn events_by_timestamp(&self, query: TimestampQuery) -> StoreResult<Vec<EventRecord>> {
        let (comparison, order) = match query.direction {
            Direction::Forward => (">=", "ASC"),
            Direction::Backward => ("<=", "DESC"),
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e
             WHERE e.room_id = ?1 AND e.origin_server_ts {comparison} ?2
             ORDER BY e.origin_server_ts {order}, e.stream_position {order} LIMIT ?3 OFFSET ?4"
        );
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        self.read(move |c| {
            query_events(c, &sql, params![query.room_id.as_str(), query.ts, limit, offset])
        })
        .await
    }

    async fn thread_roots(&self, query: ThreadsQuery) -> StoreResult<Vec<ThreadRoot>> {
        self.read(move |c| super::relations::thread_roots(c, &query)).await
    }

    async fn relation_summaries(
        &self,
        parents: &[OwnedEventId],
        user_id: &UserId,
    ) -> StoreResult<BTreeMap<OwnedEventId, RelationSummary>> {
        if parents.is_empty() {
            return Ok(BTreeMap::new());
        }
        let (parents, user_id) = (parents.to_vec(), user_id.to_owned());
        self.read(move |c| super::relations::relation_summaries(c, &parents, &user_id)).await
    }

    async fn forget_room(&self, user_id: &UserId, room_id: &RoomId) -> StoreResult<()> {
        let (user_id, room_id) = (user_id.to_owned(), room_id.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO forgotten_rooms (user_id, room_id) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
                params![user_id.as_str(), room_id.as_str()],
            )?;
            Ok(())
        })
        .await
    }

    async fn forgotten_rooms(&self, user_id: &UserId) -> StoreResult<Vec<OwnedRoomId>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement =
                c.prepare_cached("SELECT room_id FROM forgotten_rooms WHERE user_id = ?1")?;
            let rows = statement.query_map([user_id.as_str()], |row| row.get::<_, String>(0))?;
            rows.map(|room_id| Ok(OwnedRoomId::try_from(room_id?)?)).collect()
        })
        .await
    }

    async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> StoreResult<bool> {
        let (alias, room_id, creator) = (alias.to_owned(), room_id.to_owned(), creator.to_owned());
        self.write(move |c| {
            let inserted = c.execute(
                "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room_alias) DO NOTHING",
                params![alias.as_str(), room_id.as_str(), creator.as_str()],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn alias(&self, alias: &RoomAliasId) -> StoreResult<Option<AliasRecord>> {
        let alias = alias.to_owned();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT room_id, creator FROM room_aliases WHERE room_alias = ?1",
                    [alias.as_str()],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .optional()?;
            row.map(|(room_id, creator)| {
                Ok(AliasRecord {
                    alias: alias.clone(),
                    room_id: OwnedRoomId::try_from(room_id)?,
                    creator: OwnedUserId::try_from(creator)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn delete_alias(&self, alias: &RoomAliasId) -> StoreResult<bool> {
        let alias: OwnedRoomAliasId = alias.to_owned();
        self.write(move |c| {
            Ok(c.execute("DELETE FROM room_aliases WHERE room_alias = ?1", [alias.as_str()])? == 1)
        })
        .await
    }

    async fn room_aliases(&self, room_id: &RoomId) -> StoreResult<Vec<OwnedRoomAliasId>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT room_alias FROM room_aliases WHERE room_id = ?1 ORDER BY room_alias",
            )?;
            let aliases = statement.query_map([room_id.as_str()], |row| row.get::<_, String>(0))?;
            aliases.map(|alias| Ok(OwnedRoomAliasId::try_from(alias?)?)).collect()
        })
        .await
    }

    async fn set_published(&self, room_id: &RoomId, published: bool) -> StoreResult<()> {
        let room_id = room_id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE rooms SET published = ?2 WHERE room_id = ?1",
                params![room_id.as_str(), published],
            )?;
            Ok(())
        })
        .await
    }

    async fn is_published(&self, room_id: &RoomId) -> StoreResult<bool> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            let published = c
                .query_row(
                    "SELECT published FROM rooms WHERE room_id = ?1",
                    [room_id.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(published.unwrap_or(false))
        })
        .await
    }

    async fn published_rooms(&self) -> StoreResult<Vec<OwnedRoomId>> {
        self.read(|c| {
            let mut statement =
                c.prepare("SELECT room_id FROM rooms WHERE published = 1 ORDER BY created_ts")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.map(|room_id| Ok(OwnedRoomId::try_from(room_id?)?)).collect()
        })
        .await
    }

    async fn set_appservice_published(
        &self,
        listing: AppserviceListing,
        published: bool,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let sql = if published {
                "INSERT INTO appservice_room_directory (appservice_id, network_id, room_id)
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM appservice_room_directory
                 WHERE appservice_id = ?1 AND network_id = ?2 AND room_id = ?3"
            };
            let AppserviceListing { appservice_id, network_id, room_id } = &listing;
            c.execute(sql, params![appservice_id, network_id, room_id.as_str()])?;
            Ok(())
        })
        .await
    }

    async fn appservice_published_rooms(
        &self,
        network_id: Option<&str>,
    ) -> StoreResult<Vec<OwnedRoomId>> {
        let network_id = network_id.map(str::to_owned);
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT DISTINCT room_id FROM appservice_room_directory
                 WHERE ?1 IS NULL OR network_id = ?1 ORDER BY room_id",
            )?;
            let rows = statement.query_map([network_id], |row| row.get::<_, String>(0))?;
            rows.map(|room_id| Ok(OwnedRoomId::try_from(room_id?)?)).collect()
        })
        .await
    }
}

/// The writer connection seen by a room job.
struct Txn<'c> {
    c: &'c Connection,
}

impl RoomTxn for Txn<'_> {
    fn room_version(&self, room_id: &RoomId) -> StoreResult<Option<RoomVersionId>> {
        room_version(self.c, room_id)
    }

    fn create_room(&self, room_id: &RoomId, version: &RoomVersionId, ts: i64) -> StoreResult<()> {
        self.c.execute(
            "INSERT INTO rooms (room_id, room_version, created_ts) VALUES (?1, ?2, ?3)",
            params![room_id.as_str(), version.as_str(), ts],
        )?;
        Ok(())
    }

    fn forward_extremities(&self, room_id: &RoomId) -> StoreResult<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM forward_extremities f JOIN events e ON e.event_id = f.event_id
             WHERE f.room_id = ?1 ORDER BY e.stream_position"
        );
        query_events(self.c, &sql, [room_id.as_str()])
    }

    fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Option<EventRecord>> {
        current_state_event(self.c, room_id, event_type, state_key)
    }

    fn event(&self, event_id: &EventId) -> StoreResult<Option<EventRecord>> {
        event_by_id(self.c, event_id)
    }

    fn transaction_event(&self, txn: &TransactionKey) -> StoreResult<Option<OwnedEventId>> {
        transaction_event(self.c, txn)
    }

    fn current_state_map(&self, room_id: &RoomId) -> StoreResult<StateMap> {
        let mut statement = self.c.prepare_cached(
            "SELECT event_type, state_key, event_id FROM current_state WHERE room_id = ?1",
        )?;
        let rows = statement.query_map([room_id.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
        })?;
        rows.map(|row| {
            let (event_type, state_key, event_id) = row?;
            Ok(((event_type, state_key), OwnedEventId::try_from(event_id)?))
        })
        .collect()
    }

    fn event_state_group(&self, event_id: &EventId) -> StoreResult<Option<i64>> {
        let group: Option<Option<i64>> = self
            .c
            .prepare_cached("SELECT state_group FROM events WHERE event_id = ?1")?
            .query_row([event_id.as_str()], |row| row.get(0))
            .optional()?;
        Ok(group.flatten())
    }

    fn state_group_delta(&self, state_group: i64) -> StoreResult<Option<StateGroupDelta>> {
        let group: Option<(Option<i64>, i64)> = self
            .c
            .prepare_cached(
                "SELECT parent_group, chain_length FROM state_groups WHERE state_group = ?1",
            )?
            .query_row([state_group], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let Some((parent, chain_length)) = group else { return Ok(None) };
        let mut statement = self.c.prepare_cached(
            "SELECT event_type, state_key, event_id FROM state_group_entries
             WHERE state_group = ?1",
        )?;
        let rows = statement.query_map([state_group], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })?;
        let entries = rows
            .map(|row| {
                let (event_type, state_key, event_id) = row?;
                let event_id = event_id.map(OwnedEventId::try_from).transpose()?;
                Ok(StateEntry { event_type, state_key, event_id })
            })
            .collect::<StoreResult<_>>()?;
        Ok(Some(StateGroupDelta { parent, chain_length, entries }))
    }

    fn append_event(&self, event: NewEvent) -> StoreResult<i64> {
        let position = next_stream_position(self.c)?;
        let state_group = match &event.state_group {
            NewStateGroup::Existing(group) => *group,
            NewStateGroup::New(delta) => {
                insert_state_group(self.c, &event.room_id, position, delta)?;
                position
            }
        };
        insert_event(self.c, &event, position, state_group)?;
        super::relations::insert_relation(self.c, &event, position)?;
        super::search::insert_search_text(self.c, &event, position)?;
        update_extremities(self.c, &event)?;
        for change in &event.current_state {
            update_state(self.c, &event.room_id, change, position)?;
        }
        if let Some(txn) = &event.transaction {
            self.c.execute(
                "INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    txn.user_id.as_str(),
                    txn.device_id,
                    txn.scope,
                    txn.txn_id,
                    event.event_id.as_str()
                ],
            )?;
        }
        Ok(position)
    }

    fn redact_event(
        &self,
        event_id: &EventId,
        redacted_pdu: &str,
        redacted_by: &EventId,
    ) -> StoreResult<()> {
        self.c.execute(
            "UPDATE events SET pdu = ?2, redacted_by = ?3 WHERE event_id = ?1",
            params![event_id.as_str(), redacted_pdu, redacted_by.as_str()],
        )?;
        super::relations::delete_relation(self.c, event_id.as_str())?;
        super::search::delete_search_text(self.c, event_id.as_str())
    }
}

fn insert_event(
    c: &Connection,
    event: &NewEvent,
    position: i64,
    state_group: i64,
) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO events (stream_position, event_id, room_id, event_type, state_key, sender,
                             depth, origin_server_ts, pdu, replaces_state, state_group)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        position,
        event.event_id.as_str(),
        event.room_id.as_str(),
        event.event_type,
        event.state_key,
        event.sender.as_str(),
        event.depth,
        event.origin_server_ts,
        event.pdu,
        event.replaces_state.as_ref().map(|id| id.as_str()),
        state_group,
    ])?;
    Ok(())
}

fn insert_state_group(
    c: &Connection,
    room_id: &RoomId,
    state_group: i64,
    delta: &StateGroupDelta,
) -> StoreResult<()> {
    c.prepare_cached(
        "INSERT INTO state_groups (state_group, room_id, parent_group, chain_length)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![state_group, room_id.as_str(), delta.parent, delta.chain_length])?;
    let mut insert = c.prepare_cached(
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for entry in &delta.entries {
        let event_id = entry.event_id.as_ref().map(|id| id.as_str());
        insert.execute(params![state_group, entry.event_type, entry.state_key, event_id])?;
    }
    Ok(())
}

fn update_extremities(c: &Connection, event: &NewEvent) -> StoreResult<()> {
    let mut remove =
        c.prepare_cached("DELETE FROM forward_extremities WHERE room_id = ?1 AND event_id = ?2")?;
    for prev in &event.prev_events {
        remove.execute(params![event.room_id.as_str(), prev.as_str()])?;
    }
    c.prepare_cached("INSERT INTO forward_extremities (room_id, event_id) VALUES (?1, ?2)")?
        .execute(params![event.room_id.as_str(), event.event_id.as_str()])?;
    Ok(())
}

/// Applies one change of the current state and records it in `state_history`; a removed key is
/// recorded with event ID `''` (see the V3 migration).
fn update_state(
    c: &Connection,
    room_id: &RoomId,
    change: &CurrentStateChange,
    position: i64,
) -> StoreResult<()> {
    let Some(event_id) = &change.event_id else {
        c.prepare_cached(
            "DELETE FROM current_state WHERE room_id = ?1 AND event_type = ?2 AND state_key = ?3",
        )?
        .execute(params![room_id.as_str(), change.event_type, change.state_key])?;
        c.prepare_cached(
            "INSERT INTO state_history
                 (room_id, event_type, state_key, event_id, membership, stream_position)
             VALUES (?1, ?2, ?3, '', NULL, ?4)",
        )?
        .execute(params![
            room_id.as_str(),
            change.event_type,
            change.state_key,
            position
        ])?;
        return Ok(());
    };
    let values = params![
        room_id.as_str(),
        change.event_type,
        change.state_key,
        event_id.as_str(),
        change.membership,
        position
    ];
    c.prepare_cached(
        "INSERT INTO current_state
             (room_id, event_type, state_key, event_id, membership, stream_position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET
             event_id = excluded.event_id, membership = excluded.membership,
             stream_position = excluded.stream_position",
    )?
    .execute(values)?;
    c.prepare_cached(
        "INSERT INTO state_history
             (room_id, event_type, state_key, event_id, membership, stream_position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(values)?;
    if change.event_type == "m.room.member" && change.membership.as_deref() != Some("leave") {
        remember_room(c, room_id, &change.state_key)?;
    }
    Ok(())
}

/// A user who rejoins (or is invited back to, or banned from) a room they forgot has it back in
/// their sync: forgetting applies to the membership the user had left, not to later ones.
fn remember_room(c: &Connection, room_id: &RoomId, user_id: &str) -> StoreResult<()> {
    c.prepare_cached("DELETE FROM forgotten_rooms WHERE user_id = ?1 AND room_id = ?2")?
        .execute(params![user_id, room_id.as_str()])?;
    Ok(())
}

fn room_version(c: &Connection, room_id: &RoomId) -> StoreResult<Option<RoomVersionId>> {
    let version: Option<String> = c
        .prepare_cached("SELECT room_version FROM rooms WHERE room_id = ?1")?
        .query_row([room_id.as_str()], |row| row.get(0))
        .optional()?;
    Ok(version.map(RoomVersionId::try_from).transpose()?)
}

fn event_by_id(c: &Connection, event_id: &EventId) -> StoreResult<Option<EventRecord>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = ?1");
    Ok(query_events(c, &sql, [event_id.as_str()])?.pop())
}

fn current_state_event(
    c: &Connection,
    room_id: &RoomId,
    event_type: &str,
    state_key: &str,
) -> StoreResult<Option<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM current_state s JOIN events e ON e.event_id = s.event_id
         WHERE s.room_id = ?1 AND s.event_type = ?2 AND s.state_key = ?3"
    );
    Ok(query_events(c, &sql, params![room_id.as_str(), event_type, state_key])?.pop())
}

fn transaction_event(c: &Connection, txn: &TransactionKey) -> StoreResult<Option<OwnedEventId>> {
    let event_id: Option<String> = c
        .prepare_cached(
            "SELECT event_id FROM event_transactions
             WHERE user_id = ?1 AND device_id = ?2 AND scope = ?3 AND txn_id = ?4",
        )?
        .query_row(params![txn.user_id.as_str(), txn.device_id, txn.scope, txn.txn_id], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(event_id.map(OwnedEventId::try_from).transpose()?)
}

fn room_events(c: &Connection, query: &RoomEventsQuery) -> StoreResult<Vec<EventRecord>> {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.room_id = ?");
    let mut values: Vec<Box<dyn ToSql>> = vec![Box::new(query.room_id.to_string())];
    let (after, before) = match query.direction {
        Direction::Forward => (Some(query.from), query.to),
        Direction::Backward => (query.to, Some(query.from)),
    };
    if let Some(after) = after {
        sql.push_str(" AND e.stream_position > ?");
        values.push(Box::new(after));
    }
    if let Some(before) = before {
        sql.push_str(" AND e.stream_position < ?");
        values.push(Box::new(before));
    }
    push_globs(&mut sql, &mut values, "e.event_type", query.types.as_deref(), &query.not_types);
    push_list(&mut sql, &mut values, "e.sender", query.senders.as_deref(), &query.not_senders);
    if let Some(filter) = &query.relates_to {
        super::relations::push_relation_filter(&mut sql, &mut values, filter);
    }
    let order = if query.direction == Direction::Forward { "ASC" } else { "DESC" };
    sql.push_str(&format!(" ORDER BY e.stream_position {order} LIMIT ?"));
    values.push(Box::new(query.limit as i64));
    query_events(c, &sql, params_from_iter(values.iter()))
}

/// Adds type filters; `*` is a wildcard as the spec's filters allow. Each list is one JSON
/// parameter, so no filter can approach the bound-parameter limit.
fn push_globs(
    sql: &mut String,
    values: &mut Vec<Box<dyn ToSql>>,
    column: &str,
    only: Option<&[String]>,
    never: &[String],
) {
    if let Some(only) = only {
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM json_each(?) WHERE {column} GLOB json_each.value)"
        ));
        values.push(Box::new(serde_json::to_string(only).unwrap_or_default()));
    }
    if !never.is_empty() {
        sql.push_str(&format!(
            " AND NOT EXISTS (SELECT 1 FROM json_each(?) WHERE {column} GLOB json_each.value)"
        ));
        values.push(Box::new(serde_json::to_string(never).unwrap_or_default()));
    }
}

fn push_list(
    sql: &mut String,
    values: &mut Vec<Box<dyn ToSql>>,
    column: &str,
    only: Option<&[String]>,
    never: &[String],
) {
    if let Some(only) = only {
        sql.push_str(&format!(" AND {column} IN (SELECT value FROM json_each(?))"));
        values.push(Box::new(serde_json::to_string(only).unwrap_or_default()));
    }
    if !never.is_empty() {
        sql.push_str(&format!(" AND {column} NOT IN (SELECT value FROM json_each(?))"));
        values.push(Box::new(serde_json::to_string(never).unwrap_or_default()));
    }
}

pub(super) fn query_events(
    c: &Connection,
    sql: &str,
    values: impl rusqlite::Params,
) -> StoreResult<Vec<EventRecord>> {
    Ok(query_events_with(c, sql, values, |_| Ok(()))?
        .into_iter()
        .map(|(event, ())| event)
        .collect())
}

/// Like [`query_events`], for queries that select more columns after [`EVENT_COLUMNS`]: `extra`
/// reads them from each row.
pub(super) fn query_events_with<T>(
    c: &Connection,
    sql: &str,
    values: impl rusqlite::Params,
    extra: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<(EventRecord, T)>> {
    let mut statement = c.prepare_cached(sql)?;
    let rows = statement.query_map(values, |row| Ok((raw_event(row)?, extra(row)?)))?;
    rows.map(|row| {
        let (raw, extra) = row?;
        Ok((event_record(raw)?, extra))
    })
    .collect()
}

/// The columns of [`EVENT_COLUMNS`] as read.
type RawEvent = (
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
);

fn raw_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
    ))
}

fn event_record(raw: RawEvent) -> StoreResult<EventRecord> {
    let (position, event_id, room_id, event_type, state_key, sender, ts, depth, pdu, by, replaces) =
        raw;
    Ok(EventRecord {
        stream_position: position,
        event_id: OwnedEventId::try_from(event_id)?,
        room_id: OwnedRoomId::try_from(room_id)?,
        event_type,
        state_key,
        sender: OwnedUserId::try_from(sender)?,
        origin_server_ts: ts,
        depth,
        pdu,
        redacted_by: by.map(OwnedEventId::try_from).transpose()?,
        replaces_state: replaces.map(OwnedEventId::try_from).transpose()?,
    })
}
