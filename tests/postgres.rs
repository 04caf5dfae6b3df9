//! PostgreSQL as a family meets it: the database going away under a running server, a table
//! locked by someone else, a server started before its database (as at boot) or with a login the
//! database refuses, and the move of a running server from SQLite to PostgreSQL through the admin API, checked through the
//! client API before and after, with the server killed or PostgreSQL stopped along the way.
//!
//! These tests make PostgreSQL clusters of their own (they stop and start them), so they run in
//! the PostgreSQL pass of `scripts/test-all` and say so in the SQLite pass.

mod common;

use std::time::Duration;

use common::{TestServer, TestUser, cluster::PrivateCluster, enc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A cluster of the test's own, or `None` (with a note) outside the PostgreSQL pass.
fn private_cluster() -> Option<PrivateCluster> {
    if !common::backend().is_postgres() {
        eprintln!("skipped here: runs in the PostgreSQL pass (HEARTH_TEST_BACKEND=postgres)");
        return None;
    }
    assert!(common::cluster::available(), "the PostgreSQL pass needs initdb and pg_ctl");
    Some(PrivateCluster::start())
}

/// The config of a server on the PostgreSQL database `url`, with open registration.
fn postgres_config(url: &str) -> String {
    format!(
        "server_name = \"localhost\"\n[registration]\nmode = \"open\"\n\
         [database]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
    )
}

async fn send(server: &TestServer, user: &TestUser, room: &str, text: &str) -> (StatusCode, Value) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
        enc(room),
        rand::random::<u64>()
    );
    server.put(&path, &user.access_token, json!({"msgtype": "m.text", "body": text})).await
}

/// Retries `f` until it answers 200 or `limit` passes.
async fn until_ok<F, Fut>(limit: Duration, mut f: F) -> (StatusCode, Value)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (StatusCode, Value)>,
{
    let started = std::time::Instant::now();
    loop {
        let answer = f().await;
        if answer.0 == StatusCode::OK || started.elapsed() > limit {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_server_whose_database_goes_away_answers_503_and_recovers_by_itself() {
    let Some(cluster) = private_cluster() else { return };
    let database = common::TestDatabase::create(&cluster.admin_url).await;
    let mut server = TestServer::start_exact(&postgres_config(database.url()), &[]).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"name": "family"})).await;
    let before = server.send_text(&alice, &room, "acknowledged before the outage").await;

    cluster.stop();
    for _ in 0..3 {
        let (status, body) = send(&server, &alice, &room, "while the database is away").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
        let (status, _) = server.get("/_matrix/client/v3/joined_rooms", &alice.access_token).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(server.is_running(), "the server keeps running without its database");

    cluster.resume();
    let (status, body) =
        until_ok(Duration::from_secs(20), || send(&server, &alice, &room, "after the outage"))
            .await;
    assert_eq!(status, StatusCode::OK, "the server recovered by itself: {body}");
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&before));
    let (status, event) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"]["body"], "acknowledged before the outage");
}

