//! The integration-test harness: starts the real `hearth` binary on port 0 with a fresh data
//! directory and speaks HTTP to it, as a client would.
//!
//! Every server runs on the storage backend the environment names ([`backend()`]): SQLite by
//! default, or a fresh PostgreSQL database of its own with `HEARTH_TEST_BACKEND=postgres` and
//! `HEARTH_TEST_POSTGRES_URL` (see [`backend`](mod@backend)).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::{path::PathBuf, process::Stdio, time::Duration};

use hearth::config::{FirstRunSettings, RegistrationMode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

pub mod backend;
pub mod cluster;
pub mod table;

pub use backend::{TestDatabase, backend};

/// A running server and its data directory.
pub struct TestServer {
    child: Child,
    /// On PostgreSQL, the server's own database; dropped after the server is killed.
    database: Option<TestDatabase>,
    pub base_url: String,
    pub data_dir: PathBuf,
    /// Keeps the temporary directory alive for the server's life (and across restarts).
    _temp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
    args: Vec<String>,
    /// Whether the server must not create `hearth.db` (it was configured for PostgreSQL).
    on_postgres: bool,
}

/// A registered user's credentials.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

impl TestUser {
    /// The session a `/register` or `/login` answer holds.
    fn from_session(json: &Value) -> Self {
        TestUser {
            user_id: json["user_id"].as_str().unwrap().to_owned(),
            access_token: json["access_token"].as_str().unwrap().to_owned(),
            device_id: json["device_id"].as_str().unwrap().to_owned(),
        }
    }
}

fn login_body(user: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    })
}

/// Asserts that `got` is the Matrix error `errcode` with `status` and an error message.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(got.0, status, "status of {}", got.1);
    assert_eq!(got.1["errcode"], errcode, "errcode of {}", got.1);
    assert!(got.1["error"].is_string(), "an error message in {}", got.1);
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_hearth")
}

