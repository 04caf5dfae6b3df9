//! `/sync` through the client-server API: initial and incremental syncs, long-polling, limited
//! timelines, filters, invites, left rooms, `full_state`, account data and the state that comes
//! before the timeline. Every test starts the real server and speaks HTTP to it.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{TestServer, TestUser, enc};
use reqwest::StatusCode;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// `GET /sync?{query}`, asserting success.
async fn sync(server: &TestServer, user: &TestUser, query: &str) -> Value {
    let (status, body) = server.get(&format!("{V3}/sync?{query}"), &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "sync?{query}: {body}");
    assert!(body["next_batch"].is_string(), "next_batch: {body}");
    body
}

/// An incremental sync that does not wait.
async fn sync_since(server: &TestServer, user: &TestUser, since: &Value) -> Value {
    sync(server, user, &format!("since={}&timeout=0", since.as_str().unwrap())).await
}

/// `filter=` with an inline JSON filter.
fn filter(definition: Value) -> String {
    format!("filter={}", enc(&definition.to_string()))
}

fn room_path(room_id: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room_id))
}

async fn put_state(
    server: &TestServer,
    user: &TestUser,
    room_id: &str,
    event_type: &str,
    content: Value,
) -> String {
    let path = room_path(room_id, &format!("state/{event_type}/"));
    let (status, body) = server.put(&path, &user.access_token, content).await;
    assert_eq!(status, StatusCode::OK, "PUT state {event_type}: {body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn post_ok(server: &TestServer, user: &TestUser, path: &str, body: Value) {
    let (status, response) = server.post(path, &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "POST {path}: {response}");
}

/// The `events` of a section; the server may leave out an empty list.
fn events(section: &Value) -> &[Value] {
    match section.get("events") {
        Some(list) => list.as_array().unwrap_or_else(|| panic!("an events list: {section}")),
        None => &[],
    }
}

/// A timeline's `limited` flag, which the server may leave out when false.
fn limited(section: &Value) -> bool {
    match section["timeline"].get("limited") {
        Some(flag) => flag.as_bool().unwrap_or_else(|| panic!("limited is a boolean: {section}")),
        None => false,
    }
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter().map(|e| e["event_id"].as_str().expect("event_id").to_owned()).collect()
}

/// The bodies of the `m.room.message` events of a list, in order.
fn bodies(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn types(list: &[Value]) -> BTreeSet<String> {
    list.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

/// The last state event of a list with this type and state key: the state after the list.
fn find_state<'a>(list: &'a [Value], event_type: &str, state_key: &str) -> Option<&'a Value> {
    list.iter().rev().find(|e| e["type"] == event_type && e["state_key"] == state_key)
}

fn joined<'a>(response: &'a Value, room_id: &str) -> &'a Value {
    let room = &response["rooms"]["join"][room_id];
    assert!(room.is_object(), "room {room_id} in rooms.join: {response}");
    room
}

fn has_joined(response: &Value, room_id: &str) -> bool {
    response["rooms"]["join"].get(room_id).is_some()
}

#[tokio::test]
async fn initial_sync_returns_joined_rooms_with_state_and_timeline() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"name": "Lounge", "topic": "chat"})).await;
    let other = server.create_room(&alice, json!({})).await;
    let bobs_room = server.create_room(&bob, json!({})).await;
    server.send_text(&alice, &room, "first").await;
    server.send_text(&alice, &room, "second").await;

    let response = sync(&server, &alice, "").await;
    let lounge = joined(&response, &room);
    assert!(has_joined(&response, &other));
    assert!(!has_joined(&response, &bobs_room), "only the user's rooms: {response}");

    let timeline = events(&lounge["timeline"]);
    let state = events(&lounge["state"]);
    assert_eq!(bodies(timeline), ["first", "second"], "the latest messages, oldest first");
    // State and timeline together give the whole current state.
    let everything: Vec<Value> = state.iter().chain(timeline).cloned().collect();
    for (event_type, key) in [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", alice.user_id.as_str()),
    ] {
        assert!(find_state(&everything, event_type, key).is_some(), "{event_type} in {lounge}");
    }
    assert_eq!(find_state(&everything, "m.room.name", "").unwrap()["content"]["name"], "Lounge");
    // Sync events leave out the room ID, and carry what clients need.
    for event in &everything {
        assert!(event.get("room_id").is_none(), "no room_id in sync events: {event}");
        for field in ["event_id", "sender", "type", "origin_server_ts", "content"] {
            assert!(event.get(field).is_some(), "{field} in {event}");
        }
    }
    // prev_batch is there for paging back.
    assert!(lounge["timeline"]["prev_batch"].is_string(), "{lounge}");

    // Bob's initial sync shows only his room.
    let response = sync(&server, &bob, "").await;
    let rooms: Vec<&String> = response["rooms"]["join"].as_object().unwrap().keys().collect();
    assert_eq!(rooms, [&bobs_room]);
}