#[tokio::test]
async fn a_table_locked_by_another_session_costs_a_503_instead_of_a_hang_until_it_is_released() {
    let Some(cluster) = private_cluster() else { return };
    let database = common::TestDatabase::create(&cluster.admin_url).await;
    // A lock wait of one second instead of the default ten keeps the test short.
    let url = format!("{}?options=-c%20lock_timeout%3D1s", database.url());
    let server = TestServer::start_exact(&postgres_config(&url), &[]).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"name": "family"})).await;
    server.send_text(&alice, &room, "before the lock").await;
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&room));

    // Someone else's session (an administrator's maintenance, say) holds every event.
    let (locker, connection) =
        tokio_postgres::connect(database.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    locker.batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let answered = |what: &'static str| move |_| panic!("{what} hung behind the lock");
    let write =
        tokio::time::timeout(Duration::from_secs(60), send(&server, &alice, &room, "locked"))
            .await
            .unwrap_or_else(answered("the write"));
    common::assert_error(&write, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN");
    let read =
        tokio::time::timeout(Duration::from_secs(60), server.get(&messages, &alice.access_token))
            .await
            .unwrap_or_else(answered("the read"));
    common::assert_error(&read, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN");

    locker.batch_execute("COMMIT").await.unwrap();
    let (status, body) = send(&server, &alice, &room, "after the lock").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get(&messages, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bodies: Vec<&str> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["after the lock", "before the lock"], "the refused write left nothing");
}

/// Processes stopped with SIGSTOP, continued with SIGCONT when dropped (also when the test fails:
/// a cluster with stopped sessions would not shut down).
#[cfg(unix)]
struct Stopped(Vec<String>);

#[cfg(unix)]
impl Stopped {
    fn new(pids: Vec<String>) -> Self {
        let status = std::process::Command::new("kill").arg("-STOP").args(&pids).status();
        assert!(status.unwrap().success(), "kill -STOP {pids:?}");
        Self(pids)
    }
}

#[cfg(unix)]
impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg("-CONT").args(&self.0).status();
    }
}

/// Starts `request`, waits until one of Hearth's sessions waits for a lock in it, stops that
/// session's server process (a hung host still acknowledges packets, but never answers) and
/// returns the request's answer, which must come.
#[cfg(unix)]
async fn answer_with_its_session_stopped<F>(
    database: &common::TestDatabase,
    request: F,
) -> ((StatusCode, Value), Stopped)
where
    F: std::future::Future<Output = (StatusCode, Value)>,
{
    let waiting = "SELECT pid::text FROM pg_stat_activity WHERE datname = current_database() \
                   AND application_name = 'hearth' AND wait_event_type = 'Lock'";
    let mut request = std::pin::pin!(tokio::time::timeout(Duration::from_secs(60), request));
    let stopped = loop {
        tokio::select! {
            answer = &mut request => panic!("answered before its session waited: {answer:?}"),
            pids = database.query_strings(waiting) => {
                let pids: Vec<String> = pids.into_iter().flatten().collect();
                if !pids.is_empty() {
                    break Stopped::new(pids);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let answer = request.await;
    (answer.expect("the request hung on its stopped session"), stopped)
}

#[cfg(unix)]
#[tokio::test]
async fn a_session_that_stops_answering_costs_a_503_and_the_server_goes_on_without_it() {
    let Some(cluster) = private_cluster() else { return };
    let database = common::TestDatabase::create(&cluster.admin_url).await;
    // Statements may run 3 s; Hearth waits 5 s more for an answer before it gives up itself.
    let options = "?options=-c%20statement_timeout%3D3s%20-c%20lock_timeout%3D3s";
    let url = format!("{}{options}", database.url());
    let server = TestServer::start_exact(&postgres_config(&url), &[]).await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"name": "family"})).await;
    server.send_text(&alice, &room, "before").await;
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&room));
    let (locker, connection) =
        tokio_postgres::connect(database.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let lock = "BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE";

    // A write: its batch's session stops while it waits for the lock. Once the client has its
    // answer, the session may go on (to see its connection gone and end, releasing its locks).
    locker.batch_execute(lock).await.unwrap();
    let (write, stopped) =
        answer_with_its_session_stopped(&database, send(&server, &alice, &room, "stuck")).await;
    common::assert_error(&write, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN");
    locker.batch_execute("COMMIT").await.unwrap();
    drop(stopped);
    let (status, body) =
        until_ok(Duration::from_secs(30), || send(&server, &alice, &room, "after")).await;
    assert_eq!(status, StatusCode::OK, "writes go on: {body}");

    // A read, the same way.
    locker.batch_execute(lock).await.unwrap();
    let (read, stopped) =
        answer_with_its_session_stopped(&database, server.get(&messages, &alice.access_token))
            .await;
    common::assert_error(&read, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN");
    locker.batch_execute("COMMIT").await.unwrap();
    drop(stopped);
    let (status, body) =
        until_ok(Duration::from_secs(30), || server.get(&messages, &alice.access_token)).await;
    assert_eq!(status, StatusCode::OK, "reads go on: {body}");
    let bodies: Vec<&str> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["after", "before"], "the write that got 503 left nothing");
}

/// `127.0.0.1:PORT` of a cluster's admin URL.
fn server_address(cluster: &PrivateCluster) -> &str {
    let (_, rest) = cluster.admin_url.split_once('@').expect("a URL with a user");
    rest.split('/').next().unwrap()
}

type Lines<R> = tokio::io::Lines<tokio::io::BufReader<R>>;

/// `hearth serve` on `dir` (with its `hearth.toml` written), its stdout and stderr as lines.
fn spawn_serve(
    dir: &std::path::Path,
) -> (tokio::process::Child, Lines<tokio::process::ChildStdout>, Lines<tokio::process::ChildStderr>)
{
    use tokio::io::{AsyncBufReadExt as _, BufReader};

    let mut child = tokio::process::Command::new(common::binary())
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, stdout, stderr)
}

