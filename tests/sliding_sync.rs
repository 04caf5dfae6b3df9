//! Simplified sliding sync (MSC4186) through the client-server API:
//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`. Lists, their filters,
//! ranges and recency order; the per-room fields; required state with wildcards, `$ME`, `$LAZY`
//! and deltas; room subscriptions; every extension; the long-poll; `M_UNKNOWN_POS`; and the bad
//! requests with their exact errors.

mod common;

use std::time::Duration;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// A sliding sync request of `user` with `query` (`pos=…&timeout=…`), asserting success.
async fn slide(server: &TestServer, user: &TestUser, query: &str, body: Value) -> Value {
    let path = format!("{SLIDING}?{query}");
    let (status, json) = server.post(&path, &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "sliding sync {query}: {json}");
    assert!(json["pos"].is_string(), "a pos in {json}");
    json
}

/// The query of the request that follows `response`, without waiting.
fn after(response: &Value) -> String {
    format!("pos={}&timeout=0", response["pos"].as_str().unwrap())
}

/// A body with one list `all` of every room, showing `limit` events and `required_state`.
fn one_list(ranges: Value, limit: u32, required_state: Value) -> Value {
    json!({ "lists": { "all": {
        "ranges": ranges, "timeline_limit": limit, "required_state": required_state,
    } } })
}

fn room<'a>(response: &'a Value, room_id: &str) -> &'a Value {
    &response["rooms"][room_id]
}

/// The bodies of a room's timeline messages, oldest first.
fn bodies(response: &Value, room_id: &str) -> Vec<String> {
    let timeline = room(response, room_id)["timeline"].as_array().cloned().unwrap_or_default();
    timeline
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

/// The (type, state key) of a room's required state.
fn state_keys(response: &Value, room_id: &str) -> Vec<(String, String)> {
    let state = room(response, room_id)["required_state"].as_array().cloned().unwrap_or_default();
    let mut keys: Vec<(String, String)> = state
        .iter()
        .map(|e| (e["type"].as_str().unwrap().into(), e["state_key"].as_str().unwrap().into()))
        .collect();
    keys.sort();
    keys
}

fn key(event_type: &str, state_key: &str) -> (String, String) {
    (event_type.to_owned(), state_key.to_owned())
}

async fn named_room(server: &TestServer, user: &TestUser, name: &str) -> String {
    server.create_room(user, json!({ "name": name })).await
}

#[tokio::test]
async fn versions_advertise_simplified_sliding_sync() {
    let server = TestServer::start().await;
    let (status, json) = server.call(Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["unstable_features"]["org.matrix.simplified_msc3575"], true, "{json}");
}

#[tokio::test]
async fn lists_are_ordered_by_recency_and_cut_by_their_ranges() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let first = named_room(&server, &alice, "First").await;
    let second = named_room(&server, &alice, "Second").await;
    let third = named_room(&server, &alice, "Third").await;
    for n in 1..=3 {
        server.send_text(&alice, &second, &format!("second {n}")).await;
    }
    server.send_text(&alice, &first, "first, the latest").await;

    let response = slide(&server, &alice, "", one_list(json!([[0, 1]]), 2, json!([]))).await;
    assert_eq!(response["lists"]["all"]["count"], 3, "{response}");
    let rooms = response["rooms"].as_object().unwrap();
    assert_eq!(rooms.len(), 2, "the range holds two rooms: {response}");
    assert!(!rooms.contains_key(&third), "the least recent room is outside the range");
    let (first_room, second_room) = (room(&response, &first), room(&response, &second));
    assert!(first_room["bump_stamp"].as_u64() > second_room["bump_stamp"].as_u64());
    assert_eq!(first_room["name"], "First");
    assert_eq!(first_room["initial"], true);
    assert_eq!(first_room["joined_count"], 1);
    assert_eq!(first_room["invited_count"], 0);
    assert_eq!(bodies(&response, &second), ["second 2", "second 3"], "the last two events");
    assert_eq!(second_room["limited"], true);
    assert!(second_room["prev_batch"].is_string());
    assert_eq!(second_room["num_live"], 0, "nothing is live in a first answer");

    // The earlier events are on /messages from prev_batch.
    let prev_batch = second_room["prev_batch"].as_str().unwrap();
    let path = format!("{V3}/rooms/{}/messages?dir=b&from={prev_batch}&limit=1", enc(&second));
    let (status, page) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["chunk"][0]["content"]["body"], "second 1", "{page}");

    let wider = slide(&server, &alice, "", one_list(json!([[1, 2]]), 1, json!([]))).await;
    let rooms = wider["rooms"].as_object().unwrap();
    let mut ids: Vec<&String> = rooms.keys().collect();
    ids.sort();
    let mut expected = vec![&second, &third];
    expected.sort();
    assert_eq!(ids, expected, "the second and third most recent: {wider}");
}

