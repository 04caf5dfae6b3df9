//! The two ends of a move, whichever way it goes: SQLite to PostgreSQL, or back. The engine
//! (`super`) and the catch-up (`super::apply`) see only [`Source`], [`Snapshot`] and [`Target`];
//! each forwards to the backend's own side in `store::transfer`, so that the phases, the resume
//! rules and the reports are written once for both directions.
//!
//! Enums rather than trait objects: there are exactly two of each, the futures stay `Send`
//! (the move runs in `tokio::spawn`) without boxing, and a step one direction does not have
//! (rebuilding the indexes PostgreSQL set aside) is a plain no-op arm.

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, bail};

use super::{Direction, MoveRequest};
use crate::store::{
    StoreResult,
    switch::SwitchableStore,
    transfer::{
        Change, Digest, Row, TableSchema, Value,
        postgres::PostgresTarget,
        postgres_source::{PostgresSnapshot, PostgresSource},
        sqlite::{SqliteSnapshot, SqliteSource},
        sqlite_target::SqliteTarget,
    },
};

/// Where the data comes from.
pub(super) enum Source {
    Sqlite(SqliteSource),
    Postgres(PostgresSource),
}

/// A consistent view of the source.
pub(super) enum Snapshot {
    Sqlite(SqliteSnapshot),
    Postgres(PostgresSnapshot),
}

/// Where the data goes.
pub(super) enum Target {
    Postgres(PostgresTarget),
    Sqlite(SqliteTarget),
}

/// Where a table's copy has got to in the source's order: a SQLite row ID, or the primary key
/// of the last PostgreSQL row copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Cursor {
    Start,
    Rowid(i64),
    Key(Vec<Value>),
}

impl Cursor {
    fn rowid(&self) -> i64 {
        match self {
            Cursor::Rowid(rowid) => *rowid,
            _ => 0,
        }
    }

    fn key(&self) -> Option<Vec<Value>> {
        match self {
            Cursor::Key(key) => Some(key.clone()),
            _ => None,
        }
    }
}

/// Rows read from a snapshot, and the cursor after the last of them.
pub(super) struct Batch {
    pub rows: Vec<Row>,
    pub last: Cursor,
}

/// Both ends of a move, checked and opened, and the tables to move.
pub(super) struct Ends {
    pub source: Source,
    pub target: Target,
    pub tables: Vec<TableSchema>,
    /// Rough size the data takes at the target.
    pub estimated_bytes: u64,
}

/// Runs every check of the move's first step, then opens both ends. Nothing is written before
/// the checks have passed.
pub(super) async fn open(request: &MoveRequest) -> anyhow::Result<Ends> {
    match request.direction {
        Direction::ToPostgres => open_to_postgres(request).await,
        Direction::ToSqlite => open_to_sqlite(request).await,
    }
}

async fn open_to_postgres(request: &MoveRequest) -> anyhow::Result<Ends> {
    let source = SqliteSource::new(&request.sqlite_path);
    let tables = source.tables().await.context("cannot read the SQLite schema")?;
    let size = source.size_bytes().await?;
    let target = PostgresTarget::connect(&request.target_url).await?;
    super::refuse_occupied(&target.preflight().await?.state)?;
    Ok(Ends {
        source: Source::Sqlite(source),
        target: Target::Postgres(target),
        tables,
        estimated_bytes: size.saturating_mul(3) / 2,
    })
}

async fn open_to_sqlite(request: &MoveRequest) -> anyhow::Result<Ends> {
    let tables = check_to_sqlite(request).await?;
    let source = PostgresSource::new(&request.target_url);
    let size = source.size_bytes().await?;
    let target = SqliteTarget::open(&request.sqlite_path).await?;
    // SQLite keeps the same rows in well under the space PostgreSQL takes.
    Ok(Ends {
        source: Source::Postgres(source),
        target: Target::Sqlite(target),
        tables,
        estimated_bytes: size / 2,
    })
}

/// The checks of a move back, alone: PostgreSQL is reachable and its schema known, and the data
/// directory may take the new file. Writes nothing. Returns the tables to move.
pub(super) async fn check_to_sqlite(request: &MoveRequest) -> anyhow::Result<Vec<TableSchema>> {
    let source = PostgresSource::new(&request.target_url);
    source.preflight().await?;
    let tables = source.tables().await.context("cannot read the PostgreSQL schema")?;
    if !tables.iter().any(|t| t.name == "events") {
        bail!("the PostgreSQL database holds no Hearth data to move");
    }
    SqliteTarget::check(&request.sqlite_path).await?;
    Ok(tables)
}

