//! `GET /rooms/{roomId}/timestamp_to_event`: the event nearest a time in either direction, only
//! among events the user may see, and the bad requests with their exact errors.

mod common;

use std::time::Duration;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn path(room: &str, query: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?{query}", enc(room))
}

async fn nearest(
    server: &TestServer,
    user: &TestUser,
    room: &str,
    ts: i64,
    dir: &str,
) -> (StatusCode, Value) {
    server.get(&path(room, &format!("ts={ts}&dir={dir}")), &user.access_token).await
}

async fn origin_server_ts(server: &TestServer, user: &TestUser, room: &str, event: &str) -> i64 {
    let (_, json) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(event)),
            &user.access_token,
        )
        .await;
    json["origin_server_ts"].as_i64().unwrap()
}

#[tokio::test]
async fn the_nearest_visible_event_is_found_in_either_direction() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat", "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "",
                "content": { "history_visibility": "joined" },
            }]}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let first = server.send_text(&alice, &room, "first").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = server.send_text(&alice, &room, "second").await;
    let (t1, t2) = (
        origin_server_ts(&server, &alice, &room, &first).await,
        origin_server_ts(&server, &alice, &room, &second).await,
    );
    assert!(t2 > t1);

    let found = |answer: (StatusCode, Value)| {
        assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
        answer.1["event_id"].as_str().unwrap().to_owned()
    };
    assert_eq!(found(nearest(&server, &alice, &room, t1, "f").await), first, "at its own time");
    assert_eq!(found(nearest(&server, &alice, &room, t1, "b").await), first);
    assert_eq!(found(nearest(&server, &alice, &room, t1 + 1, "f").await), second);
    assert_eq!(found(nearest(&server, &alice, &room, t2 - 1, "b").await), first);
    let (_, answer) = nearest(&server, &alice, &room, t2, "b").await;
    assert_eq!(answer["origin_server_ts"], t2);

    let none = nearest(&server, &alice, &room, t2 + 60_000, "f").await;
    common::assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let none = nearest(&server, &alice, &room, 0, "b").await;
    common::assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Bob joins later and may not see what came before: backward from the second message he
    // finds nothing of Alice's messages, forward from then only what he may see.
    let bob = server.register("bob").await;
    server.join(&bob, &room).await;
    let (status, answer) = nearest(&server, &bob, &room, t2, "b").await;
    assert!(
        status == StatusCode::NOT_FOUND
            || ![first.as_str(), second.as_str()].contains(&answer["event_id"].as_str().unwrap()),
        "{status} {answer}"
    );
    let (status, answer) = nearest(&server, &bob, &room, t1, "f").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_ne!(answer["event_id"], first.as_str());
    assert_ne!(answer["event_id"], second.as_str());
}

#[tokio::test]
async fn bad_timestamp_requests_get_the_spec_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let stranger = server.register("stranger").await;
    let room = server.create_room(&alice, json!({})).await;
    let token = Some(alice.access_token.as_str());
    let rows = vec![
        row("no access token", Method::GET, path(&room, "ts=1&dir=f"), None, None)
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "not a member",
            Method::GET,
            path(&room, "ts=1&dir=f"),
            Some(&stranger.access_token),
            None,
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("an unknown room", Method::GET, path("!nope:localhost", "ts=1&dir=f"), token, None)
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("ts missing", Method::GET, path(&room, "dir=f"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("ts not a number", Method::GET, path(&room, "ts=noon&dir=f"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("ts negative", Method::GET, path(&room, "ts=-5&dir=f"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("dir missing", Method::GET, path(&room, "ts=1"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("dir not f or b", Method::GET, path(&room, "ts=1&dir=x"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
}
