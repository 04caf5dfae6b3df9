//! PostgreSQL queries for rooms: events, state groups, current state, memberships, aliases and
//! the directory. What a state group or a change of the current state holds is decided by
//! `crate::rooms::state`; this file only writes and reads it.
//!
//! The state at a stream position is derived from `state_history` as on SQLite: for each (type,
//! state key), the newest entry at or before that position, picked here with `DISTINCT ON`. Lists
//! of IDs are one array parameter (`= ANY($n)`), so no query grows with the number of rooms.
//! Text is sorted `COLLATE "C"` (by bytes, as SQLite does), whatever the database's collation.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ruma::{
    EventId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId,
    RoomVersionId, UserId,
};
use tokio_postgres::{Row, types::ToSql};

use super::{
    Conn, PostgresStore, Writer, current_stream_position, execute, flag, next_stream_position,
    query, query_opt,
};
use crate::store::{
    AliasRecord, AppendedEvent, AppserviceListing, CurrentStateChange, Direction, EventRecord,
    MembershipRecord, NewEvent, NewStateGroup, RelationSummary, RoomEventsQuery, RoomJob,
    RoomStore, RoomTxn, StateEntry, StateGroupDelta, StateMap, StoreResult, ThreadRoot,
    ThreadsQuery, TimestampQuery, TransactionKey, job_result, job_verdict,
};

pub(super) const EVENT_COLUMNS: &str = "e.stream_position, e.event_id, e.room_id, e.event_type, e.state_key, \
     e.sender, e.origin_server_ts, e.depth, e.pdu, e.redacted_by, e.replaces_state";

/// The latest `state_history` entry per (type, state key) in a position range of one room.
const STATE_IN_RANGE: &str = "SELECT DISTINCT ON (event_type, state_key) event_id
     FROM state_history
     WHERE room_id = $1 AND stream_position > $2 AND stream_position <= $3
     ORDER BY event_type, state_key, stream_position DESC";

/// A query parameter of a statement assembled at run time.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

#[async_trait]
impl RoomStore for PostgresStore {
    async fn write_rooms(&self, job: RoomJob) -> crate::Result<Vec<AppendedEvent>> {
        job_verdict(self.write(move |w| job_result(job(&Txn { w }))).await)
    }

    async fn current_position(&self) -> StoreResult<i64> {
        current_stream_position(&*self.conn().await?).await
    }

    async fn room_version(&self, room_id: &RoomId) -> StoreResult<Option<RoomVersionId>> {
        room_version(&*self.conn().await?, room_id).await
    }

    async fn event(&self, event_id: &EventId) -> StoreResult<Option<EventRecord>> {
        event_by_id(&*self.conn().await?, event_id).await
    }

