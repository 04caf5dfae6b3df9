//! The PostgreSQL server the move goes to: a private throwaway cluster that
//! `scripts/pg-test-cluster` starts in a temporary directory, or the server
//! `HEARTH_BENCH_POSTGRES_URL` names. Either way the move gets a fresh database of its own,
//! which is dropped again (or goes with the cluster) when the benchmark ends, also after a
//! failure.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use tokio_postgres::NoTls;

/// The variable naming an existing PostgreSQL server (an admin URL: the role may create
/// databases).
pub const URL_VARIABLE: &str = "HEARTH_BENCH_POSTGRES_URL";

/// A PostgreSQL server and the fresh database made on it for the move.
pub struct Server {
    /// The URL of the server's `postgres` database, to create and drop the move's database.
    admin_url: String,
    /// The move's database.
    pub database_url: String,
    database: String,
    /// The private cluster, stopped on drop; `None` for the server the variable names.
    cluster: Option<Cluster>,
}

/// A cluster `scripts/pg-test-cluster` runs in a temporary directory.
struct Cluster {
    dir: tempfile::TempDir,
    stopped: bool,
}

impl Server {
    /// Uses the server `HEARTH_BENCH_POSTGRES_URL` names, or starts a private cluster.
    pub async fn start() -> anyhow::Result<Self> {
        let (admin_url, cluster) = match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.is_empty() => (url, None),
            _ => {
                let (url, cluster) = Cluster::start()?;
                (url, Some(cluster))
            }
        };
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let database = format!("hearth_migration_bench_{}_{millis}", std::process::id());
        let database_url = with_database(&admin_url, &database)?;
        let mut server = Self { admin_url, database_url, database, cluster };
        if let Err(error) = server
            .admin(&format!(
                "CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0",
                server.database
            ))
            .await
        {
            server.stop().await;
            return Err(error.context("cannot create the benchmark's database"));
        }
        Ok(server)
    }

    /// Where the server is, for the report.
    pub fn describe(&self) -> String {
        match &self.cluster {
            Some(cluster) => format!("private cluster in {}", cluster.dir.path().display()),
            None => format!("{URL_VARIABLE}, database {}", self.database),
        }
    }

    /// Runs `sql` on the move's database and returns the first column of the single row.
    pub async fn query_i64(&self, sql: &str) -> anyhow::Result<i64> {
        let client = connect(&self.database_url).await?;
        Ok(client.query_one(sql, &[]).await?.try_get(0)?)
    }

    /// CPU seconds the private cluster's processes have used so far (those that ended included),
    /// from `/proc` (Linux); `None` for a server of someone else's.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid_file = self.cluster.as_ref()?.dir.path().join("data/postmaster.pid");
        let postmaster: u32 =
            std::fs::read_to_string(pid_file).ok()?.lines().next()?.parse().ok()?;
        let (own, ended, _) = process_ticks(postmaster)?;
        let mut ticks = own + ended;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((child, _, _)) = process_ticks(pid).filter(|t| t.2 == postmaster) {
                ticks += child;
            }
        }
        // USER_HZ is 100 on every Linux architecture Hearth builds for.
        Some(ticks as f64 / 100.0)
    }

    /// Drops the move's database on a server of someone else's, or stops the private cluster.
    pub async fn stop(&mut self) {
        match &mut self.cluster {
            Some(cluster) => cluster.stop(),
            None => {
                let drop = format!("DROP DATABASE IF EXISTS {}", self.database);
                if let Err(error) = self.admin(&drop).await {
                    crate::progress(&format!("cannot drop {}: {error:#}", self.database));
                }
            }
        }
    }

    async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        connect(&self.admin_url).await?.batch_execute(sql).await?;
        Ok(())
    }
}

impl Cluster {
    fn start() -> anyhow::Result<(String, Self)> {
        let dir = tempfile::Builder::new()
            .prefix("hearth-migration-bench-pg")
            .tempdir_in(std::env::temp_dir())
            .context("cannot create a directory for the PostgreSQL cluster")?;
        let output = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .context("cannot run scripts/pg-test-cluster")?;
        let mut cluster = Self { dir, stopped: false };
        if !output.status.success() {
            cluster.stop();
            bail!(
                "scripts/pg-test-cluster could not start PostgreSQL (or set {URL_VARIABLE}): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let url = String::from_utf8(output.stdout)?.trim().to_owned();
        Ok((url, cluster))
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let status = Command::new(script()).arg("stop").arg(self.dir.path()).status();
        if !status.is_ok_and(|status| status.success()) {
            crate::progress(&format!("cannot stop the cluster in {}", self.dir.path().display()));
        }
    }
}

impl Drop for Cluster {
    /// A benchmark that panics still stops its cluster.
    fn drop(&mut self) {
        self.stop();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-test-cluster")
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.context("cannot connect to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(client)
}

/// `url` with its database replaced by `database`:
/// `postgresql://u@h:5432/postgres?x=y` → `postgresql://u@h:5432/DATABASE?x=y`.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("{URL_VARIABLE} must be a postgresql:// URL, not a key-value string");
    };
    let (authority, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let host = authority.split_once('/').map_or(authority, |(host, _)| host);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!("{scheme}://{host}/{database}{query}"))
}

/// A process's own CPU ticks (user + system), those of its children that ended, and its parent.
fn process_ticks(pid: u32) -> Option<(u64, u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name, from the 3rd (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |n: usize| fields.get(n)?.parse::<u64>().ok();
    let parent = u32::try_from(number(1)?).ok()?;
    Some((number(11)? + number(12)?, number(13)? + number(14)?, parent))
}
