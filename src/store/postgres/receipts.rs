//! PostgreSQL queries for read receipts.

use async_trait::async_trait;
use ruma::OwnedRoomId;

use super::{Conn, PostgresStore, execute, next_stream_position, query, query_opt};
use crate::store::{NewReceipt, ReceiptRecord, ReceiptStore, StoreResult};

#[async_trait]
impl ReceiptStore for PostgresStore {
    async fn set_receipt(&self, receipt: NewReceipt) -> StoreResult<Option<i64>> {
        self.write(move |w| w.block_on(upsert_receipt(w.conn(), &receipt))).await
    }

    async fn receipts(
        &self,
        room_ids: &[OwnedRoomId],
        after: i64,
        upto: i64,
    ) -> StoreResult<Vec<ReceiptRecord>> {
        let ids: Vec<&str> = room_ids.iter().map(|id| id.as_str()).collect();
        let rows = query(
            &*self.conn().await?,
            "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_position
             FROM receipts
             WHERE stream_position > $1 AND stream_position <= $2 AND room_id = ANY($3)
             ORDER BY stream_position",
            &[&after, &upto, &ids],
        )
        .await?;
        rows.iter()
            .map(|row| {
                let thread_id: String = row.try_get(3)?;
                Ok(ReceiptRecord {
                    room_id: row.try_get::<_, String>(0)?.try_into()?,
                    user_id: row.try_get::<_, String>(1)?.try_into()?,
                    receipt_type: row.try_get(2)?,
                    thread_id: Some(thread_id).filter(|t| !t.is_empty()),
                    event_id: row.try_get::<_, String>(4)?.try_into()?,
                    ts: row.try_get(5)?,
                    stream_position: row.try_get(6)?,
                })
            })
            .collect()
    }
}

/// Records the receipt unless the stored one is at the same or a later event.
async fn upsert_receipt(c: &Conn, receipt: &NewReceipt) -> StoreResult<Option<i64>> {
    let thread = receipt.thread_id.clone().unwrap_or_default();
    let (room_id, user_id) = (receipt.room_id.as_str(), receipt.user_id.as_str());
    let stored = query_opt(
        c,
        "SELECT event_position FROM receipts
         WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4",
        &[&room_id, &user_id, &receipt.receipt_type, &thread],
    )
    .await?;
    let stored: Option<i64> = stored.map(|row| row.try_get(0)).transpose()?;
    if stored.is_some_and(|position| position >= receipt.event_position) {
        return Ok(None);
    }
    let position = next_stream_position(c).await?;
    execute(
        c,
        "INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id,
                               event_position, ts, stream_position)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (room_id, user_id, receipt_type, thread_id) DO UPDATE
         SET event_id = excluded.event_id, event_position = excluded.event_position,
             ts = excluded.ts, stream_position = excluded.stream_position",
        &[
            &room_id,
            &user_id,
            &receipt.receipt_type,
            &thread,
            &receipt.event_id.as_str(),
            &receipt.event_position,
            &receipt.ts,
            &position,
        ],
    )
    .await?;
    Ok(Some(position))
}
