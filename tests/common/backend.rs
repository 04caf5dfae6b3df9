//! Which storage backend the tests run on, and a fresh PostgreSQL database per test server.
//!
//! The backend comes from the environment, so that one suite runs on both (`scripts/test-all`
//! runs it twice):
//!
//! - `HEARTH_TEST_BACKEND` unset, empty or `sqlite`: every server keeps `hearth.db` in its
//!   temporary data directory.
//! - `HEARTH_TEST_BACKEND=postgres` with `HEARTH_TEST_POSTGRES_URL` naming a PostgreSQL server as
//!   a role that may create databases (`scripts/pg-test-cluster start DIR` prints one): every
//!   server gets its own new database `hearth_test_<random hex>`, written into its
//!   `hearth.toml` before the first start, and dropped with the server. Without the URL every
//!   test fails at once: a run meant for PostgreSQL never quietly tests SQLite.

use std::{fmt, path::Path, sync::OnceLock, time::Duration};

/// Chooses the backend: `sqlite` (the default) or `postgres`.
pub const BACKEND_VARIABLE: &str = "HEARTH_TEST_BACKEND";
/// The PostgreSQL server for `HEARTH_TEST_BACKEND=postgres`: a `postgresql://` URL (or a
/// key-value connection string) whose role may create and drop databases.
pub const POSTGRES_URL_VARIABLE: &str = "HEARTH_TEST_POSTGRES_URL";

/// The storage backend every test server of this run uses.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    /// `admin_url` is the server from `HEARTH_TEST_POSTGRES_URL`; each test server gets a
    /// database of its own on it.
    Postgres {
        admin_url: String,
    },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Backend::Postgres { .. })
    }
}

/// The name only: the URL may hold a password.
impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend named by the environment. Panics (failing the test) on an unknown backend, or on
/// `postgres` without a server to use.
pub fn backend() -> &'static Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        let chosen = std::env::var(BACKEND_VARIABLE).unwrap_or_default();
        match chosen.trim() {
            "" | "sqlite" => Backend::Sqlite,
            "postgres" => {
                let admin_url = std::env::var(POSTGRES_URL_VARIABLE).unwrap_or_default();
                assert!(
                    !admin_url.trim().is_empty(),
                    "{BACKEND_VARIABLE}=postgres needs {POSTGRES_URL_VARIABLE}, the URL of a \
                     PostgreSQL server whose role may create databases, e.g. from \
                     `scripts/pg-test-cluster start DIR` (scripts/test-all starts one itself); \
                     refusing to run the tests on SQLite instead"
                );
                if !cfg!(feature = "postgres") {
                    panic!(
                        "{BACKEND_VARIABLE}=postgres, but this build of Hearth has no PostgreSQL \
                         support (the `postgres` cargo feature is off)"
                    );
                }
                Backend::Postgres { admin_url: admin_url.trim().to_owned() }
            }
            other => panic!("{BACKEND_VARIABLE}={other:?}: expected \"sqlite\" or \"postgres\""),
        }
    })
}

/// `text` (a `hearth.toml`) with its `[database]` pointing at `url`; comments and every other
/// setting are kept.
pub fn with_postgres(text: &str, url: &str) -> String {
    let mut document: toml_edit::DocumentMut =
        text.parse().unwrap_or_else(|e| panic!("the test's hearth.toml is TOML: {e}\n{text}"));
    document["database"]["backend"] = toml_edit::value("postgres");
    document["database"]["url"] = toml_edit::value(url);
    document.to_string()
}

/// Writes `text` as the `hearth.toml` of `data_dir`, pointed at a fresh database of the current
/// backend (on SQLite: `text` unchanged). Keep the returned database for as long as a server may
/// use the directory: dropping it drops the database.
pub async fn write_config(data_dir: &Path, text: &str) -> Option<TestDatabase> {
    let database = TestDatabase::for_backend().await;
    let text = match &database {
        Some(database) => with_postgres(text, database.url()),
        None => text.to_owned(),
    };
    std::fs::write(data_dir.join(hearth::config::CONFIG_FILE), text).expect("write hearth.toml");
    database
}

/// A database of its own for one test server on the PostgreSQL server of the run; dropped (with
/// its connections) when this value is dropped.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TestDatabase({})", self.name)
    }
}

