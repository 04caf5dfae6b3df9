//! Relations and threads through the client-server API: `/relations` in its three forms with
//! pagination and recursion, `/threads` (all and participated), the aggregations bundled into
//! events (thread summaries, the latest edit, references) in `/event`, `/messages` and `/sync`,
//! redaction removing a relation, and the bad requests with their exact errors.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V1: &str = "/_matrix/client/v1";
const V3: &str = "/_matrix/client/v3";

/// Sends an event of `event_type` with `content`; returns its event ID.
async fn send(
    server: &TestServer,
    user: &TestUser,
    room: &str,
    kind: &str,
    content: Value,
) -> String {
    let (status, json) = send_raw(server, user, room, kind, content).await;
    assert_eq!(status, StatusCode::OK, "send: {json}");
    json["event_id"].as_str().unwrap().to_owned()
}

async fn send_raw(
    server: &TestServer,
    user: &TestUser,
    room: &str,
    kind: &str,
    content: Value,
) -> (StatusCode, Value) {
    let txn = format!("t{}", rand::random::<u64>());
    let path = format!("{V3}/rooms/{}/send/{kind}/{txn}", enc(room));
    server.put(&path, &user.access_token, content).await
}

fn reply_in_thread(root: &str, text: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": text,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root },
    })
}

fn edit(original: &str, text: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("* {text}"),
        "m.new_content": { "msgtype": "m.text", "body": text },
        "m.relates_to": { "rel_type": "m.replace", "event_id": original },
    })
}

fn reaction(target: &str, key: &str) -> Value {
    json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } })
}

