//! Throwaway databases for unit tests, on the backend the environment names, so that one suite
//! runs against both: `HEARTH_TEST_BACKEND=postgres` with `HEARTH_TEST_POSTGRES_URL` (a URL whose
//! role may create databases; `scripts/test-all` starts a private cluster for it) gives each
//! test a fresh PostgreSQL database; otherwise each test gets a fresh SQLite file.

use std::path::Path;

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

/// A database of its own for one test, with a temporary directory beside it (for the SQLite
/// file, or for whatever else the test keeps on disk).
pub(crate) struct TestDatabase {
    dir: tempfile::TempDir,
    postgres_url: Option<String>,
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
    let name = format!("hearth_unit_{:016x}", rand::thread_rng().r#gen::<u64>());
    client
        .batch_execute(&format!("CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"))
        .await
        .unwrap_or_else(|e| panic!("cannot create the test database: {e}"));
    drop(client);
    let _ = connection.await;
    with_database(&admin_url, &name)
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
    use super::with_database;

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
