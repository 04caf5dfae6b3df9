//! Throwaway databases for unit tests, on the backend the environment names, so that one suite
//! runs against both: `HEARTH_TEST_BACKEND=postgres` with `HEARTH_TEST_POSTGRES_URL` (a URL whose
//! role may create databases; `scripts/test-all` starts a private cluster for it) gives each
//! test a fresh PostgreSQL database; otherwise each test gets a fresh SQLite file.
//!
//! A PostgreSQL database is dropped when its [`TestDatabase`] is (also when the test fails). One
//! that outlives its test anyway (a test killed by its timeout, or one that keeps only the URL of
//! [`create_postgres_database`]) is swept by a later test once it is [`STALE_AFTER`] old, so
//! they never pile up on a cluster that is used again.

use std::path::Path;
#[cfg(feature = "postgres")]
use std::time::Duration;

use super::Store;

/// Which backend the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The backend named by `HEARTH_TEST_BACKEND` (SQLite when unset). Anything else fails the test
/// loudly: a typo must not quietly test SQLite twice.
pub(crate) fn backend() -> Backend {
    match std::env::var("HEARTH_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("HEARTH_TEST_BACKEND={other:?}: expected \"sqlite\" or \"postgres\""),
    }
}

/// How old a test database must be before a later test drops it: far beyond the 3 minutes
/// after which a test is stopped as hung, so no running test loses its database.
#[cfg(feature = "postgres")]
const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// The prefix of every database these tests create; the creation time follows it.
#[cfg(feature = "postgres")]
const NAME_PREFIX: &str = "hearth_unit_";

/// A database of its own for one test, with a temporary directory beside it (for the SQLite
/// file, or for whatever else the test keeps on disk). A PostgreSQL database is dropped with it.
pub(crate) struct TestDatabase {
    dir: tempfile::TempDir,
    postgres_url: Option<String>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        #[cfg(feature = "postgres")]
        if let Some(url) = &self.postgres_url {
            drop_postgres_database(url);
        }
    }
}

impl TestDatabase {
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let postgres_url = match backend() {
            Backend::Sqlite => None,
            Backend::Postgres => Some(create_postgres_database().await),
        };
        Self { dir, postgres_url }
    }

    /// Opens the database; opening it again later is a restart.
    pub(crate) async fn open(&self) -> Store {
        match &self.postgres_url {
            None => super::open_sqlite(&self.dir.path().join("hearth.db")).unwrap(),
            #[cfg(feature = "postgres")]
            Some(url) => super::open_postgres(url).await.unwrap(),
            #[cfg(not(feature = "postgres"))]
            Some(_) => panic!("HEARTH_TEST_BACKEND=postgres in a build without PostgreSQL"),
        }
    }

    /// Fills the (not yet opened) database at schema version 1 with the rows `sql` inserts.
    pub(crate) async fn seed_at_v1(&self, sql: &str) {
        match &self.postgres_url {
            None => super::sqlite::seed_at_v1(&self.dir.path().join("hearth.db"), sql).unwrap(),
            #[cfg(feature = "postgres")]
            Some(url) => super::postgres::seed_at_v1(url, sql).await.unwrap(),
            #[cfg(not(feature = "postgres"))]
            Some(_) => panic!("HEARTH_TEST_BACKEND=postgres in a build without PostgreSQL"),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The database's URL on PostgreSQL, `None` on SQLite.
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_deref()
    }
}

/// Creates an empty database on the server of `HEARTH_TEST_POSTGRES_URL`; returns its URL.
#[cfg(feature = "postgres")]
pub(crate) async fn create_postgres_database() -> String {
    use rand::Rng as _;

    let admin_url = std::env::var("HEARTH_TEST_POSTGRES_URL")
        .expect("HEARTH_TEST_BACKEND=postgres needs HEARTH_TEST_POSTGRES_URL");
    let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to HEARTH_TEST_POSTGRES_URL: {e}"));
    let connection = tokio::spawn(connection);
    drop_stale_databases(&client).await;
    let name = format!("{NAME_PREFIX}{}_{:08x}", unix_seconds(), rand::thread_rng().r#gen::<u32>());
    client
        .batch_execute(&format!("CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"))
        .await
        .unwrap_or_else(|e| panic!("cannot create the test database: {e}"));
    drop(client);
    let _ = connection.await;
    with_database(&admin_url, &name)
}

#[cfg(feature = "postgres")]
fn unix_seconds() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |elapsed| elapsed.as_secs())
}

