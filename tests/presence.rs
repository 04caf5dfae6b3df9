//! Presence through the client-server API: `PUT` and `GET /presence/{userId}/status` (only one's
//! own may be set, others' are read by those sharing a room), `set_presence` on `/sync`,
//! `m.presence` events in `/sync` after the token (and again for a token from before presence),
//! long-polls woken by a change, users going unavailable when idle and offline when they stop
//! syncing, a server with presence disabled, and the bad requests with their exact errors.

mod common;

use std::time::Duration;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

fn status_path(user: &TestUser) -> String {
    format!("{V3}/presence/{}/status", enc(&user.user_id))
}

async fn set_presence(server: &TestServer, user: &TestUser, body: Value) {
    let (status, json) = server.put(&status_path(user), &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "set presence: {json}");
}

async fn get_presence(server: &TestServer, reader: &TestUser, user: &TestUser) -> Value {
    let (status, json) = server.get(&status_path(user), &reader.access_token).await;
    assert_eq!(status, StatusCode::OK, "get presence: {json}");
    json
}

/// The `m.presence` events of a sync response, by sender.
fn presence_of(sync: &Value) -> Vec<(String, Value)> {
    let events = sync["presence"]["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "m.presence", "{e}");
            (e["sender"].as_str().unwrap().to_owned(), e["content"].clone())
        })
        .collect()
}

/// Alice and Bob sharing a room, and Carol in none of theirs.
async fn family(server: &TestServer) -> (TestUser, TestUser, TestUser) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    (alice, bob, carol)
}