/// Runs `hearth` with `args` to completion (a hang fails the test after a minute).
pub async fn run_hearth(args: &[&str]) -> std::process::Output {
    let child = Command::new(binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start hearth");
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("hearth exited within a minute")
        .expect("hearth output")
}

impl TestServer {
    /// A server with open registration.
    pub async fn start() -> Self {
        Self::start_with(&["--registration", "open"]).await
    }

    /// A server with extra `serve` arguments.
    ///
    /// On PostgreSQL the data directory starts with the `hearth.toml` that the first run would
    /// write for `args` (the same template, with the same server name, registration mode and
    /// address), its `[database]` pointed at the server's own database.
    pub async fn start_with(args: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temporary directory");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let database = TestDatabase::for_backend().await;
        if let Some(database) = &database {
            let text = backend::with_postgres(&first_run_config(&args), database.url());
            std::fs::write(temp.path().join(hearth::config::CONFIG_FILE), text)
                .expect("write hearth.toml");
        }
        Self::launch(temp, database, args).await
    }

    /// A server whose data directory starts with `config` as its `hearth.toml` (so the first
    /// run reads it instead of writing the template), with extra `serve` arguments. On
    /// PostgreSQL its `[database]` is pointed at the server's own database.
    pub async fn start_with_config(config: &str, args: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temporary directory");
        let database = backend::write_config(temp.path(), config).await;
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Self::launch(temp, database, args).await
    }

    async fn launch(
        temp: tempfile::TempDir,
        database: Option<TestDatabase>,
        args: Vec<String>,
    ) -> Self {
        let data_dir = temp.path().to_owned();
        match &database {
            Some(database) => eprintln!("test server on postgres, database {}", database.name()),
            None => eprintln!("test server on {}", backend()),
        }
        let on_postgres = backend().is_postgres();
        let (child, base_url) = spawn(&data_dir, &args, on_postgres).await;
        Self {
            child,
            database,
            base_url,
            data_dir,
            _temp: Some(temp),
            http: reqwest::Client::new(),
            args,
            on_postgres,
        }
    }

    /// A server on SQLite whatever the run's backend, with the `hearth.toml` its first run
    /// writes: for the move to PostgreSQL, which starts there.
    pub async fn start_on_sqlite(args: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temporary directory");
        let data_dir = temp.path().to_owned();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (child, base_url) = spawn(&data_dir, &args, false).await;
        Self {
            child,
            database: None,
            base_url,
            data_dir,
            _temp: Some(temp),
            http: reqwest::Client::new(),
            args,
            on_postgres: false,
        }
    }

    /// A server whose `hearth.toml` is exactly `config` (its `[database]` included).
    pub async fn start_exact(config: &str, args: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temporary directory");
        std::fs::write(temp.path().join(hearth::config::CONFIG_FILE), config)
            .expect("write hearth.toml");
        let data_dir = temp.path().to_owned();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (child, base_url) = spawn(&data_dir, &args, false).await;
        Self {
            child,
            database: None,
            base_url,
            data_dir,
            _temp: Some(temp),
            http: reqwest::Client::new(),
            args,
            on_postgres: false,
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server with SIGKILL and waits until it is gone.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill the server");
    }

    /// Starts the server again on the same data (after [`Self::kill`]).
    pub async fn restart(&mut self) {
        let (child, base_url) = spawn(&self.data_dir, &self.args, self.on_postgres).await;
        self.child = child;
        self.base_url = base_url;
    }

    /// The server's PostgreSQL database (`None` on SQLite).
    pub fn database(&self) -> Option<&TestDatabase> {
        self.database.as_ref()
    }

    /// Kills the server with SIGKILL (no shutdown at all) and starts it again on the same data.
    pub async fn kill_and_restart(&mut self) {
        self.child.kill().await.expect("kill the server");
        let (child, base_url) = spawn(&self.data_dir, &self.args, self.on_postgres).await;
        self.child = child;
        self.base_url = base_url;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Sends a request with an optional token and JSON body; returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("response body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// Sends a raw body (for malformed-input tests).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path)).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("response body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// `GET /sync?{query}` for `user`, asserting success.
    pub async fn sync(&self, user: &TestUser, query: &str) -> Value {
        let path = format!("/_matrix/client/v3/sync?{query}");
        let (status, body) = self.get(&path, &user.access_token).await;
        assert_eq!(status, StatusCode::OK, "sync?{query}: {body}");
        body
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// Registers `name` with password `password-<name>` through open registration.
    pub async fn register(&self, name: &str) -> TestUser {
        let body = json!({
            "username": name,
            "password": format!("password-{name}"),
            "auth": { "type": "m.login.dummy" },
        });
        let (status, json) =
            self.call(Method::POST, "/_matrix/client/v3/register", None, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "register {name}: {json}");
        TestUser::from_session(&json)
    }

    /// `POST /login` with a password for `user` (a localpart or full user ID).
    pub async fn login(&self, user: &str, password: &str) -> (StatusCode, Value) {
        self.call(Method::POST, "/_matrix/client/v3/login", None, Some(login_body(user, password)))
            .await
    }

    /// Logs in, on the device `device` if given; panics unless the login succeeds.
    pub async fn login_ok(&self, user: &str, password: &str, device: Option<&str>) -> TestUser {
        let mut body = login_body(user, password);
        if let Some(device) = device {
            body["device_id"] = json!(device);
            body["initial_device_display_name"] = json!(format!("{device} display name"));
        }
        let (status, json) =
            self.call(Method::POST, "/_matrix/client/v3/login", None, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "login {user}: {json}");
        TestUser::from_session(&json)
    }

    /// Creates a room with extra `createRoom` fields; returns its ID.
    pub async fn create_room(&self, user: &TestUser, body: Value) -> String {
        let (status, json) =
            self.post("/_matrix/client/v3/createRoom", &user.access_token, body).await;
        assert_eq!(status, StatusCode::OK, "createRoom: {json}");
        json["room_id"].as_str().unwrap().to_owned()
    }

    /// Sends an `m.room.message` text; returns the event ID.
    pub async fn send_text(&self, user: &TestUser, room_id: &str, text: &str) -> String {
        let txn = format!("t{}", rand_suffix());
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room_id));
        let (status, json) =
            self.put(&path, &user.access_token, json!({"msgtype": "m.text", "body": text})).await;
        assert_eq!(status, StatusCode::OK, "send: {json}");
        json["event_id"].as_str().unwrap().to_owned()
    }

    /// Joins a room; panics on failure.
    pub async fn join(&self, user: &TestUser, room: &str) {
        let path = format!("/_matrix/client/v3/join/{}", enc(room));
        let (status, json) = self.post(&path, &user.access_token, json!({})).await;
        assert_eq!(status, StatusCode::OK, "join: {json}");
    }
}

/// Percent-encodes a path segment (room IDs, event IDs, aliases).
pub fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    u64::from(nanos) * 1000 + COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The `hearth.toml` a first run of `hearth serve --listen 127.0.0.1:0 ARGS` writes.
fn first_run_config(args: &[String]) -> String {
    let flag = |name: &str| {
        let at = args.iter().rposition(|arg| arg == name)?;
        Some(args.get(at + 1).unwrap_or_else(|| panic!("{name} needs a value")).as_str())
    };
    let server_name = flag("--server-name").unwrap_or("localhost");
    let registration = flag("--registration").map_or(RegistrationMode::default(), |mode| {
        <RegistrationMode as clap::ValueEnum>::from_str(mode, false).expect("a registration mode")
    });
    hearth::config::template(&FirstRunSettings {
        server_name: hearth::config::parse_server_name(server_name).expect("a server name"),
        listen: flag("--listen").unwrap_or("127.0.0.1:0").parse().expect("a listen address"),
        registration,
    })
}

async fn spawn(data_dir: &std::path::Path, args: &[String], on_postgres: bool) -> (Child, String) {
    let mut child = Command::new(binary())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start hearth");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(url) = line.strip_prefix("hearth listening on ") {
                return url.to_owned();
            }
        }
        panic!("hearth exited before listening");
    })
    .await
    .expect("hearth started within 30 s");
    if on_postgres {
        let file = data_dir.join(hearth::server::DATABASE_FILE);
        assert!(
            !file.exists(),
            "the server was configured for PostgreSQL but created {}: it used SQLite",
            file.display()
        );
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}