    async fn events(&self, event_ids: &[OwnedEventId]) -> StoreResult<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = ANY($1)
             ORDER BY e.stream_position"
        );
        query_events(&*self.conn().await?, &sql, &[&id_strings(event_ids)]).await
    }

    async fn transaction_event(&self, key: &TransactionKey) -> StoreResult<Option<OwnedEventId>> {
        transaction_event(&*self.conn().await?, key).await
    }

    async fn transaction_ids(
        &self,
        user_id: &UserId,
        device_id: &str,
        event_ids: &[OwnedEventId],
    ) -> StoreResult<BTreeMap<OwnedEventId, String>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT event_id, txn_id FROM event_transactions
             WHERE user_id = $1 AND device_id = $2 AND event_id = ANY($3)",
            &[&user_id.as_str(), &device_id, &id_strings(event_ids)],
        )
        .await?;
        rows.iter()
            .map(|row| {
                let event_id: String = row.try_get(0)?;
                Ok((OwnedEventId::try_from(event_id)?, row.try_get(1)?))
            })
            .collect()
    }

    async fn current_state(&self, room_id: &RoomId) -> StoreResult<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM current_state s JOIN events e ON e.event_id = s.event_id
             WHERE s.room_id = $1 ORDER BY e.stream_position"
        );
        query_events(&*self.conn().await?, &sql, &[&room_id.as_str()]).await
    }

    async fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Option<EventRecord>> {
        current_state_event(&*self.conn().await?, room_id, event_type, state_key).await
    }

    async fn state_key_history(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM state_history s JOIN events e ON e.event_id = s.event_id
             WHERE s.room_id = $1 AND s.event_type = $2 AND s.state_key = $3
             ORDER BY s.stream_position"
        );
        let params: [&(dyn ToSql + Sync); 3] = [&room_id.as_str(), &event_type, &state_key];
        query_events(&*self.conn().await?, &sql, &params).await
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
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM ({STATE_IN_RANGE}) s
             JOIN events e ON e.event_id = s.event_id ORDER BY e.stream_position"
        );
        query_events(&*self.conn().await?, &sql, &[&room_id.as_str(), &from, &to]).await
    }

    async fn membership(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        at: Option<i64>,
    ) -> StoreResult<Option<MembershipRecord>> {
        let at = at.unwrap_or(i64::MAX);
        let row = query_opt(
            &*self.conn().await?,
            "SELECT membership, event_id, stream_position FROM state_history
             WHERE room_id = $1 AND event_type = 'm.room.member' AND state_key = $2
               AND stream_position <= $3
             ORDER BY stream_position DESC LIMIT 1",
            &[&room_id.as_str(), &user_id.as_str(), &at],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let Some(membership) = row.try_get::<_, Option<String>>(0)? else { return Ok(None) };
        Ok(Some(MembershipRecord {
            room_id: room_id.to_owned(),
            user_id: user_id.to_owned(),
            membership,
            event_id: OwnedEventId::try_from(row.try_get::<_, String>(1)?)?,
            stream_position: row.try_get(2)?,
        }))
    }

    async fn memberships_of(&self, user_id: &UserId) -> StoreResult<Vec<MembershipRecord>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT room_id, membership, event_id, stream_position FROM current_state
             WHERE state_key = $1 AND event_type = 'm.room.member'
             ORDER BY stream_position",
            &[&user_id.as_str()],
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(MembershipRecord {
                    room_id: OwnedRoomId::try_from(row.try_get::<_, String>(0)?)?,
                    user_id: user_id.to_owned(),
                    membership: row.try_get(1)?,
                    event_id: OwnedEventId::try_from(row.try_get::<_, String>(2)?)?,
                    stream_position: row.try_get(3)?,
                })
            })
            .collect()
    }

    async fn members_with(
        &self,
        room_id: &RoomId,
        membership: &str,
    ) -> StoreResult<Vec<OwnedUserId>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT state_key FROM current_state
             WHERE room_id = $1 AND event_type = 'm.room.member' AND membership = $2
             ORDER BY state_key COLLATE \"C\"",
            &[&room_id.as_str(), &membership],
        )
        .await?;
        rows.iter().map(|row| Ok(OwnedUserId::try_from(row.try_get::<_, String>(0)?)?)).collect()
    }

    async fn room_events(&self, query: RoomEventsQuery) -> StoreResult<Vec<EventRecord>> {
        room_events(&*self.conn().await?, &query).await
    }

    async fn rooms_changed(
        &self,
        room_ids: &[OwnedRoomId],
        from: i64,
        to: i64,
    ) -> StoreResult<Vec<OwnedRoomId>> {
        let ids: Vec<&str> = room_ids.iter().map(|id| id.as_str()).collect();
        let rows = query(
            &*self.conn().await?,
            "SELECT DISTINCT room_id FROM events
             WHERE stream_position > $1 AND stream_position <= $2 AND room_id = ANY($3)",
            &[&from, &to, &ids],
        )
        .await?;
        room_ids_of(&rows)
    }

    async fn events_by_timestamp(&self, query: TimestampQuery) -> StoreResult<Vec<EventRecord>> {
        let (comparison, order) = match query.direction {
            Direction::Forward => (">=", "ASC"),
            Direction::Backward => ("<=", "DESC"),
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e
             WHERE e.room_id = $1 AND e.origin_server_ts {comparison} $2
             ORDER BY e.origin_server_ts {order}, e.stream_position {order} LIMIT $3 OFFSET $4"
        );
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        let room_id = query.room_id.as_str();
        query_events(&*self.conn().await?, &sql, &[&room_id, &query.ts, &limit, &offset]).await
    }

    async fn thread_roots(&self, query: ThreadsQuery) -> StoreResult<Vec<ThreadRoot>> {
        super::relations::thread_roots(&*self.conn().await?, &query).await
    }

    async fn relation_summaries(
        &self,
        parents: &[OwnedEventId],
        user_id: &UserId,
    ) -> StoreResult<BTreeMap<OwnedEventId, RelationSummary>> {
        if parents.is_empty() {
            return Ok(BTreeMap::new());
        }
        super::relations::relation_summaries(&*self.conn().await?, parents, user_id).await
    }

    async fn forget_room(&self, user_id: &UserId, room_id: &RoomId) -> StoreResult<()> {
        let (user_id, room_id) = (user_id.to_owned(), room_id.to_owned());
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&user_id.as_str(), &room_id.as_str()],
            ))?;
            Ok(())
        })
        .await
    }

    async fn forgotten_rooms(&self, user_id: &UserId) -> StoreResult<Vec<OwnedRoomId>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT room_id FROM forgotten_rooms WHERE user_id = $1",
            &[&user_id.as_str()],
        )
        .await?;
        room_ids_of(&rows)
    }

    async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
    ) -> StoreResult<bool> {
        let (alias, room_id, creator) = (alias.to_owned(), room_id.to_owned(), creator.to_owned());
        self.write(move |w| {
            let inserted = w.block_on(execute(
                w.conn(),
                "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES ($1, $2, $3)
                 ON CONFLICT (room_alias) DO NOTHING",
                &[&alias.as_str(), &room_id.as_str(), &creator.as_str()],
            ))?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn alias(&self, alias: &RoomAliasId) -> StoreResult<Option<AliasRecord>> {
        let row = query_opt(
            &*self.conn().await?,
            "SELECT room_id, creator FROM room_aliases WHERE room_alias = $1",
            &[&alias.as_str()],
        )
        .await?;
        row.map(|row| {
            Ok(AliasRecord {
                alias: alias.to_owned(),
                room_id: OwnedRoomId::try_from(row.try_get::<_, String>(0)?)?,
                creator: OwnedUserId::try_from(row.try_get::<_, String>(1)?)?,
            })
        })
        .transpose()
    }

    async fn delete_alias(&self, alias: &RoomAliasId) -> StoreResult<bool> {
        let alias: OwnedRoomAliasId = alias.to_owned();
        self.write(move |w| {
            let deleted = w.block_on(execute(
                w.conn(),
                "DELETE FROM room_aliases WHERE room_alias = $1",
                &[&alias.as_str()],
            ))?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn room_aliases(&self, room_id: &RoomId) -> StoreResult<Vec<OwnedRoomAliasId>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT room_alias FROM room_aliases WHERE room_id = $1 ORDER BY room_alias COLLATE \"C\"",
            &[&room_id.as_str()],
        )
        .await?;
        rows.iter()
            .map(|row| Ok(OwnedRoomAliasId::try_from(row.try_get::<_, String>(0)?)?))
            .collect()
    }

    async fn set_published(&self, room_id: &RoomId, published: bool) -> StoreResult<()> {
        let room_id = room_id.to_owned();
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "UPDATE rooms SET published = $2 WHERE room_id = $1",
                &[&room_id.as_str(), &flag(published)],
            ))?;
            Ok(())
        })
        .await
    }

    async fn is_published(&self, room_id: &RoomId) -> StoreResult<bool> {
        let row = query_opt(
            &*self.conn().await?,
            "SELECT published FROM rooms WHERE room_id = $1",
            &[&room_id.as_str()],
        )
        .await?;
        Ok(row.map(|row| row.try_get::<_, i32>(0)).transpose()?.is_some_and(|p| p != 0))
    }

    async fn published_rooms(&self) -> StoreResult<Vec<OwnedRoomId>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT room_id FROM rooms WHERE published = 1 ORDER BY created_ts",
            &[],
        )
        .await?;
        room_ids_of(&rows)
    }

    async fn set_appservice_published(
        &self,
        listing: AppserviceListing,
        published: bool,
    ) -> StoreResult<()> {
        self.write(move |w| {
            let sql = if published {
                "INSERT INTO appservice_room_directory (appservice_id, network_id, room_id)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM appservice_room_directory
                 WHERE appservice_id = $1 AND network_id = $2 AND room_id = $3"
            };
            let AppserviceListing { appservice_id, network_id, room_id } = &listing;
            w.block_on(execute(w.conn(), sql, &[appservice_id, network_id, &room_id.as_str()]))?;
            Ok(())
        })
        .await
    }

    async fn appservice_published_rooms(
        &self,
        network_id: Option<&str>,
    ) -> StoreResult<Vec<OwnedRoomId>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT DISTINCT room_id FROM appservice_room_directory
             WHERE $1::TEXT IS NULL OR network_id = $1 ORDER BY room_id",
            &[&network_id],
        )
        .await?;
        room_ids_of(&rows)
    }
}