#[tokio::test]
async fn list_filters_pick_dms_encrypted_rooms_invites_and_spaces() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let encryption = json!({ "type": "m.room.encryption", "state_key": "",
        "content": { "algorithm": "m.megolm.v1.aes-sha2" } });
    let secret = server.create_room(&alice, json!({ "initial_state": [encryption] })).await;
    let space =
        server.create_room(&alice, json!({ "creation_content": { "type": "m.space" } })).await;
    let plain = named_room(&server, &alice, "Plain").await;
    let direct = server
        .create_room(&bob, json!({ "is_direct": true, "invite": [alice.user_id.clone()] }))
        .await;

    let list =
        |filters: Value| json!({ "ranges": [[0, 9]], "timeline_limit": 1, "filters": filters });
    let body = json!({ "lists": {
        "encrypted": list(json!({ "is_encrypted": true })),
        "invites": list(json!({ "is_invite": true })),
        "dms": list(json!({ "is_dm": true })),
        "not_dms": list(json!({ "is_dm": false, "is_invite": false })),
        "spaces": list(json!({ "room_types": ["m.space"] })),
        "rooms": list(json!({ "room_types": [null] })),
        "not_spaces": list(json!({ "not_room_types": ["m.space"] })),
    } });
    let response = slide(&server, &alice, "", body).await;
    let count = |list: &str| response["lists"][list]["count"].as_u64().unwrap();
    assert_eq!(count("encrypted"), 1, "{response}");
    assert_eq!(count("invites"), 1);
    assert_eq!(count("dms"), 1, "the invite with is_direct");
    assert_eq!(count("not_dms"), 3);
    assert_eq!(count("spaces"), 1);
    assert_eq!(count("rooms"), 3, "room_types [null] is rooms without a type");
    assert_eq!(count("not_spaces"), 3);

    let invite = room(&response, &direct);
    assert_eq!(invite["is_dm"], true);
    assert!(invite["timeline"].is_null(), "an invite has no timeline: {invite}");
    let stripped = invite["invite_state"].as_array().expect("invite_state");
    assert!(stripped.iter().any(|e| e["type"] == "m.room.member"
        && e["state_key"] == alice.user_id.as_str()
        && e["content"]["membership"] == "invite"));
    assert_eq!(room(&response, &secret)["is_dm"], false);
    assert!(response["rooms"][&space].is_object() && response["rooms"][&plain].is_object());
}

#[tokio::test]
async fn names_and_heroes_follow_the_spec_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let path = format!("{V3}/profile/{}/displayname", enc(&bob.user_id));
    let (status, _) = server.put(&path, &bob.access_token, json!({ "displayname": "Bob" })).await;
    assert_eq!(status, StatusCode::OK);
    let unnamed = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &unnamed).await;
    let alias_room = server
        .create_room(&alice, json!({ "room_alias_name": "family", "preset": "public_chat" }))
        .await;
    let empty = server.create_room(&alice, json!({})).await;

    let response = slide(&server, &alice, "", one_list(json!([[0, 9]]), 0, json!([]))).await;
    assert_eq!(room(&response, &unnamed)["name"], "Bob", "{response}");
    let heroes = &room(&response, &unnamed)["heroes"];
    assert_eq!(heroes[0]["user_id"], bob.user_id.as_str());
    assert_eq!(heroes[0]["displayname"], "Bob");
    assert_eq!(room(&response, &alias_room)["name"], "#family:localhost");
    assert_eq!(room(&response, &empty)["name"], "Empty Room");

    server.join(&carol, &unnamed).await;
    let next =
        slide(&server, &alice, &after(&response), one_list(json!([[0, 9]]), 0, json!([]))).await;
    assert_eq!(room(&next, &unnamed)["name"], "Bob and @carol:localhost", "{next}");
    assert_eq!(room(&next, &unnamed)["joined_count"], 3);
}

