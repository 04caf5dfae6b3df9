//! The SQLite backend: one file in WAL mode, one writer thread with group commit, and a pool of
//! read-only connections.
//!
//! Writes are closures queued to the writer thread. The writer takes every job waiting in the
//! queue, runs each inside its own savepoint of one transaction, commits once, and only then
//! answers the callers: an acknowledged write is on disk (`synchronous = FULL`). A failing job
//! rolls back to its savepoint and does not disturb the others in the batch. Reads run on the
//! blocking thread pool with pooled connections, so nothing here blocks the async runtime.

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
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    sync::mpsc,
    thread,
};

use anyhow::{Context as _, anyhow};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension as _, params};
use tokio::sync::oneshot;

use super::StoreResult;

/// How many queued writes one transaction takes at most.
const MAX_BATCH: usize = 512;

/// SQLite's bound-parameter limit is 32766 in the bundled build; stay far below it.
pub(crate) const MAX_PARAMS: usize = 500;

/// Runs after the batch commits (`Ok`) or fails to (`Err`), to answer the job's caller.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
type WriteJob = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// The SQLite store.
pub struct SqliteStore {
    /// Queue to the writer thread. The thread ends when the last sender is dropped.
    writer: mpsc::Sender<WriteJob>,
    /// Read-only connections.
    readers: r2d2::Pool<SqliteConnectionManager>,
}

impl SqliteStore {
    /// Opens the database file, runs pending migrations and starts the writer thread.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut connection = Connection::open(path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        configure_writer(&connection)?;
        super::schema::sqlite_migrations()
            .run(&mut connection)
            .context("cannot migrate the database schema")?;

        let readers = r2d2::Pool::builder()
            .max_size(reader_count())
            .build(SqliteConnectionManager::file(path).with_init(configure_reader))
            .context("cannot open read connections to the database")?;

        let (writer, queue) = mpsc::channel();
        thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run_writer(connection, queue))
            .context("cannot start the database writer thread")?;

        Ok(Self { writer, readers })
    }

    /// Runs `f` in the writer; its writes are committed before this returns `Ok`.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: WriteJob = Box::new(move |connection| {
            let result = in_savepoint(connection, f);
            Box::new(move |commit: Result<(), String>| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(error) => Err(anyhow!("the database commit failed: {error}")),
                };
                let _ = reply.send(outcome);
            })
        });
        self.writer.send(job).map_err(|_| anyhow!("the database writer has stopped"))?;
        answer.await.map_err(|_| anyhow!("the database writer dropped a job"))?
    }

    /// Runs `f` with a read-only connection on the blocking thread pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let connection = pool.get().context("no database read connection available")?;
            f(&connection)
        })
        .await
        .context("a database read panicked")?
    }
}

/// Creates the database at `path` at schema version 1 holding the rows `sql` inserts, as a
/// release before state groups left it; opening it then runs the later migrations.
#[cfg(test)]
pub(crate) fn seed_at_v1(path: &Path, sql: &str) -> StoreResult<()> {
    let mut connection = Connection::open(path)?;
    super::schema::sqlite_migrations()
        .set_target(refinery::Target::Version(1))
        .run(&mut connection)
        .context("cannot migrate to version 1")?;
    connection.execute_batch(sql)?;
    Ok(())
}

/// Prepared statements kept per connection. rusqlite keeps 16 by default, fewer than the
/// statements one send runs on the writer (events, state, extremities, transactions, the bus):
/// past that, every send prepared some of them again.
const STATEMENT_CACHE: usize = 64;

fn configure_writer(connection: &Connection) -> StoreResult<()> {
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -512;",
        )
        .context("cannot configure the database connection")
}

/// Read connections: one per core, two to four. Reads are short and CPU-bound, so more
/// connections than cores would only hold more page caches and schema copies.
fn reader_count() -> u32 {
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cores.clamp(2, 4)).unwrap_or(2)
}

/// A read connection's page cache (`cache_size` in KiB when negative). The file's pages stay in
/// the operating system's cache too, so a small cache per connection costs little speed and
/// keeps an idle server small. The writer's is 512 KiB (`configure_writer`): it touches the
/// newest pages of a few tables, which its cache holds across a batch.
const READER_CACHE_KIB: i64 = 256;

fn configure_reader(connection: &mut Connection) -> Result<(), rusqlite::Error> {
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    connection.execute_batch(&format!(
        "PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA query_only = ON;
         PRAGMA cache_size = -{READER_CACHE_KIB};"
    ))
}