/// The writer's transaction seen by a room job: each call waits for its query on the writer
/// thread.
struct Txn<'w> {
    w: &'w Writer,
}

impl RoomTxn for Txn<'_> {
    fn room_version(&self, room_id: &RoomId) -> StoreResult<Option<RoomVersionId>> {
        self.w.block_on(room_version(self.w.conn(), room_id))
    }

    fn create_room(&self, room_id: &RoomId, version: &RoomVersionId, ts: i64) -> StoreResult<()> {
        self.w.block_on(execute(
            self.w.conn(),
            "INSERT INTO rooms (room_id, room_version, created_ts) VALUES ($1, $2, $3)",
            &[&room_id.as_str(), &version.as_str(), &ts],
        ))?;
        Ok(())
    }

    fn forward_extremities(&self, room_id: &RoomId) -> StoreResult<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM forward_extremities f JOIN events e ON e.event_id = f.event_id
             WHERE f.room_id = $1 ORDER BY e.stream_position"
        );
        self.w.block_on(query_events(self.w.conn(), &sql, &[&room_id.as_str()]))
    }

    fn current_state_event(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> StoreResult<Option<EventRecord>> {
        self.w.block_on(current_state_event(self.w.conn(), room_id, event_type, state_key))
    }

    fn event(&self, event_id: &EventId) -> StoreResult<Option<EventRecord>> {
        self.w.block_on(event_by_id(self.w.conn(), event_id))
    }

    fn transaction_event(&self, txn: &TransactionKey) -> StoreResult<Option<OwnedEventId>> {
        self.w.block_on(transaction_event(self.w.conn(), txn))
    }

    fn current_state_map(&self, room_id: &RoomId) -> StoreResult<StateMap> {
        let rows = self.w.block_on(query(
            self.w.conn(),
            "SELECT event_type, state_key, event_id FROM current_state WHERE room_id = $1",
            &[&room_id.as_str()],
        ))?;
        rows.iter()
            .map(|row| {
                let key = (row.try_get(0)?, row.try_get(1)?);
                Ok((key, OwnedEventId::try_from(row.try_get::<_, String>(2)?)?))
            })
            .collect()
    }

    fn event_state_group(&self, event_id: &EventId) -> StoreResult<Option<i64>> {
        let row = self.w.block_on(query_opt(
            self.w.conn(),
            "SELECT state_group FROM events WHERE event_id = $1",
            &[&event_id.as_str()],
        ))?;
        Ok(row.map(|row| row.try_get::<_, Option<i64>>(0)).transpose()?.flatten())
    }

    fn state_group_delta(&self, state_group: i64) -> StoreResult<Option<StateGroupDelta>> {
        self.w.block_on(state_group_delta(self.w.conn(), state_group))
    }

    fn append_event(&self, event: NewEvent) -> StoreResult<i64> {
        self.w.block_on(append_event(self.w.conn(), &event))
    }

    fn redact_event(
        &self,
        event_id: &EventId,
        redacted_pdu: &str,
        redacted_by: &EventId,
    ) -> StoreResult<()> {
        self.w.block_on(execute(
            self.w.conn(),
            "UPDATE events SET pdu = $2, redacted_by = $3 WHERE event_id = $1",
            &[&event_id.as_str(), &redacted_pdu, &redacted_by.as_str()],
        ))?;
        self.w.block_on(super::relations::delete_relation(self.w.conn(), event_id.as_str()))?;
        self.w.block_on(super::search::delete_search_text(self.w.conn(), event_id.as_str()))
    }
}

