//! The PostgreSQL side of a move back to SQLite: the schema read from PostgreSQL's catalog,
//! consistent `REPEATABLE READ` snapshots paged by primary key, and a change log kept by
//! triggers while the server goes on writing.
//!
//! The change log is a table in the PostgreSQL database itself, filled by one plpgsql trigger
//! function on every data table in the same transaction as the change, so it outlives a crash of
//! Hearth and a restart of PostgreSQL. Its ids must be commit-ordered: a snapshot that sees the
//! entry with id 101 must also see every entry below it, or a catch-up reading `(100, 101]`
//! would skip 100 forever. A `bigserial` alone does not give that (ids are handed out before
//! commit), so every logging transaction takes one transaction-level advisory lock before it
//! takes an id, and holds it until it commits. This module never writes Hearth's data; the log
//! and its triggers are removed when the move ends.

use anyhow::{Context as _, bail};
use tokio_postgres::Client;

use super::{
    Change, Column, ColumnType, Digest, Row, TableSchema, Value, dependency_order, is_data_table,
    postgres::{as_refs, key_condition, key_params, read_row},
    sqlite::new_epoch,
};
use crate::store::StoreResult;

/// The change log's table.
const CHANGE_LOG: &str = "hearth_move_changes";
/// One row: the epoch of the change log, a random name given when it starts.
const EPOCH: &str = "hearth_move_epoch";
/// The trigger function, and the name of its trigger on every table.
const LOG_FUNCTION: &str = "hearth_move_log";
/// The advisory lock every logging transaction holds from its first logged change to its commit.
const LOG_LOCK_KEY: i64 = 0x4845_4152_5448_4c47; // "HEARTHLG"
/// How long installing or removing the triggers waits for a table another session holds.
const LOCK_WAIT: &str = "5s";
/// SQLSTATE of a deadlock, which installing triggers beside a writer may meet: retried.
const DEADLOCK: &str = "40P01";

/// A PostgreSQL database to move data out of.
///
/// Like the SQLite source, it holds no connection between calls: each call connects anew, so a
/// PostgreSQL server that went away and came back is simply reached again.
#[derive(Clone, Debug)]
pub struct PostgresSource {
    url: String,
}

impl PostgresSource {
    pub fn new(url: &str) -> Self {
        Self { url: url.to_owned() }
    }

    async fn client(&self) -> StoreResult<Client> {
        connect(&self.url).await
    }

