//! Read receipts and read markers through the client-server API: `POST /rooms/{roomId}/receipt/
//! {receiptType}/{eventId}`, `POST /rooms/{roomId}/read_markers`, and the `m.receipt` ephemeral
//! event and `m.fully_read` account data in `/sync`; and the bad requests with their errors.

mod common;

use std::time::Duration;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

async fn sync_since(server: &TestServer, user: &TestUser, since: &Value) -> Value {
    server.sync(user, &format!("since={}&timeout=0", since["next_batch"].as_str().unwrap())).await
}

fn receipt_path(room_id: &str, receipt_type: &str, event_id: &str) -> String {
    format!("{V3}/rooms/{}/receipt/{receipt_type}/{}", enc(room_id), enc(event_id))
}

async fn send_receipt(
    server: &TestServer,
    user: &TestUser,
    room_id: &str,
    receipt_type: &str,
    event_id: &str,
    body: Value,
) {
    let path = receipt_path(room_id, receipt_type, event_id);
    let (status, json) = server.post(&path, &user.access_token, body).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})), "{receipt_type} {event_id}");
}

/// The content of the room's `m.receipt` event in a sync response, if it has one.
fn receipts(response: &Value, room_id: &str) -> Option<Value> {
    let room = response.pointer(&format!("/rooms/join/{}", room_id.replace('/', "~1")))?;
    let events = room.pointer("/ephemeral/events")?.as_array()?;
    events.iter().find(|event| event["type"] == "m.receipt").map(|event| event["content"].clone())
}

/// Alice and Bob in a public room of Alice's, with two messages of Alice's.
async fn family() -> (TestServer, TestUser, TestUser, String, [String; 2]) {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    let first = server.send_text(&alice, &room, "first").await;
    let second = server.send_text(&alice, &room, "second").await;
    (server, alice, bob, room, [first, second])
}

#[tokio::test]
async fn a_read_receipt_wakes_the_sender_and_shows_once() {
    let (server, alice, bob, room, [_, second]) = family().await;
    let before = server.sync(&alice, "").await;
    assert_eq!(receipts(&before, &room), None, "no receipts yet: {before}");

    let token = before["next_batch"].as_str().unwrap().to_owned();
    let request = server
        .http
        .get(server.url(&format!("{V3}/sync?since={token}&timeout=20000")))
        .bearer_auth(&alice.access_token);
    let waiting = tokio::spawn(async move { request.send().await.unwrap().json::<Value>().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_receipt(&server, &bob, &room, "m.read", &second, json!({})).await;
    let woken = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the long-poll answered")
        .unwrap()
        .unwrap();
    let content = receipts(&woken, &room).expect("an m.receipt event");
    let ts = &content[&second]["m.read"][&bob.user_id]["ts"];
    assert!(ts.as_i64().is_some_and(|ts| ts > 0), "{content}");

    // Shown once; an initial sync shows the room's receipts again.
    assert_eq!(receipts(&sync_since(&server, &alice, &woken).await, &room), None);
    let initial = server.sync(&alice, "").await;
    assert_eq!(receipts(&initial, &room).unwrap()[&second]["m.read"][&bob.user_id]["ts"], *ts);
}

#[tokio::test]
async fn receipts_move_forward_threads_apart_and_private_ones_stay_private() {
    let (server, alice, bob, room, [first, second]) = family().await;
    send_receipt(&server, &bob, &room, "m.read", &second, json!({})).await;
    let token = server.sync(&alice, "").await;
    // An older event changes nothing: Bob has read further.
    send_receipt(&server, &bob, &room, "m.read", &first, json!({})).await;
    assert_eq!(receipts(&sync_since(&server, &alice, &token).await, &room), None);

    // A threaded receipt is a receipt of its own; a private one only Bob sees.
    send_receipt(&server, &bob, &room, "m.read", &first, json!({"thread_id": "main"})).await;
    send_receipt(&server, &bob, &room, "m.read.private", &second, json!({})).await;
    let for_alice = receipts(&sync_since(&server, &alice, &token).await, &room).unwrap();
    assert_eq!(for_alice[&first]["m.read"][&bob.user_id]["thread_id"], "main", "{for_alice}");
    assert!(for_alice[&second].get("m.read.private").is_none(), "{for_alice}");
    let for_bob = receipts(&server.sync(&bob, "").await, &room).unwrap();
    assert!(for_bob[&second]["m.read.private"][&bob.user_id]["ts"].is_i64(), "{for_bob}");
    assert!(for_bob[&second]["m.read"][&bob.user_id]["ts"].is_i64(), "{for_bob}");
}

#[tokio::test]
async fn read_markers_set_the_fully_read_marker_and_receipts_that_survive_a_restart() {
    let (mut server, alice, bob, room, [first, second]) = family().await;
    let path = format!("{V3}/rooms/{}/read_markers", enc(&room));
    let body = json!({ "m.fully_read": first, "m.read": second });
    let (status, json) = server.post(&path, &bob.access_token, body).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));

    server.kill_and_restart().await;
    let bob_sync = server.sync(&bob, "").await;
    let joined = &bob_sync["rooms"]["join"][&room];
    let fully_read = joined["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.fully_read")
        .cloned();
    assert_eq!(fully_read.unwrap()["content"], json!({ "event_id": first }), "{bob_sync}");
    let alice_view = receipts(&server.sync(&alice, "").await, &room).unwrap();
    assert!(alice_view[&second]["m.read"][&bob.user_id]["ts"].is_i64(), "{alice_view}");
    // The receipt endpoint moves the marker too.
    send_receipt(&server, &bob, &room, "m.fully_read", &second, json!({})).await;
    let (_, marker) = server
        .get(
            &format!(
                "{V3}/user/{}/rooms/{}/account_data/m.fully_read",
                enc(&bob.user_id),
                enc(&room)
            ),
            &bob.access_token,
        )
        .await;
    assert_eq!(marker, json!({ "event_id": second }));
}