#[tokio::test]
async fn incremental_answers_send_only_what_changed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let quiet = named_room(&server, &alice, "Quiet").await;
    let busy = named_room(&server, &alice, "Busy").await;
    let body = one_list(json!([[0, 9]]), 5, json!([["m.room.name", ""], ["m.room.topic", ""]]));
    let first = slide(&server, &alice, "", body.clone()).await;
    assert_eq!(state_keys(&first, &busy), [key("m.room.name", "")], "{first}");

    let nothing = slide(&server, &alice, &after(&first), body.clone()).await;
    assert!(nothing["rooms"].is_null(), "nothing changed: {nothing}");
    assert_eq!(nothing["lists"]["all"]["count"], 2);

    server.send_text(&alice, &busy, "news").await;
    let path = format!("{V3}/rooms/{}/state/m.room.topic/", enc(&busy));
    let (status, _) = server.put(&path, &alice.access_token, json!({ "topic": "t" })).await;
    assert_eq!(status, StatusCode::OK);
    let news = slide(&server, &alice, &after(&nothing), body.clone()).await;
    let rooms = news["rooms"].as_object().unwrap();
    assert_eq!(rooms.len(), 1, "only the busy room: {news}");
    let busy_room = room(&news, &busy);
    assert!(busy_room["initial"].is_null(), "{busy_room}");
    assert_eq!(bodies(&news, &busy), ["news"]);
    assert_eq!(busy_room["num_live"], 2, "the message and the topic");
    assert!(busy_room["limited"] != true, "all of it fits");
    assert_eq!(state_keys(&news, &busy), [key("m.room.topic", "")], "the delta only");
    assert!(news["rooms"][&quiet].is_null());

    // The same pos again (an answer lost on the way) gives the same news again.
    let again = slide(&server, &alice, &after(&nothing), body.clone()).await;
    assert_eq!(bodies(&again, &busy), ["news"]);
    assert_ne!(again["pos"], news["pos"]);

    // More required state for the room sends what the client does not hold yet.
    let more = one_list(json!([[0, 9]]), 5, json!([["m.room.create", ""], ["m.room.name", ""]]));
    let grown = slide(&server, &alice, &after(&again), more).await;
    assert_eq!(state_keys(&grown, &busy), [key("m.room.create", "")], "{grown}");
    assert!(bodies(&grown, &busy).is_empty(), "no new events");
}

#[tokio::test]
async fn invites_joins_and_leaves_change_how_a_room_is_sent() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = server
        .create_room(&bob, json!({ "name": "Bob's", "invite": [alice.user_id.clone()] }))
        .await;
    let mut body = one_list(json!([[0, 9]]), 5, json!([["m.room.member", "$ME"]]));
    body["txn_id"] = json!("first");
    let invited = slide(&server, &alice, "", body.clone()).await;
    assert_eq!(invited["txn_id"], "first", "the txn_id comes back");
    assert!(room(&invited, &room_id)["invite_state"].is_array(), "{invited}");

    server.join(&alice, &room_id).await;
    let joined = slide(&server, &alice, &after(&invited), body.clone()).await;
    let entry = room(&joined, &room_id);
    assert_eq!(entry["initial"], true, "a joined room is sent whole: {joined}");
    assert!(entry["invite_state"].is_null());
    assert_eq!(entry["name"], "Bob's");
    assert_eq!(state_keys(&joined, &room_id), [key("m.room.member", &alice.user_id)]);

    let path = format!("{V3}/rooms/{}/leave", enc(&room_id));
    let (status, _) = server.post(&path, &alice.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    server.send_text(&bob, &room_id, "after alice left").await;
    let left = slide(&server, &alice, &after(&joined), body.clone()).await;
    let timeline = room(&left, &room_id)["timeline"].as_array().unwrap().clone();
    let last = timeline.last().unwrap();
    assert_eq!(last["type"], "m.room.member", "the leave ends what alice sees: {left}");
    assert_eq!(last["content"]["membership"], "leave");
    assert!(bodies(&left, &room_id).is_empty(), "nothing after the leave");

    let gone = slide(&server, &alice, &after(&left), body).await;
    assert_eq!(gone["lists"]["all"]["count"], 0, "{gone}");
    assert!(gone["rooms"].is_null());
}

