//! PostgreSQL as a family meets it: the database going away under a running server, and the
//! move of a running server from SQLite to PostgreSQL through the admin API, checked through the
//! client API before and after, with the server killed or PostgreSQL stopped along the way.
//!
//! These tests make PostgreSQL clusters of their own (they stop and start them), so they run in
//! the PostgreSQL pass of `scripts/test-all` and say so in the SQLite pass.

mod common;

use std::time::Duration;

use common::{TestServer, TestUser, cluster::PrivateCluster, enc};
use reqwest::StatusCode;
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