/// Drops the test databases older than [`STALE_AFTER`] (by the time in their name) that nothing
/// is connected to. Best effort: another test sweeping at the same time, or a database still in
/// use, only means it stays for a later sweep.
#[cfg(feature = "postgres")]
async fn drop_stale_databases(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query("SELECT datname::text FROM pg_database WHERE datname LIKE 'hearth\\_unit\\_%'", &[])
        .await
    else {
        return;
    };
    let cutoff = unix_seconds().saturating_sub(STALE_AFTER.as_secs());
    for row in rows {
        let name: String = row.get(0);
        let created = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|seconds| seconds.parse::<u64>().ok());
        // Names without a time are from before the time was in them: stale as well.
        if created.is_none_or(|created| created < cutoff) {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\"")).await;
        }
    }
}

/// Drops the database of `url` from the server of `HEARTH_TEST_POSTGRES_URL`, ending the sessions
/// still on it (the store under test may still hold its pool). Runs on a thread with a runtime
/// of its own, as a `Drop` inside the test's runtime cannot wait on that runtime; a failure is
/// reported and left for [`drop_stale_databases`], never a panic in a test already unwinding.
#[cfg(feature = "postgres")]
fn drop_postgres_database(url: &str) {
    let Some(name) = database_name(url) else { return };
    let Ok(admin_url) = std::env::var("HEARTH_TEST_POSTGRES_URL") else { return };
    let dropping = name.clone();
    let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE datname = $1 AND pid <> pg_backend_pid()";
            let mut outcome = Ok(());
            for _ in 0..10 {
                client.execute(terminate, &[&dropping]).await?;
                outcome =
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{dropping}\"")).await;
                if outcome.is_ok() {
                    break;
                }
                // A pool that reconnected in the meantime: end that session too.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(outcome?)
        })
    })
    .join();
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("warning: could not drop the test database {name}: {error:#}"),
        Err(_) => eprintln!("warning: dropping the test database {name} panicked"),
    }
}

/// The database name at the end of a URL [`with_database`] made.
#[cfg(feature = "postgres")]
fn database_name(url: &str) -> Option<String> {
    let path = url.split('?').next()?;
    let name = path.rsplit('/').next()?;
    name.starts_with(NAME_PREFIX).then(|| name.to_owned())
}

#[cfg(not(feature = "postgres"))]
pub(crate) async fn create_postgres_database() -> String {
    panic!("HEARTH_TEST_BACKEND=postgres in a build without PostgreSQL")
}

/// `admin_url` with its database name replaced by `name`.
#[cfg(feature = "postgres")]
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    /// Whether database `name` exists on the server of `HEARTH_TEST_POSTGRES_URL`.
    async fn exists(name: &str) -> bool {
        let admin_url = std::env::var("HEARTH_TEST_POSTGRES_URL").unwrap();
        let (client, connection) =
            tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let sql = "SELECT count(*) FROM pg_database WHERE datname = $1";
        client.query_one(sql, &[&name]).await.unwrap().get::<_, i64>(0) == 1
    }

    #[tokio::test]
    async fn a_test_database_is_dropped_with_its_handle_even_while_a_store_is_open() {
        if backend() != Backend::Postgres {
            eprintln!("skipped: needs HEARTH_TEST_BACKEND=postgres");
            return;
        }
        let database = TestDatabase::new().await;
        let store = database.open().await;
        let name = database_name(database.postgres_url().unwrap()).unwrap();
        assert!(exists(&name).await);
        drop(database);
        assert!(!exists(&name).await, "{name} is left behind");
        drop(store);
    }

    #[tokio::test]
    async fn test_databases_left_behind_by_an_earlier_run_are_swept() {
        if backend() != Backend::Postgres {
            eprintln!("skipped: needs HEARTH_TEST_BACKEND=postgres");
            return;
        }
        let admin_url = std::env::var("HEARTH_TEST_POSTGRES_URL").unwrap();
        let (client, connection) =
            tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let old = format!("{NAME_PREFIX}1_{:08x}", rand::random::<u32>());
        client.batch_execute(&format!("CREATE DATABASE {old}")).await.unwrap();

        let url = create_postgres_database().await;
        assert!(!exists(&old).await, "{old} is swept");
        let fresh = database_name(&url).unwrap();
        assert!(exists(&fresh).await, "a fresh database is kept");
        drop_postgres_database(&url);
        assert!(!exists(&fresh).await);
    }

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        let cases = [
            ("postgresql://u@127.0.0.1:5/postgres", "postgresql://u@127.0.0.1:5/db"),
            ("postgresql://u@h:5", "postgresql://u@h:5/db"),
            ("postgres://u:p@h/x?sslmode=disable", "postgres://u:p@h/db?sslmode=disable"),
        ];
        for (admin, expected) in cases {
            assert_eq!(with_database(admin, "db"), expected, "{admin}");
        }
    }
}
