//! The SQLite side of a move: the schema read from the file itself, consistent snapshots to copy
//! from, and a change log kept by triggers while the server goes on writing.
//!
//! The move works on connections of its own to the database file, beside the server's writer and
//! readers (WAL lets a snapshot read go on while the writer commits). The change log is a table
//! filled by `AFTER` triggers on every data table, in the same transaction as the change itself,
//! so it survives a crash of the process: a move that is resumed still knows everything that
//! changed since its first snapshot. The log and its triggers are removed when the move ends.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, anyhow, bail};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params_from_iter,
    types::{ToSqlOutput, ValueRef},
};

use super::{
    CHANGE_LOG_PREFIX, Change, Column, ColumnType, Digest, Row, TableSchema, Value,
    dependency_order, is_data_table,
};
use crate::store::StoreResult;

/// The change log's table.
const CHANGE_LOG: &str = "hearth_move_changes";
/// One row: the epoch of the change log, a random name given when it starts.
const EPOCH: &str = "hearth_move_epoch";

/// How long the move's connections wait for the server's writer to release the file.
const BUSY_TIMEOUT_MS: u32 = 10_000;

/// A SQLite database file to move data out of.
#[derive(Clone, Debug)]
pub struct SqliteSource {
    path: PathBuf,
}

impl SqliteSource {
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_owned() }
    }

    /// Hearth's data tables, in dependency order, as the file's schema declares them.
    pub async fn tables(&self) -> StoreResult<Vec<TableSchema>> {
        let path = self.path.clone();
        blocking(move || read_schema(&open(&path, false)?)).await
    }

    /// The size of the file's data, for the disk estimate.
    pub async fn size_bytes(&self) -> StoreResult<u64> {
        let path = self.path.clone();
        blocking(move || {
            let c = open(&path, false)?;
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let page_size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            Ok(u64::try_from(pages * page_size).unwrap_or(0))
        })
        .await
    }

    /// Starts (or, after a crash, keeps) the change log on `tables`. Returns its epoch: the
    /// same for as long as the log has run without a gap, a new one when it starts afresh.
    pub async fn start_change_log(&self, tables: &[TableSchema]) -> StoreResult<String> {
        let (path, tables) = (self.path.clone(), tables.to_vec());
        blocking(move || {
            let mut c = open(&path, true)?;
            // Immediate: a deferred transaction that reads first could not become a writer
            // once the server's writer commits, and would fail at once instead of waiting.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {CHANGE_LOG} (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     table_name TEXT NOT NULL,
                     row_key TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS {EPOCH} (epoch TEXT NOT NULL)"
            ))?;
            for table in &tables {
                tx.execute_batch(&triggers_for(table)?)?;
            }
            let existing: Option<String> =
                tx.query_row(&format!("SELECT epoch FROM {EPOCH}"), [], |r| r.get(0)).optional()?;
            let epoch = match existing {
                Some(epoch) => epoch,
                None => {
                    let epoch = new_epoch();
                    tx.execute(&format!("INSERT INTO {EPOCH} (epoch) VALUES (?1)"), [&epoch])?;
                    epoch
                }
            };
            tx.commit()?;
            Ok(epoch)
        })
        .await
    }

    /// Removes the change log and its triggers (also those of tables that no longer exist).
    pub async fn stop_change_log(&self) -> StoreResult<()> {
        let path = self.path.clone();
        blocking(move || {
            let mut c = open(&path, true)?;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let triggers: Vec<String> = {
                let mut statement = tx.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ?1",
                )?;
                let rows = statement
                    .query_map([format!("{CHANGE_LOG_PREFIX}%")], |row| row.get::<_, String>(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for trigger in triggers {
                tx.execute_batch(&format!("DROP TRIGGER IF EXISTS \"{trigger}\""))?;
            }
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS {CHANGE_LOG}; DROP TABLE IF EXISTS {EPOCH}"
            ))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// A consistent, read-only view of the whole file as it is now.
    pub async fn snapshot(&self) -> StoreResult<SqliteSnapshot> {
        let path = self.path.clone();
        let connection = blocking(move || {
            let c = open(&path, false)?;
            // A read transaction's snapshot starts with its first read.
            c.execute_batch("BEGIN")?;
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
            Ok(c)
        })
        .await?;
        Ok(SqliteSnapshot { connection: Arc::new(Mutex::new(connection)) })
    }
}

/// A read transaction held open: every read sees the file as it was when it began.
pub struct SqliteSnapshot {
    connection: Arc<Mutex<Connection>>,
}

impl SqliteSnapshot {
    /// Runs `f` on the snapshot's connection, off the async runtime.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let connection = self.connection.clone();
        blocking(move || {
            let connection = connection.lock().map_err(|_| anyhow!("a snapshot read panicked"))?;
            f(&connection)
        })
        .await
    }

    /// The newest change-log entry this snapshot sees (0 when there is none).
    pub async fn log_position(&self) -> StoreResult<i64> {
        self.with(|c| {
            let sql = format!("SELECT COALESCE(MAX(id), 0) FROM {CHANGE_LOG}");
            Ok(c.query_row(&sql, [], |r| r.get(0))?)
        })
        .await
    }

    pub async fn count(&self, table: &TableSchema) -> StoreResult<u64> {
        let sql = format!("SELECT count(*) FROM \"{}\"", table.name);
        self.with(move |c| Ok(c.query_row(&sql, [], |r| r.get::<_, i64>(0))?.max(0) as u64)).await
    }

    /// Up to `limit` rows with a row ID above `after`, in row-ID order, with their row IDs.
    pub async fn rows_after(
        &self,
        table: &TableSchema,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Row)>> {
        let table = table.clone();
        self.with(move |c| {
            let sql = format!(
                "SELECT rowid, {} FROM \"{}\" WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                table.column_list(),
                table.name
            );
            let mut statement = c.prepare_cached(&sql)?;
            let mut rows = statement.query(rusqlite::params![after, limit as i64])?;
            let mut found = Vec::with_capacity(limit);
            while let Some(row) = rows.next()? {
                let rowid: i64 = row.get(0)?;
                found.push((rowid, read_row(row, 1, table.columns.len())?));
            }
            Ok(found)
        })
        .await
    }

    /// The digest of every row of the table.
    pub async fn digest(&self, table: &TableSchema) -> StoreResult<Digest> {
        let table = table.clone();
        self.with(move |c| {
            let sql = format!("SELECT {} FROM \"{}\"", table.column_list(), table.name);
            let mut statement = c.prepare(&sql)?;
            let mut rows = statement.query([])?;
            let mut digest = Digest::default();
            while let Some(row) = rows.next()? {
                digest.add(&read_row(row, 0, table.columns.len())?);
            }
            Ok(digest)
        })
        .await
    }

    /// Change-log entries with `after < id <= up_to`, oldest first, at most `limit`.
    pub async fn changes(&self, after: i64, up_to: i64, limit: usize) -> StoreResult<Vec<Change>> {
        self.with(move |c| {
            let sql = format!(
                "SELECT id, table_name, row_key FROM {CHANGE_LOG}
                 WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3"
            );
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params![after, up_to, limit as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?;
            rows.map(|row| {
                let (id, table, key) = row?;
                let key = serde_json::from_str(&key).context("a change-log key is not JSON")?;
                Ok(Change { id, table, key })
            })
            .collect()
        })
        .await
    }

    /// The row with this primary key, if there is one.
    pub async fn row_by_key(&self, table: &TableSchema, key: &[Value]) -> StoreResult<Option<Row>> {
        let (table, key) = (table.clone(), key.to_vec());
        self.with(move |c| row_by_key_in(c, &table, &key)).await
    }
}

/// The row of `table` with this primary key in the file `c` reads, if there is one.
pub(super) fn row_by_key_in(
    c: &Connection,
    table: &TableSchema,
    key: &[Value],
) -> StoreResult<Option<Row>> {
    let sql = format!(
        "SELECT {} FROM \"{}\" WHERE {}",
        table.column_list(),
        table.name,
        key_condition(table)
    );
    let mut statement = c.prepare_cached(&sql)?;
    let mut rows = statement.query(params_from_iter(key.iter()))?;
    match rows.next()? {
        Some(row) => Ok(Some(read_row(row, 0, table.columns.len())?)),
        None => Ok(None),
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            Value::Integer(n) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(*n)),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
        })
    }
}