    /// Checks the server version and the encoding (what the backend itself requires).
    pub async fn preflight(&self) -> StoreResult<()> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT current_setting('server_version_num')::integer,
                        current_setting('server_version')
                 FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .context("cannot read the PostgreSQL server's settings")?;
        let (number, version): (i32, String) = (row.try_get(0)?, row.try_get(1)?);
        if number < 120_000 {
            bail!("PostgreSQL {version} is too old: Hearth needs PostgreSQL 12 or later");
        }
        Ok(())
    }

    /// Hearth's data tables, in dependency order, as PostgreSQL's catalog describes them.
    pub async fn tables(&self) -> StoreResult<Vec<TableSchema>> {
        let client = self.client().await?;
        let columns = client
            .query(
                "SELECT c.table_name::text, c.column_name::text, c.data_type::text
                 FROM information_schema.columns c
                 JOIN information_schema.tables t
                   ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                 WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                 ORDER BY c.table_name, c.ordinal_position",
                &[],
            )
            .await?;
        let mut tables: Vec<TableSchema> = Vec::new();
        for row in &columns {
            let (table, column, declared): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if !is_data_table(&table) {
                continue;
            }
            let Some(column_type) = ColumnType::from_declared(&declared) else {
                bail!(
                    "column {table}.{column} has type {declared:?}, which the move does not know"
                );
            };
            if tables.last().is_none_or(|t| t.name != table) {
                tables.push(TableSchema {
                    name: table,
                    columns: Vec::new(),
                    primary_key: Vec::new(),
                    references: Vec::new(),
                });
            }
            let last = tables.last_mut().context("a table without columns")?;
            last.columns.push(Column { name: column, column_type });
        }
        read_keys(&client, &mut tables).await?;
        dependency_order(tables)
    }

    /// The size of the database, for the disk estimate.
    pub async fn size_bytes(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let row = client.query_one("SELECT pg_database_size(current_database())", &[]).await?;
        Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
    }

    /// Starts (or, after a crash, keeps) the change log on `tables`. Returns its epoch: the
    /// same for as long as the log has run without a gap, a new one when it starts afresh.
    ///
    /// Creating a trigger locks its table against writes for a moment, and a writer in the
    /// middle of a transaction over several tables may deadlock with that; PostgreSQL then
    /// aborts one of the two. Callers pause the server's writes around this call; a deadlock
    /// with anyone else is retried.
    pub async fn start_change_log(&self, tables: &[TableSchema]) -> StoreResult<String> {
        let mut attempt = 0;
        loop {
            match self.try_start_change_log(tables).await {
                Err(error) if attempt < 3 && is_deadlock(&error) => attempt += 1,
                outcome => return outcome,
            }
        }
    }

    async fn try_start_change_log(&self, tables: &[TableSchema]) -> StoreResult<String> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The server's writes are paused meanwhile: a session that holds a table (a long query,
        // a forgotten transaction) fails this step instead of holding them for ever.
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'")).await?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {CHANGE_LOG} (
                 id BIGSERIAL PRIMARY KEY,
                 table_name TEXT NOT NULL,
                 row_key TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS {EPOCH} (epoch TEXT NOT NULL);
             {function}",
            function = log_function()
        ))
        .await?;
        for table in tables {
            // Dropped and created again in the same transaction: no change goes unlogged.
            tx.batch_execute(&trigger_for(table)?).await?;
        }
        let existing = tx.query_opt(&format!("SELECT epoch FROM {EPOCH}"), &[]).await?;
        let epoch = match existing {
            Some(row) => row.try_get(0)?,
            None => {
                let epoch = new_epoch();
                tx.execute(&format!("INSERT INTO {EPOCH} (epoch) VALUES ($1)"), &[&epoch]).await?;
                epoch
            }
        };
        tx.commit().await?;
        Ok(epoch)
    }

    /// Removes the change log, its triggers (also those of tables that no longer exist) and its
    /// function. Hearth's data stays as it is.
    pub async fn stop_change_log(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The server's writes are paused meanwhile: a session that holds a table (a long query,
        // a forgotten transaction) fails this step instead of holding them for ever.
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'")).await?;
        let rows = tx
            .query(
                "SELECT c.relname::text FROM pg_trigger g
                 JOIN pg_class c ON c.oid = g.tgrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'public' AND g.tgname = $1",
                &[&LOG_FUNCTION],
            )
            .await?;
        for row in rows {
            let table: String = row.try_get(0)?;
            tx.batch_execute(&format!("DROP TRIGGER IF EXISTS {LOG_FUNCTION} ON \"{table}\""))
                .await?;
        }
        tx.batch_execute(&format!(
            "DROP FUNCTION IF EXISTS {LOG_FUNCTION}();
             DROP TABLE IF EXISTS {CHANGE_LOG};
             DROP TABLE IF EXISTS {EPOCH}"
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A consistent, read-only view of the whole database as it is now, on a connection of its
    /// own.
    pub async fn snapshot(&self) -> StoreResult<PostgresSnapshot> {
        let client = connect(&self.url).await?;
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        // The snapshot is taken by the transaction's first query.
        client.query_one("SELECT 1", &[]).await?;
        Ok(PostgresSnapshot { client })
    }
}

/// A `REPEATABLE READ` transaction held open: every read sees the database as it was when the
/// transaction took its snapshot.
pub struct PostgresSnapshot {
    client: Client,
}

impl PostgresSnapshot {
    /// The newest change-log entry this snapshot sees (0 when there is none).
    pub async fn log_position(&self) -> StoreResult<i64> {
        let sql = format!("SELECT COALESCE(MAX(id), 0)::bigint FROM {CHANGE_LOG}");
        Ok(self.client.query_one(&sql, &[]).await?.try_get(0)?)
    }

    pub async fn count(&self, table: &TableSchema) -> StoreResult<u64> {
        let sql = format!("SELECT count(*) FROM \"{}\"", table.name);
        let count: i64 = self.client.query_one(&sql, &[]).await?.try_get(0)?;
        Ok(count.max(0) as u64)
    }

    /// Up to `limit` rows whose primary key comes after `after` (from the first when `None`), in
    /// key order: keyset pagination, which the primary key's index answers at any depth.
    pub async fn rows_after(
        &self,
        table: &TableSchema,
        after: Option<&[Value]>,
        limit: usize,
    ) -> StoreResult<Vec<Row>> {
        let key: Vec<String> =
            table.primary_key.iter().map(|&i| format!("\"{}\"", table.columns[i].name)).collect();
        let key = key.join(", ");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                let sql = format!(
                    "SELECT {} FROM \"{}\" ORDER BY {key} LIMIT $1",
                    table.column_list(),
                    table.name
                );
                self.client.query(&sql, &[&limit]).await?
            }
            Some(after) => {
                let count = table.primary_key.len();
                let placeholders: Vec<String> = (1..=count).map(|n| format!("${n}")).collect();
                let sql = format!(
                    "SELECT {} FROM \"{}\" WHERE ({key}) > ({}) ORDER BY {key} LIMIT ${}",
                    table.column_list(),
                    table.name,
                    placeholders.join(", "),
                    count + 1
                );
                let values = key_params(table, after)?;
                let mut params = as_refs(&values);
                params.push(&limit);
                self.client.query(&sql, &params).await?
            }
        };
        rows.iter().map(|row| read_row(table, row)).collect()
    }

    /// The digest of every row of the table, streamed.
    pub async fn digest(&self, table: &TableSchema) -> StoreResult<Digest> {
        super::postgres::digest_of(&self.client, table).await
    }

    /// Change-log entries with `after < id <= up_to`, oldest first, at most `limit`.
    pub async fn changes(&self, after: i64, up_to: i64, limit: usize) -> StoreResult<Vec<Change>> {
        let sql = format!(
            "SELECT id, table_name, row_key FROM {CHANGE_LOG}
             WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.client.query(&sql, &[&after, &up_to, &limit]).await?;
        rows.iter()
            .map(|row| {
                let key: String = row.try_get(2)?;
                let key = serde_json::from_str(&key).context("a change-log key is not JSON")?;
                Ok(Change { id: row.try_get(0)?, table: row.try_get(1)?, key })
            })
            .collect()
    }

    /// The row with this primary key, if there is one.
    pub async fn row_by_key(&self, table: &TableSchema, key: &[Value]) -> StoreResult<Option<Row>> {
        let sql = format!(
            "SELECT {} FROM \"{}\" WHERE {}",
            table.column_list(),
            table.name,
            key_condition(table)
        );
        let values = key_params(table, key)?;
        let row = self.client.query_opt(&sql, &as_refs(&values)).await?;
        row.map(|row| read_row(table, &row)).transpose()
    }
}

/// Fills in every table's primary key (in key order) and the tables it references.
async fn read_keys(client: &Client, tables: &mut [TableSchema]) -> StoreResult<()> {
    let keys = client
        .query(
            "SELECT t.relname::text, a.attname::text
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, position)
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
             WHERE n.nspname = 'public' AND c.contype = 'p'
             ORDER BY t.relname, k.position",
            &[],
        )
        .await?;
    for row in &keys {
        let (name, column): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let Some(table) = tables.iter_mut().find(|t| t.name == name) else { continue };
        let index = table.columns.iter().position(|c| c.name == column);
        table.primary_key.push(index.context("a primary key names an unknown column")?);
    }
    let references = client
        .query(
            "SELECT DISTINCT t.relname::text, r.relname::text
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_class r ON r.oid = c.confrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = 'public' AND c.contype = 'f'
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    for row in &references {
        let (name, referenced): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(table) = tables.iter_mut().find(|t| t.name == name) {
            table.references.push(referenced);
        }
    }
    // In byte order, as SQLite lists them, whatever the database's collation.
    tables.iter_mut().for_each(|t| t.references.sort());
    if let Some(table) = tables.iter().find(|t| t.primary_key.is_empty()) {
        bail!("table {} has no primary key, which the move needs", table.name);
    }
    Ok(())
}

async fn connect(url: &str) -> StoreResult<Client> {
    super::postgres::connect_for_move(url).await
}

fn is_deadlock(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            .is_some_and(|code| code.code() == DEADLOCK)
    })
}

