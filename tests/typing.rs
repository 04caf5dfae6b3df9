//! Typing notifications through the client-server API: `PUT /rooms/{roomId}/typing/{userId}`
//! and the `m.typing` ephemeral event in `/sync`, which a change wakes, a timeout ends and a
//! filter can leave out; and the bad requests with their exact errors.

mod common;

use std::time::Duration;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

fn since(response: &Value) -> String {
    response["next_batch"].as_str().unwrap().to_owned()
}

fn typing_path(room_id: &str, user: &TestUser) -> String {
    format!("{V3}/rooms/{}/typing/{}", enc(room_id), enc(&user.user_id))
}

async fn set_typing(server: &TestServer, user: &TestUser, room_id: &str, body: Value) {
    let (status, json) = server.put(&typing_path(room_id, user), &user.access_token, body).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
}

/// The user IDs of the room's `m.typing` event in a sync response, if it has one.
fn typing_users(response: &Value, room_id: &str) -> Option<Vec<String>> {
    let room = response.pointer(&format!("/rooms/join/{}", room_id.replace('/', "~1")))?;
    let events = room.pointer("/ephemeral/events")?.as_array()?;
    let typing = events.iter().find(|event| event["type"] == "m.typing")?;
    let users = typing["content"]["user_ids"].as_array().expect("user_ids");
    Some(users.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
}

/// A long-poll for `user` from `token`, answered in the background.
fn long_poll(server: &TestServer, user: &TestUser, token: &str) -> tokio::task::JoinHandle<Value> {
    let request = server
        .http
        .get(server.url(&format!("{V3}/sync?since={token}&timeout=20000")))
        .bearer_auth(&user.access_token);
    tokio::spawn(async move {
        let response = request.send().await.expect("sync sent");
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.expect("JSON")
    })
}

async fn answered(waiting: tokio::task::JoinHandle<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the long-poll answered before its timeout")
        .expect("the task ran")
}

/// Alice and Bob in a public room of Alice's.
async fn family() -> (TestServer, TestUser, TestUser, String) {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    (server, alice, bob, room)
}

#[tokio::test]
async fn typing_wakes_a_long_poll_and_shows_once_per_change() {
    let (server, alice, bob, room) = family().await;
    let first = server.sync(&bob, "").await;
    assert_eq!(typing_users(&first, &room), None, "nobody types yet: {first}");

    // Bob waits; Alice starts typing, and his sync answers with her.
    let waiting = long_poll(&server, &bob, &since(&first));
    tokio::time::sleep(Duration::from_millis(200)).await;
    set_typing(&server, &alice, &room, json!({"typing": true, "timeout": 30000})).await;
    let woken = answered(waiting).await;
    assert_eq!(typing_users(&woken, &room), Some(vec![alice.user_id.clone()]), "{woken}");

    // Seen once: the next sync has nothing to say, and typing again changes nothing.
    set_typing(&server, &alice, &room, json!({"typing": true, "timeout": 30000})).await;
    let quiet = server.sync(&bob, &format!("since={}&timeout=0", since(&woken))).await;
    assert_eq!(typing_users(&quiet, &room), None, "{quiet}");
    // An initial sync shows who types now.
    let initial = server.sync(&bob, "").await;
    assert_eq!(typing_users(&initial, &room), Some(vec![alice.user_id.clone()]), "{initial}");

    // Alice stops: Bob learns that nobody types.
    let waiting = long_poll(&server, &bob, &since(&quiet));
    tokio::time::sleep(Duration::from_millis(200)).await;
    set_typing(&server, &alice, &room, json!({"typing": false})).await;
    let stopped = answered(waiting).await;
    assert_eq!(typing_users(&stopped, &room), Some(Vec::new()), "{stopped}");
    let initial = server.sync(&bob, "").await;
    assert_eq!(typing_users(&initial, &room), None, "{initial}");
}

#[tokio::test]
async fn typing_ends_when_its_timeout_runs_out() {
    let (server, alice, bob, room) = family().await;
    let token = since(&server.sync(&bob, "").await);
    set_typing(&server, &alice, &room, json!({"typing": true, "timeout": 300})).await;
    let typing = server.sync(&bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(typing_users(&typing, &room), Some(vec![alice.user_id.clone()]), "{typing}");

    // Nobody says anything more; the timeout ends it and wakes Bob's sync.
    let ended = answered(long_poll(&server, &bob, &since(&typing))).await;
    assert_eq!(typing_users(&ended, &room), Some(Vec::new()), "{ended}");
}

#[tokio::test]
async fn the_ephemeral_filter_can_leave_typing_out() {
    let (server, alice, bob, room) = family().await;
    set_typing(&server, &alice, &room, json!({"typing": true, "timeout": 30000})).await;
    let filter = json!({"room": {"ephemeral": {"not_types": ["m.typing"]}}});
    let filtered = server.sync(&bob, &format!("filter={}", enc(&filter.to_string()))).await;
    assert_eq!(typing_users(&filtered, &room), None, "{filtered}");
    let other_rooms = json!({"room": {"ephemeral": {"rooms": ["!elsewhere:localhost"]}}});
    let filtered = server.sync(&bob, &format!("filter={}", enc(&other_rooms.to_string()))).await;
    assert_eq!(typing_users(&filtered, &room), None, "{filtered}");
    // A token from before typing serials (`s<position>` alone) still works and shows who types.
    let old_token = since(&filtered).split('_').next().unwrap().to_owned();
    let old = server.sync(&bob, &format!("since={old_token}&timeout=0")).await;
    assert_eq!(typing_users(&old, &room), Some(vec![alice.user_id.clone()]), "{old}");
}

#[tokio::test]
async fn leaving_the_room_ends_typing_there() {
    let (server, alice, bob, room) = family().await;
    let token = since(&server.sync(&alice, "").await);
    set_typing(&server, &alice, &room, json!({"typing": true, "timeout": 60000})).await;
    set_typing(&server, &bob, &room, json!({"typing": true, "timeout": 60000})).await;
    let (status, json) = server
        .post(&format!("{V3}/rooms/{}/leave", enc(&room)), &bob.access_token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");

    // Alice hears that only she is left typing; a newcomer never sees Bob typing.
    let mut users = None;
    for _ in 0..50 {
        let response = server.sync(&alice, &format!("since={token}&timeout=0")).await;
        users = typing_users(&response, &room);
        if users.as_deref() == Some(&[alice.user_id.clone()][..]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(users, Some(vec![alice.user_id.clone()]));
    let carol = server.register("carol").await;
    server.join(&carol, &room).await;
    let initial = server.sync(&carol, "").await;
    assert_eq!(typing_users(&initial, &room), Some(vec![alice.user_id.clone()]), "{initial}");
}

#[tokio::test]
async fn a_sync_token_from_before_a_restart_learns_who_types_now() {
    let (mut server, alice, bob, room) = family().await;
    set_typing(&server, &alice, &room, json!({"typing": true, "timeout": 60000})).await;
    let token = since(&server.sync(&bob, "").await);
    server.kill_and_restart().await;
    // The restart forgot that Alice typed: Bob's client is told that nobody types.
    let after = server.sync(&bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(typing_users(&after, &room), Some(Vec::new()), "{after}");
    let again = server.sync(&bob, &format!("since={}&timeout=0", since(&after))).await;
    assert_eq!(typing_users(&again, &room), None, "told once: {again}");
}

#[tokio::test]
async fn the_ephemeral_limit_caps_the_events_per_room() {
    let (server, alice, bob, room) = family().await;
    set_typing(&server, &alice, &room, json!({"typing": true, "timeout": 60000})).await;
    let event_id = server.send_text(&alice, &room, "read me").await;
    let path = format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event_id));
    assert_eq!(server.post(&path, &alice.access_token, json!({})).await.0, StatusCode::OK);
    let count = |response: &Value| {
        let room = &response["rooms"]["join"][&room];
        room["ephemeral"]["events"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(count(&server.sync(&bob, "").await), 2, "typing and a receipt");
    let filter = json!({"room": {"ephemeral": {"limit": 1}}});
    let limited = server.sync(&bob, &format!("filter={}", enc(&filter.to_string()))).await;
    assert_eq!(count(&limited), 1, "{limited}");
}

#[tokio::test]
async fn bad_typing_requests_get_the_exact_error() {
    use StatusCode as S;
    let (server, alice, bob, room) = family().await;
    let carol = server.register("carol").await;
    let (a, c) = (Some(alice.access_token.as_str()), Some(carol.access_token.as_str()));
    let put = Method::PUT;
    let own = typing_path(&room, &alice);
    let start = Some(r#"{"typing": true, "timeout": 1000}"#);
    let rows = vec![
        row("typing for someone else", put.clone(), typing_path(&room, &bob), a, start)
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("typing in a room one is not in", put.clone(), typing_path(&room, &carol), c, start)
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "typing in an unknown room",
            put.clone(),
            typing_path("!nowhere:localhost", &alice),
            a,
            start,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("no access token", put.clone(), &own, None, start)
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("typing without a timeout", put.clone(), &own, a, Some(r#"{"typing": true}"#))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("typing is a string", put.clone(), &own, a, Some(r#"{"typing": "yes"}"#))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "timeout is negative",
            put.clone(),
            &own,
            a,
            Some(r#"{"typing": true, "timeout": -5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("body cut short", put.clone(), &own, a, Some(r#"{"typing": tr"#))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row(
            "a user ID that is not one",
            put.clone(),
            format!("{V3}/rooms/{}/typing/alice", enc(&room)),
            a,
            start,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a sync token with a bad typing part",
            Method::GET,
            format!("{V3}/sync?since=s5_x"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
    // Nothing of it made anyone type.
    let initial = server.sync(&bob, "").await;
    assert_eq!(typing_users(&initial, &room), None, "{initial}");
}