#[tokio::test]
async fn what_ignored_users_send_is_left_out() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let shared = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &shared).await;
    server.join(&carol, &shared).await;
    let path = format!("{V3}/user/{}/account_data/m.ignored_user_list", enc(&alice.user_id));
    let ignore = json!({ "ignored_users": { bob.user_id.clone(): {} } });
    let (status, _) = server.put(&path, &alice.access_token, ignore).await;
    assert_eq!(status, StatusCode::OK);
    server.send_text(&bob, &shared, "from bob").await;
    server.send_text(&carol, &shared, "from carol").await;
    let from_bob = server.create_room(&bob, json!({ "invite": [alice.user_id.clone()] })).await;

    let response = slide(&server, &alice, "", one_list(json!([[0, 9]]), 10, json!([]))).await;
    assert_eq!(bodies(&response, &shared), ["from carol"], "{response}");
    assert!(response["rooms"][&from_bob].is_null(), "bob's invite is left out");
    assert_eq!(response["lists"]["all"]["count"], 1);
}

#[tokio::test]
async fn required_state_understands_wildcards_me_and_lazy_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room_id).await;
    server.join(&carol, &room_id).await;
    server.send_text(&bob, &room_id, "from bob").await;

    // Each on a connection of its own, so that each starts with nothing sent.
    let members = |state: Value| {
        let mut body = one_list(json!([[0, 0]]), 1, state.clone());
        body["conn_id"] = json!(state.to_string());
        body
    };
    let lazy = slide(&server, &alice, "", members(json!([["m.room.member", "$LAZY"]]))).await;
    assert_eq!(state_keys(&lazy, &room_id), [key("m.room.member", &bob.user_id)], "{lazy}");

    let me = slide(&server, &alice, "", members(json!([["m.room.member", "$ME"]]))).await;
    assert_eq!(state_keys(&me, &room_id), [key("m.room.member", &alice.user_id)]);

    let all_members = slide(&server, &alice, "", members(json!([["m.room.member", "*"]]))).await;
    assert_eq!(state_keys(&all_members, &room_id).len(), 3);

    let everything = slide(&server, &alice, "", members(json!([["*", "*"]]))).await;
    let keys = state_keys(&everything, &room_id);
    assert!(
        keys.contains(&key("m.room.create", "")) && keys.contains(&key("m.room.join_rules", ""))
    );
    assert!(keys.len() > 5, "{keys:?}");

    // A lazy member already sent is not sent again; a new sender is.
    let body = members(json!([["m.room.member", "$LAZY"]]));
    server.send_text(&bob, &room_id, "bob again").await;
    let again = slide(&server, &alice, &after(&lazy), body.clone()).await;
    assert_eq!(bodies(&again, &room_id), ["bob again"]);
    assert!(state_keys(&again, &room_id).is_empty(), "bob's member event was sent: {again}");
    server.send_text(&carol, &room_id, "carol").await;
    let next = slide(&server, &alice, &after(&again), body).await;
    assert_eq!(state_keys(&next, &room_id), [key("m.room.member", &carol.user_id)], "{next}");
}

#[tokio::test]
async fn room_subscriptions_send_their_rooms_and_leave_out_foreign_ones() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let old = named_room(&server, &alice, "Old").await;
    server.send_text(&alice, &old, "old news").await;
    let _newer = named_room(&server, &alice, "Newer").await;
    let bobs = named_room(&server, &bob, "Bob's").await;

    let body = json!({
        "lists": { "top": { "ranges": [[0, 0]], "timeline_limit": 0 } },
        "room_subscriptions": {
            old.clone(): { "timeline_limit": 1, "required_state": [["m.room.name", ""]] },
            bobs.clone(): { "timeline_limit": 1 },
            "!unknown:localhost": { "timeline_limit": 1 },
        },
    });
    let response = slide(&server, &alice, "", body).await;
    assert_eq!(bodies(&response, &old), ["old news"], "{response}");
    assert_eq!(state_keys(&response, &old), [key("m.room.name", "")]);
    assert!(response["rooms"][&bobs].is_null(), "alice is not in bob's room");
    assert!(response["rooms"]["!unknown:localhost"].is_null());
    assert_eq!(
        response["rooms"].as_object().unwrap().len(),
        2,
        "the list's room and the subscription"
    );
}