#[tokio::test]
async fn incremental_sync_returns_only_what_is_new() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let quiet = server.create_room(&alice, json!({})).await;
    server.send_text(&alice, &room, "old").await;
    let first = sync(&server, &alice, "").await;

    // Nothing new: no rooms.
    let nothing = sync_since(&server, &alice, &first["next_batch"]).await;
    assert!(!has_joined(&nothing, &room) && !has_joined(&nothing, &quiet), "{nothing}");

    let new_1 = server.send_text(&alice, &room, "new 1").await;
    let new_2 = server.send_text(&alice, &room, "new 2").await;
    let second = sync_since(&server, &alice, &first["next_batch"]).await;
    let section = joined(&second, &room);
    assert_eq!(ids(events(&section["timeline"])), [new_1.clone(), new_2.clone()]);
    assert!(!limited(section), "{section}");
    assert!(events(&section["state"]).is_empty(), "no state when the timeline is complete");
    assert!(!has_joined(&second, &quiet), "an unchanged room is left out: {second}");
    assert_ne!(second["next_batch"], first["next_batch"]);

    // From the newer token, only what comes after.
    let new_3 = server.send_text(&alice, &quiet, "new 3").await;
    let third = sync_since(&server, &alice, &second["next_batch"]).await;
    assert!(!has_joined(&third, &room), "{third}");
    assert_eq!(ids(events(&joined(&third, &quiet)["timeline"])), [new_3]);

    // A state change shows up in the timeline, once.
    let name_id =
        put_state(&server, &alice, &room, "m.room.name", json!({"name": "Renamed"})).await;
    let fourth = sync_since(&server, &alice, &third["next_batch"]).await;
    let section = joined(&fourth, &room);
    assert_eq!(ids(events(&section["timeline"])), [name_id.as_str()]);
    assert!(!ids(events(&section["state"])).contains(&name_id), "not duplicated in state");

    // An older token still works and returns everything since then.
    let again = sync_since(&server, &alice, &first["next_batch"]).await;
    let timeline = ids(events(&joined(&again, &room)["timeline"]));
    assert_eq!(timeline, [new_1, new_2, name_id]);
}

#[tokio::test]
async fn long_poll_returns_the_event_sent_while_waiting() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    let since = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();

    let request = server
        .http
        .get(server.url(&format!("{V3}/sync?since={since}&timeout=10000")))
        .bearer_auth(&bob.access_token);
    let waiting = tokio::spawn(async move {
        let response = request.send().await.expect("sync sent");
        let status = response.status();
        (status, response.json::<Value>().await.expect("JSON"))
    });
    // Give the request a moment to start waiting (the test holds either way).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let event_id = server.send_text(&alice, &room, "wake up").await;

    let (status, response) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the long-poll answered")
        .expect("the task ran");
    assert_eq!(status, StatusCode::OK, "{response}");
    let timeline = events(&joined(&response, &room)["timeline"]);
    assert_eq!(ids(timeline), [event_id], "{response}");
    assert_eq!(bodies(timeline), ["wake up"]);
}