async fn state_group_delta(c: &Conn, state_group: i64) -> StoreResult<Option<StateGroupDelta>> {
    let Some(group) = query_opt(
        c,
        "SELECT parent_group, chain_length FROM state_groups WHERE state_group = $1",
        &[&state_group],
    )
    .await?
    else {
        return Ok(None);
    };
    let rows = query(
        c,
        "SELECT event_type, state_key, event_id FROM state_group_entries WHERE state_group = $1",
        &[&state_group],
    )
    .await?;
    let entries = rows
        .iter()
        .map(|row| {
            let event_id: Option<String> = row.try_get(2)?;
            Ok(StateEntry {
                event_type: row.try_get(0)?,
                state_key: row.try_get(1)?,
                event_id: event_id.map(OwnedEventId::try_from).transpose()?,
            })
        })
        .collect::<StoreResult<_>>()?;
    Ok(Some(StateGroupDelta {
        parent: group.try_get(0)?,
        chain_length: group.try_get(1)?,
        entries,
    }))
}

async fn append_event(c: &Conn, event: &NewEvent) -> StoreResult<i64> {
    let position = next_stream_position(c).await?;
    let state_group = match &event.state_group {
        NewStateGroup::Existing(group) => *group,
        NewStateGroup::New(delta) => {
            insert_state_group(c, event, position, delta).await?;
            position
        }
    };
    insert_event(c, event, position, state_group).await?;
    super::relations::insert_relation(c, event, position).await?;
    super::search::insert_search_text(c, event, position).await?;
    update_extremities(c, event).await?;
    for change in &event.current_state {
        update_state(c, &event.room_id, change, position).await?;
    }
    if let Some(txn) = &event.transaction {
        execute(
            c,
            "INSERT INTO event_transactions (user_id, device_id, scope, txn_id, event_id)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &txn.user_id.as_str(),
                &txn.device_id,
                &txn.scope,
                &txn.txn_id,
                &event.event_id.as_str(),
            ],
        )
        .await?;
    }
    Ok(position)
}