#[tokio::test]
async fn a_larger_timeline_limit_sends_the_room_whole_again() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room_id = named_room(&server, &alice, "Chatty").await;
    for n in 1..=3 {
        server.send_text(&alice, &room_id, &format!("m{n}")).await;
    }
    let list = one_list(json!([[0, 0]]), 1, json!([]));
    let first = slide(&server, &alice, "", list.clone()).await;
    assert_eq!(bodies(&first, &room_id), ["m3"]);

    let mut opened = list.clone();
    opened["room_subscriptions"] = json!({ room_id.clone(): { "timeline_limit": 3 } });
    let longer = slide(&server, &alice, &after(&first), opened.clone()).await;
    assert_eq!(bodies(&longer, &room_id), ["m1", "m2", "m3"], "{longer}");
    assert_eq!(room(&longer, &room_id)["initial"], true);

    let same = slide(&server, &alice, &after(&longer), opened).await;
    assert!(same["rooms"].is_null(), "already sent with that limit: {same}");
    let back = slide(&server, &alice, &after(&same), list).await;
    assert!(back["rooms"].is_null(), "a smaller limit sends nothing again: {back}");
}

#[tokio::test]
async fn an_unknown_pos_is_m_unknown_pos_and_a_new_connection_drops_the_old() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let body = one_list(json!([[0, 9]]), 1, json!([]));
    let path = |pos: &str| format!("{SLIDING}?pos={pos}&timeout=0");
    let token = alice.access_token.clone();
    for pos in ["12345", "not-a-pos", ""] {
        let got = server.post(&path(pos), &token, body.clone()).await;
        common::assert_error(&got, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
    }
    let first = slide(&server, &alice, "", body.clone()).await;
    let pos = first["pos"].as_str().unwrap();
    let other_connection = json!({ "conn_id": "other", "lists": body["lists"] });
    let got = server.post(&path(pos), &token, other_connection.clone()).await;
    common::assert_error(&got, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
    slide(&server, &alice, "", other_connection).await;
    slide(&server, &alice, &after(&first), body.clone()).await;
    slide(&server, &alice, "", body.clone()).await;
    let got = server.post(&path(pos), &token, body).await;
    common::assert_error(&got, StatusCode::BAD_REQUEST, "M_UNKNOWN_POS");
}

#[tokio::test]
async fn a_long_poll_waits_and_a_new_message_wakes_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room_id).await;
    let body = one_list(json!([[0, 9]]), 5, json!([]));
    let first = slide(&server, &alice, "", body.clone()).await;

    let started = std::time::Instant::now();
    let idle = slide(
        &server,
        &alice,
        &format!("pos={}&timeout=300", first["pos"].as_str().unwrap()),
        body.clone(),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited for the timeout");
    assert!(idle["rooms"].is_null(), "{idle}");

    let request = server
        .http
        .post(server.url(&format!("{SLIDING}?pos={}&timeout=20000", idle["pos"].as_str().unwrap())))
        .bearer_auth(&alice.access_token)
        .json(&body);
    let waiting = tokio::spawn(async move {
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.expect("JSON")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the long-poll waits while nothing happens");
    server.send_text(&bob, &room_id, "wake up").await;
    let woken = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("woken before its timeout")
        .unwrap();
    assert_eq!(bodies(&woken, &room_id), ["wake up"], "{woken}");
    assert_eq!(room(&woken, &room_id)["num_live"], 1);
}

#[tokio::test]
async fn unread_counts_follow_notifications_and_the_users_own_receipt() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room_id).await;
    let body = one_list(json!([[0, 9]]), 1, json!([]));
    let mut response = slide(&server, &alice, "", body.clone()).await;
    let event_id = server.send_text(&bob, &room_id, "hello alice").await;
    // Push rules run after the event is sent: the counts come in the same answer or a later one.
    for _ in 0..50 {
        response = slide(&server, &alice, &after(&response), body.clone()).await;
        if room(&response, &room_id)["notification_count"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(room(&response, &room_id)["notification_count"], 1, "{response}");

    let path = format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(&event_id));
    let (status, _) = server.post(&path, &alice.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let read = slide(&server, &alice, &after(&response), body).await;
    assert_eq!(room(&read, &room_id)["notification_count"], 0, "{read}");
    assert!(bodies(&read, &room_id).is_empty(), "no new events, only the counts");
}

#[tokio::test]
async fn the_to_device_extension_delivers_and_acknowledges_with_since() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for n in 1..=2 {
        let path = format!("{V3}/sendToDevice/m.test/txn{n}");
        let messages = json!({ "messages": { alice.user_id.clone(): { "*": { "n": n } } } });
        let (status, _) = server.put(&path, &bob.access_token, messages).await;
        assert_eq!(status, StatusCode::OK);
    }
    let body = |since: Option<&str>| {
        let mut to_device = json!({ "enabled": true });
        if let Some(since) = since {
            to_device["since"] = json!(since);
        }
        json!({ "extensions": { "to_device": to_device } })
    };
    let numbers = |response: &Value| -> Vec<i64> {
        let events = response["extensions"]["to_device"]["events"].as_array().cloned();
        events.unwrap_or_default().iter().map(|e| e["content"]["n"].as_i64().unwrap()).collect()
    };
    let first = slide(&server, &alice, "", body(None)).await;
    assert_eq!(numbers(&first), [1, 2], "{first}");
    assert_eq!(first["extensions"]["to_device"]["events"][0]["sender"], bob.user_id.as_str());
    let since = first["extensions"]["to_device"]["next_batch"].as_str().unwrap().to_owned();

    let unacknowledged = slide(&server, &alice, "", body(None)).await;
    assert_eq!(numbers(&unacknowledged), [1, 2], "kept until acknowledged");
    let acknowledged = slide(&server, &alice, "", body(Some(&since))).await;
    assert!(numbers(&acknowledged).is_empty(), "{acknowledged}");
    let from_start = slide(&server, &alice, "", body(None)).await;
    assert!(numbers(&from_start).is_empty(), "deleted once acknowledged");
    let off = slide(&server, &alice, "", json!({})).await;
    assert!(off["extensions"]["to_device"].is_null(), "{off}");
}

#[tokio::test]
async fn the_e2ee_extension_counts_keys_and_names_changed_device_lists() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room_id).await;
    let body = json!({ "extensions": { "e2ee": { "enabled": true } } });
    let first = slide(&server, &alice, "", body.clone()).await;
    let e2ee = &first["extensions"]["e2ee"];
    assert_eq!(e2ee["device_one_time_keys_count"]["signed_curve25519"], 0, "{first}");
    assert_eq!(e2ee["device_unused_fallback_key_types"], json!([]));
    assert!(e2ee["device_lists"].is_null(), "no device lists in a first answer");

    // Bob's second device comes and goes: his device list changed.
    let phone = server.login_ok("bob", "password-bob", Some("PHONE")).await;
    let (status, _) = server.post(&format!("{V3}/logout"), &phone.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let next = slide(&server, &alice, &after(&first), body.clone()).await;
    assert_eq!(
        next["extensions"]["e2ee"]["device_lists"]["changed"],
        json!([bob.user_id]),
        "{next}"
    );
    let off = slide(&server, &alice, "", json!({})).await;
    assert!(off["extensions"]["e2ee"].is_null(), "{off}");
}

