//! SQLite queries for the bus's durable streams.

use async_trait::async_trait;
use rusqlite::{OptionalExtension as _, params};

use super::SqliteStore;
use crate::store::{BusMessage, BusStore, StoreResult};

#[async_trait]
impl BusStore for SqliteStore {
    async fn bus_append(&self, stream: &str, subject: &str, payload: &str) -> StoreResult<i64> {
        let (stream, subject, payload) =
            (stream.to_owned(), subject.to_owned(), payload.to_owned());
        self.write(move |c| {
            let sequence = c.query_row(
                "INSERT INTO bus_messages (stream, sequence, subject, payload)
                 SELECT ?1, COALESCE(MAX(sequence), 0) + 1, ?2, ?3
                 FROM bus_messages WHERE stream = ?1
                 RETURNING sequence",
                params![stream, subject, payload],
                |row| row.get(0),
            )?;
            Ok(sequence)
        })
        .await
    }

    async fn bus_read(
        &self,
        stream: &str,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<BusMessage>> {
        let stream = stream.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT sequence, subject, payload FROM bus_messages
                 WHERE stream = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3",
            )?;
            let rows = statement.query_map(params![stream, after, limit as i64], |row| {
                Ok(BusMessage { sequence: row.get(0)?, subject: row.get(1)?, payload: row.get(2)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn bus_ack(&self, stream: &str, consumer: &str, sequence: i64) -> StoreResult<()> {
        let (stream, consumer) = (stream.to_owned(), consumer.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO bus_consumers (stream, consumer, acked_sequence) VALUES (?1, ?2, ?3)
                 ON CONFLICT (stream, consumer) DO UPDATE SET acked_sequence =
                     MAX(bus_consumers.acked_sequence, excluded.acked_sequence)",
                params![stream, consumer, sequence],
            )?;
            Ok(())
        })
        .await
    }

    async fn bus_acked(&self, stream: &str, consumer: &str) -> StoreResult<i64> {
        let (stream, consumer) = (stream.to_owned(), consumer.to_owned());
        self.read(move |c| {
            let acked = c
                .query_row(
                    "SELECT acked_sequence FROM bus_consumers WHERE stream = ?1 AND consumer = ?2",
                    params![stream, consumer],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(acked.unwrap_or(0))
        })
        .await
    }

    async fn bus_trim(&self, stream: &str, through: i64) -> StoreResult<u64> {
        let stream = stream.to_owned();
        self.write(move |c| {
            let deleted = c.execute(
                "DELETE FROM bus_messages WHERE stream = ?1 AND sequence <= ?2
                 AND sequence < (SELECT MAX(sequence) FROM bus_messages WHERE stream = ?1)",
                params![stream, through],
            )?;
            Ok(deleted as u64)
        })
        .await
    }
}
