//! The server under test: either a `hearth` process the benchmark starts on a fresh temporary
//! data directory, or a homeserver someone else runs (`--homeserver`).
//!
//! Starting one measures the time from spawning the process to the line it prints once it listens,
//! and to its first `200` on `/_matrix/client/versions` (what the report calls "serving"). The benchmark's server writes its configuration before the first
//! start (open registration, login rate limit raised so that registering many users is not
//! throttled) and is stopped, then killed if it lingers, when the benchmark ends.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use hearth::config::{FirstRunSettings, RegistrationMode, parse_server_name, template};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

use crate::client::Client;

/// The line prefix `hearth serve` prints once it listens.
const LISTENING_PREFIX: &str = "hearth listening on ";
/// How long a start may take before the benchmark gives up on it.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a stopped server may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(1);

/// The homeserver being measured.
pub enum Server {
    /// A `hearth` process this benchmark started and will stop.
    Spawned(Box<Spawned>),
    /// A homeserver that was already running, and its process ID if given.
    External { base_url: String, pid: Option<u32> },
}

/// How long one start took, from spawning the process.
#[derive(Clone, Copy, Debug)]
pub struct StartTime {
    /// Until the server printed that it listens.
    pub listening: Duration,
    /// Until its first `200` on `/_matrix/client/versions`.
    pub serving: Duration,
}

/// A running `hearth` process and the temporary directory that holds its data.
pub struct Spawned {
    child: Child,
    base_url: String,
    /// How long the last start took.
    pub start: StartTime,
    data_dir: PathBuf,
    /// Keeps the data directory alive across restarts; removed when the benchmark ends.
    _temp: tempfile::TempDir,
}

impl Server {
    pub fn base_url(&self) -> &str {
        match self {
            Self::Spawned(spawned) => &spawned.base_url,
            Self::External { base_url, .. } => base_url,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Spawned(spawned) => spawned.child.id(),
            Self::External { pid, .. } => *pid,
        }
    }

    /// The server process's resident set size in megabytes (10^6 bytes), where the OS shows it.
    pub fn rss_mb(&self) -> Option<f64> {
        rss_mb(self.pid()?)
    }
}

impl Spawned {
    /// Starts `binary` on a fresh temporary data directory with the benchmark's configuration.
    pub async fn start(binary: &Path) -> anyhow::Result<Self> {
        let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
        let data_dir = temp.path().join("data");
        fs::create_dir(&data_dir).context("cannot create the data directory")?;
        write_config(&data_dir)?;
        let (child, base_url, start) = launch(binary, &data_dir).await?;
        Ok(Self { child, base_url, start, data_dir, _temp: temp })
    }

    /// The process's resident set size in megabytes, where the OS shows it.
    pub fn rss_mb(&self) -> Option<f64> {
        rss_mb(self.child.id()?)
    }

    /// Stops the server and starts it again on the same data, measuring the new start.
    pub async fn restart(&mut self, binary: &Path) -> anyhow::Result<()> {
        self.stop().await;
        let (child, base_url, start) = launch(binary, &self.data_dir).await?;
        (self.child, self.base_url, self.start) = (child, base_url, start);
        Ok(())
    }

    /// Asks the server to shut down (SIGTERM on Unix), killing it if it does not exit in time.
    pub async fn stop(&mut self) {
        let asked = request_shutdown(&self.child);
        if !asked || tokio::time::timeout(STOP_GRACE, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// Writes `hearth.toml` with open registration and a login rate limit that never throttles.
fn write_config(data_dir: &Path) -> anyhow::Result<()> {
    let settings = FirstRunSettings {
        server_name: parse_server_name("localhost")?,
        listen: "127.0.0.1:0".parse()?,
        registration: RegistrationMode::Open,
    };
    let default_limit = "login_attempts_per_minute = 30";
    let text = template(&settings);
    if !text.contains(default_limit) {
        bail!("the configuration template no longer has `{default_limit}`; update the benchmark");
    }
    let text = text.replace(default_limit, "login_attempts_per_minute = 1000000");
    fs::write(data_dir.join(hearth::config::CONFIG_FILE), text)
        .context("cannot write the benchmark's hearth.toml")
}

/// Spawns `hearth serve` and waits until it answers; returns the process, its URL and how long
/// it took to listen and to serve.
async fn launch(binary: &Path, data_dir: &Path) -> anyhow::Result<(Child, String, StartTime)> {
    let stderr_path = data_dir.with_file_name("server-stderr.log");
    let stderr = File::create(&stderr_path).context("cannot create the server's stderr log")?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--registration", "open"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().context("the server's stdout is not piped")?;
    let ready = async {
        let base_url = read_base_url(BufReader::new(stdout).lines()).await?;
        let listening = started.elapsed();
        wait_until_serving(&base_url).await?;
        anyhow::Ok((base_url, StartTime { listening, serving: started.elapsed() }))
    };
    match tokio::time::timeout(START_DEADLINE, ready).await {
        Ok(Ok((base_url, start))) => Ok((child, base_url, start)),
        Ok(Err(error)) => Err(error.context(stderr_tail(&stderr_path))),
        Err(_) => bail!("the server did not serve within {START_DEADLINE:?}"),
    }
}

/// Reads stdout up to the "listening" line, then keeps draining it so the server never blocks
/// on a full pipe.
async fn read_base_url(mut lines: Lines<BufReader<ChildStdout>>) -> anyhow::Result<String> {
    while let Some(line) = lines.next_line().await.context("cannot read the server's stdout")? {
        if let Some(url) = line.strip_prefix(LISTENING_PREFIX) {
            let url = url.trim().to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(url);
        }
    }
    bail!("the server exited before it printed `{LISTENING_PREFIX}URL`")
}

async fn wait_until_serving(base_url: &str) -> anyhow::Result<()> {
    let probe = Client::new(base_url)?;
    while !probe.versions_ok().await {
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    Ok(())
}

/// The last lines the server wrote to stderr, to explain a failed start.
fn stderr_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("the server did not start; the end of its stderr:\n{tail}")
}

/// Sends SIGTERM, which lets the server close its database the way a service manager would stop
/// it; true if that was sent. The standard library has no signal call, so this asks kill(1).
#[cfg(unix)]
fn request_shutdown(child: &Child) -> bool {
    let Some(pid) = child.id() else { return false };
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
    status.is_ok_and(|status| status.success())
}

/// No graceful stop to ask for here: the caller kills the process.
#[cfg(not(unix))]
fn request_shutdown(_child: &Child) -> bool {
    false
}

/// VmRSS from `/proc/PID/status` in megabytes; `None` where that file does not exist (not
/// Linux).
fn rss_mb(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kibibytes: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kibibytes * 1024.0 / 1_000_000.0)
}