#[tokio::test]
async fn the_account_data_extension_sends_global_and_room_data() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let listed = named_room(&server, &alice, "Listed").await;
    let unlisted = named_room(&server, &alice, "Unlisted").await;
    let user = enc(&alice.user_id);
    let token = &alice.access_token;
    let (status, _) = server
        .put(&format!("{V3}/user/{user}/account_data/m.test"), token, json!({ "a": 1 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    for room_id in [&listed, &unlisted] {
        let path = format!("{V3}/user/{user}/rooms/{}/account_data/m.room.test", enc(room_id));
        let (status, _) = server.put(&path, token, json!({ "r": room_id })).await;
        assert_eq!(status, StatusCode::OK);
    }
    let body = json!({
        "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 0 } },
        "room_subscriptions": { unlisted.clone(): { "timeline_limit": 0 } },
        "extensions": { "account_data": { "enabled": true, "lists": ["all"], "rooms": [] } },
    });
    let first = slide(&server, &alice, "", body.clone()).await;
    let data = &first["extensions"]["account_data"];
    let global = data["global"].as_array().unwrap();
    assert!(global.iter().any(|e| e["type"] == "m.test" && e["content"]["a"] == 1), "{first}");
    let rules = global.iter().find(|e| e["type"] == "m.push_rules").expect("the default rules");
    assert!(rules["content"]["global"]["override"].is_array(), "{rules}");
    assert_eq!(data["rooms"][&listed][0]["content"]["r"], listed.as_str());
    assert_eq!(data["rooms"][&unlisted][0]["content"]["r"], unlisted.as_str(), "in the list too");

    let only_subscriptions = json!({
        "conn_id": "scoped",
        "room_subscriptions": { unlisted.clone(): { "timeline_limit": 0 } },
        "extensions": { "account_data": { "enabled": true, "rooms": [listed.clone()] } },
    });
    let scoped = slide(&server, &alice, "", only_subscriptions).await;
    assert!(scoped["extensions"]["account_data"]["rooms"].is_null(), "not subscribed: {scoped}");

    let nothing = slide(&server, &alice, &after(&first), body.clone()).await;
    assert!(nothing["extensions"]["account_data"].is_null(), "nothing changed: {nothing}");
    let (status, _) = server
        .put(&format!("{V3}/user/{user}/account_data/m.test"), token, json!({ "a": 2 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let changed = slide(&server, &alice, &after(&nothing), body).await;
    let global = &changed["extensions"]["account_data"]["global"];
    assert_eq!(global.as_array().unwrap().len(), 1, "{changed}");
    assert_eq!(global[0]["content"]["a"], 2);
}

#[tokio::test]
async fn the_receipts_and_typing_extensions_show_the_rooms_activity() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room_id).await;
    let event_id = server.send_text(&alice, &room_id, "read me").await;
    let body = json!({
        "lists": { "all": { "ranges": [[0, 9]], "timeline_limit": 1 } },
        "extensions": { "receipts": { "enabled": true }, "typing": { "enabled": true } },
    });
    let first = slide(&server, &alice, "", body.clone()).await;
    assert!(first["extensions"]["typing"].is_null(), "nobody types: {first}");

    let path = format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room_id), enc(&event_id));
    let (status, _) = server.post(&path, &bob.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("{V3}/rooms/{}/typing/{}", enc(&room_id), enc(&bob.user_id));
    let typing = json!({ "typing": true, "timeout": 30000 });
    let (status, _) = server.put(&path, &bob.access_token, typing).await;
    assert_eq!(status, StatusCode::OK);

    let next = slide(&server, &alice, &after(&first), body.clone()).await;
    let receipt = &next["extensions"]["receipts"]["rooms"][&room_id];
    assert_eq!(receipt["type"], "m.receipt", "{next}");
    assert!(receipt["content"][&event_id]["m.read"][&bob.user_id]["ts"].is_u64());
    let typing = &next["extensions"]["typing"]["rooms"][&room_id];
    assert_eq!(typing["content"]["user_ids"], json!([bob.user_id]), "{next}");

    let quiet = slide(&server, &alice, &after(&next), body).await;
    assert!(quiet["extensions"]["receipts"].is_null(), "already sent: {quiet}");
    assert!(quiet["extensions"]["typing"].is_null(), "unchanged: {quiet}");
}

#[tokio::test]
async fn bad_sliding_sync_requests_get_exact_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let post = |reason: &'static str, query: &str, body: &str| {
        row(reason, Method::POST, format!("{SLIDING}{query}"), token, Some(body))
    };
    let long = "x".repeat(300);
    let many_lists: serde_json::Map<String, Value> = (0..101)
        .map(|n| (format!("l{n}"), json!({ "ranges": [[0, 1]], "timeline_limit": 1 })))
        .collect();
    let rows = vec![
        row("no access token", Method::POST, SLIDING, None, Some("{}"))
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("a bad access token", Method::POST, SLIDING, Some("nope"), Some("{}"))
            .expect(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        post("not JSON", "", "{").expect(StatusCode::BAD_REQUEST, "M_NOT_JSON"),
        post("lists is not an object", "", r#"{"lists": []}"#)
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        post("a range is not a pair", "", r#"{"lists": {"a": {"ranges": [[0]], "timeline_limit": 1}}}"#)
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        post("a negative range", "", r#"{"lists": {"a": {"ranges": [[-1, 2]], "timeline_limit": 1}}}"#)
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        post("a range that ends before it starts", "", r#"{"lists": {"a": {"ranges": [[5, 2]], "timeline_limit": 1}}}"#)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        post("timeline_limit is a string", "", r#"{"lists": {"a": {"ranges": [], "timeline_limit": "1"}}}"#)
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        post("required_state entries are not pairs", "", r#"{"lists": {"a": {"ranges": [], "timeline_limit": 1, "required_state": ["m.room.name"]}}}"#)
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        post("a subscription to a malformed room ID", "", r#"{"room_subscriptions": {"nope": {"timeline_limit": 1}}}"#)
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        post("an extension room that is not a room ID", "", r#"{"extensions": {"typing": {"enabled": true, "rooms": ["nope"]}}}"#)
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        post("a to-device since that is no token", "", r#"{"extensions": {"to_device": {"enabled": true, "since": "yesterday"}}}"#)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        post("an unknown pos", "?pos=99", "{}").expect(StatusCode::BAD_REQUEST, "M_UNKNOWN_POS"),
        post("a timeout that is no number", "?timeout=soon", "{}")
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        post("a conn_id too long", "", &format!(r#"{{"conn_id": "{long}"}}"#))
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        post("a list name too long", "", &format!(r#"{{"lists": {{"{long}": {{"ranges": [], "timeline_limit": 1}}}}}}"#))
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        post("too many lists", "", &json!({ "lists": many_lists }).to_string())
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("GET is not the method", Method::GET, SLIDING, token, None)
            .expect(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
    ];
    run_table(&server, rows).await;
}

/// A user who knocked on a room or is invited to it is no member: sliding sync shows them the
/// room's stripped state alone, never its state, timeline, members, typing or receipts.
#[tokio::test]
async fn knocking_and_invited_users_see_only_the_stripped_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (knocker, invitee) = (server.register("kim").await, server.register("ivy").await);
    let knocked = server
        .create_room(
            &alice,
            json!({
                "name": "Knock here",
                "initial_state": [
                    { "type": "m.room.join_rules", "content": { "join_rule": "knock" } },
                    { "type": "m.room.topic", "content": { "topic": "secret topic" } },
                ],
            }),
        )
        .await;
    let invited = server.create_room(&alice, json!({ "invite": [invitee.user_id] })).await;
    let path = format!("{V3}/knock/{}", enc(&knocked));
    assert_eq!(server.post(&path, &knocker.access_token, json!({})).await.0, StatusCode::OK);
    let event_id = server.send_text(&alice, &knocked, "members only").await;
    server.send_text(&alice, &invited, "members only").await;
    for room_id in [&knocked, &invited] {
        let typing = format!("{V3}/rooms/{}/typing/{}", enc(room_id), enc(&alice.user_id));
        let body = json!({ "typing": true, "timeout": 30000 });
        assert_eq!(server.put(&typing, &alice.access_token, body).await.0, StatusCode::OK);
    }
    let receipt = format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&knocked), enc(&event_id));
    assert_eq!(server.post(&receipt, &alice.access_token, json!({})).await.0, StatusCode::OK);

    let mut body = one_list(json!([[0, 9]]), 10, json!([["*", "*"]]));
    body["extensions"] = json!({ "receipts": { "enabled": true }, "typing": { "enabled": true } });
    for (user, room_id, membership) in
        [(&knocker, &knocked, "knock"), (&invitee, &invited, "invite")]
    {
        let answer = slide(&server, user, "", body.clone()).await;
        let entry = room(&answer, room_id);
        assert!(entry["invite_state"].is_array(), "{membership}: stripped state {entry}");
        assert!(
            entry["required_state"].as_array().is_none_or(Vec::is_empty),
            "{membership}: {entry}"
        );
        assert!(bodies(&answer, room_id).is_empty(), "{membership}: no timeline {entry}");
        let topics = entry["invite_state"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.topic")
            .count();
        assert_eq!(topics, 0, "{membership}: the topic is not stripped state");
        let extensions = &answer["extensions"];
        assert!(extensions["typing"]["rooms"][room_id].is_null(), "{membership}: {extensions}");
        assert!(extensions["receipts"]["rooms"][room_id].is_null(), "{membership}: {extensions}");
        if membership == "knock" {
            assert!(entry["heroes"].is_null() && entry["joined_count"].is_null(), "{entry}");
        }
    }
}