#[tokio::test]
async fn a_long_poll_wakes_for_its_own_rooms_not_others() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let shared = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    let alices_only = server.create_room(&alice, json!({})).await;
    server.join(&bob, &shared).await;
    let since = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();

    let request = server
        .http
        .get(server.url(&format!("{V3}/sync?since={since}&timeout=10000")))
        .bearer_auth(&bob.access_token);
    let waiting = tokio::spawn(async move {
        let response = request.send().await.expect("sync sent");
        response.json::<Value>().await.expect("JSON")
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // An event in a room bob is not in, then one in his room: he gets only his.
    server.send_text(&alice, &alices_only, "not for bob").await;
    let event_id = server.send_text(&alice, &shared, "for bob").await;
    let response = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the long-poll answered")
        .expect("the task ran");
    assert!(!has_joined(&response, &alices_only), "{response}");
    assert!(!response.to_string().contains("not for bob"), "{response}");
    // The wake-up may come from either event; the room's event is in this sync or the next.
    let mut seen = response
        .pointer(&format!("/rooms/join/{}/timeline/events", json_pointer_escape(&shared)))
        .map(|e| ids(e.as_array().unwrap()))
        .unwrap_or_default();
    if seen.is_empty() {
        let next = sync_since(&server, &bob, &response["next_batch"]).await;
        seen = ids(events(&joined(&next, &shared)["timeline"]));
    }
    assert_eq!(seen, [event_id]);
}

#[tokio::test]
async fn a_long_poll_wakes_for_an_invite_and_for_account_data() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"name": "Surprise"})).await;
    let since = sync(&server, &bob, "").await["next_batch"].as_str().unwrap().to_owned();

    let long_poll = |since: String| {
        let request = server
            .http
            .get(server.url(&format!("{V3}/sync?since={since}&timeout=10000")))
            .bearer_auth(&bob.access_token);
        tokio::spawn(async move { request.send().await.expect("sent").json::<Value>().await })
    };
    let waiting = long_poll(since);
    tokio::time::sleep(Duration::from_millis(100)).await;
    post_ok(&server, &alice, &room_path(&room, "invite"), json!({"user_id": bob.user_id})).await;
    let response = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the long-poll answered")
        .expect("the task ran")
        .expect("JSON");
    let invite = &response["rooms"]["invite"][&room];
    assert!(invite.is_object(), "the invite woke the long-poll: {response}");

    let since = response["next_batch"].as_str().unwrap().to_owned();
    let waiting = long_poll(since);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let path = format!("{V3}/user/{}/account_data/org.example.note", enc(&bob.user_id));
    let (status, body) = server.put(&path, &bob.access_token, json!({"text": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the long-poll answered")
        .expect("the task ran")
        .expect("JSON");
    let data = events(&response["account_data"]);
    assert_eq!(data.len(), 1, "{response}");
    assert_eq!(data[0]["type"], "org.example.note");
    assert_eq!(data[0]["content"], json!({"text": "hi"}));
}

fn json_pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[tokio::test]
async fn limited_timeline_has_prev_batch_that_pages_with_messages() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let limit = filter(json!({"room": {"timeline": {"limit": 5}}}));
    let since = sync(&server, &alice, &limit).await["next_batch"].clone();
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(server.send_text(&alice, &room, &format!("m{i}")).await);
    }

    let query = format!("since={}&timeout=0&{limit}", since.as_str().unwrap());
    let response = sync(&server, &alice, &query).await;
    let section = joined(&response, &room);
    let timeline = events(&section["timeline"]);
    assert!(limited(section), "{section}");
    assert_eq!(ids(timeline), sent[15..], "the last five events");
    let prev_batch = section["timeline"]["prev_batch"].as_str().expect("prev_batch");

    // Paging back from prev_batch gives exactly the events before the timeline, newest first.
    let (status, page) = server
        .get(
            &room_path(&room, &format!("messages?dir=b&limit=10&from={prev_batch}")),
            &alice.access_token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let page_ids = ids(page["chunk"].as_array().unwrap());
    let expected: Vec<String> = sent[5..15].iter().rev().cloned().collect();
    assert_eq!(page_ids, expected);
    let end = page["end"].as_str().expect("end");
    let (_, page) = server
        .get(&room_path(&room, &format!("messages?dir=b&limit=5&from={end}")), &alice.access_token)
        .await;
    let expected: Vec<String> = sent[..5].iter().rev().cloned().collect();
    assert_eq!(ids(page["chunk"].as_array().unwrap()), expected);
    // A sync's next_batch pages too, and `start` repeats the token as given.
    let next_batch = response["next_batch"].as_str().unwrap();
    let (_, page) = server
        .get(
            &room_path(&room, &format!("messages?dir=b&limit=3&from={next_batch}")),
            &alice.access_token,
        )
        .await;
    assert_eq!(page["start"], next_batch, "{page}");
    let expected: Vec<String> = sent[17..].iter().rev().cloned().collect();
    assert_eq!(ids(page["chunk"].as_array().unwrap()), expected);

    // An initial sync is limited too when the room has more events than the limit.
    let response = sync(&server, &alice, &limit).await;
    let section = joined(&response, &room);
    assert!(limited(section), "{section}");
    assert_eq!(ids(events(&section["timeline"])), sent[15..]);
    // And its state covers the room's creation, which the timeline does not show.
    let state = events(&section["state"]);
    assert!(find_state(state, "m.room.create", "").is_some(), "{section}");
    assert!(find_state(state, "m.room.member", &alice.user_id).is_some(), "{section}");
}

#[tokio::test]
async fn filters_inline_and_stored() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"name": "Filtered"})).await;
    let second = server.create_room(&alice, json!({})).await;
    let text = server.send_text(&alice, &room, "text").await;
    let path = room_path(&room, "send/org.example.ping/p1");
    let (status, ping) = server.put(&path, &alice.access_token, json!({"n": 1})).await;
    assert_eq!(status, StatusCode::OK, "{ping}");
    let ping = ping["event_id"].as_str().unwrap().to_owned();

    // Inline: only messages in the timeline.
    let only_messages = json!({"room": {"timeline": {"types": ["m.room.message"]}}});
    let response = sync(&server, &alice, &filter(only_messages.clone())).await;
    let timeline = events(&joined(&response, &room)["timeline"]);
    assert_eq!(ids(timeline), [text.as_str()], "{response}");
    // not_types.
    let no_messages = json!({"room": {"timeline": {"not_types": ["m.room.message"], "limit": 1}}});
    let response = sync(&server, &alice, &filter(no_messages)).await;
    assert_eq!(ids(events(&joined(&response, &room)["timeline"])), [ping.as_str()]);

    // Stored: the same filter by ID.
    let (status, body) = server
        .post(
            &format!("{V3}/user/{}/filter", enc(&alice.user_id)),
            &alice.access_token,
            only_messages,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let filter_id = body["filter_id"].as_str().unwrap();
    let response = sync(&server, &alice, &format!("filter={}", enc(filter_id))).await;
    assert_eq!(ids(events(&joined(&response, &room)["timeline"])), [text.as_str()]);

    // Room filter: one room only; not_rooms leaves one out.
    let one_room = json!({"room": {"rooms": [second]}});
    let response = sync(&server, &alice, &filter(one_room)).await;
    let rooms: Vec<&String> = response["rooms"]["join"].as_object().unwrap().keys().collect();
    assert_eq!(rooms, [&second]);
    let not_room = json!({"room": {"not_rooms": [second]}});
    let response = sync(&server, &alice, &filter(not_room)).await;
    let rooms: Vec<&String> = response["rooms"]["join"].as_object().unwrap().keys().collect();
    assert_eq!(rooms, [&room]);

    // State filter: only the name in state.
    let state_filter =
        json!({"room": {"state": {"types": ["m.room.name"]}, "timeline": {"limit": 1}}});
    let response = sync(&server, &alice, &filter(state_filter)).await;
    let state = events(&joined(&response, &room)["state"]);
    assert_eq!(types(state), BTreeSet::from(["m.room.name".to_owned()]), "{response}");

    // Unknown or malformed filter IDs, and a filter that is not JSON.
    for bad in ["424242", "not-an-id"] {
        let (status, body) =
            server.get(&format!("{V3}/sync?filter={bad}"), &alice.access_token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["errcode"], "M_INVALID_PARAM", "{body}");
    }
    // Another user's filter ID is unknown to this user.
    let bob = server.register("bob").await;
    let (status, body) =
        server.get(&format!("{V3}/sync?filter={}", enc(filter_id)), &bob.access_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errcode"], "M_INVALID_PARAM", "{body}");
}

#[tokio::test]
async fn invites_appear_with_stripped_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"name": "Party", "topic": "secret plans"})).await;
    server.send_text(&alice, &room, "a message bob must not see yet").await;
    let before = sync(&server, &bob, "").await;
    assert!(before["rooms"]["invite"].get(&room).is_none());

    post_ok(&server, &alice, &room_path(&room, "invite"), json!({"user_id": bob.user_id})).await;

    for response in
        [sync(&server, &bob, "").await, sync_since(&server, &bob, &before["next_batch"]).await]
    {
        let invite = &response["rooms"]["invite"][&room];
        assert!(invite.is_object(), "invite in sync: {response}");
        assert!(!has_joined(&response, &room), "{response}");
        let stripped = events(&invite["invite_state"]);
        for event in stripped {
            for field in ["type", "state_key", "sender", "content"] {
                assert!(event.get(field).is_some(), "{field} in stripped event {event}");
            }
        }
        let kinds = types(stripped);
        for expected in ["m.room.create", "m.room.join_rules", "m.room.name", "m.room.member"] {
            assert!(kinds.contains(expected), "{expected} in {kinds:?}");
        }
        assert!(!kinds.contains("m.room.power_levels") && !kinds.contains("m.room.message"));
        assert!(!response.to_string().contains("must not see"), "{response}");
        assert_eq!(find_state(stripped, "m.room.name", "").unwrap()["content"]["name"], "Party");
        let member = find_state(stripped, "m.room.member", &bob.user_id).expect("the invite");
        assert_eq!(member["content"]["membership"], "invite");
        assert_eq!(member["sender"], alice.user_id);
    }

    // Once bob joins, the room moves to rooms.join.
    let invited = sync(&server, &bob, "").await;
    server.join(&bob, &room).await;
    let response = sync_since(&server, &bob, &invited["next_batch"]).await;
    assert!(response["rooms"]["invite"].get(&room).is_none(), "{response}");
    let section = joined(&response, &room);
    let everything: Vec<Value> =
        events(&section["state"]).iter().chain(events(&section["timeline"])).cloned().collect();
    assert!(find_state(&everything, "m.room.create", "").is_some(), "newly joined: full state");
    let member = find_state(&everything, "m.room.member", &bob.user_id).unwrap();
    assert_eq!(member["content"]["membership"], "join");
}