/// The trigger function: logs the table and the primary key (a JSON array, as
/// [`Value`] deserializes it) of the old and the new row. The key columns come as the trigger's
/// arguments.
fn log_function() -> String {
    let log = |side: &str| {
        format!(
            "doc := to_jsonb({side});
             logged := '[]'::jsonb;
             FOR i IN 0 .. TG_NARGS - 1 LOOP
                 logged := logged || jsonb_build_array(doc -> TG_ARGV[i]);
             END LOOP;
             INSERT INTO {CHANGE_LOG} (table_name, row_key) VALUES (TG_TABLE_NAME, logged::text);"
        )
    };
    format!(
        "CREATE OR REPLACE FUNCTION {LOG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $log$
         DECLARE
             doc jsonb;
             logged jsonb;
             i integer;
         BEGIN
             -- Held to the commit: ids become visible in the order they are handed out.
             PERFORM pg_advisory_xact_lock({LOG_LOCK_KEY});
             IF TG_OP <> 'INSERT' THEN {old} END IF;
             IF TG_OP <> 'DELETE' THEN {new} END IF;
             RETURN NULL;
         END
         $log$",
        old = log("OLD"),
        new = log("NEW"),
    )
}

/// Replaces the table's logging trigger, with its key columns as arguments.
fn trigger_for(table: &TableSchema) -> StoreResult<String> {
    if table.name.contains(['\'', '"']) || table.columns.iter().any(|c| c.name.contains('\'')) {
        bail!("table {:?} cannot be logged", table.name);
    }
    let key: Vec<String> =
        table.primary_key.iter().map(|&i| format!("'{}'", table.columns[i].name)).collect();
    let name = &table.name;
    Ok(format!(
        "DROP TRIGGER IF EXISTS {LOG_FUNCTION} ON \"{name}\";
         CREATE TRIGGER {LOG_FUNCTION} AFTER INSERT OR UPDATE OR DELETE ON \"{name}\"
         FOR EACH ROW EXECUTE FUNCTION {LOG_FUNCTION}({})",
        key.join(", ")
    ))
}