/// The next line holding `needle`, within a minute; panics if the output ends first.
async fn line_with<R: tokio::io::AsyncRead + Unpin>(lines: &mut Lines<R>, needle: &str) -> String {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("hearth exited before printing {needle:?}");
    });
    found.await.unwrap_or_else(|_| panic!("no {needle:?} within a minute"))
}

/// A data directory whose `hearth.toml` points at a fresh database of `cluster`, and that
/// database (kept for as long as a server may use it).
async fn data_dir_on(cluster: &PrivateCluster) -> (tempfile::TempDir, common::TestDatabase) {
    let database = common::TestDatabase::create(&cluster.admin_url).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hearth.toml"), postgres_config(database.url())).unwrap();
    (dir, database)
}

#[tokio::test]
async fn a_server_started_before_its_database_waits_for_it_and_then_serves() {
    let Some(cluster) = private_cluster() else { return };
    let (dir, _database) = data_dir_on(&cluster).await;
    cluster.stop();

    // As at boot, when PostgreSQL comes up after Hearth.
    let (mut child, mut stdout, mut stderr) = spawn_serve(dir.path());
    // Two attempts, each logged with the address, the cause and when the next comes.
    for _ in 0..2 {
        let line = line_with(&mut stderr, "retrying").await;
        assert!(line.contains(server_address(&cluster)), "names the server: {line}");
        assert!(line.contains("Connection refused"), "names the cause: {line}");
        assert!(line.contains("retry_in_seconds="), "says when it retries: {line}");
    }
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

    cluster.resume();
    let listening = line_with(&mut stdout, "hearth listening on ").await;
    let base_url = listening.strip_prefix("hearth listening on ").unwrap();
    let body =
        json!({"username": "alice", "password": "a password", "auth": {"type": "m.login.dummy"}});
    let response = reqwest::Client::new()
        .post(format!("{base_url}/_matrix/client/v3/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
    child.kill().await.unwrap();
}

/// Waiting for the database is no reason to ignore the service manager's stop (or Ctrl-C).
#[cfg(unix)]
#[tokio::test]
async fn a_server_waiting_for_its_database_stops_when_told_to() {
    let Some(cluster) = private_cluster() else { return };
    let (dir, _database) = data_dir_on(&cluster).await;
    cluster.stop();
    let (mut child, _stdout, mut stderr) = spawn_serve(dir.path());
    line_with(&mut stderr, "retrying").await;

    // What Ctrl-C sends.
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("it stops instead of waiting on")
        .unwrap();
    assert!(status.success(), "a requested stop is not a failure: {status}");
}

#[tokio::test]
async fn a_server_whose_database_refuses_the_login_stops_at_once_and_says_why() {
    let Some(cluster) = private_cluster() else { return };
    let address = server_address(&cluster).to_owned();
    let cases = [
        (format!("postgresql://hearth_nobody@{address}/postgres"), "hearth_nobody"),
        (
            format!("{}/hearth_missing", cluster.admin_url.rsplit_once('/').unwrap().0),
            "does not exist",
        ),
    ];
    for (url, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hearth.toml"), postgres_config(&url)).unwrap();
        let run = tokio::process::Command::new(common::binary())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("it stops instead of retrying")
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(!stderr.contains("retrying"), "{stderr}");
        assert!(stderr.contains(&address) && stderr.contains(reason), "{stderr}");
    }
}

/// What a client sees of the server: what `/sync` and `/messages` say, and the profile.
async fn client_view(server: &TestServer, user: &TestUser, room: &str) -> Value {
    let (status, sync) = server.get("/_matrix/client/v3/sync", &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(room));
    let (status, messages) = server.get(&path, &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "{messages}");
    let bodies: Vec<Value> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["event_id"], e["type"], e["content"]]))
        .collect();
    let mut rooms: Vec<&String> = sync["rooms"]["join"].as_object().unwrap().keys().collect();
    rooms.sort();
    let (_, profile) =
        server.get(&format!("/_matrix/client/v3/profile/{}", enc(&user.user_id)), "").await;
    json!({
        "rooms": rooms,
        "account_data": sync["account_data"],
        "messages": bodies,
        "profile": profile,
    })
}