#[tokio::test]
async fn the_fully_read_marker_only_moves_forward_and_threads_take_roots_of_the_room() {
    let (server, alice, bob, room, [first, second]) = family().await;
    let markers = format!("{V3}/rooms/{}/read_markers", enc(&room));
    for event_id in [&second, &first] {
        let (status, json) =
            server.post(&markers, &bob.access_token, json!({ "m.fully_read": event_id })).await;
        assert_eq!(status, StatusCode::OK, "{json}");
    }
    let path =
        format!("{V3}/user/{}/rooms/{}/account_data/m.fully_read", enc(&bob.user_id), enc(&room));
    assert_eq!(server.get(&path, &bob.access_token).await.1, json!({ "event_id": second }));
    // A thread's root is an event of the room; the receipt names it.
    send_receipt(&server, &bob, &room, "m.read", &second, json!({ "thread_id": first })).await;
    let content = receipts(&server.sync(&alice, "").await, &room).unwrap();
    assert_eq!(content[&second]["m.read"][&bob.user_id]["thread_id"], *first, "{content}");
}

#[tokio::test]
async fn the_ephemeral_filter_can_leave_receipts_out() {
    let (server, alice, bob, room, [_, second]) = family().await;
    send_receipt(&server, &bob, &room, "m.read", &second, json!({})).await;
    let filter = json!({"room": {"ephemeral": {"types": ["m.typing"]}}});
    let filtered = server.sync(&alice, &format!("filter={}", enc(&filter.to_string()))).await;
    assert_eq!(receipts(&filtered, &room), None, "{filtered}");
}

#[tokio::test]
async fn bad_receipts_get_the_exact_error() {
    use StatusCode as S;
    let (server, alice, _bob, room, [first, _]) = family().await;
    let carol = server.register("carol").await;
    let (a, c) = (Some(alice.access_token.as_str()), Some(carol.access_token.as_str()));
    let other_room = server.create_room(&alice, json!({})).await;
    let foreign = server.send_text(&alice, &other_room, "elsewhere").await;
    let post = Method::POST;
    let markers = format!("{V3}/rooms/{}/read_markers", enc(&room));
    let read = receipt_path(&room, "m.read", &first);
    let rows = vec![
        row(
            "an unknown receipt type",
            post.clone(),
            receipt_path(&room, "m.seen", &first),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an event of another room",
            post.clone(),
            receipt_path(&room, "m.read", &foreign),
            a,
            Some("{}"),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "an unknown event",
            post.clone(),
            receipt_path(&room, "m.read", "$nothing"),
            a,
            Some("{}"),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row("a room one is not in", post.clone(), &read, c, Some("{}"))
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "an unknown room",
            post.clone(),
            receipt_path("!nowhere:localhost", "m.read", &first),
            a,
            Some("{}"),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "an event ID that is not one",
            post.clone(),
            receipt_path(&room, "m.read", "first"),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a thread ID that is neither main nor an event",
            post.clone(),
            &read,
            a,
            Some(r#"{"thread_id": "side"}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a thread root that is no event",
            post.clone(),
            &read,
            a,
            Some(r#"{"thread_id": "$nothing"}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a thread root of another room",
            post.clone(),
            &read,
            a,
            Some(&format!(r#"{{"thread_id": "{foreign}"}}"#)),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a thread root with a NUL",
            post.clone(),
            &read,
            a,
            Some(r#"{"thread_id": "$a\u0000"}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a thread ID that is a number", post.clone(), &read, a, Some(r#"{"thread_id": 5}"#))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "a thread for the fully read marker",
            post.clone(),
            receipt_path(&room, "m.fully_read", &first),
            a,
            Some(r#"{"thread_id": "main"}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row("no access token", post.clone(), &read, None, Some("{}"))
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "read markers naming an unknown event",
            post.clone(),
            &markers,
            a,
            Some(r#"{"m.read": "$nothing"}"#),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "read markers with a number",
            post.clone(),
            &markers,
            a,
            Some(r#"{"m.fully_read": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "read markers in a room one is not in",
            post.clone(),
            &markers,
            c,
            Some(&format!(r#"{{"m.read": "{first}"}}"#)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
    ];
    run_table(&server, rows).await;
    // Nothing of it left a receipt.
    assert_eq!(receipts(&server.sync(&alice, "").await, &room), None);
}
