//! PostgreSQL queries for the bus's durable streams.

use async_trait::async_trait;

use super::{PostgresStore, execute, query, query_opt};
use crate::store::{BusMessage, BusStore, StoreResult};

#[async_trait]
impl BusStore for PostgresStore {
    async fn bus_append(&self, stream: &str, subject: &str, payload: &str) -> StoreResult<i64> {
        let (stream, subject, payload) =
            (stream.to_owned(), subject.to_owned(), payload.to_owned());
        self.write(move |w| {
            w.block_on(async {
                let rows = query(
                    w.conn(),
                    "INSERT INTO bus_messages (stream, sequence, subject, payload)
                     SELECT $1, COALESCE(MAX(sequence), 0) + 1, $2, $3
                     FROM bus_messages WHERE stream = $1
                     RETURNING sequence",
                    &[&stream, &subject, &payload],
                )
                .await?;
                let row = rows.first().ok_or_else(|| anyhow::anyhow!("no sequence returned"))?;
                Ok(row.try_get(0)?)
            })
        })
        .await
    }

    async fn bus_read(
        &self,
        stream: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<BusMessage>> {
        let c = self.conn().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = query(
            &c,
            "SELECT sequence, subject, payload FROM bus_messages
             WHERE stream = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
            &[&stream, &after, &limit],
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(BusMessage {
                    sequence: row.try_get(0)?,
                    subject: row.try_get(1)?,
                    payload: row.try_get(2)?,
                })
            })
            .collect()
    }

    async fn bus_ack(&self, stream: &str, consumer: &str, sequence: i64) -> StoreResult<()> {
        let (stream, consumer) = (stream.to_owned(), consumer.to_owned());
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "INSERT INTO bus_consumers (stream, consumer, acked_sequence) VALUES ($1, $2, $3)
                 ON CONFLICT (stream, consumer) DO UPDATE SET acked_sequence =
                     GREATEST(bus_consumers.acked_sequence, excluded.acked_sequence)",
                &[&stream, &consumer, &sequence],
            ))?;
            Ok(())
        })
        .await
    }

    async fn bus_acked(&self, stream: &str, consumer: &str) -> StoreResult<i64> {
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            "SELECT acked_sequence FROM bus_consumers WHERE stream = $1 AND consumer = $2",
            &[&stream, &consumer],
        )
        .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?.unwrap_or(0))
    }

    async fn bus_trim(&self, stream: &str, through: i64) -> StoreResult<u64> {
        let stream = stream.to_owned();
        self.write(move |w| {
            let deleted = w.block_on(execute(
                w.conn(),
                "DELETE FROM bus_messages WHERE stream = $1 AND sequence <= $2
                 AND sequence < (SELECT MAX(sequence) FROM bus_messages WHERE stream = $1)",
                &[&stream, &through],
            ))?;
            Ok(deleted)
        })
        .await
    }
}
