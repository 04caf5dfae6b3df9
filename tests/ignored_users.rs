//! Ignoring users through the client-server API: the `m.ignored_user_list` account data, and the
//! events (state events excepted) and invites of ignored users left out of `/sync`, `/messages`
//! and `/context`; and the bad lists with their errors.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

fn list_path(user: &TestUser) -> String {
    format!("{V3}/user/{}/account_data/m.ignored_user_list", enc(&user.user_id))
}

async fn ignore(server: &TestServer, user: &TestUser, ignored: &[&TestUser]) {
    let users: serde_json::Map<String, Value> =
        ignored.iter().map(|u| (u.user_id.clone(), json!({}))).collect();
    let body = json!({ "ignored_users": users });
    let (status, json) = server.put(&list_path(user), &user.access_token, body).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
}

/// The bodies of the room's timeline events in a sync response, and the types of its state
/// events in the timeline.
fn timeline(response: &Value, room_id: &str) -> Vec<String> {
    let events = response
        .pointer(&format!("/rooms/join/{}/timeline/events", room_id.replace('/', "~1")))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    events
        .iter()
        .map(|e| e["content"]["body"].as_str().map_or_else(|| e["type"].to_string(), str::to_owned))
        .collect()
}

async fn sync_since(server: &TestServer, user: &TestUser, since: &Value) -> Value {
    server.sync(user, &format!("since={}&timeout=0", since["next_batch"].as_str().unwrap())).await
}

/// Alice, Bob and Carol in a public room of Alice's.
async fn family() -> (TestServer, [TestUser; 3], String) {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    (server, [alice, bob, carol], room)
}

#[tokio::test]
async fn an_ignored_users_messages_leave_sync_but_their_state_events_stay() {
    let (server, [alice, bob, carol], room) = family().await;
    ignore(&server, &alice, &[&bob]).await;
    let before = server.sync(&alice, "").await;
    let list = before["account_data"]["events"].as_array().unwrap();
    assert!(list.iter().any(|e| e["type"] == "m.ignored_user_list"), "{before}");

    server.send_text(&bob, &room, "from bob").await;
    server.send_text(&carol, &room, "from carol").await;
    let topic = format!("{V3}/rooms/{}/state/m.room.topic", enc(&room));
    // Bob may set the topic once Alice raises his power level.
    let levels = format!("{V3}/rooms/{}/state/m.room.power_levels", enc(&room));
    let (_, mut power) = server.get(&levels, &alice.access_token).await;
    power["users"][&bob.user_id] = json!(100);
    assert_eq!(server.put(&levels, &alice.access_token, power).await.0, StatusCode::OK);
    let (status, json) = server.put(&topic, &bob.access_token, json!({"topic": "bob's"})).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    let seen = timeline(&sync_since(&server, &alice, &before).await, &room);
    assert!(!seen.contains(&"from bob".to_owned()), "{seen:?}");
    assert!(seen.contains(&"from carol".to_owned()), "{seen:?}");
    assert!(seen.contains(&"\"m.room.topic\"".to_owned()), "Bob's state event stays: {seen:?}");
    let initial = timeline(&server.sync(&alice, "").await, &room);
    assert!(!initial.contains(&"from bob".to_owned()), "{initial:?}");
    // Carol ignores nobody.
    let for_carol = timeline(&server.sync(&carol, "").await, &room);
    assert!(for_carol.contains(&"from bob".to_owned()), "{for_carol:?}");
}

#[tokio::test]
async fn a_sync_with_only_ignored_messages_shows_no_room_and_unignoring_shows_the_list_change() {
    let (server, [alice, bob, _], room) = family().await;
    ignore(&server, &alice, &[&bob]).await;
    let before = server.sync(&alice, "").await;
    server.send_text(&bob, &room, "unseen").await;
    let quiet = sync_since(&server, &alice, &before).await;
    assert!(quiet["rooms"]["join"].get(&room).is_none(), "nothing to show: {quiet}");

    ignore(&server, &alice, &[]).await;
    let after = sync_since(&server, &alice, &quiet).await;
    let list = after["account_data"]["events"].as_array().unwrap();
    let list = list.iter().find(|e| e["type"] == "m.ignored_user_list").expect("the new list");
    assert_eq!(list["content"], json!({ "ignored_users": {} }));
    server.send_text(&bob, &room, "seen").await;
    let seen = timeline(&sync_since(&server, &alice, &after).await, &room);
    assert_eq!(seen, ["seen"]);
}

#[tokio::test]
async fn invites_from_ignored_users_are_dropped() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    ignore(&server, &alice, &[&bob]).await;
    let before = server.sync(&alice, "").await;
    let from_bob = server.create_room(&bob, json!({ "invite": [alice.user_id] })).await;
    let from_carol = server.create_room(&carol, json!({ "invite": [alice.user_id] })).await;
    for response in [sync_since(&server, &alice, &before).await, server.sync(&alice, "").await] {
        let invites = &response["rooms"]["invite"];
        assert!(invites.get(&from_bob).is_none(), "{response}");
        assert!(invites.get(&from_carol).is_some(), "{response}");
    }
}

#[tokio::test]
async fn messages_and_context_leave_out_ignored_users_events() {
    let (server, [alice, bob, carol], room) = family().await;
    let first = server.send_text(&carol, &room, "one").await;
    for n in 0..15 {
        server.send_text(&bob, &room, &format!("bob {n}")).await;
    }
    server.send_text(&carol, &room, "two").await;
    ignore(&server, &alice, &[&bob]).await;
    // A small page goes on past the ignored events instead of ending early.
    let path = format!("{V3}/rooms/{}/messages?dir=b&limit=2", enc(&room));
    let (status, page) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, ["two", "one"], "{page}");
    let context = format!("{V3}/rooms/{}/context/{}?limit=4", enc(&room), enc(&first));
    let (status, around) = server.get(&context, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{around}");
    let after: Vec<&str> = around["events_after"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(after, ["two"], "{around}");
}

#[tokio::test]
async fn bad_ignored_user_lists_get_bad_json() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let a = Some(alice.access_token.as_str());
    let put = Method::PUT;
    let path = list_path(&alice);
    let bad = StatusCode::BAD_REQUEST;
    let rows = vec![
        row("no ignored_users", put.clone(), &path, a, Some("{}")).expect(bad, "M_BAD_JSON"),
        row(
            "ignored_users is a list",
            put.clone(),
            &path,
            a,
            Some(r#"{"ignored_users":["@bob:localhost"]}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "ignored_users is a string",
            put.clone(),
            &path,
            a,
            Some(r#"{"ignored_users":"@bob:localhost"}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "a key that is no user ID",
            put.clone(),
            &path,
            a,
            Some(r#"{"ignored_users":{"bob":{}}}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "a user's value that is no object",
            put.clone(),
            &path,
            a,
            Some(r#"{"ignored_users":{"@bob:localhost":true}}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row("the list is not JSON", put.clone(), &path, a, Some("{\"ignored_users\":"))
            .expect(bad, "M_NOT_JSON"),
        row(
            "another user's list",
            put.clone(),
            list_path(&bob),
            a,
            Some(r#"{"ignored_users":{}}"#),
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("reading another user's list", Method::GET, list_path(&bob), a, None)
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
    ];
    run_table(&server, rows).await;
    let stored = server.get(&path, &alice.access_token).await;
    common::assert_error(&stored, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}