/// How long a step that holds the server's writes paused may take on PostgreSQL before the move
/// gives up on it (a server that stopped answering), so that the writes go on.
const PAUSED_STEP_LIMIT: Duration = Duration::from_secs(30);

async fn within_pause<T>(step: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    match tokio::time::timeout(PAUSED_STEP_LIMIT, step).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("PostgreSQL did not answer within {} s", PAUSED_STEP_LIMIT.as_secs()),
    }
}

impl Source {
    /// The source of a move in `request`'s direction.
    pub(super) fn of(request: &MoveRequest) -> Self {
        match request.direction {
            Direction::ToPostgres => Source::Sqlite(SqliteSource::new(&request.sqlite_path)),
            Direction::ToSqlite => Source::Postgres(PostgresSource::new(&request.target_url)),
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Source::Sqlite(_) => "SQLite",
            Source::Postgres(_) => "PostgreSQL",
        }
    }

    /// Starts (or keeps) the change log; returns its epoch. On PostgreSQL, installing the
    /// triggers locks each table for a moment, so the server's writes pause around it (`store`),
    /// which keeps the triggers from deadlocking with a write in flight.
    pub(super) async fn start_change_log(
        &self,
        tables: &[TableSchema],
        store: Option<&Arc<SwitchableStore>>,
    ) -> StoreResult<String> {
        match self {
            Source::Sqlite(source) => source.start_change_log(tables).await,
            Source::Postgres(source) => {
                let _pause = match store {
                    Some(store) => Some(store.pause_writes().await),
                    None => None,
                };
                within_pause(source.start_change_log(tables)).await
            }
        }
    }

    /// Removes the change log. `store`: as for [`Self::start_change_log`]; `None` when the
    /// caller already holds the writes paused.
    pub(super) async fn stop_change_log(
        &self,
        store: Option<&Arc<SwitchableStore>>,
    ) -> StoreResult<()> {
        match self {
            Source::Sqlite(source) => source.stop_change_log().await,
            Source::Postgres(source) => {
                let _pause = match store {
                    Some(store) => Some(store.pause_writes().await),
                    None => None,
                };
                within_pause(source.stop_change_log()).await
            }
        }
    }

    pub(super) async fn snapshot(&self) -> StoreResult<Snapshot> {
        Ok(match self {
            Source::Sqlite(source) => Snapshot::Sqlite(source.snapshot().await?),
            Source::Postgres(source) => Snapshot::Postgres(source.snapshot().await?),
        })
    }
}

impl Snapshot {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Snapshot::Sqlite(_) => "SQLite",
            Snapshot::Postgres(_) => "PostgreSQL",
        }
    }

    pub(super) async fn log_position(&self) -> StoreResult<i64> {
        match self {
            Snapshot::Sqlite(s) => s.log_position().await,
            Snapshot::Postgres(s) => s.log_position().await,
        }
    }

    pub(super) async fn count(&self, table: &TableSchema) -> StoreResult<u64> {
        match self {
            Snapshot::Sqlite(s) => s.count(table).await,
            Snapshot::Postgres(s) => s.count(table).await,
        }
    }

    /// Up to `limit` rows after `after`, in the source's order.
    pub(super) async fn rows_after(
        &self,
        table: &TableSchema,
        after: &Cursor,
        limit: usize,
    ) -> StoreResult<Batch> {
        match self {
            Snapshot::Sqlite(s) => {
                let found = s.rows_after(table, after.rowid(), limit).await?;
                let last = found.last().map_or(after.clone(), |(rowid, _)| Cursor::Rowid(*rowid));
                Ok(Batch { rows: found.into_iter().map(|(_, row)| row).collect(), last })
            }
            Snapshot::Postgres(s) => {
                let key = after.key();
                let rows = s.rows_after(table, key.as_deref(), limit).await?;
                let last = rows.last().map_or(after.clone(), |row| Cursor::Key(table.key_of(row)));
                Ok(Batch { rows, last })
            }
        }
    }

    pub(super) async fn digest(&self, table: &TableSchema) -> StoreResult<Digest> {
        match self {
            Snapshot::Sqlite(s) => s.digest(table).await,
            Snapshot::Postgres(s) => s.digest(table).await,
        }
    }

    pub(super) async fn changes(
        &self,
        after: i64,
        up_to: i64,
        limit: usize,
    ) -> StoreResult<Vec<Change>> {
        match self {
            Snapshot::Sqlite(s) => s.changes(after, up_to, limit).await,
            Snapshot::Postgres(s) => s.changes(after, up_to, limit).await,
        }
    }

    pub(super) async fn row_by_key(
        &self,
        table: &TableSchema,
        key: &[Value],
    ) -> StoreResult<Option<Row>> {
        match self {
            Snapshot::Sqlite(s) => s.row_by_key(table, key).await,
            Snapshot::Postgres(s) => s.row_by_key(table, key).await,
        }
    }
}

