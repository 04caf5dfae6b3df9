//! Starts, kills and restarts the `hearth` binary named by `HEARTH_BIN`.
//!
//! This mirrors the main crate's integration harness (`tests/common/mod.rs`): the server listens
//! on `127.0.0.1:0` with open registration, and its stdout line
//! `hearth listening on http://ADDR` gives the URL.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

/// The environment variable naming the binary under test.
pub const BINARY_VARIABLE: &str = "HEARTH_BIN";

/// The server name a fresh data directory gets when none is given.
pub const SERVER_NAME: &str = "localhost";

/// The line prefix the server prints once it accepts connections.
const LISTENING_PREFIX: &str = "hearth listening on ";

/// How long the server may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `hearth` process and the data directory it owns.
pub struct TestServer {
    binary: PathBuf,
    child: Child,
    url: String,
    /// Removed when the server is dropped; it outlives every restart.
    data_dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts the binary named by `HEARTH_BIN` on a fresh data directory with open registration.
    pub async fn start() -> anyhow::Result<Self> {
        let binary = binary()?;
        let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
        let (child, url) = spawn(&binary, data_dir.path()).await?;
        Ok(Self { binary, child, url, data_dir })
    }

    /// The base URL clients use, such as `http://127.0.0.1:40123`. It changes on restart.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The data directory, kept across restarts.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Kills the server with SIGKILL (no shutdown code runs) and waits for it to exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("cannot kill the server")
    }

    /// Starts the server again on the same data directory; the port (and so the URL) changes.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let (child, url) = spawn(&self.binary, self.data_dir.path()).await?;
        self.child = child;
        self.url = url;
        Ok(())
    }

    /// [`kill`](Self::kill) followed by [`restart`](Self::restart).
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.restart().await
    }
}

/// The path in `HEARTH_BIN`, which must name an existing file.
pub fn binary() -> anyhow::Result<PathBuf> {
    let Some(value) = std::env::var_os(BINARY_VARIABLE) else {
        bail!(
            "{BINARY_VARIABLE} is not set: point it at the hearth binary to test, for example \
             {BINARY_VARIABLE}=/work/main/target/debug/hearth cargo test"
        );
    };
    let path = PathBuf::from(value);
    if !path.is_file() {
        bail!("{BINARY_VARIABLE}={} does not name a file", path.display());
    }
    Ok(path)
}

/// Starts `hearth --data-dir DIR serve --listen 127.0.0.1:0 --registration open` and returns the
/// process with the URL from its listening line.
async fn spawn(binary: &Path, data_dir: &Path) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--registration", "open"])
        .env(
            "RUST_LOG",
            std::env::var("HEARTH_RUST_LOG").unwrap_or_else(|_| "warn,warp::server=off".to_owned()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().context("the server's stdout is not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(STARTUP_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix(LISTENING_PREFIX) {
                return Ok(url.trim().to_owned());
            }
        }
        bail!("hearth exited before printing its listening line")
    })
    .await
    .context("hearth did not print its listening line in time")??;
    // Keep draining stdout so that the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}
