//! SQLite queries for read receipts.

use async_trait::async_trait;
use ruma::OwnedRoomId;
use rusqlite::{Connection, OptionalExtension as _, ToSql, params};

use super::{MAX_PARAMS, SqliteStore, next_stream_position, placeholders};
use crate::store::{NewReceipt, ReceiptRecord, ReceiptStore, StoreResult};

#[async_trait]
impl ReceiptStore for SqliteStore {
    async fn set_receipt(&self, receipt: NewReceipt) -> StoreResult<Option<i64>> {
        self.write(move |c| {
            let thread = receipt.thread_id.clone().unwrap_or_default();
            if stored_position(c, &receipt, &thread)?.is_some_and(|p| p >= receipt.event_position) {
                return Ok(None);
            }
            let position = next_stream_position(c)?;
            c.execute(
                "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id,
                                       event_position, ts, stream_position)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE
                 SET event_id = excluded.event_id, event_position = excluded.event_position,
                     ts = excluded.ts, stream_position = excluded.stream_position",
                params![
                    receipt.room_id.as_str(),
                    receipt.user_id.as_str(),
                    receipt.receipt_type,
                    thread,
                    receipt.event_id.as_str(),
                    receipt.event_position,
                    receipt.ts,
                    position
                ],
            )?;
            Ok(Some(position))
        })
        .await
    }

    async fn receipts(
        &self,
        room_ids: &[OwnedRoomId],
        after: i64,
        upto: i64,
    ) -> StoreResult<Vec<ReceiptRecord>> {
        let room_ids = room_ids.to_vec();
        self.read(move |c| {
            let mut receipts = Vec::new();
            for chunk in room_ids.chunks(MAX_PARAMS) {
                let sql = format!(
                    "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_position
                     FROM receipts
                     WHERE stream_position > ? AND stream_position <= ? AND room_id IN ({})
                     ORDER BY stream_position",
                    placeholders(chunk.len())
                );
                let mut values: Vec<&dyn ToSql> = vec![&after, &upto];
                let ids: Vec<&str> = chunk.iter().map(|id| id.as_str()).collect();
                values.extend(ids.iter().map(|id| id as &dyn ToSql));
                let mut statement = c.prepare(&sql)?;
                let rows = statement.query_map(values.as_slice(), |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, i64>(5)?,
                        row.get::<_, i64>(6)?,
                    ))
                })?;
                for row in rows {
                    let (room_id, user_id, receipt_type, thread_id, event_id, ts, position) = row?;
                    receipts.push(ReceiptRecord {
                        room_id: room_id.try_into()?,
                        user_id: user_id.try_into()?,
                        receipt_type,
                        thread_id: Some(thread_id).filter(|t| !t.is_empty()),
                        event_id: event_id.try_into()?,
                        ts,
                        stream_position: position,
                    });
                }
            }
            Ok(receipts)
        })
        .await
    }
}

/// The event position of the stored receipt this one would replace.
fn stored_position(c: &Connection, receipt: &NewReceipt, thread: &str) -> StoreResult<Option<i64>> {
    Ok(c.query_row(
        "SELECT event_position FROM receipts
         WHERE room_id = ?1 AND user_id = ?2 AND receipt_type = ?3 AND thread_id = ?4",
        params![receipt.room_id.as_str(), receipt.user_id.as_str(), receipt.receipt_type, thread],
        |row| row.get(0),
    )
    .optional()?)
}