async fn insert_event(
    c: &Conn,
    event: &NewEvent,
    position: i64,
    state_group: i64,
) -> StoreResult<()> {
    execute(
        c,
        "INSERT INTO events (stream_position, event_id, room_id, event_type, state_key, sender,
                             depth, origin_server_ts, pdu, replaces_state, state_group)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &position,
            &event.event_id.as_str(),
            &event.room_id.as_str(),
            &event.event_type,
            &event.state_key,
            &event.sender.as_str(),
            &event.depth,
            &event.origin_server_ts,
            &event.pdu,
            &event.replaces_state.as_ref().map(|id| id.as_str()),
            &state_group,
        ],
    )
    .await?;
    Ok(())
}

async fn insert_state_group(
    c: &Conn,
    event: &NewEvent,
    state_group: i64,
    delta: &StateGroupDelta,
) -> StoreResult<()> {
    execute(
        c,
        "INSERT INTO state_groups (state_group, room_id, parent_group, chain_length)
         VALUES ($1, $2, $3, $4)",
        &[&state_group, &event.room_id.as_str(), &delta.parent, &delta.chain_length],
    )
    .await?;
    if delta.entries.is_empty() {
        return Ok(());
    }
    let types: Vec<&str> = delta.entries.iter().map(|e| e.event_type.as_str()).collect();
    let keys: Vec<&str> = delta.entries.iter().map(|e| e.state_key.as_str()).collect();
    let ids: Vec<Option<&str>> =
        delta.entries.iter().map(|e| e.event_id.as_ref().map(|id| id.as_str())).collect();
    execute(
        c,
        "INSERT INTO state_group_entries (state_group, event_type, state_key, event_id)
         SELECT $1::BIGINT, * FROM UNNEST($2::TEXT[], $3::TEXT[], $4::TEXT[])",
        &[&state_group, &types, &keys, &ids],
    )
    .await?;
    Ok(())
}

async fn update_extremities(c: &Conn, event: &NewEvent) -> StoreResult<()> {
    execute(
        c,
        "DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = ANY($2)",
        &[&event.room_id.as_str(), &id_strings(&event.prev_events)],
    )
    .await?;
    execute(
        c,
        "INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)",
        &[&event.room_id.as_str(), &event.event_id.as_str()],
    )
    .await?;
    Ok(())
}

