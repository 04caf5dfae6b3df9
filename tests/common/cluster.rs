//! A PostgreSQL cluster of a test's own, which the test may stop and start again (to see what
//! Hearth does while its database is away), made by `scripts/pg-test-cluster`.

use std::process::Command;

/// The script that makes throwaway clusters.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg-test-cluster");

/// Whether this machine can make a cluster (PostgreSQL's programs are installed). Under
/// `HEARTH_CI=1` they must be: a test that needs them then fails instead of skipping.
pub fn available() -> bool {
    let found = Command::new(SCRIPT).arg("bindir").output().is_ok_and(|o| o.status.success());
    if !found && std::env::var("HEARTH_CI").as_deref() == Ok("1") {
        panic!("PostgreSQL's programs (initdb, pg_ctl) are missing, and skips are failures in CI");
    }
    found
}

/// A running cluster; stopped and removed when dropped.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    /// `postgresql://USER@127.0.0.1:PORT/postgres`
    pub admin_url: String,
}

impl PrivateCluster {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("hearth-test-pg").tempdir().expect("temp dir");
        let output =
            Command::new(SCRIPT).arg("start").arg(dir.path()).output().expect("run the script");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let admin_url = String::from_utf8(output.stdout).expect("a URL").trim().to_owned();
        Self { dir, admin_url }
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Starts the stopped server again on the same port.
    pub fn resume(&self) {
        self.run("resume");
    }

    fn run(&self, command: &str) {
        let output = Command::new(SCRIPT)
            .arg(command)
            .arg(self.dir.path())
            .output()
            .expect("run the script");
        assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).arg("stop").arg(self.dir.path()).output();
    }
}