/// A server on SQLite with an administrator, a family room of `messages` messages, a profile
/// and account data.
async fn family_server(messages: usize) -> (TestServer, TestUser, String) {
    let server = TestServer::start_on_sqlite(&["--registration", "open"]).await;
    let output = std::process::Command::new(common::binary())
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["user", "add", "parent", "--password", "a long parent password", "--admin"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let parent = server.login_ok("parent", "a long parent password", Some("LAPTOP")).await;
    let child = server.register("child").await;
    let room =
        server.create_room(&parent, json!({"name": "family", "invite": [child.user_id]})).await;
    server.join(&child, &room).await;
    for n in 0..messages {
        let sender = if n % 2 == 0 { &parent } else { &child };
        server.send_text(sender, &room, &format!("message {n}")).await;
    }
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&parent.user_id));
    server.put(&path, &parent.access_token, json!({"displayname": "Mum"})).await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.theme", enc(&parent.user_id));
    server.put(&path, &parent.access_token, json!({"dark": true})).await;
    (server, parent, room)
}

const MIGRATION: &str = "/_hearth/admin/v1/database/migration";

/// Polls the move until it has ended; returns its last progress.
async fn wait_for_move(server: &TestServer, admin: &TestUser) -> Value {
    for _ in 0..600 {
        let (status, progress) = server.get(MIGRATION, &admin.access_token).await;
        assert_eq!(status, StatusCode::OK, "{progress}");
        if ["done", "failed", "cancelled"].contains(&progress["phase"].as_str().unwrap_or("")) {
            return progress;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the move did not end within a minute");
}

#[tokio::test]
async fn a_running_server_moves_to_postgres_and_its_clients_see_the_same() {
    let Some(cluster) = private_cluster() else { return };
    let target = common::TestDatabase::create(&cluster.admin_url).await;
    let (mut server, parent, room) = family_server(120).await;
    let before = client_view(&server, &parent, &room).await;

    // Only an administrator may start it, and a bad target is refused before anything starts.
    let child = server.login_ok("child", "password-child", None).await;
    let refused = server.post(MIGRATION, &child.access_token, json!({"to": target.url()})).await;
    common::assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let bad = server
        .post(MIGRATION, &parent.access_token, json!({"to": "postgresql://nobody@127.0.0.1:1/x"}))
        .await;
    common::assert_error(&bad, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let none = server.get(MIGRATION, &parent.access_token).await;
    common::assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let (status, started) =
        server.post(MIGRATION, &parent.access_token, json!({"to": target.url()})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    // The family goes on talking during the move; every message is acknowledged.
    for n in 0..20 {
        let (status, body) = send(&server, &parent, &room, &format!("during the move {n}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let done = wait_for_move(&server, &parent).await;
    assert_eq!(done["phase"], "done", "{done}");
    let (status, body) = send(&server, &parent, &room, "after the move").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let after = client_view(&server, &parent, &room).await;
    let messages = after["messages"].as_array().unwrap();
    assert_eq!(messages.len(), before["messages"].as_array().unwrap().len() + 21);
    assert_eq!(&messages[21..], before["messages"].as_array().unwrap().as_slice());
    assert_eq!(after["rooms"], before["rooms"]);
    assert_eq!(after["account_data"], before["account_data"]);
    assert_eq!(after["profile"], before["profile"]);

    // After a restart the server reads PostgreSQL: the same view, the same logins.
    server.kill().await;
    let config = std::fs::read_to_string(server.data_dir.join("hearth.toml")).unwrap();
    assert!(config.contains("backend = \"postgres\""), "{config}");
    server.restart().await;
    assert_eq!(client_view(&server, &parent, &room).await, after);
    server.login_ok("parent", "a long parent password", None).await;
    let tables = target.tables().await;
    assert!(tables.iter().any(|t| t == "events"), "{tables:?}");
    assert!(!tables.iter().any(|t| t.starts_with("hearth_move")), "bookkeeping left: {tables:?}");
}

#[tokio::test]
async fn a_move_killed_or_cut_off_leaves_sqlite_serving_and_finishes_when_run_again() {
    let Some(cluster) = private_cluster() else { return };
    let target = common::TestDatabase::create(&cluster.admin_url).await;
    let (mut server, parent, room) = family_server(60).await;
    let start = json!({"to": target.url()});

    // Killed at several points of the move: each time the server comes back on SQLite with
    // everything, unless the move had finished.
    for delay_ms in [0, 20, 80] {
        let (status, body) = server.post(MIGRATION, &parent.access_token, start.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill().await;
        server.restart().await;
        let config = std::fs::read_to_string(server.data_dir.join("hearth.toml")).unwrap();
        if config.contains("backend = \"postgres\"") {
            eprintln!("killed after {delay_ms} ms: the move had finished");
            break;
        }
        eprintln!("killed after {delay_ms} ms: back on SQLite");
        let (status, body) = send(&server, &parent, &room, "still on SQLite").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // PostgreSQL goes away during the move: the move fails and says why, the server stays on
    // SQLite and keeps serving.
    let config = std::fs::read_to_string(server.data_dir.join("hearth.toml")).unwrap();
    if !config.contains("backend = \"postgres\"") {
        let (status, body) = server.post(MIGRATION, &parent.access_token, start.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        cluster.stop();
        let ended = wait_for_move(&server, &parent).await;
        eprintln!("PostgreSQL stopped during the move: it ended {}", ended["phase"]);
        if ended["phase"] == "failed" {
            assert!(ended["error"].as_str().is_some_and(|e| !e.is_empty()), "{ended}");
            let (status, body) = send(&server, &parent, &room, "while PostgreSQL is away").await;
            assert_eq!(status, StatusCode::OK, "SQLite keeps serving: {body}");
        }
        cluster.resume();
        let config = std::fs::read_to_string(server.data_dir.join("hearth.toml")).unwrap();
        if !config.contains("backend = \"postgres\"") {
            let (status, body) = until_ok(Duration::from_secs(20), || {
                server.post(MIGRATION, &parent.access_token, start.clone())
            })
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let done = wait_for_move(&server, &parent).await;
            assert_eq!(done["phase"], "done", "{done}");
        }
    }

    // Every acknowledged message is there, now from PostgreSQL.
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(&room));
    let (status, messages) = server.get(&path, &parent.access_token).await;
    assert_eq!(status, StatusCode::OK, "{messages}");
    let bodies: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    for n in 0..60 {
        assert!(bodies.contains(&format!("message {n}").as_str()), "message {n} kept");
    }
    server.kill().await;
    let config = std::fs::read_to_string(server.data_dir.join("hearth.toml")).unwrap();
    assert!(config.contains("backend = \"postgres\""), "the move finished: {config}");
}

/// Asks for the move back to SQLite and waits for it to end.
async fn move_to(server: &TestServer, admin: &TestUser, to: &str) -> Value {
    let (status, started) = server.post(MIGRATION, &admin.access_token, json!({"to": to})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let done = wait_for_move(server, admin).await;
    assert_eq!(done["phase"], "done", "{done}");
    done
}

fn config_names(server: &TestServer, backend: &str) -> bool {
    let config = std::fs::read_to_string(server.data_dir.join("hearth.toml")).unwrap();
    config.contains(&format!("backend = \"{backend}\""))
}

#[tokio::test]
async fn a_running_server_moves_back_to_sqlite_and_its_clients_see_the_same() {
    let Some(cluster) = private_cluster() else { return };
    let database = common::TestDatabase::create(&cluster.admin_url).await;
    let (mut server, parent, room) = family_server(120).await;
    move_to(&server, &parent, database.url()).await;
    // The family used the server on PostgreSQL for a while.
    for n in 0..10 {
        server.send_text(&parent, &room, &format!("on PostgreSQL {n}")).await;
    }
    let before = client_view(&server, &parent, &room).await;

    // Only an administrator may start it, and only where it makes sense.
    let child = server.login_ok("child", "password-child", None).await;
    let refused = server.post(MIGRATION, &child.access_token, json!({"to": "sqlite"})).await;
    common::assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let again = server.post(MIGRATION, &parent.access_token, json!({"to": database.url()})).await;
    common::assert_error(&again, StatusCode::BAD_REQUEST, "M_UNKNOWN");

    let (status, started) =
        server.post(MIGRATION, &parent.access_token, json!({"to": "sqlite"})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["to"], "sqlite", "{started}");
    // A second move while this one runs is refused; once it is done, the data is in SQLite.
    let second = server.post(MIGRATION, &parent.access_token, json!({"to": "sqlite"})).await;
    let (_, now) = server.get(MIGRATION, &parent.access_token).await;
    if ["done", "failed", "cancelled"].contains(&now["phase"].as_str().unwrap_or("")) {
        assert!([StatusCode::CONFLICT, StatusCode::BAD_REQUEST].contains(&second.0), "{second:?}");
    } else {
        common::assert_error(&second, StatusCode::CONFLICT, "M_UNKNOWN");
    }
    // The family goes on talking during the move; every message is acknowledged.
    for n in 0..20 {
        let (status, body) = send(&server, &parent, &room, &format!("during the move {n}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let done = wait_for_move(&server, &parent).await;
    assert_eq!(done["phase"], "done", "{done}");
    assert!(config_names(&server, "sqlite"));
    let (status, body) = send(&server, &parent, &room, "after the move back").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let on_sqlite = server.post(MIGRATION, &parent.access_token, json!({"to": "sqlite"})).await;
    common::assert_error(&on_sqlite, StatusCode::BAD_REQUEST, "M_UNKNOWN");

    let after = client_view(&server, &parent, &room).await;
    let messages = after["messages"].as_array().unwrap();
    assert_eq!(messages.len(), before["messages"].as_array().unwrap().len() + 21);
    assert_eq!(&messages[21..], before["messages"].as_array().unwrap().as_slice());
    assert_eq!(after["rooms"], before["rooms"]);
    assert_eq!(after["account_data"], before["account_data"]);
    assert_eq!(after["profile"], before["profile"]);

    // After a restart the server reads the new hearth.db: the same view, the same logins.
    server.kill().await;
    server.restart().await;
    assert_eq!(client_view(&server, &parent, &room).await, after);
    server.login_ok("parent", "a long parent password", None).await;
    server.login_ok("child", "password-child", None).await;
    // The earlier hearth.db is kept aside; PostgreSQL keeps its data without the move's log.
    let names: Vec<String> = std::fs::read_dir(&server.data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("hearth.db.before-")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("hearth.db.moving")), "{names:?}");
    let tables = database.tables().await;
    assert!(tables.iter().any(|t| t == "events"), "{tables:?}");
    assert!(!tables.iter().any(|t| t.starts_with("hearth_move")), "bookkeeping left: {tables:?}");
}

#[tokio::test]
async fn a_move_back_killed_or_cut_off_leaves_postgres_serving_and_finishes_when_run_again() {
    let Some(cluster) = private_cluster() else { return };
    let database = common::TestDatabase::create(&cluster.admin_url).await;
    let (mut server, parent, room) = family_server(60).await;
    move_to(&server, &parent, database.url()).await;
    let back = json!({"to": "sqlite"});
    let mut acknowledged: Vec<String> = (0..60).map(|n| format!("message {n}")).collect();

    // PostgreSQL goes away during the move: the move fails and says why; once PostgreSQL is
    // back the server serves from it again.
    {
        let (status, body) = server.post(MIGRATION, &parent.access_token, back.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        cluster.stop();
        // The server authenticates against PostgreSQL: while it is away, even the progress
        // answers 503. The move fails meanwhile (its next query cannot reach the database).
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.resume();
        until_ok(Duration::from_secs(20), || server.get(MIGRATION, &parent.access_token)).await;
        let ended = wait_for_move(&server, &parent).await;
        eprintln!("PostgreSQL stopped during the move back: it ended {}", ended["phase"]);
        if ended["phase"] == "failed" {
            assert!(ended["error"].as_str().is_some_and(|e| !e.is_empty()), "{ended}");
        }
        if !config_names(&server, "sqlite") {
            let (status, body) =
                until_ok(Duration::from_secs(20), || send(&server, &parent, &room, "PG is back"))
                    .await;
            assert_eq!(status, StatusCode::OK, "PostgreSQL serves again: {body}");
            acknowledged.push("PG is back".to_owned());
        }
    }

    // Killed at several points of the move: each time the server comes back on PostgreSQL with
    // everything, unless the move had finished.
    for (n, delay_ms) in [0, 20, 80, 200, 400, 800].into_iter().enumerate() {
        if config_names(&server, "sqlite") {
            break;
        }
        let (status, body) = server.post(MIGRATION, &parent.access_token, back.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill().await;
        server.restart().await;
        if config_names(&server, "sqlite") {
            eprintln!("killed after {delay_ms} ms: the move had finished");
            continue;
        }
        eprintln!("killed after {delay_ms} ms: back on PostgreSQL");
        let text = format!("still on PostgreSQL {n}");
        let (status, body) = send(&server, &parent, &room, &text).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        acknowledged.push(text);
    }

    // Run once more to the end, the way a family would after all that.
    if !config_names(&server, "sqlite") {
        move_to(&server, &parent, "sqlite").await;
    }

    // Every acknowledged message is there, now from SQLite, also after a restart.
    server.kill().await;
    assert!(config_names(&server, "sqlite"), "the move finished");
    server.restart().await;
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(&room));
    let (status, messages) = server.get(&path, &parent.access_token).await;
    assert_eq!(status, StatusCode::OK, "{messages}");
    let bodies: Vec<&str> = messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    for text in &acknowledged {
        assert!(bodies.contains(&text.as_str()), "{text:?} kept");
    }
}

/// Runs `hearth --data-dir DIR ARGS...` to its end.
fn hearth_command(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(common::binary())
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(args)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test]
async fn a_stopped_server_moves_back_to_sqlite_from_the_command_line() {
    let Some(cluster) = private_cluster() else { return };
    let database = common::TestDatabase::create(&cluster.admin_url).await;
    let (mut server, parent, room) = family_server(30).await;
    move_to(&server, &parent, database.url()).await;
    server.send_text(&parent, &room, "on PostgreSQL").await;
    let before = client_view(&server, &parent, &room).await;

    // While the server runs, the command line leaves the data alone and names the admin API.
    let (ok, _, stderr) = hearth_command(&server, &["db", "migrate", "--to", "sqlite"]);
    assert!(!ok && stderr.contains("is running") && stderr.contains("admin API"), "{stderr}");

    server.kill().await;
    let (ok, stdout, stderr) = hearth_command(&server, &["db", "migrate", "--to", "sqlite"]);
    assert!(ok, "{stdout}\n{stderr}");
    // Progress is sampled, so which tables' lines show depends on timing; that some do is
    // what matters.
    assert!(stdout.contains("Copying ") && stdout.contains("now uses SQLite"), "{stdout}");
    assert!(config_names(&server, "sqlite"));
    let (ok, _, stderr) = hearth_command(&server, &["db", "migrate", "--to", "sqlite"]);
    assert!(!ok && stderr.contains("in SQLite already"), "{stderr}");

    server.restart().await;
    assert_eq!(client_view(&server, &parent, &room).await, before);
    server.login_ok("parent", "a long parent password", None).await;
    let (status, body) = send(&server, &parent, &room, "on SQLite again").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Runs in the SQLite pass too: it needs no PostgreSQL.
#[tokio::test]
async fn a_move_to_sqlite_on_a_server_on_sqlite_is_refused_with_a_clear_error() {
    let (server, parent, _) = family_server(1).await;
    let child = server.login_ok("child", "password-child", None).await;
    let cases = [
        (&child, StatusCode::FORBIDDEN, "M_FORBIDDEN", "only an administrator may move the data"),
        (&parent, StatusCode::BAD_REQUEST, "M_UNKNOWN", "the data is in SQLite already"),
    ];
    for (user, status, errcode, reason) in cases {
        let got = server.post(MIGRATION, &user.access_token, json!({"to": "sqlite"})).await;
        common::assert_error(&got, status, errcode);
        eprintln!("refused as expected: {reason}: {}", got.1);
    }
    let got = server.post(MIGRATION, &parent.access_token, json!({"to": "sqlite"})).await;
    assert!(got.1["error"].as_str().unwrap().contains("SQLite already"), "{}", got.1);
    let none = server.get(MIGRATION, &parent.access_token).await;
    common::assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert!(!server.data_dir.join("hearth.db.moving").exists(), "nothing was written");
}

#[tokio::test]
async fn deleting_with_no_move_running_gives_up_what_an_unfinished_move_left() {
    use hearth::store::transfer::sqlite::SqliteSource;
    let (server, parent, room) = family_server(3).await;
    // A move that died on the way left its change log in hearth.db, logging every write.
    let source = SqliteSource::new(&server.data_dir.join("hearth.db"));
    let tables = source.tables().await.unwrap();
    source.start_change_log(&tables).await.unwrap();
    let logged = || {
        let db = rusqlite::Connection::open(server.data_dir.join("hearth.db")).unwrap();
        let count: i64 = db
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'hearth_move_%'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        count
    };
    assert!(logged() > 0);

    // Only an administrator may give it up.
    let child = server.login_ok("child", "password-child", None).await;
    let refused = server.call(Method::DELETE, MIGRATION, Some(&child.access_token), None).await;
    common::assert_error(&refused, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert!(logged() > 0);
    let (status, progress) =
        server.call(Method::DELETE, MIGRATION, Some(&parent.access_token), None).await;
    assert_eq!(status, StatusCode::OK, "{progress}");
    assert_eq!(
        (progress["phase"].as_str(), progress["to"].as_str()),
        (Some("cancelled"), Some("postgres"))
    );
    assert_eq!(logged(), 0, "the change log and its triggers are gone");
    // The server goes on as before; giving up again is harmless.
    assert_eq!(send(&server, &parent, &room, "after").await.0, StatusCode::OK);
    let again = server.call(Method::DELETE, MIGRATION, Some(&parent.access_token), None).await;
    assert_eq!(again.0, StatusCode::OK, "{}", again.1);
}