/// Applies one change of the current state and records it in `state_history`; a removed key is
/// recorded with event ID `''` (see the V3 migration).
async fn update_state(
    c: &Conn,
    room_id: &RoomId,
    change: &CurrentStateChange,
    position: i64,
) -> StoreResult<()> {
    let room_id = room_id.as_str();
    let Some(event_id) = &change.event_id else {
        execute(
            c,
            "DELETE FROM current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
            &[&room_id, &change.event_type, &change.state_key],
        )
        .await?;
        execute(
            c,
            "INSERT INTO state_history
                 (room_id, event_type, state_key, event_id, membership, stream_position)
             VALUES ($1, $2, $3, '', NULL, $4)",
            &[&room_id, &change.event_type, &change.state_key, &position],
        )
        .await?;
        return Ok(());
    };
    let event_id = event_id.as_str();
    let values: [&(dyn ToSql + Sync); 6] =
        [&room_id, &change.event_type, &change.state_key, &event_id, &change.membership, &position];
    execute(
        c,
        "INSERT INTO current_state
             (room_id, event_type, state_key, event_id, membership, stream_position)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET
             event_id = excluded.event_id, membership = excluded.membership,
             stream_position = excluded.stream_position",
        &values,
    )
    .await?;
    execute(
        c,
        "INSERT INTO state_history
             (room_id, event_type, state_key, event_id, membership, stream_position)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &values,
    )
    .await?;
    if change.event_type == "m.room.member" && change.membership.as_deref() != Some("leave") {
        // Rejoining (or being invited back to, or banned from) a forgotten room brings it back.
        execute(
            c,
            "DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2",
            &[&change.state_key, &room_id],
        )
        .await?;
    }
    Ok(())
}

async fn room_version(c: &Conn, room_id: &RoomId) -> StoreResult<Option<RoomVersionId>> {
    let row =
        query_opt(c, "SELECT room_version FROM rooms WHERE room_id = $1", &[&room_id.as_str()])
            .await?;
    let version = row.map(|row| row.try_get::<_, String>(0)).transpose()?;
    Ok(version.map(RoomVersionId::try_from).transpose()?)
}

async fn event_by_id(c: &Conn, event_id: &EventId) -> StoreResult<Option<EventRecord>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = $1");
    Ok(query_events(c, &sql, &[&event_id.as_str()]).await?.pop())
}

async fn current_state_event(
    c: &Conn,
    room_id: &RoomId,
    event_type: &str,
    state_key: &str,
) -> StoreResult<Option<EventRecord>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM current_state s JOIN events e ON e.event_id = s.event_id
         WHERE s.room_id = $1 AND s.event_type = $2 AND s.state_key = $3"
    );
    Ok(query_events(c, &sql, &[&room_id.as_str(), &event_type, &state_key]).await?.pop())
}

async fn transaction_event(c: &Conn, txn: &TransactionKey) -> StoreResult<Option<OwnedEventId>> {
    let row = query_opt(
        c,
        "SELECT event_id FROM event_transactions
         WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4",
        &[&txn.user_id.as_str(), &txn.device_id, &txn.scope, &txn.txn_id],
    )
    .await?;
    let event_id = row.map(|row| row.try_get::<_, String>(0)).transpose()?;
    Ok(event_id.map(OwnedEventId::try_from).transpose()?)
}

async fn room_events(c: &Conn, query: &RoomEventsQuery) -> StoreResult<Vec<EventRecord>> {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.room_id = $1");
    let mut values: Vec<Param> = vec![Box::new(query.room_id.to_string())];
    let (after, before) = match query.direction {
        Direction::Forward => (Some(query.from), query.to),
        Direction::Backward => (query.to, Some(query.from)),
    };
    if let Some(after) = after {
        push_param(&mut sql, &mut values, " AND e.stream_position > ", Box::new(after));
    }
    if let Some(before) = before {
        push_param(&mut sql, &mut values, " AND e.stream_position < ", Box::new(before));
    }
    push_globs(&mut sql, &mut values, "e.event_type", query.types.as_deref(), &query.not_types);
    push_list(&mut sql, &mut values, "e.sender", query.senders.as_deref(), &query.not_senders);
    if let Some(filter) = &query.relates_to {
        super::relations::push_relation_filter(&mut sql, &mut values, filter);
    }
    let order = if query.direction == Direction::Forward { "ASC" } else { "DESC" };
    sql.push_str(&format!(" ORDER BY e.stream_position {order}"));
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    push_param(&mut sql, &mut values, " LIMIT ", Box::new(limit));
    let params: Vec<&(dyn ToSql + Sync)> =
        values.iter().map(|value| value.as_ref() as &(dyn ToSql + Sync)).collect();
    query_events(c, &sql, &params).await
}

