//! PostgreSQL queries for room summaries: member counts and heroes of many rooms, and a few state
//! events of each, with the room list as one array parameter.

use std::collections::BTreeMap;

use async_trait::async_trait;
use ruma::{OwnedRoomId, UserId};

use super::{
    PostgresStore, query,
    rooms::{EVENT_COLUMNS, event_record},
};
use crate::store::{
    EventRecord, MemberSummary, StoreResult,
    summaries::{HeroRow, RoomSummaryStore, assemble, count_sql, hero_sql},
};

#[async_trait]
impl RoomSummaryStore for PostgresStore {
    async fn member_summaries(
        &self,
        room_ids: &[OwnedRoomId],
        user_id: &UserId,
    ) -> StoreResult<BTreeMap<OwnedRoomId, MemberSummary>> {
        let ids: Vec<&str> = room_ids.iter().map(|id| id.as_str()).collect();
        let c = self.conn().await?;
        let rows = query(&c, &count_sql("= ANY($1)"), &[&ids]).await?;
        let counts = rows
            .iter()
            .map(|row| {
                let room_id = OwnedRoomId::try_from(row.try_get::<_, String>(0)?)?;
                Ok((room_id, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let rows = query(&c, &hero_sql("= ANY($1)", "$2"), &[&ids, &user_id.as_str()]).await?;
        let heroes = rows
            .iter()
            .map(|row| {
                Ok(HeroRow {
                    room_id: row.try_get::<_, String>(0)?.try_into()?,
                    user_id: row.try_get::<_, String>(1)?.try_into()?,
                    class: i64::from(row.try_get::<_, i32>(2)?),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(assemble(counts, heroes))
    }

    async fn current_state_events(
        &self,
        room_ids: &[OwnedRoomId],
        event_types: &[&str],
    ) -> StoreResult<Vec<EventRecord>> {
        let ids: Vec<&str> = room_ids.iter().map(|id| id.as_str()).collect();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM current_state s JOIN events e ON e.event_id = s.event_id
             WHERE s.state_key = '' AND s.event_type = ANY($1) AND s.room_id = ANY($2)"
        );
        let rows = query(&*self.conn().await?, &sql, &[&event_types, &ids]).await?;
        rows.iter().map(event_record).collect()
    }
}