fn event_ids(chunk: &Value) -> Vec<String> {
    chunk.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

async fn relations(server: &TestServer, user: &TestUser, room: &str, tail: &str) -> Value {
    let (status, json) =
        server.get(&format!("{V1}/rooms/{}/relations/{tail}", enc(room)), &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

/// Alice's room with Bob in it.
async fn room_of_two(server: &TestServer) -> (TestUser, TestUser, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    (alice, bob, room)
}

#[tokio::test]
async fn relations_are_listed_in_all_three_forms_and_paged() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let root = server.send_text(&alice, &room, "root").await;
    let r1 = send(&server, &bob, &room, "m.room.message", reply_in_thread(&root, "one")).await;
    let like = send(&server, &alice, &room, "m.reaction", reaction(&r1, "👍")).await;
    let r2 = send(&server, &alice, &room, "m.room.message", reply_in_thread(&root, "two")).await;
    let fix = send(&server, &alice, &room, "m.room.message", edit(&root, "root!")).await;
    server.send_text(&alice, &room, "unrelated").await;

    let root_path = enc(&root);
    let all = relations(&server, &bob, &room, &root_path).await;
    assert_eq!(
        event_ids(&all["chunk"]),
        [fix.as_str(), r2.as_str(), r1.as_str()],
        "newest first by default"
    );
    assert!(all.get("next_batch").is_none(), "{all}");

    let threads = relations(&server, &bob, &room, &format!("{root_path}/m.thread")).await;
    assert_eq!(event_ids(&threads["chunk"]), [r2.as_str(), r1.as_str()]);
    let typed =
        relations(&server, &bob, &room, &format!("{root_path}/m.thread/m.room.message")).await;
    assert_eq!(event_ids(&typed["chunk"]), [r2.as_str(), r1.as_str()]);
    let none = relations(&server, &bob, &room, &format!("{root_path}/m.thread/m.reaction")).await;
    assert_eq!(event_ids(&none["chunk"]), Vec::<String>::new());

    // Forward, one at a time, following next_batch to the end.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let query = match &from {
            Some(token) => format!("{root_path}?dir=f&limit=1&from={token}"),
            None => format!("{root_path}?dir=f&limit=1"),
        };
        let page = relations(&server, &bob, &room, &query).await;
        seen.extend(event_ids(&page["chunk"]));
        match page["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
        assert!(seen.len() <= 3, "paging does not end: {seen:?}");
    }
    assert_eq!(seen, [r1.as_str(), r2.as_str(), fix.as_str()]);

    // recurse: the reaction to a thread reply relates to the root through it.
    let deep = relations(&server, &bob, &room, &format!("{root_path}?recurse=true")).await;
    assert_eq!(event_ids(&deep["chunk"]), [fix.as_str(), r2.as_str(), like.as_str(), r1.as_str()]);
    assert_eq!(deep["recursion_depth"], 3);
}

#[tokio::test]
async fn threads_are_listed_by_latest_activity_and_participation() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let first = server.send_text(&alice, &room, "first root").await;
    let second = server.send_text(&bob, &room, "second root").await;
    send(&server, &alice, &room, "m.room.message", reply_in_thread(&second, "a")).await;
    send(&server, &bob, &room, "m.room.message", reply_in_thread(&first, "b")).await;
    server.send_text(&alice, &room, "not a thread").await;

    let path = format!("{V1}/rooms/{}/threads", enc(&room));
    let (status, all) = server.get(&path, &bob.access_token).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(
        event_ids(&all["chunk"]),
        [first.as_str(), second.as_str()],
        "the latest reply was in the first"
    );
    let summary = &all["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 1, "{all}");
    assert_eq!(summary["latest_event"]["content"]["body"], "b");
    assert_eq!(summary["current_user_participated"], true);

    let (_, page) = server.get(&format!("{path}?limit=1"), &bob.access_token).await;
    assert_eq!(event_ids(&page["chunk"]), [first.as_str()]);
    let next = page["next_batch"].as_str().expect("a next page");
    let (_, rest) = server.get(&format!("{path}?limit=1&from={next}"), &bob.access_token).await;
    assert_eq!(event_ids(&rest["chunk"]), [second.as_str()]);

    let carol = server.register("carol").await;
    server.join(&carol, &room).await;
    let (_, theirs) =
        server.get(&format!("{path}?include=participated"), &carol.access_token).await;
    assert_eq!(event_ids(&theirs["chunk"]), Vec::<String>::new());
    let (_, alices) =
        server.get(&format!("{path}?include=participated"), &alice.access_token).await;
    assert_eq!(
        event_ids(&alices["chunk"]),
        [first.as_str(), second.as_str()],
        "her root and her reply"
    );
}

#[tokio::test]
async fn events_carry_their_thread_summary_latest_edit_and_references() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let root = server.send_text(&alice, &room, "hello").await;
    send(&server, &bob, &room, "m.room.message", reply_in_thread(&root, "hi")).await;
    send(&server, &alice, &room, "m.room.message", edit(&root, "hello!")).await;
    let last_edit = send(&server, &alice, &room, "m.room.message", edit(&root, "hello!!")).await;
    // An edit without the new content replaces nothing.
    let empty = json!({ "body": "* nothing", "m.relates_to": { "rel_type": "m.replace", "event_id": root } });
    send(&server, &alice, &room, "m.room.message", empty).await;
    // Bob may not edit Alice's message: his edit is kept but not bundled.
    send(&server, &bob, &room, "m.room.message", edit(&root, "bob was here")).await;
    let reference = json!({ "m.relates_to": { "rel_type": "m.reference", "event_id": root } });
    let referencing = send(&server, &bob, &room, "m.room.message", reference).await;

    let (_, event) = server
        .get(&format!("{V3}/rooms/{}/event/{}", enc(&room), enc(&root)), &bob.access_token)
        .await;
    let bundle = &event["unsigned"]["m.relations"];
    assert_eq!(bundle["m.thread"]["count"], 1, "{event}");
    assert_eq!(bundle["m.thread"]["current_user_participated"], true);
    assert_eq!(bundle["m.replace"]["event_id"], last_edit.as_str());
    assert_eq!(bundle["m.replace"]["content"]["m.new_content"]["body"], "hello!!");
    assert_eq!(bundle["m.reference"]["chunk"], json!([{ "event_id": referencing }]));
    assert_eq!(event["content"]["body"], "hello", "the original content stays as it was sent");

    // The same bundle in /messages and in /sync's timeline.
    let (_, messages) = server
        .get(&format!("{V3}/rooms/{}/messages?dir=b&limit=50", enc(&room)), &bob.access_token)
        .await;
    let found =
        messages["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == root.as_str());
    let found = &found.unwrap()["unsigned"]["m.relations"];
    assert_eq!(found["m.replace"]["event_id"], last_edit.as_str(), "{messages}");
    assert_eq!(found["m.thread"]["count"], 1);
    assert_eq!(found["m.reference"], bundle["m.reference"]);
    let sync = server.sync(&bob, "").await;
    let timeline = sync["rooms"]["join"][room.clone()]["timeline"]["events"].as_array().unwrap();
    let found = timeline.iter().find(|e| e["event_id"] == root.as_str()).expect("root in sync");
    assert_eq!(found["unsigned"]["m.relations"]["m.replace"]["event_id"], last_edit.as_str());

    // Redacting the edit brings back the one before; redacting the reply ends the thread.
    let redact = format!("{V3}/rooms/{}/redact/{}/r1", enc(&room), enc(&last_edit));
    assert_eq!(server.put(&redact, &alice.access_token, json!({})).await.0, StatusCode::OK);
    let (_, event) = server
        .get(&format!("{V3}/rooms/{}/event/{}", enc(&room), enc(&root)), &bob.access_token)
        .await;
    assert_eq!(
        event["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"],
        "hello!"
    );
}

#[tokio::test]
async fn bad_relations_and_thread_requests_get_the_spec_errors() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let root = server.send_text(&alice, &room, "root").await;
    let reply = send(&server, &bob, &room, "m.room.message", reply_in_thread(&root, "in")).await;
    let other_room = server.create_room(&alice, json!({})).await;
    let elsewhere = server.send_text(&alice, &other_room, "elsewhere").await;

    // Sending: the relation must point at a known event of the room, and threads never nest.
    let cases = [
        ("a thread from a thread reply", reply_in_thread(&reply, "nested")),
        ("a relation to an unknown event", reply_in_thread("$unknown:localhost", "x")),
        ("a relation to another room's event", edit(&elsewhere, "x")),
    ];
    for (reason, content) in cases {
        let got = send_raw(&server, &bob, &room, "m.room.message", content).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{reason}: {}", got.1);
        assert_eq!(got.1["errcode"], "M_UNKNOWN", "{reason}: {}", got.1);
    }
    // A relation without an event ID or type is no relation at all, and is sent as it is.
    let loose = json!({ "body": "x", "m.relates_to": { "rel_type": "m.thread" } });
    assert_eq!(send_raw(&server, &bob, &room, "m.room.message", loose).await.0, StatusCode::OK);

    let stranger = server.register("stranger").await;
    let token = Some(bob.access_token.as_str());
    let rel = |tail: &str| format!("{V1}/rooms/{}/relations/{tail}", enc(&room));
    let threads = format!("{V1}/rooms/{}/threads", enc(&room));
    let rows = vec![
        row("no access token", Method::GET, rel(&enc(&root)), None, None)
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("an unknown event", Method::GET, rel(&enc("$nope:localhost")), token, None)
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("an event of another room", Method::GET, rel(&enc(&elsewhere)), token, None)
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("not a member", Method::GET, rel(&enc(&root)), Some(&stranger.access_token), None)
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("a bad from token", Method::GET, rel(&format!("{}?from=xyz", enc(&root))), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a bad dir", Method::GET, rel(&format!("{}?dir=up", enc(&root))), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a negative limit", Method::GET, rel(&format!("{}?limit=-1", enc(&root))), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "recurse not a boolean",
            Method::GET,
            rel(&format!("{}?recurse=maybe", enc(&root))),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("an invalid event ID", Method::GET, rel("not-an-event-id"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "threads of a room one is not in",
            Method::GET,
            threads.clone(),
            Some(&stranger.access_token),
            None,
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "threads with a bad include",
            Method::GET,
            format!("{threads}?include=some"),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "threads with a bad from token",
            Method::GET,
            format!("{threads}?from=s1_x_y"),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "threads of an unknown room",
            Method::GET,
            format!("{V1}/rooms/{}/threads", enc("!nope:localhost")),
            token,
            None,
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
    ];
    run_table(&server, rows).await;
}
