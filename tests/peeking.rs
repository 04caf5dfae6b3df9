//! Looking into a room through `GET /rooms/{roomId}/initialSync` and `GET /events?room_id=`: the
//! snapshot a member gets (state, latest messages and their tokens, membership, account data,
//! directory visibility), what a user who left still sees, previews of world-readable rooms by
//! non-members, the long poll of `/events`, and the bad requests with their errors.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

fn initial_sync_path(room: &str) -> String {
    format!("{V3}/rooms/{}/initialSync", enc(room))
}

async fn initial_sync(server: &TestServer, user: &TestUser, room: &str) -> Value {
    let (status, json) = server.get(&initial_sync_path(room), &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "initialSync: {json}");
    json
}

async fn events(server: &TestServer, user: &TestUser, room: &str, query: &str) -> Value {
    let path = format!("{V3}/events?room_id={}&{query}", enc(room));
    let (status, json) = server.get(&path, &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "/events: {json}");
    json
}

fn bodies(events: &Value) -> Vec<&str> {
    let list = events.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter().filter_map(|e| e["content"]["body"].as_str()).collect()
}

fn state_types(snapshot: &Value) -> Vec<&str> {
    snapshot["state"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn topic(snapshot: &Value) -> Option<&str> {
    let state = snapshot["state"].as_array().unwrap();
    state.iter().find(|e| e["type"] == "m.room.topic").and_then(|e| e["content"]["topic"].as_str())
}

async fn set_state(server: &TestServer, user: &TestUser, room: &str, kind: &str, content: Value) {
    let path = format!("{V3}/rooms/{}/state/{kind}/", enc(room));
    let (status, json) = server.put(&path, &user.access_token, content).await;
    assert_eq!(status, StatusCode::OK, "state {kind}: {json}");
}

#[tokio::test]
async fn a_member_gets_the_state_the_latest_messages_and_tokens_that_page_further() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"preset": "private_chat", "topic": "tea"})).await;
    for index in 0..25 {
        server.send_text(&alice, &room, &format!("message {index}")).await;
    }
    let path = format!("{V3}/user/{}/rooms/{}/tags/u.family", enc(&alice.user_id), enc(&room));
    let (status, _) = server.put(&path, &alice.access_token, json!({"order": 0.5})).await;
    assert_eq!(status, StatusCode::OK);

    let snapshot = initial_sync(&server, &alice, &room).await;
    assert_eq!(snapshot["room_id"], room.as_str());
    assert_eq!(snapshot["membership"], "join");
    assert_eq!(snapshot["visibility"], "private");
    assert_eq!(topic(&snapshot), Some("tea"));
    for kind in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.member"] {
        assert!(state_types(&snapshot).contains(&kind), "{kind} in {snapshot}");
    }
    let chunk = &snapshot["messages"]["chunk"];
    let expected: Vec<String> = (5..25).map(|i| format!("message {i}")).collect();
    assert_eq!(bodies(chunk), expected, "the latest 20, oldest first");
    let tags = snapshot["account_data"].as_array().unwrap();
    assert!(
        tags.iter().any(|d| d["type"] == "m.tag" && d["content"]["tags"]["u.family"].is_object())
    );

    // `start` pages back through /messages to the messages before the snapshot.
    let start = snapshot["messages"]["start"].as_str().expect("start: more messages exist");
    let path = format!("{V3}/rooms/{}/messages?dir=b&limit=5&from={start}", enc(&room));
    let (status, page) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let earlier = bodies(&page["chunk"]);
    assert_eq!(earlier, ["message 4", "message 3", "message 2", "message 1", "message 0"]);

    // Published in the directory, the room shows as public.
    let path = format!("{V3}/directory/list/room/{}", enc(&room));
    let (status, _) = server.put(&path, &alice.access_token, json!({"visibility": "public"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(initial_sync(&server, &alice, &room).await["visibility"], "public");
}

#[tokio::test]
async fn a_user_who_left_sees_the_room_as_it_was_when_they_left() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat", "topic": "old"})).await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "before bob left").await;
    let path = format!("{V3}/rooms/{}/leave", enc(&room));
    let (status, _) = server.post(&path, &bob.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    server.send_text(&alice, &room, "after bob left").await;
    set_state(&server, &alice, &room, "m.room.topic", json!({"topic": "new"})).await;

    let snapshot = initial_sync(&server, &bob, &room).await;
    assert_eq!(snapshot["membership"], "leave");
    assert_eq!(topic(&snapshot), Some("old"), "the state when Bob left");
    let seen = bodies(&snapshot["messages"]["chunk"]);
    assert!(seen.contains(&"before bob left"), "{seen:?}");
    assert!(!seen.contains(&"after bob left"), "{seen:?}");
    // /events shows him nothing after his leave either.
    let end = snapshot["messages"]["end"].as_str().unwrap();
    let answer = events(&server, &bob, &room, &format!("from={end}&timeout=0")).await;
    assert!(bodies(&answer["chunk"]).is_empty(), "{answer}");
}

#[tokio::test]
async fn anyone_may_preview_a_world_readable_room_and_no_one_else_a_private_one() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let stranger = server.register("stranger").await;
    let open = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    set_state(
        &server,
        &alice,
        &open,
        "m.room.history_visibility",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    server.send_text(&alice, &open, "anyone may read this").await;
    let closed = server.create_room(&alice, json!({"preset": "private_chat"})).await;
    server.send_text(&alice, &closed, "family only").await;

    let snapshot = initial_sync(&server, &stranger, &open).await;
    assert!(snapshot.get("membership").is_none(), "not a member: {snapshot}");
    assert_eq!(bodies(&snapshot["messages"]["chunk"]), ["anyone may read this"]);
    assert!(state_types(&snapshot).contains(&"m.room.create"));
    let end = snapshot["messages"]["end"].as_str().unwrap().to_owned();
    server.send_text(&alice, &open, "and this").await;
    let answer = events(&server, &stranger, &open, &format!("from={end}&timeout=0")).await;
    assert_eq!(bodies(&answer["chunk"]), ["and this"]);

    let (status, json) = server.get(&initial_sync_path(&closed), &stranger.access_token).await;
    common::assert_error(&(status, json), StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let path = format!("{V3}/events?room_id={}&timeout=0", enc(&closed));
    let (status, json) = server.get(&path, &stranger.access_token).await;
    common::assert_error(&(status, json), StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn events_waits_for_the_next_event_of_the_room_and_its_end_token_follows_on() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    let other = server.create_room(&alice, json!({"preset": "public_chat"})).await;

    // Without `from`, the stream starts now: nothing yet, and start and end are the same.
    let idle = events(&server, &bob, &room, "timeout=0").await;
    assert!(bodies(&idle["chunk"]).is_empty(), "{idle}");
    assert_eq!(idle["start"], idle["end"]);
    let from = idle["end"].as_str().unwrap().to_owned();

    let poll = {
        let (url, token) = (server.url(&format!("{V3}/events")), bob.access_token.clone());
        let room = room.clone();
        let from = from.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let query = [("room_id", room.as_str()), ("from", from.as_str()), ("timeout", "20000")];
            let answer =
                reqwest::Client::new().get(url).query(&query).bearer_auth(token).send().await;
            (started.elapsed(), answer.unwrap().json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // An event of another room does not end the wait.
    server.send_text(&alice, &other, "elsewhere").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.send_text(&alice, &room, "wake up").await;
    let (waited, answer) = poll.await.unwrap();
    assert_eq!(bodies(&answer["chunk"]), ["wake up"], "{answer}");
    assert!(waited >= Duration::from_millis(500), "it waited for the event: {waited:?}");
    assert!(waited < Duration::from_secs(15), "it did not wait for the timeout: {waited:?}");
    assert_eq!(answer["start"], from.as_str());

    // The end token continues where the answer stopped.
    let end = answer["end"].as_str().unwrap();
    server.send_text(&alice, &room, "next").await;
    let next = events(&server, &bob, &room, &format!("from={end}&timeout=0")).await;
    assert_eq!(bodies(&next["chunk"]), ["next"]);

    // A wait that times out answers with nothing new and the same token.
    let started = Instant::now();
    let end = next["end"].as_str().unwrap();
    let quiet = events(&server, &bob, &room, &format!("from={end}&timeout=300")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(bodies(&quiet["chunk"]).is_empty());
    assert_eq!(quiet["end"], end);
}

#[tokio::test]
async fn bad_peeking_requests_get_the_spec_errors() {
    use StatusCode as S;
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    let a = Some(alice.access_token.as_str());
    let get = Method::GET;
    let unknown = enc("!nowhere:localhost");
    let not_a_room = enc("not-a-room");
    let room = enc(&room);
    let rows = vec![
        row("no access token", get.clone(), format!("{V3}/rooms/{room}/initialSync"), None, None)
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "a room ID without its sigil",
            get.clone(),
            format!("{V3}/rooms/{not_a_room}/initialSync"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a room this server does not know",
            get.clone(),
            format!("{V3}/rooms/{unknown}/initialSync"),
            a,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("/events without a room", get.clone(), format!("{V3}/events?timeout=0"), a, None)
            .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "/events of an invalid room ID",
            get.clone(),
            format!("{V3}/events?room_id={not_a_room}"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "/events of an unknown room",
            get.clone(),
            format!("{V3}/events?room_id={unknown}&timeout=0"),
            a,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "a from token that is no token",
            get.clone(),
            format!("{V3}/events?room_id={room}&from=yesterday"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a timeout that is no number",
            get.clone(),
            format!("{V3}/events?room_id={room}&timeout=soon"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a negative timeout",
            get.clone(),
            format!("{V3}/events?room_id={room}&timeout=-5"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
}

/// The spec's `/forget`: "a user will no longer be able to retrieve history for this room".
#[tokio::test]
async fn a_forgotten_room_is_seen_as_by_someone_who_was_never_in_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    server.send_text(&alice, &room, "seen while bob was here").await;
    for action in ["leave", "forget"] {
        let path = format!("{V3}/rooms/{}/{action}", enc(&room));
        let (status, json) = server.post(&path, &bob.access_token, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{action}: {json}");
    }

    let forbidden = |got: (StatusCode, Value)| {
        common::assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    };
    forbidden(server.get(&initial_sync_path(&room), &bob.access_token).await);
    let path = format!("{V3}/events?room_id={}&from=s0&timeout=0", enc(&room));
    forbidden(server.get(&path, &bob.access_token).await);
    let path = format!("{V3}/rooms/{}/messages?dir=b", enc(&room));
    forbidden(server.get(&path, &bob.access_token).await);

    // Joining again gives the room back, as to any new member.
    server.join(&bob, &room).await;
    assert_eq!(initial_sync(&server, &bob, &room).await["membership"], "join");
}
