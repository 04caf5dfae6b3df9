//! The PostgreSQL side of a move: checks before anything is written, the schema (by the same
//! migrations the backend runs), bulk copies with binary `COPY`, the move's progress kept in the
//! target itself, and digests read back to prove the copy.
//!
//! The move's progress lives in a table of its own in the target, written in the same
//! transaction as each batch it describes: after a crash the target says exactly how far the
//! copy got, and a non-empty database without that table is someone else's.

use std::pin::pin;

use anyhow::{Context as _, anyhow, bail};
use futures::TryStreamExt as _;
use tokio_postgres::{
    Client, NoTls,
    binary_copy::BinaryCopyInWriter,
    types::{ToSql, Type},
};

use super::{ColumnType, Digest, Row, TableSchema, Value};
use crate::store::StoreResult;

/// The move's progress table in the target.
const PROGRESS: &str = "hearth_move_progress";
/// The move's run: the epoch of the source's change log the progress relies on.
const RUN: &str = "hearth_move_run";
/// Secondary indexes and constraints set aside during the copy, with the SQL that rebuilds them.
const DEFERRED: &str = "hearth_move_deferred";
/// The key of the session advisory lock a move holds on its target, so that two moves (from two
/// servers, or a server and the command line) never write into one database at once.
const MOVE_LOCK_KEY: i64 = 0x4845_4152_5448_4d56; // "HEARTHMV"

/// What the copy sets aside, in the order it is rebuilt: unique constraints first, since a
/// foreign key may need one of them on the table it references, and foreign keys last.
const REBUILD_ORDER: [&str; 3] = ["unique", "index", "foreign"];

/// What the target database holds before the move writes anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// No tables at all.
    Empty,
    /// An earlier move that did not finish: it resumes.
    Unfinished,
    /// Tables that are not an unfinished move of Hearth's; nothing is touched.
    Occupied(Vec<String>),
}

/// What the checks before a move found.
#[derive(Clone, Debug)]
pub struct Preflight {
    pub server_version: String,
    pub state: TargetState,
}

/// How far an earlier run copied one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableProgress {
    pub table: String,
    /// The source row ID up to which rows are copied.
    pub last_rowid: i64,
    pub done: bool,
}

/// A PostgreSQL database to move data into.
pub struct PostgresTarget {
    client: Client,
}