pub(super) fn new_epoch() -> String {
    use rand::Rng as _;
    format!("{:032x}", rand::thread_rng().r#gen::<u128>())
}

pub(super) fn open(path: &Path, write: bool) -> StoreResult<Connection> {
    let flags =
        if write { OpenFlags::SQLITE_OPEN_READ_WRITE } else { OpenFlags::SQLITE_OPEN_READ_ONLY }
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    connection.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))?;
    Ok(connection)
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f).await.context("a database task panicked")?
}

/// Reads the data tables, their columns, keys and references from the file's schema.
///
/// Only ordinary tables count: the search index (an FTS5 virtual table and its shadow tables) is
/// derived from `event_search`, and the target's own triggers or index rebuild it from the rows
/// the move copies.
pub(super) fn read_schema(c: &Connection) -> StoreResult<Vec<TableSchema>> {
    let names: Vec<String> = {
        let mut statement = c.prepare(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table'
             ORDER BY name",
        )?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let tables = names
        .into_iter()
        .filter(|name| is_data_table(name))
        .map(|name| table_schema(c, name))
        .collect::<StoreResult<Vec<_>>>()?;
    dependency_order(tables)
}

fn table_schema(c: &Connection, name: String) -> StoreResult<TableSchema> {
    let mut columns = Vec::new();
    let mut keyed = Vec::new();
    let mut statement =
        c.prepare("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")?;
    let rows = statement.query_map([&name], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
    })?;
    for row in rows {
        let (column, declared, pk) = row?;
        let Some(column_type) = ColumnType::from_declared(&declared) else {
            bail!("column {name}.{column} has type {declared:?}, which the move does not know");
        };
        if pk > 0 {
            keyed.push((pk, columns.len()));
        }
        columns.push(Column { name: column, column_type });
    }
    if keyed.is_empty() {
        bail!("table {name} has no primary key, which the move needs");
    }
    keyed.sort_unstable();
    let mut statement =
        c.prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1) ORDER BY 1")?;
    let references = statement
        .query_map([&name], |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TableSchema {
        name,
        columns,
        primary_key: keyed.into_iter().map(|(_, i)| i).collect(),
        references,
    })
}