impl Target {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Target::Postgres(_) => "PostgreSQL",
            Target::Sqlite(_) => "SQLite",
        }
    }

    /// Takes the target for this move. The SQLite target is a file in the data directory,
    /// whose lock (or the running server's one move at a time) already keeps others out.
    pub(super) async fn claim(&self) -> StoreResult<()> {
        match self {
            Target::Postgres(t) => t.claim().await,
            Target::Sqlite(_) => Ok(()),
        }
    }

    pub(super) async fn epoch(&self) -> StoreResult<Option<String>> {
        match self {
            Target::Postgres(t) => t.epoch().await,
            Target::Sqlite(t) => t.epoch().await,
        }
    }

    pub(super) async fn set_epoch(&mut self, epoch: &str) -> StoreResult<()> {
        match self {
            Target::Postgres(t) => t.set_epoch(epoch).await,
            Target::Sqlite(t) => t.set_epoch(epoch).await,
        }
    }

    pub(super) async fn prepare(&mut self, tables: &[TableSchema]) -> StoreResult<()> {
        match self {
            Target::Postgres(t) => t.prepare(tables).await,
            Target::Sqlite(t) => t.prepare(tables).await,
        }
    }

    /// The tables an earlier run copied completely.
    pub(super) async fn done_tables(&self) -> StoreResult<Vec<String>> {
        match self {
            Target::Postgres(t) => {
                let progress = t.progress().await?;
                Ok(progress.into_iter().filter(|p| p.done).map(|p| p.table).collect())
            }
            Target::Sqlite(t) => t.done_tables().await,
        }
    }

    pub(super) async fn restart_table(&mut self, table: &TableSchema) -> StoreResult<()> {
        match self {
            Target::Postgres(t) => t.restart_table(table).await,
            Target::Sqlite(t) => t.restart_table(table).await,
        }
    }

    /// Copies a batch and records, with it, how far the table is copied.
    pub(super) async fn copy_batch(
        &mut self,
        table: &TableSchema,
        rows: Vec<Row>,
        last: &Cursor,
        done: bool,
    ) -> StoreResult<()> {
        match self {
            Target::Postgres(t) => t.copy_batch(table, &rows, last.rowid(), done).await,
            Target::Sqlite(t) => t.copy_batch(table, rows, last.key(), done).await,
        }
    }

    /// Builds what the copy set aside (PostgreSQL's secondary indexes and constraints).
    pub(super) async fn rebuild_deferred(&mut self, on_table: impl Fn(&str)) -> StoreResult<()> {
        match self {
            Target::Postgres(t) => t.rebuild_deferred(on_table).await,
            Target::Sqlite(_) => Ok(()),
        }
    }

    /// What the copy set aside and has not rebuilt yet.
    pub(super) async fn deferred(&self) -> StoreResult<Vec<(String, String)>> {
        match self {
            Target::Postgres(t) => t.deferred().await,
            Target::Sqlite(_) => Ok(Vec::new()),
        }
    }

    pub(super) async fn apply_changes(
        &mut self,
        deletions: &[(&TableSchema, Vec<Value>)],
        upserts: &[(&TableSchema, Row)],
    ) -> StoreResult<()> {
        match self {
            Target::Postgres(t) => t.apply_changes(deletions, upserts).await,
            Target::Sqlite(t) => t.apply_changes(deletions, upserts).await,
        }
    }

    pub(super) async fn row_by_key(
        &self,
        table: &TableSchema,
        key: &[Value],
    ) -> StoreResult<Option<Row>> {
        match self {
            Target::Postgres(t) => t.row_by_key(table, key).await,
            Target::Sqlite(t) => t.row_by_key(table, key).await,
        }
    }

    pub(super) async fn count(&self, table: &TableSchema) -> StoreResult<u64> {
        match self {
            Target::Postgres(t) => t.count(table).await,
            Target::Sqlite(t) => t.count(table).await,
        }
    }

    pub(super) async fn digest(&self, table: &TableSchema) -> StoreResult<Digest> {
        match self {
            Target::Postgres(t) => t.digest(table).await,
            Target::Sqlite(t) => t.digest(table).await,
        }
    }
}