impl PostgresTarget {
    /// Connects; the error says what to fix.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Ok(Self { client: connect_for_move(url).await? })
    }

    /// Checks the server version, the encoding, the right to create tables, and what the
    /// database holds. Writes nothing.
    pub async fn preflight(&self) -> StoreResult<Preflight> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('server_version_num')::integer,
                        current_setting('server_version'),
                        pg_encoding_to_char(encoding),
                        has_schema_privilege(current_user, 'public', 'CREATE')
                 FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .context("cannot read the PostgreSQL server's settings")?;
        let (number, version, encoding, can_create): (i32, String, String, bool) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
        if number < 120_000 {
            bail!("PostgreSQL {version} is too old: Hearth needs PostgreSQL 12 or later");
        }
        if encoding != "UTF8" {
            bail!(
                "the database is encoded in {encoding}, not UTF8: create it with \
                 `CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0`"
            );
        }
        if !can_create {
            bail!(
                "the database role may not create tables in the schema public: \
                 `GRANT CREATE ON SCHEMA public TO <role>` or make the role the database's owner"
            );
        }
        Ok(Preflight { server_version: version, state: self.state().await? })
    }

    async fn state(&self) -> StoreResult<TargetState> {
        let rows = self
            .client
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' ORDER BY 1",
                &[],
            )
            .await?;
        let tables: Vec<String> = rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
        Ok(if tables.is_empty() {
            TargetState::Empty
        } else if tables.iter().any(|t| t == PROGRESS || t == RUN || t == DEFERRED) {
            TargetState::Unfinished
        } else {
            TargetState::Occupied(tables)
        })
    }

    /// Takes the target for this move: a session lock that another move's connection cannot
    /// take while this one lives (it goes with the connection, also when the process dies).
    pub async fn claim(&self) -> StoreResult<()> {
        let row =
            self.client.query_one("SELECT pg_try_advisory_lock($1)", &[&MOVE_LOCK_KEY]).await?;
        if !row.try_get::<_, bool>(0)? {
            bail!(
                "another move into this PostgreSQL database is running (from another Hearth \
                 server or the command line); wait for it to end or cancel it there"
            );
        }
        Ok(())
    }

    /// Creates Hearth's tables (by the same migrations the backend runs) and the move's own
    /// tables, unless an earlier run did, and sets the tables' secondary indexes and
    /// constraints aside until [`Self::rebuild_deferred`]: keeping them up to date row by row
    /// costs the bulk copy more than twice what building them once afterwards does.
    pub async fn prepare(&mut self, tables: &[TableSchema]) -> StoreResult<()> {
        self.client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {PROGRESS} (
                     table_name TEXT PRIMARY KEY NOT NULL,
                     last_rowid BIGINT NOT NULL,
                     done INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS {RUN} (epoch TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS {DEFERRED} (
                     table_name TEXT NOT NULL,
                     name TEXT NOT NULL,
                     kind TEXT NOT NULL,
                     definition TEXT NOT NULL,
                     PRIMARY KEY (table_name, name))"
            ))
            .await?;
        crate::store::schema::postgres_migrations()
            .run_async(&mut self.client)
            .await
            .context("cannot create Hearth's tables in the target database")?;
        self.defer_secondary(tables).await?;
        for table in tables {
            self.client
                .execute(
                    &format!(
                        "INSERT INTO {PROGRESS} (table_name, last_rowid, done) VALUES ($1, 0, 0)
                         ON CONFLICT DO NOTHING"
                    ),
                    &[&table.name],
                )
                .await?;
        }
        Ok(())
    }

    /// Hearth's data tables in the target as PostgreSQL describes them: names, columns and
    /// types, for comparing with the source's schema.
    pub async fn columns(&self) -> StoreResult<Vec<(String, String, String)>> {
        let rows = self
            .client
            .query(
                "SELECT table_name::text, column_name::text, data_type::text
                 FROM information_schema.columns
                 WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
                &[],
            )
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
    }

    pub async fn progress(&self) -> StoreResult<Vec<TableProgress>> {
        let rows = self
            .client
            .query(&format!("SELECT table_name, last_rowid, done FROM {PROGRESS}"), &[])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TableProgress {
                    table: r.try_get(0)?,
                    last_rowid: r.try_get(1)?,
                    done: r.try_get::<_, i32>(2)? != 0,
                })
            })
            .collect()
    }

    /// Empties a table whose earlier copy cannot be kept, and resets its progress.
    pub async fn restart_table(&mut self, table: &TableSchema) -> StoreResult<()> {
        let tx = self.client.transaction().await?;
        // `TRUNCATE` would refuse a table that others reference; the copy order deletes the
        // referencing tables' rows first where that matters, so a plain delete does.
        tx.batch_execute(&format!("DELETE FROM \"{}\"", table.name)).await?;
        tx.execute(
            &format!("UPDATE {PROGRESS} SET last_rowid = 0, done = 0 WHERE table_name = $1"),
            &[&table.name],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Copies a batch of rows and records, in the same transaction, that the table is copied up
    /// to source row ID `last_rowid` (and whether it is complete).
    pub async fn copy_batch(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        last_rowid: i64,
        done: bool,
    ) -> StoreResult<()> {
        let tx = self.client.transaction().await?;
        if !rows.is_empty() {
            let sql =
                format!("COPY \"{}\" ({}) FROM STDIN BINARY", table.name, table.column_list());
            let sink = tx.copy_in(&sql).await?;
            let types: Vec<Type> = table.columns.iter().map(|c| pg_type(c.column_type)).collect();
            let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
            for row in rows {
                let values = to_params(table, row)?;
                let refs: Vec<&(dyn ToSql + Sync)> =
                    values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect();
                writer.as_mut().write(&refs).await?;
            }
            writer.finish().await?;
        }
        tx.execute(
            &format!("UPDATE {PROGRESS} SET last_rowid = $2, done = $3 WHERE table_name = $1"),
            &[&table.name, &last_rowid, &i32::from(done)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Brings rows up to date in one transaction: first `deletions` (keys the source no longer
    /// has), then `upserts` (rows as the source holds them). The caller orders deletions
    /// children first and upserts parents first, so no foreign key is broken on the way.
    pub async fn apply_changes(
        &mut self,
        deletions: &[(&TableSchema, Vec<Value>)],
        upserts: &[(&TableSchema, Row)],
    ) -> StoreResult<()> {
        let tx = self.client.transaction().await?;
        for (table, key) in deletions {
            let delete = format!("DELETE FROM \"{}\" WHERE {}", table.name, key_condition(table));
            tx.execute(&delete, &as_refs(&key_params(table, key)?)).await?;
        }
        for (table, row) in upserts {
            tx.execute(&upsert_statement(table), &as_refs(&to_params(table, row)?)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The move run this target belongs to (see [`super::sqlite::SqliteSource::log_epoch`]).
    pub async fn epoch(&self) -> StoreResult<Option<String>> {
        let row = self.client.query_opt(&format!("SELECT epoch FROM {RUN}"), &[]).await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    /// Records the run's epoch, replacing an older one.
    pub async fn set_epoch(&mut self, epoch: &str) -> StoreResult<()> {
        let tx = self.client.transaction().await?;
        tx.batch_execute(&format!("DELETE FROM {RUN}")).await?;
        tx.execute(&format!("INSERT INTO {RUN} (epoch) VALUES ($1)"), &[&epoch]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The row with this key, as the target holds it.
    pub async fn row_by_key(&self, table: &TableSchema, key: &[Value]) -> StoreResult<Option<Row>> {
        let sql = format!(
            "SELECT {} FROM \"{}\" WHERE {}",
            table.column_list(),
            table.name,
            key_condition(table)
        );
        let key_values = key_params(table, key)?;
        let row = self.client.query_opt(&sql, &as_refs(&key_values)).await?;
        row.map(|row| read_row(table, &row)).transpose()
    }

    pub async fn count(&self, table: &TableSchema) -> StoreResult<u64> {
        let sql = format!("SELECT count(*) FROM \"{}\"", table.name);
        let count: i64 = self.client.query_one(&sql, &[]).await?.try_get(0)?;
        Ok(count.max(0) as u64)
    }

    /// The digest of every row of the table, streamed.
    pub async fn digest(&self, table: &TableSchema) -> StoreResult<Digest> {
        digest_of(&self.client, table).await
    }

    /// Records and drops the secondary indexes, unique constraints and foreign keys of
    /// `tables`, all in one transaction. Those an earlier run set aside stay recorded; those it
    /// rebuilt are set aside again, since the copy is about to write the tables again.
    async fn defer_secondary(&mut self, tables: &[TableSchema]) -> StoreResult<()> {
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        let tx = self.client.transaction().await?;
        // Foreign keys first: one may rest on a unique constraint of the table it references.
        let constraints = tx
            .query(
                "SELECT c.conname::text, t.relname::text,
                        CASE c.contype WHEN 'f' THEN 'foreign' ELSE 'unique' END,
                        pg_get_constraintdef(c.oid)
                 FROM pg_constraint c
                 JOIN pg_class t ON t.oid = c.conrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                 WHERE n.nspname = 'public' AND c.contype IN ('f', 'u')
                   AND t.relname::text = ANY($1)
                 ORDER BY c.contype = 'f' DESC, c.conname",
                &[&names],
            )
            .await?;
        for row in &constraints {
            let (name, table, kind, definition): (String, String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            let rebuild = format!("ALTER TABLE \"{table}\" ADD CONSTRAINT \"{name}\" {definition}");
            record_deferred(&tx, &name, &table, &kind, &rebuild).await?;
            tx.batch_execute(&format!("ALTER TABLE \"{table}\" DROP CONSTRAINT \"{name}\""))
                .await?;
        }
        // Plain indexes: neither the primary key nor one that backs a constraint.
        let indexes = tx
            .query(
                "SELECT i.relname::text, t.relname::text, pg_get_indexdef(x.indexrelid)
                 FROM pg_index x
                 JOIN pg_class i ON i.oid = x.indexrelid
                 JOIN pg_class t ON t.oid = x.indrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                 WHERE n.nspname = 'public' AND NOT x.indisprimary
                   AND t.relname::text = ANY($1)
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                   WHERE c.conindid = x.indexrelid AND c.conrelid = t.oid)
                 ORDER BY 1",
                &[&names],
            )
            .await?;
        for row in &indexes {
            let (name, table, definition): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            record_deferred(&tx, &name, &table, "index", &definition).await?;
            tx.batch_execute(&format!("DROP INDEX \"{name}\"")).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The indexes and constraints set aside and not yet rebuilt, as (table, name) pairs.
    pub async fn deferred(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = self
            .client
            .query(&format!("SELECT table_name, name FROM {DEFERRED} ORDER BY 1, 2"), &[])
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Builds what [`Self::prepare`] set aside, one index or constraint per transaction
    /// together with crossing it off, so that a crash keeps what was built. `on_table` hears
    /// the table of each one before it is built. Unique and foreign keys are checked against
    /// every row as they are built: a copy that broke one fails here, not later.
    pub async fn rebuild_deferred(&mut self, on_table: impl Fn(&str)) -> StoreResult<()> {
        for kind in REBUILD_ORDER {
            let rows = self
                .client
                .query(
                    &format!(
                        "SELECT name, table_name, definition FROM {DEFERRED}
                         WHERE kind = $1 ORDER BY table_name, name"
                    ),
                    &[&kind],
                )
                .await?;
            for row in rows {
                let (name, table, definition): (String, String, String) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                on_table(&table);
                let tx = self.client.transaction().await?;
                tx.batch_execute(&definition)
                    .await
                    .with_context(|| format!("cannot build {name} on table {table}"))?;
                tx.execute(
                    &format!("DELETE FROM {DEFERRED} WHERE table_name = $1 AND name = $2"),
                    &[&table, &name],
                )
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Ends the move on this side: the move's own tables go.
    pub async fn finish(&self) -> StoreResult<()> {
        self.client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {PROGRESS}; DROP TABLE IF EXISTS {RUN};
                 DROP TABLE IF EXISTS {DEFERRED}"
            ))
            .await?;
        Ok(())
    }
}

/// A connection of the move's own, with the backend's checks of the URL (no TLS asked for),
/// its connect timeout and TCP keepalives (a vanished server ends the move instead of hanging
/// it), but without the statement limits meant for the server's short queries: a digest reads a
/// whole table, and a snapshot stays open while the other side takes a batch.
pub(super) async fn connect_for_move(url: &str) -> StoreResult<Client> {
    let config = crate::store::postgres::connect_config(url)?;
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot connect to the PostgreSQL server"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "the move's PostgreSQL connection ended");
        }
    });
    client
        .batch_execute("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        .await?;
    Ok(client)
}

/// The digest of every row of the table as `client` sees it (a snapshot's transaction, or the
/// target), streamed.
pub(super) async fn digest_of(client: &Client, table: &TableSchema) -> StoreResult<Digest> {
    let sql = format!("SELECT {} FROM \"{}\"", table.column_list(), table.name);
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let rows = client.query_raw(&sql, no_params).await?;
    let mut rows = pin!(rows);
    let mut digest = Digest::default();
    while let Some(row) = rows.try_next().await? {
        digest.add(&read_row(table, &row)?);
    }
    Ok(digest)
}

/// Notes an index or constraint as set aside, unless an earlier run did.
async fn record_deferred(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
    table: &str,
    kind: &str,
    definition: &str,
) -> StoreResult<()> {
    tx.execute(
        &format!(
            "INSERT INTO {DEFERRED} (name, table_name, kind, definition) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING"
        ),
        &[&name, &table, &kind, &definition],
    )
    .await?;
    Ok(())
}

pub(super) type Param = Box<dyn ToSql + Sync + Send>;

pub(super) fn as_refs(values: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn pg_type(column_type: ColumnType) -> Type {
    match column_type {
        ColumnType::Integer => Type::INT4,
        ColumnType::BigInt => Type::INT8,
        ColumnType::Text => Type::TEXT,
    }
}

/// A value as the parameter its column's PostgreSQL type takes.
fn to_param(column_type: ColumnType, value: &Value) -> StoreResult<Param> {
    Ok(match (column_type, value) {
        (ColumnType::Integer, Value::Null) => Box::new(None::<i32>),
        (ColumnType::BigInt, Value::Null) => Box::new(None::<i64>),
        (ColumnType::Text, Value::Null) => Box::new(None::<String>),
        (ColumnType::Integer, Value::Integer(n)) => {
            Box::new(i32::try_from(*n).map_err(|_| anyhow!("{n} does not fit an INTEGER column"))?)
        }
        (ColumnType::BigInt, Value::Integer(n)) => Box::new(*n),
        (ColumnType::Text, Value::Text(text)) => Box::new(text.clone()),
        (column_type, value) => bail!("a {column_type:?} column holds {value:?}"),
    })
}

fn to_params(table: &TableSchema, row: &[Value]) -> StoreResult<Vec<Param>> {
    table.columns.iter().zip(row).map(|(c, v)| to_param(c.column_type, v)).collect()
}

pub(super) fn key_params(table: &TableSchema, key: &[Value]) -> StoreResult<Vec<Param>> {
    if key.len() != table.primary_key.len() {
        bail!("a key of {} has {} values, not {}", table.name, key.len(), table.primary_key.len());
    }
    table
        .primary_key
        .iter()
        .zip(key)
        .map(|(&i, v)| to_param(table.columns[i].column_type, v))
        .collect()
}

/// `INSERT ... ON CONFLICT (key) DO UPDATE`: the row as given, whether or not its key exists.
fn upsert_statement(table: &TableSchema) -> String {
    let placeholders: Vec<String> = (1..=table.columns.len()).map(|n| format!("${n}")).collect();
    let key: Vec<&str> =
        table.primary_key.iter().map(|&i| table.columns[i].name.as_str()).collect();
    let updates: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.primary_key.contains(i))
        .map(|(_, c)| format!("\"{0}\" = excluded.\"{0}\"", c.name))
        .collect();
    let action = if updates.is_empty() {
        "DO NOTHING".to_owned()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    format!(
        "INSERT INTO \"{}\" ({}) VALUES ({}) ON CONFLICT ({}) {action}",
        table.name,
        table.column_list(),
        placeholders.join(", "),
        key.join(", ")
    )
}

pub(super) fn key_condition(table: &TableSchema) -> String {
    let parts: Vec<String> = table
        .primary_key
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("\"{}\" = ${}", table.columns[i].name, n + 1))
        .collect();
    parts.join(" AND ")
}

pub(super) fn read_row(table: &TableSchema, row: &tokio_postgres::Row) -> StoreResult<Row> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            Ok(match column.column_type {
                ColumnType::Integer => row
                    .try_get::<_, Option<i32>>(i)?
                    .map_or(Value::Null, |n| Value::Integer(n.into())),
                ColumnType::BigInt => {
                    row.try_get::<_, Option<i64>>(i)?.map_or(Value::Null, Value::Integer)
                }
                ColumnType::Text => {
                    row.try_get::<_, Option<String>>(i)?.map_or(Value::Null, Value::Text)
                }
            })
        })
        .collect()
}