/// Polls `GET` presence (as the user) until it reads `presence`, for at most five seconds.
async fn wait_for(server: &TestServer, user: &TestUser, presence: &str) -> Value {
    for _ in 0..50 {
        let json = get_presence(server, user, user).await;
        if json["presence"] == presence {
            return json;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never became {presence}", user.user_id);
}

#[tokio::test]
async fn a_user_sets_their_presence_and_those_sharing_a_room_read_it() {
    let server = TestServer::start().await;
    let (alice, bob, carol) = family(&server).await;
    let never = get_presence(&server, &bob, &alice).await;
    assert_eq!(never, json!({ "presence": "offline", "currently_active": false }));

    set_presence(&server, &alice, json!({ "presence": "online", "status_msg": "baking" })).await;
    let seen = get_presence(&server, &bob, &alice).await;
    assert_eq!(seen["presence"], "online");
    assert_eq!(seen["status_msg"], "baking");
    assert_eq!(seen["currently_active"], true);
    assert!(seen["last_active_ago"].as_u64().unwrap() < 10_000, "{seen}");
    assert_eq!(get_presence(&server, &alice, &alice).await["status_msg"], "baking");

    set_presence(&server, &alice, json!({ "presence": "unavailable" })).await;
    let idle = get_presence(&server, &bob, &alice).await;
    assert_eq!(idle["presence"], "unavailable");
    assert_eq!(idle["currently_active"], false);
    assert!(idle.get("status_msg").is_none(), "setting none clears it: {idle}");

    let (status, json) = server.get(&status_path(&alice), &carol.access_token).await;
    common::assert_error(&(status, json), StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(get_presence(&server, &carol, &carol).await["presence"], "offline");
}

#[tokio::test]
async fn sync_carries_the_presence_of_those_sharing_a_room_once_per_change() {
    let server = TestServer::start().await;
    let (alice, bob, carol) = family(&server).await;
    set_presence(&server, &carol, json!({ "presence": "online" })).await;
    set_presence(&server, &alice, json!({ "presence": "online", "status_msg": "hi" })).await;

    // Bob's own sync brings him online; he sees himself and Alice, never Carol.
    let initial = server.sync(&bob, "").await;
    let mut senders: Vec<String> = presence_of(&initial).into_iter().map(|(s, _)| s).collect();
    senders.sort();
    assert_eq!(senders, [alice.user_id.clone(), bob.user_id.clone()]);
    let alice_content = presence_of(&initial).into_iter().find(|(s, _)| *s == alice.user_id);
    let alice_content = alice_content.unwrap().1;
    assert_eq!(alice_content["presence"], "online");
    assert_eq!(alice_content["status_msg"], "hi");
    assert_eq!(alice_content["currently_active"], true);
    assert!(alice_content["last_active_ago"].is_u64());
    assert_eq!(get_presence(&server, &alice, &bob).await["presence"], "online");

    let since = initial["next_batch"].as_str().unwrap().to_owned();
    assert_eq!(since.split('_').count(), 4, "the token has a presence part: {since}");
    let quiet = server.sync(&bob, &format!("since={since}")).await;
    assert!(presence_of(&quiet).is_empty(), "nothing changed: {quiet}");

    set_presence(&server, &alice, json!({ "presence": "unavailable" })).await;
    set_presence(&server, &carol, json!({ "presence": "unavailable" })).await;
    let changed = server.sync(&bob, &format!("since={since}")).await;
    let presence = presence_of(&changed);
    assert_eq!(presence.len(), 1, "{presence:?}");
    assert_eq!(presence[0].0, alice.user_id);
    assert_eq!(presence[0].1["presence"], "unavailable");

    // A token from before presence existed gets everyone's again.
    let old: Vec<&str> = since.split('_').take(3).collect();
    let again = server.sync(&bob, &format!("since={}", old.join("_"))).await;
    assert_eq!(presence_of(&again).len(), 2, "{again}");

    // The presence filter can leave it out.
    let filter = enc(r#"{"presence":{"not_types":["m.presence"]}}"#);
    assert!(presence_of(&server.sync(&bob, &format!("filter={filter}")).await).is_empty());
    let filter = enc(&format!(r#"{{"presence":{{"senders":["{}"]}}}}"#, alice.user_id));
    let only_alice = presence_of(&server.sync(&bob, &format!("filter={filter}")).await);
    assert_eq!(only_alice.len(), 1);
    assert_eq!(only_alice[0].0, alice.user_id);
}

#[tokio::test]
async fn set_presence_on_sync_marks_the_user_online_idle_or_leaves_them_alone() {
    let server = TestServer::start().await;
    let (alice, bob, _carol) = family(&server).await;
    server.sync(&alice, "set_presence=offline").await;
    assert_eq!(get_presence(&server, &bob, &alice).await["presence"], "offline");
    server.sync(&alice, "set_presence=unavailable").await;
    assert_eq!(get_presence(&server, &bob, &alice).await["presence"], "unavailable");
    // Syncing online does not wake an idle user; activity (sending) does.
    server.sync(&alice, "").await;
    assert_eq!(get_presence(&server, &bob, &alice).await["presence"], "unavailable");
    let room = server.create_room(&alice, json!({})).await;
    server.send_text(&alice, &room, "back").await;
    assert_eq!(get_presence(&server, &bob, &alice).await["presence"], "online");
}

#[tokio::test]
async fn a_long_poll_is_woken_by_a_presence_change_of_someone_sharing_a_room() {
    let server = TestServer::start().await;
    let (alice, bob, carol) = family(&server).await;
    let since = server.sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();

    let changes = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_presence(&server, &carol, json!({ "presence": "online" })).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_presence(&server, &alice, json!({ "presence": "online", "status_msg": "up" })).await;
    };
    let started = std::time::Instant::now();
    let query = format!("since={since}&timeout=20000");
    let (sync, ()) = tokio::join!(server.sync(&bob, &query), changes);
    assert!(started.elapsed() < Duration::from_secs(10), "woken, not timed out");
    let presence = presence_of(&sync);
    assert_eq!(presence.len(), 1, "Carol's change is not Bob's business: {presence:?}");
    assert_eq!(presence[0].0, alice.user_id);
    assert_eq!(presence[0].1["status_msg"], "up");
}

#[tokio::test]
async fn idle_users_become_unavailable_and_those_who_stop_syncing_offline() {
    let config = "server_name = \"localhost\"\n[registration]\nmode = \"open\"\n\
                  [presence]\nidle_after_seconds = 1\noffline_after_seconds = 2\n";
    let server = TestServer::start_with_config(config, &["--registration", "open"]).await;
    let (alice, _bob, _carol) = family(&server).await;
    set_presence(&server, &alice, json!({ "presence": "online" })).await;
    let since = server.sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();

    // Syncing keeps her connected but is not activity: she becomes idle.
    let query = format!("since={since}&timeout=4000");
    let polling = server.sync(&alice, &query);
    let (woken, idle) = tokio::join!(polling, wait_for(&server, &alice, "unavailable"));
    assert_eq!(idle["currently_active"], false);
    let own = presence_of(&woken);
    assert_eq!(own.len(), 1, "her own change wakes her sync: {woken}");
    assert_eq!(own[0].1["presence"], "unavailable");
    assert!(idle["last_active_ago"].as_u64().unwrap() >= 1000, "{idle}");

    // She stops syncing: offline.
    let gone = wait_for(&server, &alice, "offline").await;
    assert_eq!(gone["currently_active"], false);
}

#[tokio::test]
async fn with_presence_disabled_everyone_is_offline_and_sync_has_none() {
    let config = "server_name = \"localhost\"\n[registration]\nmode = \"open\"\n\
                  [presence]\nenabled = false\n";
    let server = TestServer::start_with_config(config, &["--registration", "open"]).await;
    let (alice, bob, carol) = family(&server).await;
    set_presence(&server, &alice, json!({ "presence": "online", "status_msg": "hi" })).await;
    assert_eq!(get_presence(&server, &bob, &alice).await["presence"], "offline");
    assert!(get_presence(&server, &bob, &alice).await.get("status_msg").is_none());
    assert!(presence_of(&server.sync(&bob, "").await).is_empty());
    let (status, json) = server.get(&status_path(&alice), &carol.access_token).await;
    common::assert_error(&(status, json), StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn bad_presence_requests_get_the_exact_error() {
    let server = TestServer::start().await;
    let (alice, bob, _carol) = family(&server).await;
    let token = Some(alice.access_token.as_str());
    let mine = status_path(&alice);
    let long_status = json!({ "presence": "online", "status_msg": "x".repeat(1025) }).to_string();
    let sync = format!("{V3}/sync");
    let rows = vec![
        row("no access token", Method::PUT, &mine, None, Some(r#"{"presence":"online"}"#))
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "another user's presence",
            Method::PUT,
            status_path(&bob),
            token,
            Some(r#"{"presence":"online"}"#),
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("an unknown presence", Method::PUT, &mine, token, Some(r#"{"presence":"busy"}"#))
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("presence is a number", Method::PUT, &mine, token, Some(r#"{"presence":1}"#))
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("no presence", Method::PUT, &mine, token, Some(r#"{"status_msg":"hi"}"#))
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "status_msg is not a string",
            Method::PUT,
            &mine,
            token,
            Some(r#"{"presence":"online","status_msg":5}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("status_msg over 1024 bytes", Method::PUT, &mine, token, Some(&long_status))
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("not JSON", Method::PUT, &mine, token, Some("{"))
            .expect(StatusCode::BAD_REQUEST, "M_NOT_JSON"),
        row("not a user ID", Method::GET, format!("{V3}/presence/nobody/status"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an unknown local user",
            Method::GET,
            format!("{V3}/presence/{}/status", enc("@nobody:localhost")),
            token,
            None,
        )
        .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "a user of another server",
            Method::GET,
            format!("{V3}/presence/{}/status", enc("@alice:elsewhere.example")),
            token,
            None,
        )
        .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "an unknown set_presence",
            Method::GET,
            format!("{sync}?set_presence=busy"),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a presence part that is not a number",
            Method::GET,
            format!("{sync}?since=s1_1_1_x"),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a token with a part too many",
            Method::GET,
            format!("{sync}?since=s1_1_1_1_1"),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("the wrong method", Method::POST, &mine, token, Some(r#"{"presence":"online"}"#))
            .expect(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
    ];
    run_table(&server, rows).await;
}