/// The insert, update and delete triggers that log a table's changed keys.
fn triggers_for(table: &TableSchema) -> StoreResult<String> {
    let key = |side: &str| {
        let columns: Vec<String> = table
            .primary_key
            .iter()
            .map(|&i| format!("{side}.\"{}\"", table.columns[i].name))
            .collect();
        format!("json_array({})", columns.join(", "))
    };
    let log = |side: &str| {
        format!(
            "INSERT INTO {CHANGE_LOG} (table_name, row_key) VALUES ('{}', {});",
            table.name,
            key(side)
        )
    };
    if table.name.contains(['\'', '"']) {
        bail!("table name {:?} cannot be logged", table.name);
    }
    let name = &table.name;
    Ok(format!(
        "CREATE TRIGGER IF NOT EXISTS {CHANGE_LOG_PREFIX}{name}_insert AFTER INSERT ON \"{name}\"
         BEGIN {insert} END;
         CREATE TRIGGER IF NOT EXISTS {CHANGE_LOG_PREFIX}{name}_update AFTER UPDATE ON \"{name}\"
         BEGIN {old} {new} END;
         CREATE TRIGGER IF NOT EXISTS {CHANGE_LOG_PREFIX}{name}_delete AFTER DELETE ON \"{name}\"
         BEGIN {old} END;",
        insert = log("NEW"),
        old = log("OLD"),
        new = log("NEW"),
    ))
}

/// `a = ?1 AND b = ?2` over the primary key.
pub(super) fn key_condition(table: &TableSchema) -> String {
    let parts: Vec<String> = table
        .primary_key
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("\"{}\" = ?{}", table.columns[i].name, n + 1))
        .collect();
    parts.join(" AND ")
}

pub(super) fn read_row(row: &rusqlite::Row<'_>, first: usize, count: usize) -> StoreResult<Row> {
    (first..first + count)
        .map(|i| match row.get_ref(i)? {
            ValueRef::Null => Ok(Value::Null),
            ValueRef::Integer(n) => Ok(Value::Integer(n)),
            ValueRef::Text(text) => Ok(Value::Text(String::from_utf8(text.to_vec())?)),
            other => Err(anyhow!("column {i} holds a {:?} value", other.data_type())),
        })
        .collect()
}
