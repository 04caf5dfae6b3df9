//! SQLite queries for room summaries: member counts and heroes of many rooms, and a few state
//! events of each, in chunks of room IDs that stay under SQLite's parameter limit.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ruma::{OwnedRoomId, UserId};
use rusqlite::{Connection, ToSql};

use super::{
    MAX_PARAMS, SqliteStore, placeholders,
    rooms::{EVENT_COLUMNS, query_events},
};
use crate::store::{
    EventRecord, MemberSummary, StoreResult,
    summaries::{HeroRow, RoomSummaryStore, assemble, count_sql, hero_sql},
};

#[async_trait]
impl RoomSummaryStore for SqliteStore {
    async fn member_summaries(
        &self,
        room_ids: &[OwnedRoomId],
        user_id: &UserId,
    ) -> StoreResult<BTreeMap<OwnedRoomId, MemberSummary>> {
        let (room_ids, user_id) = (room_ids.to_vec(), user_id.to_string());
        self.read(move |c| {
            let (mut counts, mut heroes) = (Vec::new(), Vec::new());
            // One parameter is the user's.
            for chunk in room_ids.chunks(MAX_PARAMS - 1) {
                let rooms = format!("IN ({})", placeholders(chunk.len()));
                let ids: Vec<&str> = chunk.iter().map(|id| id.as_str()).collect();
                counts.extend(member_counts(c, &rooms, &ids)?);
                heroes.extend(hero_rows(c, &rooms, &ids, &user_id)?);
            }
            Ok(assemble(counts, heroes))
        })
        .await
    }

    async fn current_state_events(
        &self,
        room_ids: &[OwnedRoomId],
        event_types: &[&str],
    ) -> StoreResult<Vec<EventRecord>> {
        let room_ids = room_ids.to_vec();
        let types: Vec<String> = event_types.iter().map(|t| (*t).to_owned()).collect();
        self.read(move |c| {
            let mut found = Vec::new();
            for chunk in room_ids.chunks(MAX_PARAMS.saturating_sub(types.len()).max(1)) {
                let sql = format!(
                    "SELECT {EVENT_COLUMNS} FROM current_state s
                     JOIN events e ON e.event_id = s.event_id
                     WHERE s.state_key = '' AND s.event_type IN ({}) AND s.room_id IN ({})",
                    placeholders(types.len()),
                    placeholders(chunk.len())
                );
                let mut values: Vec<&dyn ToSql> = types.iter().map(|t| t as &dyn ToSql).collect();
                let ids: Vec<&str> = chunk.iter().map(|id| id.as_str()).collect();
                values.extend(ids.iter().map(|id| id as &dyn ToSql));
                found.extend(query_events(c, &sql, values.as_slice())?);
            }
            Ok(found)
        })
        .await
    }
}

fn member_counts(
    c: &Connection,
    rooms: &str,
    ids: &[&str],
) -> StoreResult<Vec<(OwnedRoomId, String, i64, i64)>> {
    let mut statement = c.prepare(&count_sql(rooms))?;
    let values: Vec<&dyn ToSql> = ids.iter().map(|id| id as &dyn ToSql).collect();
    let rows = statement.query_map(values.as_slice(), |row| {
        Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    })?;
    rows.map(|row| {
        let (room_id, membership, count, latest) = row?;
        Ok((OwnedRoomId::try_from(room_id)?, membership, count, latest))
    })
    .collect()
}

fn hero_rows(
    c: &Connection,
    rooms: &str,
    ids: &[&str],
    user_id: &str,
) -> StoreResult<Vec<HeroRow>> {
    let mut statement = c.prepare(&hero_sql(rooms, "?"))?;
    let mut values: Vec<&dyn ToSql> = ids.iter().map(|id| id as &dyn ToSql).collect();
    values.push(&user_id);
    let rows = statement.query_map(values.as_slice(), |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
    })?;
    rows.map(|row| {
        let (room_id, user_id, class) = row?;
        Ok(HeroRow { room_id: room_id.try_into()?, user_id: user_id.try_into()?, class })
    })
    .collect()
}