/// The writer thread: batches queued jobs into one transaction each.
fn run_writer(connection: Connection, queue: mpsc::Receiver<WriteJob>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&connection, batch);
    }
}

fn run_batch(connection: &Connection, batch: Vec<WriteJob>) {
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        let message = error.to_string();
        for job in batch {
            // The job is never run; tell its caller why.
            let completion = job_failed(message.clone());
            completion(Err(message.clone()));
            drop(job);
        }
        return;
    }

    let completions: Vec<Completion> = batch
        .into_iter()
        .map(|job| {
            catch_unwind(AssertUnwindSafe(|| job(connection)))
                .unwrap_or_else(|_| job_failed("a database job panicked".to_owned()))
        })
        .collect();

    let commit = connection.execute_batch("COMMIT").map_err(|error| {
        tracing::error!(%error, "database commit failed");
        let _ = connection.execute_batch("ROLLBACK");
        error.to_string()
    });
    for completion in completions {
        completion(commit.clone());
    }
}

fn job_failed(message: String) -> Completion {
    tracing::error!(%message, "database write job failed");
    Box::new(|_| {})
}

/// Runs `f` inside a savepoint: kept if it succeeds, rolled back if it fails.
fn in_savepoint<T>(
    connection: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    connection.execute_batch("SAVEPOINT job")?;
    let result = catch_unwind(AssertUnwindSafe(|| f(connection)))
        .unwrap_or_else(|_| Err(anyhow!("a database write panicked")));
    let end = if result.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    connection.execute_batch(end)?;
    result
}

/// Hands out the next global stream position.
pub(crate) fn next_stream_position(connection: &Connection) -> StoreResult<i64> {
    let position = connection.query_row(
        "UPDATE stream_counter SET position = position + 1 WHERE id = 1 RETURNING position",
        [],
        |row| row.get(0),
    )?;
    Ok(position)
}

pub(crate) fn current_stream_position(connection: &Connection) -> StoreResult<i64> {
    let position = connection
        .query_row("SELECT position FROM stream_counter WHERE id = 1", params![], |row| row.get(0))
        .optional()?;
    Ok(position.unwrap_or(0))
}

/// A comma-separated list of `count` placeholders, for chunked `IN (...)` lists.
pub(crate) fn placeholders(count: usize) -> String {
    let mut text = "?,".repeat(count);
    text.pop();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("test.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_failing_job_does_not_undo_the_others_in_its_batch() {
        let (_dir, store) = store().await;
        let ok =
            store.write(|c| Ok(c.execute("INSERT INTO bus_consumers VALUES ('s', 'c', 7)", [])?));
        let bad = store.write(|c| {
            c.execute("UPDATE stream_counter SET position = 99", [])?;
            Err::<(), _>(anyhow!("refused"))
        });
        let (ok, bad) = tokio::join!(ok, bad);
        assert_eq!(ok.unwrap(), 1);
        assert!(bad.is_err());
        let position = store.read(current_stream_position).await.unwrap();
        assert_eq!(position, 0, "the failed job's update was rolled back");
        let acked: i64 = store
            .read(
                |c| Ok(c.query_row("SELECT acked_sequence FROM bus_consumers", [], |r| r.get(0))?),
            )
            .await
            .unwrap();
        assert_eq!(acked, 7, "the good job's insert was committed");
    }

    #[tokio::test]
    async fn concurrent_writes_all_commit() {
        let (_dir, store) = store().await;
        let store = std::sync::Arc::new(store);
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.write(next_stream_position).await.unwrap() })
            })
            .collect();
        let mut positions = Vec::new();
        for task in tasks {
            positions.push(task.await.unwrap());
        }
        positions.sort_unstable();
        assert_eq!(positions, (1..=200).collect::<Vec<_>>());
        assert_eq!(store.read(current_stream_position).await.unwrap(), 200);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_writer_survives() {
        let (_dir, store) = store().await;
        let result: StoreResult<()> = store.write(|_| panic!("boom")).await;
        assert!(result.is_err());
        assert_eq!(store.write(next_stream_position).await.unwrap(), 1);
    }

    #[test]
    fn placeholders_are_comma_separated() {
        assert_eq!(placeholders(3), "?,?,?");
        assert_eq!(placeholders(1), "?");
    }
}
