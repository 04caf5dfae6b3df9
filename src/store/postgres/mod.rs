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
//!
//! No statement waits forever: every connection starts with a `statement_timeout` and a
//! `lock_timeout` (unless the URL's `options` set them), and TCP keepalives find a server that
//! vanished without closing the connection. A statement cut off by either timeout is
//! [`Unavailable`] too, so a table locked by someone else costs a client a 503, not a hang.
//! A server whose machine still acknowledges packets but which never answers (a stopped process,
//! a hung host) cannot enforce its own timeouts, so Hearth gives every query a deadline of its own
//! a little beyond the statement timeout; a writer connection that missed one is discarded.
//!
//! Connections are unencrypted: a URL asking for TLS is refused with a clear message instead of
//! failing in the handshake.

mod backup;
mod bus;
mod directory;
mod keys;
mod media;
mod push;
mod receipts;
mod relations;
mod rooms;
mod search;
mod summaries;
mod threepids;
mod tokens;
mod users;

use std::{
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::{runtime::Handle, sync::oneshot};
use tokio_postgres::{NoTls, Row, config::Host, types::ToSql};

use super::{StoreResult, Unavailable};

/// A pooled connection, with its statement cache.
type Conn = deadpool_postgres::ClientWrapper;

/// How many queued writes one transaction takes at most.
const MAX_BATCH: usize = 512;

/// Connections in the pool; the writer takes one of them for each batch.
const POOL_SIZE: usize = 8;

/// How long an operation waits for a connection (or for the server to answer a new one) before
/// it fails as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement may run before PostgreSQL cancels it (`statement_timeout`): far longer
/// than any query Hearth makes, short enough that a stuck one frees its client.
const STATEMENT_TIMEOUT: &str = "30s";

/// How long a statement waits for a lock held by another session (`lock_timeout`). Hearth's own
/// sessions never wait long for each other (one writer); a longer wait is someone else's lock.
const LOCK_TIMEOUT: &str = "10s";

/// TCP keepalives: the first probe after this long without traffic, then one per interval, and
/// the connection is given up after that many unanswered probes (or [`TCP_USER_TIMEOUT`] after
/// the last answer, whichever comes first): a vanished server is noticed within two minutes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// tokio-postgres's default idle time before the first keepalive probe, which we shorten unless
/// the URL chose another.
const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// How long data sent on a connection may stay unacknowledged before the connection is given up
/// (`TCP_USER_TIMEOUT`, Linux only): a server whose network vanished mid-query.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// How much longer than the statement timeout Hearth waits for a query's answer before it gives
/// up on the query itself: the server's own timeout normally answers first.
const DEADLINE_GRACE: Duration = Duration::from_secs(5);

/// The longest wait for one query's answer in this process, in milliseconds (`u64::MAX`: no
/// limit): the statement timeout plus [`DEADLINE_GRACE`], the largest of the stores opened so
/// far, so that it never cuts off a statement a store's server would let run. One value for the
/// process because the query helpers take only a connection; a process has one store, or two
/// while a move switches.
static QUERY_DEADLINE_MS: AtomicU64 = AtomicU64::new(0);

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
    /// Set when a query on the connection got no answer within its deadline: the session's state
    /// is unknown from then on, so the rest of the batch fails at once and the connection is
    /// closed instead of going back to the pool.
    stalled: AtomicBool,
}

impl Writer {
    /// The connection, for the queries of one job.
    pub(crate) fn conn(&self) -> &Conn {
        &self.connection
    }