/// Appends `prefix` and the next parameter's placeholder to `sql`, and the value to `values`.
fn push_param(sql: &mut String, values: &mut Vec<Param>, prefix: &str, value: Param) {
    values.push(value);
    sql.push_str(&format!("{prefix}${}", values.len()));
}

/// Adds type filters; `*` is a wildcard as the spec's filters allow, nothing else is special.
fn push_globs(
    sql: &mut String,
    values: &mut Vec<Param>,
    column: &str,
    only: Option<&[String]>,
    never: &[String],
) {
    let patterns = |globs: &[String]| -> Param {
        Box::new(globs.iter().map(|glob| like_pattern(glob)).collect::<Vec<_>>())
    };
    if let Some(only) = only {
        push_param(sql, values, &format!(" AND {column} LIKE ANY("), patterns(only));
        sql.push(')');
    }
    if !never.is_empty() {
        push_param(sql, values, &format!(" AND NOT ({column} LIKE ANY("), patterns(never));
        sql.push_str("))");
    }
}

/// A filter glob as a `LIKE` pattern: `*` matches anything, `%`, `_` and `\` match themselves.
fn like_pattern(glob: &str) -> String {
    let mut pattern = String::with_capacity(glob.len());
    for character in glob.chars() {
        match character {
            '*' => pattern.push('%'),
            '%' | '_' | '\\' => {
                pattern.push('\\');
                pattern.push(character);
            }
            other => pattern.push(other),
        }
    }
    pattern
}

fn push_list(
    sql: &mut String,
    values: &mut Vec<Param>,
    column: &str,
    only: Option<&[String]>,
    never: &[String],
) {
    if let Some(only) = only {
        push_param(sql, values, &format!(" AND {column} = ANY("), Box::new(only.to_vec()));
        sql.push(')');
    }
    if !never.is_empty() {
        push_param(sql, values, &format!(" AND NOT ({column} = ANY("), Box::new(never.to_vec()));
        sql.push_str("))");
    }
}

fn id_strings(ids: &[OwnedEventId]) -> Vec<&str> {
    ids.iter().map(|id| id.as_str()).collect()
}

fn room_ids_of(rows: &[Row]) -> StoreResult<Vec<OwnedRoomId>> {
    rows.iter().map(|row| Ok(OwnedRoomId::try_from(row.try_get::<_, String>(0)?)?)).collect()
}

async fn query_events(
    c: &Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<EventRecord>> {
    query(c, sql, params).await?.iter().map(event_record).collect()
}

pub(super) fn event_record(row: &Row) -> StoreResult<EventRecord> {
    let optional_id = |index: usize| -> StoreResult<Option<OwnedEventId>> {
        let id: Option<String> = row.try_get(index)?;
        Ok(id.map(OwnedEventId::try_from).transpose()?)
    };
    Ok(EventRecord {
        stream_position: row.try_get(0)?,
        event_id: OwnedEventId::try_from(row.try_get::<_, String>(1)?)?,
        room_id: OwnedRoomId::try_from(row.try_get::<_, String>(2)?)?,
        event_type: row.try_get(3)?,
        state_key: row.try_get(4)?,
        sender: OwnedUserId::try_from(row.try_get::<_, String>(5)?)?,
        origin_server_ts: row.try_get(6)?,
        depth: row.try_get(7)?,
        pdu: row.try_get(8)?,
        redacted_by: optional_id(9)?,
        replaces_state: optional_id(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn filter_globs_become_like_patterns_with_only_the_star_special() {
        assert_eq!(like_pattern("m.room.*"), "m.room.%");
        assert_eq!(like_pattern("m.room_message"), "m.room\\_message");
        assert_eq!(like_pattern("100%"), "100\\%");
        assert_eq!(like_pattern("a\\b"), "a\\\\b");
        assert_eq!(like_pattern("*"), "%");
    }
}
