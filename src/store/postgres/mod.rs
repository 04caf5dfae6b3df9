//! The PostgreSQL backend: a pool of connections for reads and one writer thread with group
//! commit, on the same tables and migrations as SQLite.
//!
//! Writes keep the shape of the SQLite backend: closures queued to one writer thread, which takes
//! every job waiting, runs each in a savepoint of one transaction, commits once and only then
//! answers. One writer means stream positions become visible in the order they were handed out,
//! which `/sync` relies on, and room jobs (synchronous closures that ruma's authorization rules
//! call back into) run unchanged: the writer thread is not a runtime thread, so it may wait for
//! each query with [`Handle::block_on`] while the runtime drives the connection.
//!
//! Reads are plain async queries on pooled connections. When the server cannot be reached, every
//! operation fails with [`Unavailable`] (a 503 for clients), and the pool reconnects by itself
//! once it is back.

mod bus;
mod rooms;
mod users;

use std::{
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::{runtime::Handle, sync::oneshot};
use tokio_postgres::{NoTls, Row, types::ToSql};

use super::{StoreResult, Unavailable};

mod embedded {
    refinery::embed_migrations!("src/store/migrations");
}

/// A pooled connection, with its statement cache.
type Conn = deadpool_postgres::ClientWrapper;

/// How many queued writes one transaction takes at most.
const MAX_BATCH: usize = 512;

/// Connections in the pool; the writer takes one of them for each batch.
const POOL_SIZE: usize = 8;

/// How long an operation waits for a connection (or for the server to answer a new one) before
/// it fails as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The oldest PostgreSQL Hearth runs on (as `server_version_num`).
const MIN_SERVER_VERSION: i32 = 120_000;

/// Runs after the batch commits (`Ok`) or fails to (`Err`), to answer the job's caller.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type WriteJob = Box<dyn FnOnce(&Writer) -> Completion + Send>;

/// The PostgreSQL store.
pub struct PostgresStore {
    /// Queue to the writer thread. The thread ends when the last sender is dropped.
    writer: mpsc::Sender<WriteJob>,
    pool: Pool,
}

/// What a write job runs with: the batch's connection, inside its transaction.
pub(crate) struct Writer {
    handle: Handle,
    connection: Object,
}

impl Writer {
    /// The connection, for the queries of one job.
    pub(crate) fn conn(&self) -> &Conn {
        &self.connection
    }

    /// Waits for a query (or several) on the writer thread.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }
}

impl PostgresStore {
    /// Connects, checks that the server fits, runs pending migrations and starts the writer.
    ///
    /// Must be called on a Tokio runtime; the runtime drives the connections from then on.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let pool = connect_pool(url)?;
        let mut connection = pool.get().await.map_err(unavailable)?;
        check_server(&connection).await?;
        embedded::migrations::runner()
            .run_async(&mut **connection)
            .await
            .context("cannot migrate the database schema")?;
        drop(connection);

        let (writer, queue) = mpsc::channel();
        let (handle, writer_pool) = (Handle::current(), pool.clone());
        thread::Builder::new()
            .name("postgres-writer".to_owned())
            .spawn(move || run_writer(handle, writer_pool, queue))
            .context("cannot start the database writer thread")?;
        Ok(Self { writer, pool })
    }

    /// Runs `f` on the writer thread; its writes are committed before this returns `Ok`.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Writer) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: WriteJob = Box::new(move |writer| {
            let result = in_savepoint(writer, f);
            Box::new(move |commit: Result<(), String>| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(error) => Err(anyhow!(Unavailable(format!("the commit failed: {error}")))),
                };
                let _ = reply.send(outcome);
            })
        });
        self.writer.send(job).map_err(|_| anyhow!("the database writer has stopped"))?;
        // A job is dropped unrun only when its batch could not begin: the server is away.
        answer.await.map_err(|_| anyhow!(Unavailable("the write could not begin".to_owned())))?
    }

    /// A pooled connection for reads.
    pub(crate) async fn conn(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(unavailable)
    }
}

/// Brings the empty database at `url` to schema version 1 holding the rows `sql` inserts, as a
/// release before state groups left it; opening it then runs the later migrations.
#[cfg(test)]
pub(crate) async fn seed_at_v1(url: &str, sql: &str) -> StoreResult<()> {
    let pool = connect_pool(url)?;
    let mut connection = pool.get().await.map_err(unavailable)?;
    embedded::migrations::runner()
        .set_target(refinery::Target::Version(1))
        .run_async(&mut **connection)
        .await
        .context("cannot migrate to version 1")?;
    connection.batch_execute(sql).await?;
    Ok(())
}

fn connect_pool(url: &str) -> StoreResult<Pool> {
    let mut config: tokio_postgres::Config =
        url.parse().context("the PostgreSQL connection URL is not valid")?;
    config.connect_timeout(CONNECT_TIMEOUT);
    if config.get_application_name().is_none() {
        config.application_name("hearth");
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Verified },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .context("cannot set up the PostgreSQL connection pool")
}