impl TestDatabase {
    /// A new database when the run is on PostgreSQL, `None` on SQLite.
    pub async fn for_backend() -> Option<Self> {
        match backend() {
            Backend::Sqlite => None,
            Backend::Postgres { admin_url } => Some(Self::create(admin_url).await),
        }
    }

    /// Creates `hearth_test_<random hex>` on the server at `admin_url`.
    pub async fn create(admin_url: &str) -> Self {
        let name = format!("hearth_test_{:016x}", rand::random::<u64>());
        pg::create_database(admin_url, &name).await;
        Self { url: database_url(admin_url, &name), name, admin_url: admin_url.to_owned() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection URL of this database (what `[database] url` holds).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The tables in the database's `public` schema, sorted.
    pub async fn tables(&self) -> Vec<String> {
        let sql = "SELECT table_name::text FROM information_schema.tables \
                   WHERE table_schema = 'public' ORDER BY 1";
        self.query_strings(sql).await.into_iter().flatten().collect()
    }

    /// Runs `sql` on this database and returns the first column of each row, as text.
    pub async fn query_strings(&self, sql: &str) -> Vec<Option<String>> {
        pg::query_strings(&self.url, sql).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread with
        // a runtime of its own. A failure only leaves a database on a throwaway server behind,
        // so it is reported, never a panic (which would abort a test that is already failing).
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), pg::drop_database(&admin_url, &name))
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out"))?
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("warning: could not drop the test database {}: {e:#}", self.name)
            }
            Err(_) => eprintln!("warning: dropping the test database {} panicked", self.name),
        }
    }
}

/// The URL of database `name` on the server of `admin_url`: the same address, role and options,
/// another database.
fn database_url(admin_url: &str, name: &str) -> String {
    let Some(scheme_end) = admin_url.find("://") else {
        // A key-value connection string: a later `dbname` wins.
        return format!("{admin_url} dbname={name}");
    };
    let after_scheme = scheme_end + 3;
    let rest = &admin_url[after_scheme..];
    let authority_end = rest.find(['/', '?']).map_or(admin_url.len(), |i| after_scheme + i);
    let query =
        admin_url[authority_end..].find('?').map_or("", |i| &admin_url[authority_end + i..]);
    format!("{}/{name}{query}", &admin_url[..authority_end])
}

#[cfg(feature = "postgres")]
mod pg {
    use std::time::Duration;

    use anyhow::Context as _;
    use tokio_postgres::{Client, NoTls};

    /// A client on `url`, its connection driven by a task of the current runtime.
    async fn connect(url: &str) -> anyhow::Result<Client> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .context("cannot connect to the test PostgreSQL server (HEARTH_TEST_POSTGRES_URL)")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    pub async fn create_database(admin_url: &str, name: &str) {
        let client = connect(admin_url).await.unwrap_or_else(|e| panic!("{e:#}"));
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on the test server: {e}"));
    }

    pub async fn query_strings(url: &str, sql: &str) -> Vec<Option<String>> {
        let client = connect(url).await.unwrap_or_else(|e| panic!("{e:#}"));
        let rows = client.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.iter().map(|row| row.get(0)).collect()
    }

    /// Drops database `name`, ending the sessions still on it first.
    pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
        let client = connect(admin_url).await?;
        let mut last_error = None;
        for _ in 0..10 {
            client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .context("end the database's sessions")?;
            match client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\"")).await {
                Ok(()) => return Ok(()),
                // A session that connected in the meantime: end it too and try again.
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_error.map_or_else(|| anyhow::anyhow!("DROP DATABASE failed"), Into::into))
    }
}

/// Without the `postgres` feature, [`backend`] refuses `postgres`, so none of these is reached.
#[cfg(not(feature = "postgres"))]
mod pg {
    const NO_POSTGRES: &str = "this build of Hearth has no PostgreSQL support";

    pub async fn create_database(_admin_url: &str, _name: &str) {
        panic!("{NO_POSTGRES}")
    }

    pub async fn query_strings(_url: &str, _sql: &str) -> Vec<Option<String>> {
        panic!("{NO_POSTGRES}")
    }

    pub async fn drop_database(_admin_url: &str, _name: &str) -> anyhow::Result<()> {
        Ok(())
    }
}