#[tokio::test]
async fn left_rooms_appear_with_include_leave_and_after_leaving() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    let kicked_from = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    server.join(&bob, &kicked_from).await;
    server.send_text(&bob, &room, "bob was here").await;
    let joined_sync = sync(&server, &bob, "").await;
    assert!(has_joined(&joined_sync, &room));

    post_ok(&server, &bob, &room_path(&room, "leave"), json!({})).await;
    post_ok(&server, &alice, &room_path(&kicked_from, "kick"), json!({"user_id": bob.user_id}))
        .await;
    server.send_text(&alice, &room, "after bob left").await;

    // Incremental: both rooms are in rooms.leave, with the leave in the timeline.
    let response = sync_since(&server, &bob, &joined_sync["next_batch"]).await;
    assert!(!has_joined(&response, &room) && !has_joined(&response, &kicked_from), "{response}");
    for room_id in [&room, &kicked_from] {
        let left = &response["rooms"]["leave"][room_id];
        assert!(left.is_object(), "{room_id} in rooms.leave: {response}");
        let timeline = events(&left["timeline"]);
        let leave = find_state(timeline, "m.room.member", &bob.user_id).expect("the leave event");
        assert_eq!(leave["content"]["membership"], "leave");
    }
    let kick = find_state(
        events(&response["rooms"]["leave"][&kicked_from]["timeline"]),
        "m.room.member",
        &bob.user_id,
    )
    .unwrap()
    .clone();
    assert_eq!(kick["sender"], alice.user_id, "a kick");
    assert!(!response.to_string().contains("after bob left"), "nothing after the leave");

    // Initial sync: left rooms only with include_leave.
    let plain = sync(&server, &bob, "").await;
    assert!(plain["rooms"]["leave"].get(&room).is_none(), "{plain}");
    assert!(!has_joined(&plain, &room));
    let with_leave = sync(&server, &bob, &filter(json!({"room": {"include_leave": true}}))).await;
    let left = &with_leave["rooms"]["leave"][&room];
    assert!(left.is_object(), "{with_leave}");
    let timeline = events(&left["timeline"]);
    assert_eq!(
        find_state(timeline, "m.room.member", &bob.user_id).unwrap()["content"]["membership"],
        "leave"
    );
    assert!(bodies(timeline).contains(&"bob was here".to_owned()), "history up to the leave");
    assert!(!with_leave.to_string().contains("after bob left"), "{with_leave}");

    // A ban and a rejected invite show up in rooms.leave too.
    let banned_from = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    let invited_to = server.create_room(&alice, json!({"preset": "private_chat"})).await;
    server.join(&bob, &banned_from).await;
    post_ok(&server, &alice, &room_path(&invited_to, "invite"), json!({"user_id": bob.user_id}))
        .await;
    let before = sync(&server, &bob, "").await;
    assert!(before["rooms"]["invite"].get(&invited_to).is_some(), "{before}");
    post_ok(&server, &alice, &room_path(&banned_from, "ban"), json!({"user_id": bob.user_id}))
        .await;
    post_ok(&server, &bob, &room_path(&invited_to, "leave"), json!({})).await;
    let after = sync_since(&server, &bob, &before["next_batch"]).await;
    for (room_id, membership) in [(&banned_from, "ban"), (&invited_to, "leave")] {
        let left = &after["rooms"]["leave"][room_id];
        assert!(left.is_object(), "{room_id} in rooms.leave: {after}");
        let event = find_state(events(&left["timeline"]), "m.room.member", &bob.user_id);
        assert_eq!(event.expect("membership")["content"]["membership"], membership, "{after}");
    }
    assert!(after["rooms"]["invite"].get(&invited_to).is_none(), "{after}");
    assert!(!has_joined(&after, &banned_from), "{after}");

    // A later incremental sync does not repeat the leave.
    let later = sync_since(&server, &bob, &response["next_batch"]).await;
    assert!(later["rooms"]["leave"].get(&room).is_none(), "{later}");
}