/// Refuses servers older than PostgreSQL 12 and databases not encoded in UTF-8.
async fn check_server(c: &Conn) -> StoreResult<()> {
    let row = c
        .query_one(
            "SELECT current_setting('server_version_num')::integer,
                    current_setting('server_version'),
                    pg_encoding_to_char(encoding)
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .context("cannot read the PostgreSQL server's version")?;
    let (number, version, encoding): (i32, String, String) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if number < MIN_SERVER_VERSION {
        anyhow::bail!("PostgreSQL {version} is too old: Hearth needs PostgreSQL 12 or later");
    }
    if encoding != "UTF8" {
        anyhow::bail!(
            "the database is encoded in {encoding}; Hearth needs UTF8 \
             (create it with `CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0`)"
        );
    }
    Ok(())
}

/// Marks a connection failure as [`Unavailable`], keeping its cause for the log.
pub(crate) fn unavailable(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow!(Unavailable(error.to_string()))
}

/// The writer thread: batches queued jobs into one transaction each.
fn run_writer(handle: Handle, pool: Pool, queue: mpsc::Receiver<WriteJob>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&handle, &pool, batch);
    }
}

fn run_batch(handle: &Handle, pool: &Pool, batch: Vec<WriteJob>) {
    let connection = match handle.block_on(begin(pool)) {
        Ok(connection) => connection,
        Err(error) => {
            tracing::warn!(%error, "cannot start a database transaction");
            // The jobs are never run; their callers learn why from the dropped reply.
            drop(batch);
            return;
        }
    };
    let writer = Writer { handle: handle.clone(), connection };
    let completions: Vec<Completion> = batch
        .into_iter()
        .map(|job| {
            catch_unwind(AssertUnwindSafe(|| job(&writer)))
                .unwrap_or_else(|_| job_failed("a database job panicked".to_owned()))
        })
        .collect();

    let commit = writer.block_on(writer.conn().batch_execute("COMMIT")).map_err(|error| {
        tracing::warn!(%error, "database commit failed");
        error.to_string()
    });
    for completion in completions {
        completion(commit.clone());
    }
}

async fn begin(pool: &Pool) -> StoreResult<Object> {
    let connection = pool.get().await.map_err(unavailable)?;
    connection.batch_execute("BEGIN").await.map_err(unavailable)?;
    Ok(connection)
}

fn job_failed(message: String) -> Completion {
    tracing::error!(%message, "database write job failed");
    Box::new(|_| {})
}

/// Runs `f` inside a savepoint: kept if it succeeds, rolled back if it fails.
fn in_savepoint<T>(writer: &Writer, f: impl FnOnce(&Writer) -> StoreResult<T>) -> StoreResult<T> {
    writer.block_on(writer.conn().batch_execute("SAVEPOINT job")).map_err(unavailable)?;
    let result = catch_unwind(AssertUnwindSafe(|| f(writer)))
        .unwrap_or_else(|_| Err(anyhow!("a database write panicked")));
    let end = if result.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    writer.block_on(writer.conn().batch_execute(end)).map_err(unavailable)?;
    result
}

/// A query's failure: [`Unavailable`] when the connection broke or the server is going away
/// (it was closed, an I/O error, or SQLSTATE class 08 "connection exception" or 57 "operator
/// intervention", as when the server shuts down or an administrator ends the session), an
/// internal error otherwise.
fn database_error(error: tokio_postgres::Error) -> anyhow::Error {
    let state = error.code().map(|code| code.code().to_owned()).unwrap_or_default();
    let broken = error.is_closed()
        || state.starts_with("08")
        || state.starts_with("57")
        || std::error::Error::source(&error).is_some_and(|cause| cause.is::<std::io::Error>());
    if broken { unavailable(error) } else { error.into() }
}

/// Runs a query through the connection's statement cache.
pub(crate) async fn query(
    c: &Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(database_error)?;
    c.query(&statement, params).await.map_err(database_error)
}

/// Runs a query that returns at most one row.
pub(crate) async fn query_opt(
    c: &Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(database_error)?;
    c.query_opt(&statement, params).await.map_err(database_error)
}

/// Runs a statement; returns the number of rows it changed.
pub(crate) async fn execute(
    c: &Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<u64> {
    let statement = c.prepare_cached(sql).await.map_err(database_error)?;
    c.execute(&statement, params).await.map_err(database_error)
}

/// Hands out the next global stream position.
pub(crate) async fn next_stream_position(c: &Conn) -> StoreResult<i64> {
    let rows = query(
        c,
        "UPDATE stream_counter SET position = position + 1 WHERE id = 1 RETURNING position",
        &[],
    )
    .await?;
    let row = rows.first().context("the stream counter row is missing")?;
    Ok(row.try_get(0)?)
}

pub(crate) async fn current_stream_position(c: &Conn) -> StoreResult<i64> {
    let row = query_opt(c, "SELECT position FROM stream_counter WHERE id = 1", &[]).await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?.unwrap_or(0))
}

/// Booleans are `INTEGER` 0/1 in the shared schema, which PostgreSQL stores as `int4`.
pub(crate) fn flag(value: bool) -> i32 {
    i32::from(value)
}