    /// Waits for a query (or several) on the writer thread. Once one got no answer within its
    /// deadline, every later call fails at once: the batch ends without waiting on each step.
    pub(crate) fn block_on<T>(
        &self,
        future: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        if self.stalled.load(Ordering::Relaxed) {
            return Err(anyhow!(Unavailable(
                "the batch's connection stopped answering".to_owned()
            )));
        }
        let result = self.handle.block_on(future);
        if result.as_ref().is_err_and(|error| error.downcast_ref::<NoAnswer>().is_some()) {
            self.stalled.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// A query that got no answer within its deadline (the context of an [`Unavailable`] error).
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL did not answer within {} s", .0.as_secs())]
struct NoAnswer(Duration);

/// Waits for `future` (one round trip on a connection) until the query deadline, turning its
/// error into a store error with `on_error`.
async fn answered<T>(
    future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    on_error: fn(tokio_postgres::Error) -> anyhow::Error,
) -> StoreResult<T> {
    let limit = QUERY_DEADLINE_MS.load(Ordering::Relaxed);
    if limit == 0 || limit == u64::MAX {
        return future.await.map_err(on_error);
    }
    let limit = Duration::from_millis(limit);
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(on_error),
        Err(_) => Err(anyhow::Error::new(Unavailable("a query got no answer".to_owned()))
            .context(NoAnswer(limit))),
    }
}

/// Raises the process's query deadline to what a store whose sessions start with `options`
/// needs; a store without a statement timeout lifts it.
fn allow_query_deadline(options: &str) {
    let limit = statement_timeout(options).map_or(u64::MAX, |timeout| {
        u64::try_from((timeout + DEADLINE_GRACE).as_millis()).unwrap_or(u64::MAX)
    });
    QUERY_DEADLINE_MS.fetch_max(limit, Ordering::Relaxed);
}

/// The `statement_timeout` that session `options` set last, as PostgreSQL reads it (a number of
/// milliseconds, or with a unit); `None` when they set none, `0` (no timeout) or one unreadable.
fn statement_timeout(options: &str) -> Option<Duration> {
    let (_, after) = options.rsplit_once("statement_timeout=")?;
    let value = after.split_whitespace().next()?.trim_matches('\'');
    let digits = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let millis = match unit {
        "us" => number / 1000,
        "" | "ms" => number,
        "s" => number.checked_mul(1000)?,
        "min" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        "d" => number.checked_mul(86_400_000)?,
        _ => return None,
    };
    (millis > 0).then(|| Duration::from_millis(millis))
}

impl PostgresStore {
    /// Connects, checks that the server fits, runs pending migrations and starts the writer.
    ///
    /// A server that cannot be reached just now (refused, no answer, starting up, out of
    /// connections) is [`Unavailable`], naming the address and the cause: trying again later may
    /// work. Anything else (a bad URL, a refused login, a missing database) is a plain error.
    ///
    /// Must be called on a Tokio runtime; the runtime drives the connections from then on.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let config = connect_config(url)?;
        allow_query_deadline(config.get_options().unwrap_or_default());
        let pool = connect_pool(config.clone())?;
        let mut connection = pool.get().await.map_err(|error| connect_failure(&config, error))?;
        check_server(&connection).await?;
        migrate_schema(&mut connection).await?;
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
    let pool = connect_pool(connect_config(url)?)?;
    let mut connection = pool.get().await.map_err(unavailable)?;
    super::schema::postgres_migrations()
        .set_target(refinery::Target::Version(1))
        .run_async(&mut **connection)
        .await
        .context("cannot migrate to version 1")?;
    connection.batch_execute(sql).await?;
    Ok(())
}

/// The connection settings of `url`, with Hearth's timeouts and keepalives added where the URL
/// does not choose its own.
pub(crate) fn connect_config(url: &str) -> StoreResult<tokio_postgres::Config> {
    crate::config::check_postgres_url(url)?;
    let mut config: tokio_postgres::Config =
        url.parse().context("the PostgreSQL connection URL is not valid")?;
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        anyhow::bail!(crate::config::NO_TLS);
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    if config.get_application_name().is_none() {
        config.application_name("hearth");
    }
    config.options(session_options(config.get_options()));
    config.keepalives(true);
    if config.get_keepalives_idle() == DEFAULT_KEEPALIVE_IDLE {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    Ok(config)
}

/// The `options` every session starts with: Hearth's timeouts first, then the URL's own options,
/// which win where they set the same parameter (PostgreSQL applies them in order).
fn session_options(from_url: Option<&str>) -> String {
    let ours = format!("-c statement_timeout={STATEMENT_TIMEOUT} -c lock_timeout={LOCK_TIMEOUT}");
    match from_url {
        Some(theirs) if !theirs.trim().is_empty() => format!("{ours} {theirs}"),
        _ => ours,
    }
}

fn connect_pool(config: tokio_postgres::Config) -> StoreResult<Pool> {
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

/// Why the first connection failed, naming the server's address. [`Unavailable`] when trying
/// again later may help: the server refused the connection or did not answer (it is not up yet,
/// or the network is not), it is starting up, or it has no connection slot free.
fn connect_failure(
    config: &tokio_postgres::Config,
    error: deadpool_postgres::PoolError,
) -> anyhow::Error {
    use deadpool_postgres::PoolError;

    let at = server_address(config);
    let (retryable, cause) = match &error {
        PoolError::Timeout(_) => {
            (true, format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))
        }
        PoolError::Backend(error) => (connection_may_come_back(error), error_chain(error)),
        other => (false, error_chain(other)),
    };
    if retryable {
        return anyhow!(Unavailable(format!("cannot connect to PostgreSQL at {at}: {cause}")));
    }
    let hint = match &error {
        PoolError::Backend(error) if error.code().is_some_and(|c| c.code().starts_with("28")) => {
            " (check the user name and password in the URL)"
        }
        PoolError::Backend(error) if error.code().is_some_and(|c| c.code() == "3D000") => {
            " (create the database first, or fix its name in the URL)"
        }
        _ => "",
    };
    anyhow!("PostgreSQL at {at} refused the connection: {cause}{hint}")
}

/// Whether a failed connection attempt may succeed later without anyone changing the
/// configuration: an I/O failure (refused, timed out, unreachable), or SQLSTATE 57P03 "cannot
/// connect now" (starting up or shutting down), class 53 "insufficient resources" (too many
/// connections) or class 08 "connection exception".
fn connection_may_come_back(error: &tokio_postgres::Error) -> bool {
    let state = error.code().map(|code| code.code()).unwrap_or_default();
    state == "57P03"
        || state.starts_with("53")
        || state.starts_with("08")
        || std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// The `host:port` (or socket directory) the configuration connects to, for messages.
fn server_address(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            Host::Unix(dir) => format!("the socket in {} (port {})", dir.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() { format!("localhost:{}", port(0)) } else { hosts.join(", ") }
}

/// An error and its causes, as one line: tokio-postgres's and deadpool's messages alone say only
/// "error connecting to server" and leave the reason to their sources.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let next_text = next.to_string();
        if !text.ends_with(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        cause = next.source();
    }
    text
}

/// Runs the pending schema migrations, without the statement timeout: building an index on a
/// large table may rightly take longer than any query.
async fn migrate_schema(connection: &mut Object) -> StoreResult<()> {
    connection.batch_execute("SET statement_timeout = 0").await.map_err(database_error)?;
    super::schema::postgres_migrations()
        .run_async(&mut ***connection)
        .await
        .context("cannot migrate the database schema")?;
    connection.batch_execute("RESET statement_timeout").await.map_err(database_error)?;
    Ok(())
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

/// Marks a connection failure as [`Unavailable`], keeping its causes for the log.
pub(crate) fn unavailable(error: impl std::error::Error + 'static) -> anyhow::Error {
    anyhow!(Unavailable(error_chain(&error)))
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
    let writer = Writer { handle: handle.clone(), connection, stalled: AtomicBool::new(false) };
    let completions: Vec<Completion> = batch
        .into_iter()
        .map(|job| {
            catch_unwind(AssertUnwindSafe(|| job(&writer)))
                .unwrap_or_else(|_| job_failed("a database job panicked".to_owned()))
        })
        .collect();

    let commit = writer.block_on(answered(writer.conn().batch_execute("COMMIT"), unavailable));
    let commit = commit.map_err(|error| {
        let error = format!("{error:#}");
        tracing::warn!(%error, "database commit failed");
        error
    });
    let Writer { connection, stalled, .. } = writer;
    if stalled.into_inner() {
        // Taken out of the pool and dropped: the connection closes.
        drop(Object::take(connection));
    }
    for completion in completions {
        completion(commit.clone());
    }
}

async fn begin(pool: &Pool) -> StoreResult<Object> {
    let connection = pool.get().await.map_err(unavailable)?;
    answered(connection.batch_execute("BEGIN"), unavailable).await?;
    Ok(connection)
}

fn job_failed(message: String) -> Completion {
    tracing::error!(%message, "database write job failed");
    Box::new(|_| {})
}

/// Runs `f` inside a savepoint: kept if it succeeds, rolled back if it fails.
fn in_savepoint<T>(writer: &Writer, f: impl FnOnce(&Writer) -> StoreResult<T>) -> StoreResult<T> {
    writer.block_on(answered(writer.conn().batch_execute("SAVEPOINT job"), unavailable))?;
    let result = catch_unwind(AssertUnwindSafe(|| f(writer)))
        .unwrap_or_else(|_| Err(anyhow!("a database write panicked")));
    let end = if result.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    writer.block_on(answered(writer.conn().batch_execute(end), unavailable))?;
    result
}

/// A query's failure: [`Unavailable`] when the connection broke, the server is going away or the
/// statement was cut off (it was closed, an I/O error, SQLSTATE class 08 "connection exception",
/// class 57 "operator intervention" as when the server shuts down, an administrator ends the
/// session or `statement_timeout` cancels the statement (57014), or 55P03 "lock not available"
/// from `lock_timeout`), an internal error otherwise.
fn database_error(error: tokio_postgres::Error) -> anyhow::Error {
    let state = error.code().map(|code| code.code().to_owned()).unwrap_or_default();
    let broken = error.is_closed()
        || state.starts_with("08")
        || state.starts_with("57")
        || state == "55P03"
        || std::error::Error::source(&error).is_some_and(|cause| cause.is::<std::io::Error>());
    if broken { unavailable(error) } else { error.into() }
}

/// Runs a query through the connection's statement cache.
pub(crate) async fn query(
    c: &Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Row>> {
    let statement = answered(c.prepare_cached(sql), database_error).await?;
    answered(c.query(&statement, params), database_error).await
}

/// Runs a query that returns at most one row.
pub(crate) async fn query_opt(
    c: &Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    let statement = answered(c.prepare_cached(sql), database_error).await?;
    answered(c.query_opt(&statement, params), database_error).await
}

/// Runs a statement; returns the number of rows it changed.
pub(crate) async fn execute(
    c: &Conn,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<u64> {
    let statement = answered(c.prepare_cached(sql), database_error).await?;
    answered(c.execute(&statement, params), database_error).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        is_unavailable,
        testing::{self, Backend, TestDatabase},
    };

    #[test]
    fn connections_get_timeouts_and_keepalives_unless_the_url_chooses_its_own() {
        let config = connect_config("postgresql://h@localhost/h").unwrap();
        assert_eq!(config.get_options(), Some("-c statement_timeout=30s -c lock_timeout=10s"));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));

        let url = "postgresql://h@localhost/h?options=-c%20lock_timeout%3D1s&keepalives_idle=5";
        let config = connect_config(url).unwrap();
        let options = config.get_options().unwrap();
        assert!(options.ends_with("-c lock_timeout=1s"), "the URL's options come last: {options}");
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(5));
    }

    #[test]
    fn the_query_deadline_follows_the_statement_timeout_the_session_ends_up_with() {
        let cases = [
            ("-c statement_timeout=30s -c lock_timeout=10s", Some(30_000)),
            (
                "-c statement_timeout=30s -c lock_timeout=10s -c statement_timeout=2min",
                Some(120_000),
            ),
            ("-c statement_timeout=1500", Some(1_500)),
            ("-c statement_timeout=250ms", Some(250)),
            ("-c statement_timeout=1h", Some(3_600_000)),
            ("-c statement_timeout=0", None),
            ("-c statement_timeout=soon", None),
            ("-c lock_timeout=10s", None),
        ];
        for (options, millis) in cases {
            assert_eq!(statement_timeout(options), millis.map(Duration::from_millis), "{options}");
        }
    }

    #[test]
    fn urls_asking_for_tls_or_not_parsing_are_refused_before_connecting() {
        for url in ["postgresql://h@localhost/h?sslmode=require", "host=localhost sslmode=require"]
        {
            let error = connect_config(url).unwrap_err();
            assert_eq!(error.to_string(), crate::config::NO_TLS, "{url}");
        }
        let error = connect_config("postgresql://h@localhost:99999/h").unwrap_err();
        assert!(format!("{error:#}").contains("not valid"), "{error:#}");
    }

    #[test]
    fn messages_name_the_server_address() {
        let cases = [
            ("postgresql://h@db.example:6543/h", "db.example:6543"),
            ("postgresql://h@localhost/h", "localhost:5432"),
            ("host=a,b port=1,2 user=h", "a:1, b:2"),
            ("postgresql://h@[::1]:7/h", "[::1]:7"),
        ];
        for (url, address) in cases {
            assert_eq!(server_address(&connect_config(url).unwrap()), address, "{url}");
        }
    }

    #[tokio::test]
    async fn a_server_that_refuses_connections_is_unavailable_and_named_with_the_cause() {
        // Nothing listens on port 1 of this machine.
        let Err(error) = PostgresStore::open("postgresql://h@127.0.0.1:1/h").await else {
            panic!("something listens on 127.0.0.1:1");
        };
        let text = format!("{error:#}");
        assert!(is_unavailable(&error), "{text}");
        assert!(text.contains("127.0.0.1:1") && text.contains("refused"), "{text}");
    }

    #[tokio::test]
    async fn a_refused_login_or_a_missing_database_is_not_worth_retrying() {
        if testing::backend() != Backend::Postgres {
            eprintln!("skipped: needs HEARTH_TEST_BACKEND=postgres");
            return;
        }
        let admin_url = std::env::var("HEARTH_TEST_POSTGRES_URL").unwrap();
        let (scheme, rest) = admin_url.split_once("://").expect("a postgresql:// URL");
        let (_, server) = rest.split_once('@').expect("a URL with a user");
        let server = server.split('/').next().unwrap();
        let cases = [
            (format!("{scheme}://hearth_nobody@{server}/postgres"), "hearth_nobody"),
            (format!("{admin_url}_hearth_missing"), "does not exist"),
        ];
        for (url, words) in cases {
            let Err(error) = PostgresStore::open(&url).await else { panic!("{url} opened") };
            let text = format!("{error:#}");
            assert!(!is_unavailable(&error), "{text}");
            assert!(text.contains(words) && text.contains(server), "{text}");
        }
    }

    #[tokio::test]
    async fn sessions_start_with_the_timeouts_and_a_statement_cut_off_is_unavailable() {
        let Backend::Postgres = testing::backend() else {
            eprintln!("skipped: needs HEARTH_TEST_BACKEND=postgres");
            return;
        };
        let database = TestDatabase::new().await;
        let store = PostgresStore::open(database.postgres_url().unwrap()).await.unwrap();
        let c = store.conn().await.unwrap();
        let show = |name: &'static str| {
            let c = &c;
            async move { c.query_one(&format!("SHOW {name}"), &[]).await.unwrap().get::<_, String>(0) }
        };
        assert_eq!(show("statement_timeout").await, "30s");
        assert_eq!(show("lock_timeout").await, "10s");

        // statement_timeout: SQLSTATE 57014.
        c.batch_execute("SET statement_timeout = '50ms'").await.unwrap();
        let error = query(&c, "SELECT pg_sleep(5)", &[]).await.unwrap_err();
        assert!(is_unavailable(&error), "{error:#}");

        // lock_timeout: SQLSTATE 55P03, waiting for a table another session locked.
        let locker = store.conn().await.unwrap();
        locker.batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE").await.unwrap();
        c.batch_execute("SET statement_timeout = '30s'; SET lock_timeout = '50ms'").await.unwrap();
        let error = query(&c, "SELECT count(*) FROM users", &[]).await.unwrap_err();
        assert!(is_unavailable(&error), "{error:#}");
        assert!(format!("{error:#}").contains("lock timeout"), "{error:#}");
        locker.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(query(&c, "SELECT count(*) FROM users", &[]).await.unwrap().len(), 1);
    }
}