#[tokio::test]
async fn full_state_returns_the_state_again() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"name": "Stateful"})).await;
    let first = sync(&server, &alice, "").await;

    let since = first["next_batch"].as_str().unwrap();
    let response = sync(&server, &alice, &format!("since={since}&timeout=0&full_state=true")).await;
    let section = joined(&response, &room);
    let state = events(&section["state"]);
    for event_type in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"] {
        assert!(find_state(state, event_type, "").is_some(), "{event_type} in {section}");
    }
    assert!(find_state(state, "m.room.member", &alice.user_id).is_some());
    assert!(events(&section["timeline"]).is_empty(), "nothing new in the timeline: {section}");

    // Without full_state the same since returns nothing for the room.
    let response = sync_since(&server, &alice, &first["next_batch"]).await;
    assert!(!has_joined(&response, &room), "{response}");

    // With a new event and full_state: the state before it, and the event in the timeline.
    let event_id = server.send_text(&alice, &room, "new").await;
    let response = sync(&server, &alice, &format!("since={since}&timeout=0&full_state=true")).await;
    let section = joined(&response, &room);
    assert_eq!(ids(events(&section["timeline"])), [event_id]);
    assert!(find_state(events(&section["state"]), "m.room.create", "").is_some(), "{section}");
}

#[tokio::test]
async fn account_data_appears_in_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let first = sync(&server, &alice, "").await;

    let user = enc(&alice.user_id);
    let (status, body) = server
        .put(
            &format!("{V3}/user/{user}/account_data/org.example.theme"),
            &alice.access_token,
            json!({"dark": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .put(
            &format!("{V3}/user/{user}/rooms/{}/account_data/org.example.pin", enc(&room)),
            &alice.access_token,
            json!({"pinned": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let check = |response: &Value| {
        let global = events(&response["account_data"]);
        let theme = global.iter().find(|e| e["type"] == "org.example.theme");
        assert_eq!(theme.expect("global account data")["content"], json!({"dark": true}));
        assert!(global.iter().all(|e| e["type"] != "org.example.pin"), "room data is not global");
        let room_data = events(&response["rooms"]["join"][&room]["account_data"]);
        let pin = room_data.iter().find(|e| e["type"] == "org.example.pin");
        assert_eq!(pin.expect("room account data")["content"], json!({"pinned": 1}));
    };
    let incremental = sync_since(&server, &alice, &first["next_batch"]).await;
    check(&incremental);
    check(&sync(&server, &alice, "").await);

    // Reported once: the next incremental sync has none.
    let later = sync_since(&server, &alice, &incremental["next_batch"]).await;
    let global = events(&later["account_data"]);
    assert!(global.iter().all(|e| e["type"] != "org.example.theme"), "{later}");
    assert!(!has_joined(&later, &room), "{later}");

    // The account data filter applies.
    let none = filter(json!({"account_data": {"not_types": ["org.example.*"]}}));
    let response = sync(&server, &alice, &none).await;
    let global = events(&response["account_data"]);
    assert!(global.iter().all(|e| e["type"] != "org.example.theme"), "{response}");
}

#[tokio::test]
async fn state_is_the_state_before_the_timeline() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"name": "A"})).await;
    for i in 0..5 {
        server.send_text(&alice, &room, &format!("filler {i}")).await;
    }
    let rename = put_state(&server, &alice, &room, "m.room.name", json!({"name": "B"})).await;
    let last = server.send_text(&alice, &room, "last").await;

    // Initial sync, timeline of 2: [rename, last]; state holds the name before it ("A").
    let limit_2 = filter(json!({"room": {"timeline": {"limit": 2}}}));
    let response = sync(&server, &alice, &limit_2).await;
    let section = joined(&response, &room);
    let timeline = events(&section["timeline"]);
    let state = events(&section["state"]);
    assert_eq!(ids(timeline), [rename.clone(), last.clone()]);
    let name = find_state(state, "m.room.name", "").expect("the name before the timeline");
    assert_eq!(name["content"]["name"], "A", "{section}");
    assert_ne!(name["event_id"], rename.as_str());
    let timeline_ids: BTreeSet<String> = ids(timeline).into_iter().collect();
    assert!(ids(state).iter().all(|id| !timeline_ids.contains(id)), "state repeats the timeline");
    let keys: Vec<(String, String)> = state
        .iter()
        .map(|e| (e["type"].as_str().unwrap().into(), e["state_key"].as_str().unwrap().into()))
        .collect();
    assert_eq!(keys.len(), keys.iter().collect::<BTreeSet<_>>().len(), "one event per key");

    // Timeline of 10 holds the name change; state then has no m.room.name beyond the original.
    let limit_10 = filter(json!({"room": {"timeline": {"limit": 10}}}));
    let response = sync(&server, &alice, &limit_10).await;
    let section = joined(&response, &room);
    let state = events(&section["state"]);
    let timeline = events(&section["timeline"]);
    assert!(ids(timeline).contains(&rename));
    let timeline_ids: BTreeSet<String> = ids(timeline).into_iter().collect();
    assert!(ids(state).iter().all(|id| !timeline_ids.contains(id)), "state repeats the timeline");
    if let Some(name) = find_state(state, "m.room.name", "") {
        assert_eq!(name["content"]["name"], "A", "state is before the timeline: {section}");
    }

    // Incremental and limited: a state change between since and the timeline is in state.
    let since = sync(&server, &alice, &limit_2).await["next_batch"].clone();
    let topic = put_state(&server, &alice, &room, "m.room.topic", json!({"topic": "T"})).await;
    for i in 0..4 {
        server.send_text(&alice, &room, &format!("more {i}")).await;
    }
    let query = format!("since={}&timeout=0&{limit_2}", since.as_str().unwrap());
    let response = sync(&server, &alice, &query).await;
    let section = joined(&response, &room);
    assert!(limited(section), "{section}");
    assert_eq!(bodies(events(&section["timeline"])), ["more 2", "more 3"]);
    let state = events(&section["state"]);
    assert_eq!(ids(state), [topic], "only the change the timeline skipped: {section}");
}

#[tokio::test]
async fn invalid_since_tokens_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for bad in ["garbage", "s", "s-1", "12", "sx1", "s99999999999999999999999"] {
        let (status, body) =
            server.get(&format!("{V3}/sync?since={}", enc(bad)), &alice.access_token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "since={bad}: {body}");
        assert_eq!(body["errcode"], "M_INVALID_PARAM", "since={bad}: {body}");
    }
    // A good token still works, and set_presence is accepted.
    let first = sync(&server, &alice, "set_presence=offline").await;
    let since = first["next_batch"].as_str().unwrap();
    sync(&server, &alice, &format!("since={since}&timeout=0&set_presence=online")).await;
    // Without a token, 401.
    let (status, body) = server.call(reqwest::Method::GET, &format!("{V3}/sync"), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_MISSING_TOKEN");
}

#[tokio::test]
async fn room_summaries_count_members_and_name_heroes_until_the_room_has_a_name() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    server.join(&dave, &room).await;
    post_ok(&server, &alice, &room_path(&room, "invite"), json!({ "user_id": carol.user_id }))
        .await;
    post_ok(&server, &dave, &room_path(&room, "leave"), json!({})).await;

    let initial = sync(&server, &alice, "").await;
    let summary = &joined(&initial, &room)["summary"];
    assert_eq!(summary["m.joined_member_count"], 2, "{summary}");
    assert_eq!(summary["m.invited_member_count"], 1, "{summary}");
    assert_eq!(summary["m.heroes"], json!([bob.user_id, carol.user_id]), "dave left, alice asks");

    // Lazy-loading keeps the heroes' members in the state though they sent nothing.
    server.send_text(&alice, &room, "hello").await;
    let lazy =
        json!({ "room": { "state": { "lazy_load_members": true }, "timeline": { "limit": 1 } } });
    let lazy_sync = sync(&server, &alice, &filter(lazy)).await;
    let state = events(&joined(&lazy_sync, &room)["state"]).to_vec();
    assert!(find_state(&state, "m.room.member", &bob.user_id).is_some(), "{lazy_sync}");
    assert!(find_state(&state, "m.room.member", &carol.user_id).is_some(), "{lazy_sync}");
    assert!(find_state(&state, "m.room.member", &dave.user_id).is_none(), "{lazy_sync}");

    // A message changes no summary: it is left out.
    let quiet = sync_since(&server, &alice, &lazy_sync["next_batch"]).await;
    server.send_text(&bob, &room, "hi").await;
    let after_message = sync_since(&server, &alice, &quiet["next_batch"]).await;
    assert!(joined(&after_message, &room).get("summary").is_none(), "{after_message}");

    server.join(&carol, &room).await;
    let after_join = sync_since(&server, &alice, &after_message["next_batch"]).await;
    let summary = &joined(&after_join, &room)["summary"];
    assert_eq!(
        (&summary["m.joined_member_count"], &summary["m.invited_member_count"]),
        (&json!(3), &json!(0))
    );
    assert_eq!(summary["m.heroes"], json!([bob.user_id, carol.user_id]));

    put_state(&server, &alice, &room, "m.room.name", json!({ "name": "Family" })).await;
    let after_name = sync_since(&server, &alice, &after_join["next_batch"]).await;
    let summary = &joined(&after_name, &room)["summary"];
    assert_eq!(summary["m.joined_member_count"], 3, "{summary}");
    assert!(summary.get("m.heroes").is_none(), "a named room needs no heroes: {summary}");
}
