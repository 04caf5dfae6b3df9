//! Push notifications through the client-server API: the default push rules and `/pushrules`,
//! the unread counts in `/sync` (per room and per thread) and their reset by a receipt,
//! `GET /notifications`, pushers, and delivery to a real push gateway started by the test; and
//! the bad requests of every endpoint with their errors.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// Retries `probe` every 50 ms for up to 10 s until it gives a value.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..200 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn room_path(room_id: &str) -> String {
    format!("/rooms/join/{}", room_id.replace('~', "~0").replace('/', "~1"))
}

/// The room's `unread_notifications` in a sync response, as (notifications, highlights).
fn counts(response: &Value, room_id: &str) -> Option<(u64, u64)> {
    let unread = response.pointer(&format!("{}/unread_notifications", room_path(room_id)))?;
    Some((unread["notification_count"].as_u64()?, unread["highlight_count"].as_u64()?))
}

/// Waits until an initial sync of `user` shows these counts for the room.
async fn wait_for_counts(server: &TestServer, user: &TestUser, room: &str, want: (u64, u64)) {
    eventually(&format!("counts {want:?}"), || async {
        let response = server.sync(user, "timeout=0").await;
        (counts(&response, room) == Some(want)).then_some(())
    })
    .await;
}

async fn send(server: &TestServer, user: &TestUser, room: &str, content: Value) -> String {
    let txn = format!("t{}", rand_txn());
    let path = format!("{V3}/rooms/{}/send/m.room.message/{txn}", enc(room));
    let (status, json) = server.put(&path, &user.access_token, content).await;
    assert_eq!(status, StatusCode::OK, "send: {json}");
    json["event_id"].as_str().unwrap().to_owned()
}

fn rand_txn() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn receipt(server: &TestServer, user: &TestUser, room: &str, event: &str, body: Value) {
    let path = format!("{V3}/rooms/{}/receipt/m.read/{}", enc(room), enc(event));
    let (status, json) = server.post(&path, &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "receipt: {json}");
}

/// Alice, Bob and Carol in a public room of Alice's (three members: `.m.rule.message`).
async fn family() -> (TestServer, TestUser, TestUser, String) {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;
    (server, alice, bob, room)
}

fn rule_ids(rules: &Value, kind: &str) -> Vec<String> {
    rules[kind].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap().into()).collect()
}

#[tokio::test]
async fn every_user_has_the_default_push_rules_in_the_api_and_in_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for path in ["/pushrules/", "/pushrules/global/"] {
        let (status, json) = server.get(&format!("{V3}{path}"), &alice.access_token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {json}");
        let global = if path == "/pushrules/" { &json["global"] } else { &json };
        let overrides = rule_ids(global, "override");
        assert_eq!(overrides[0], ".m.rule.master");
        assert!(overrides.contains(&".m.rule.is_user_mention".to_owned()), "{overrides:?}");
        assert!(rule_ids(global, "underride").contains(&".m.rule.message".to_owned()));
    }
    let sync = server.sync(&alice, "timeout=0").await;
    let events = sync["account_data"]["events"].as_array().unwrap();
    let rules = events.iter().find(|e| e["type"] == "m.push_rules").expect("m.push_rules");
    assert_eq!(rule_ids(&rules["content"]["global"], "override")[0], ".m.rule.master");
    let (status, json) = server
        .get(&format!("{V3}/pushrules/global/override/.m.rule.master"), &alice.access_token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((json["default"].clone(), json["enabled"].clone()), (json!(true), json!(false)));
}

#[tokio::test]
async fn user_rules_are_created_in_order_changed_and_deleted_and_show_in_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = &alice.access_token;
    let since = server.sync(&alice, "timeout=0").await["next_batch"].as_str().unwrap().to_owned();
    let put = |path: String, body: Value| {
        let server = &server;
        async move {
            let (status, json) =
                server.put(&format!("{V3}/pushrules/global/{path}"), token, body).await;
            assert_eq!(status, StatusCode::OK, "PUT {path}: {json}");
        }
    };
    put("content/cake".into(), json!({"pattern": "cake*lie", "actions": ["notify"]})).await;
    put("content/pie".into(), json!({"pattern": "pie", "actions": []})).await;
    put("content/tart?before=cake".into(), json!({"pattern": "tart", "actions": ["notify"]})).await;
    put("content/bun?after=cake".into(), json!({"pattern": "bun", "actions": ["notify"]})).await;
    let (_, all) = server.get(&format!("{V3}/pushrules/global/"), token).await;
    let content = rule_ids(&all, "content");
    let users: Vec<&String> = content.iter().filter(|id| !id.starts_with('.')).collect();
    assert_eq!(users, ["pie", "tart", "cake", "bun"], "newest first, then before/after");

    let (status, cake) = server.get(&format!("{V3}/pushrules/global/content/cake"), token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cake["pattern"], "cake*lie");
    assert_eq!(cake["enabled"], true, "new rules are enabled");

    put("content/cake/enabled".into(), json!({"enabled": false})).await;
    put("content/cake/actions".into(), json!({"actions": ["notify", {"set_tweak": "highlight"}]}))
        .await;
    let (_, enabled) =
        server.get(&format!("{V3}/pushrules/global/content/cake/enabled"), token).await;
    assert_eq!(enabled, json!({"enabled": false}));
    let (_, actions) =
        server.get(&format!("{V3}/pushrules/global/content/cake/actions"), token).await;
    assert_eq!(actions, json!({"actions": ["notify", {"set_tweak": "highlight"}]}));

    // Server-default rules change only their actions and whether they are enabled.
    put("underride/.m.rule.message/enabled".into(), json!({"enabled": false})).await;
    put("override/.m.rule.master/actions".into(), json!({"actions": []})).await;
    let (_, message) =
        server.get(&format!("{V3}/pushrules/global/underride/.m.rule.message"), token).await;
    assert_eq!(
        (message["enabled"].clone(), message["default"].clone()),
        (json!(false), json!(true))
    );

    let delete = server
        .call(Method::DELETE, &format!("{V3}/pushrules/global/content/cake"), Some(token), None)
        .await;
    assert_eq!(delete.0, StatusCode::OK, "{}", delete.1);
    let (status, json) = server.get(&format!("{V3}/pushrules/global/content/cake"), token).await;
    assert_eq!((status, json["errcode"].clone()), (StatusCode::NOT_FOUND, json!("M_NOT_FOUND")));

    let sync = server.sync(&alice, &format!("since={since}&timeout=0")).await;
    let events = sync["account_data"]["events"].as_array().unwrap();
    let rules = events.iter().find(|e| e["type"] == "m.push_rules").expect("changed rules");
    let content = rule_ids(&rules["content"]["global"], "content");
    assert!(content.contains(&"tart".to_owned()) && !content.contains(&"cake".to_owned()));
    // The generic account data API reads them but cannot write them.
    let path = format!("{V3}/user/{}/account_data/m.push_rules", enc(&alice.user_id));
    let (status, stored) = server.get(&path, token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(stored["global"]["content"].is_array());
}

#[tokio::test]
async fn messages_count_mentions_highlight_and_a_receipt_resets_the_counts() {
    let (server, alice, bob, room) = family().await;
    send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "hello"})).await;
    let plain = send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "again"})).await;
    wait_for_counts(&server, &bob, &room, (2, 0)).await;
    // Alice's own messages never count for her.
    let own = server.sync(&alice, "timeout=0").await;
    assert_eq!(counts(&own, &room), Some((0, 0)));

    let since = server.sync(&bob, "timeout=0").await["next_batch"].as_str().unwrap().to_owned();
    let mention = json!({
        "msgtype": "m.text", "body": "bob, look",
        "m.mentions": {"user_ids": [bob.user_id]},
    });
    let mention = send(&server, &alice, &room, mention).await;
    // The incremental sync shows the new counts, whether the evaluation ran before it or not.
    let counted = eventually("an incremental sync with the mention counted", || async {
        let response = server.sync(&bob, &format!("since={since}&timeout=2000")).await;
        counts(&response, &room).filter(|c| *c == (3, 1))
    })
    .await;
    assert_eq!(counted, (3, 1), ".m.rule.is_user_mention highlights");

    // Reading the first two leaves the mention.
    receipt(&server, &bob, &room, &plain, json!({})).await;
    wait_for_counts(&server, &bob, &room, (1, 1)).await;
    let since = server.sync(&bob, "timeout=0").await["next_batch"].as_str().unwrap().to_owned();
    receipt(&server, &bob, &room, &mention, json!({})).await;
    let response = server.sync(&bob, &format!("since={since}&timeout=0")).await;
    assert_eq!(counts(&response, &room), Some((0, 0)), "the receipt shows in the next sync");
}

/// A long poll woken by a message answers it together with the counts it changed, and the
/// counts, recorded just after the message, do not wake the next poll for themselves alone.
#[tokio::test]
async fn a_long_poll_woken_by_a_message_shows_its_counts_in_the_same_answer() {
    let (server, alice, bob, room) = family().await;
    let mut since = server.sync(&bob, "timeout=0").await["next_batch"].as_str().unwrap().to_owned();
    for round in 1..=5_u64 {
        let query = format!("since={since}&timeout=10000");
        let poll = server.sync(&bob, &query);
        let message = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "hi"})).await
        };
        let (answer, event_id) = tokio::join!(poll, message);
        let timeline = answer.pointer(&format!("{}/timeline/events", room_path(&room)));
        let ids: Vec<&str> = timeline
            .and_then(Value::as_array)
            .map(|events| events.iter().filter_map(|e| e["event_id"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(ids, [event_id.as_str()], "round {round}: {answer}");
        assert_eq!(counts(&answer, &room), Some((round, 0)), "round {round}: {answer}");
        since = answer["next_batch"].as_str().unwrap().to_owned();
        let next = server.sync(&bob, &format!("since={since}&timeout=300")).await;
        assert!(next.pointer(&room_path(&room)).is_none(), "round {round}: woken again: {next}");
    }
}

/// Sends of several members at once queue up for the evaluator, which takes them in batches:
/// every message is still counted for every other member, with its own highlight.
#[tokio::test]
async fn a_burst_from_several_members_is_counted_in_full_for_each_member() {
    let (server, alice, bob, room) = family().await;
    let dave = server.register("dave").await;
    server.join(&dave, &room).await;
    let path = format!("{V3}/profile/{}/displayname", enc(&dave.user_id));
    let (status, _) = server.put(&path, &dave.access_token, json!({"displayname": "Dave"})).await;
    assert_eq!(status, StatusCode::OK);
    let rule = json!({
        "conditions": [{"kind": "contains_display_name"}],
        "actions": ["notify", {"set_tweak": "highlight"}],
    });
    let path = format!("{V3}/pushrules/global/override/display_name");
    let (status, json) = server.put(&path, &dave.access_token, rule).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let carol = server.login_ok("carol", "password-carol", None).await;

    const EACH: usize = 30;
    let burst = |sender: TestUser| {
        let server = &server;
        let room = &room;
        async move {
            for index in 0..EACH {
                // Every third message names Dave, which his display-name rule highlights.
                let body =
                    if index % 3 == 0 { format!("Dave, {index}") } else { format!("{index}") };
                send(server, &sender, room, json!({"msgtype": "m.text", "body": body})).await;
            }
        }
    };
    futures::future::join3(burst(alice.clone()), burst(bob.clone()), burst(carol)).await;

    let sent = 3 * EACH as u64;
    let named = 3 * EACH.div_ceil(3) as u64;
    wait_for_counts(&server, &dave, &room, (sent, named)).await;
    // Bob's count leaves out his own messages, and he is named in none.
    wait_for_counts(&server, &bob, &room, (sent - EACH as u64, 0)).await;
    let path = format!("{V3}/notifications?limit=100");
    let (_, list) = server.get(&path, &dave.access_token).await;
    let listed = list["notifications"].as_array().unwrap();
    assert_eq!(listed.len() as u64, sent, "every message is listed once: {list}");
    let orders: Vec<i64> =
        listed.iter().map(|n| n["event"]["origin_server_ts"].as_i64().unwrap()).collect();
    assert!(orders.windows(2).all(|pair| pair[0] >= pair[1]), "newest first: {orders:?}");
}

#[tokio::test]
async fn a_rule_on_the_display_name_highlights_and_a_disabled_default_stops_counting() {
    let (server, alice, bob, room) = family().await;
    let path = format!("{V3}/profile/{}/displayname", enc(&bob.user_id));
    let (status, _) = server.put(&path, &bob.access_token, json!({"displayname": "Bobby"})).await;
    assert_eq!(status, StatusCode::OK);
    let rule = json!({
        "conditions": [{"kind": "contains_display_name"}],
        "actions": ["notify", {"set_tweak": "highlight"}],
    });
    let path = format!("{V3}/pushrules/global/override/display_name");
    let (status, json) = server.put(&path, &bob.access_token, rule).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "where is Bobby?"})).await;
    wait_for_counts(&server, &bob, &room, (1, 1)).await;

    let path = format!("{V3}/pushrules/global/underride/.m.rule.message/enabled");
    let (status, _) = server.put(&path, &bob.access_token, json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK);
    let quiet = send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "quiet"})).await;
    // Wait until a later message was evaluated: a message for Carol counts for her.
    send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "Bobby again"})).await;
    wait_for_counts(&server, &bob, &room, (2, 2)).await;
    let (_, list) = server.get(&format!("{V3}/notifications"), &bob.access_token).await;
    let ids: Vec<&str> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"]["event_id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&quiet.as_str()), "a disabled rule does not notify");
}

#[tokio::test]
async fn thread_counts_are_apart_when_the_filter_asks_and_a_threaded_receipt_resets_one() {
    let (server, alice, bob, room) = family().await;
    let root = send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "root"})).await;
    let in_thread = |body: &str| {
        json!({
            "msgtype": "m.text", "body": body,
            "m.relates_to": {"rel_type": "m.thread", "event_id": root},
        })
    };
    send(&server, &alice, &room, in_thread("one")).await;
    let second = send(&server, &alice, &room, in_thread("two")).await;
    wait_for_counts(&server, &bob, &room, (3, 0)).await;

    let filter =
        enc(&json!({"room": {"timeline": {"unread_thread_notifications": true}}}).to_string());
    let threads = |response: &Value| {
        let room = response.pointer(&room_path(&room)).cloned().unwrap_or_default();
        (room["unread_notifications"].clone(), room["unread_thread_notifications"].clone())
    };
    let response = server.sync(&bob, &format!("filter={filter}&timeout=0")).await;
    let (main, by_thread) = threads(&response);
    assert_eq!(main, json!({"notification_count": 1, "highlight_count": 0}));
    assert_eq!(by_thread, json!({ root.clone(): {"notification_count": 2, "highlight_count": 0} }));

    receipt(&server, &bob, &room, &second, json!({"thread_id": root})).await;
    let response = server.sync(&bob, &format!("filter={filter}&timeout=0")).await;
    let (main, by_thread) = threads(&response);
    assert_eq!(main, json!({"notification_count": 1, "highlight_count": 0}), "main stays");
    assert_eq!(by_thread, Value::Null, "the thread has nothing unread");
    // An unthreaded receipt reads everything before it.
    receipt(&server, &bob, &room, &second, json!({})).await;
    let response = server.sync(&bob, "timeout=0").await;
    assert_eq!(counts(&response, &room), Some((0, 0)));
}

#[tokio::test]
async fn notifications_are_listed_newest_first_in_pages_with_their_read_flag() {
    let (server, alice, bob, room) = family().await;
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(
            send(&server, &alice, &room, json!({"msgtype": "m.text", "body": format!("m{n}")}))
                .await,
        );
    }
    let mention =
        json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob.user_id]}});
    sent.push(send(&server, &alice, &room, mention).await);
    wait_for_counts(&server, &bob, &room, (4, 1)).await;
    receipt(&server, &bob, &room, &sent[1], json!({})).await;

    let token = &bob.access_token;
    let (status, page) = server.get(&format!("{V3}/notifications?limit=2"), token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids = |page: &Value| -> Vec<(String, bool)> {
        page["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (n["event"]["event_id"].as_str().unwrap().to_owned(), n["read"].as_bool().unwrap())
            })
            .collect()
    };
    assert_eq!(ids(&page), [(sent[3].clone(), false), (sent[2].clone(), false)]);
    assert_eq!(page["notifications"][0]["room_id"], json!(room));
    assert!(page["notifications"][0]["actions"].as_array().unwrap().contains(&json!("notify")));
    let next = page["next_token"].as_str().expect("a next page").to_owned();
    let (_, rest) = server.get(&format!("{V3}/notifications?limit=2&from={next}"), token).await;
    assert_eq!(ids(&rest), [(sent[1].clone(), true), (sent[0].clone(), true)]);
    let (_, highlights) = server.get(&format!("{V3}/notifications?only=highlight"), token).await;
    assert_eq!(ids(&highlights), [(sent[3].clone(), false)]);
    assert!(highlights["next_token"].is_null());
}

fn pusher(app_id: &str, pushkey: &str, url: &str) -> Value {
    json!({
        "app_id": app_id, "pushkey": pushkey, "kind": "http",
        "app_display_name": "Hearth test", "device_display_name": "phone", "lang": "en",
        "data": {"url": url},
    })
}

async fn set_pusher(server: &TestServer, user: &TestUser, body: Value) {
    let (status, json) = server.post(&format!("{V3}/pushers/set"), &user.access_token, body).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
}

async fn pushkeys(server: &TestServer, user: &TestUser) -> Vec<String> {
    let (status, json) = server.get(&format!("{V3}/pushers"), &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["pushers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pushkey"].as_str().unwrap().into())
        .collect()
}

const URL: &str = "https://push.example.org/_matrix/push/v1/notify";

#[tokio::test]
async fn pushers_are_set_listed_replaced_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    assert!(pushkeys(&server, &alice).await.is_empty());
    let mut first = pusher("org.example.app", "key-1", URL);
    first["profile_tag"] = json!("tag");
    first["data"]["format"] = json!("event_id_only");
    first["data"]["custom"] = json!({"kept": true});
    set_pusher(&server, &alice, first.clone()).await;
    let (_, listed) = server.get(&format!("{V3}/pushers"), &alice.access_token).await;
    let shown = &listed["pushers"][0];
    for field in [
        "app_id",
        "pushkey",
        "kind",
        "app_display_name",
        "device_display_name",
        "lang",
        "profile_tag",
        "data",
    ] {
        assert_eq!(shown[field], first[field], "{field}");
    }
    // The same app ID and pushkey replace it; another pushkey is another pusher.
    let mut renamed = pusher("org.example.app", "key-1", URL);
    renamed["device_display_name"] = json!("tablet");
    set_pusher(&server, &alice, renamed).await;
    set_pusher(&server, &alice, pusher("org.example.app", "key-2", URL)).await;
    let (_, listed) = server.get(&format!("{V3}/pushers"), &alice.access_token).await;
    assert_eq!(listed["pushers"][0]["device_display_name"], "tablet");
    assert_eq!(pushkeys(&server, &alice).await, ["key-1", "key-2"]);

    // Another user taking the same pushkey takes it over unless appending.
    set_pusher(&server, &bob, pusher("org.example.app", "key-2", URL)).await;
    assert_eq!(pushkeys(&server, &alice).await, ["key-1"]);
    let mut shared = pusher("org.example.app", "key-1", URL);
    shared["append"] = json!(true);
    set_pusher(&server, &bob, shared).await;
    assert_eq!(pushkeys(&server, &alice).await, ["key-1"]);
    assert_eq!(pushkeys(&server, &bob).await, ["key-1", "key-2"]);

    set_pusher(
        &server,
        &alice,
        json!({"app_id": "org.example.app", "pushkey": "key-1", "kind": null}),
    )
    .await;
    assert!(pushkeys(&server, &alice).await.is_empty());
}

#[tokio::test]
async fn pushers_go_with_their_device_and_with_a_password_change_of_another_device() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let phone = server.login_ok("alice", "password-alice", Some("PHONE")).await;
    let laptop = server.login_ok("alice", "password-alice", Some("LAPTOP")).await;
    set_pusher(&server, &phone, pusher("org.example.app", "phone", URL)).await;
    set_pusher(&server, &laptop, pusher("org.example.app", "laptop", URL)).await;
    set_pusher(&server, &alice, pusher("org.example.app", "first", URL)).await;
    assert_eq!(pushkeys(&server, &alice).await, ["first", "laptop", "phone"]);

    let (status, _) = server.post(&format!("{V3}/logout"), &phone.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        pushkeys(&server, &alice).await,
        ["first", "laptop"],
        "logging out deletes the device"
    );

    let body = json!({
        "new_password": "a new password", "logout_devices": false,
        "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "password-alice"},
    });
    let (status, json) =
        server.post(&format!("{V3}/account/password"), &alice.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        pushkeys(&server, &alice).await,
        ["first"],
        "only the changing device keeps its pusher"
    );
}

/// A push gateway on a free port that records what it is sent and answers as `answer` says for
/// the n-th request (from 0).
struct Gateway {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

type Answer = Arc<dyn Fn(usize, &Value) -> (u16, Value) + Send + Sync>;

async fn gateway(answer: Answer) -> Gateway {
    use warp::Filter as _;
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let log = received.clone();
    let route = warp::post()
        .and(warp::path!("_matrix" / "push" / "v1" / "notify"))
        .and(warp::body::json())
        .map(move |body: Value| {
            let mut log = log.lock().unwrap();
            let (status, reply) = answer(log.len(), &body);
            log.push(body);
            let status = warp::http::StatusCode::from_u16(status).unwrap();
            warp::reply::with_status(warp::reply::json(&reply), status)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(route).incoming(listener).run());
    Gateway { url, received }
}

impl Gateway {
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        eventually(&format!("{count} gateway requests"), || async {
            let received = self.received.lock().unwrap().clone();
            (received.len() >= count).then_some(received)
        })
        .await
    }
}

#[tokio::test]
async fn notifications_reach_the_gateway_in_both_formats_and_a_rejected_pushkey_goes() {
    let answer: Answer = Arc::new(|_, body: &Value| {
        let key = body["notification"]["devices"][0]["pushkey"].as_str().unwrap_or_default();
        let rejected: Vec<&str> = if key == "stale" { vec!["stale"] } else { vec![] };
        (200, json!({"rejected": rejected}))
    });
    let gateway = gateway(answer).await;
    let (server, alice, bob, room) = family().await;
    let mut full = pusher("org.example.full", "full", &gateway.url);
    full["data"]["custom"] = json!("forwarded");
    set_pusher(&server, &bob, full).await;
    let mut ids_only = pusher("org.example.ids", "ids", &gateway.url);
    ids_only["data"]["format"] = json!("event_id_only");
    set_pusher(&server, &bob, ids_only).await;

    let event_id = send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "ping"})).await;
    let received = gateway.wait_for(2).await;
    let by_key = |key: &str| {
        received.iter().find(|r| r["notification"]["devices"][0]["pushkey"] == key).unwrap()["notification"].clone()
    };
    let full = by_key("full");
    assert_eq!(full["event_id"], json!(event_id));
    assert_eq!(full["room_id"], json!(room));
    assert_eq!(full["type"], "m.room.message");
    assert_eq!(full["sender"], json!(alice.user_id));
    assert_eq!(full["content"]["body"], "ping");
    assert_eq!(full["counts"]["unread"], 1);
    assert_eq!(full["devices"][0]["app_id"], "org.example.full");
    assert_eq!(full["devices"][0]["data"], json!({"custom": "forwarded"}), "data without the url");
    let ids = by_key("ids");
    assert_eq!(ids["event_id"], json!(event_id));
    assert_eq!(ids["counts"]["unread"], 1);
    assert!(ids.get("content").is_none() && ids.get("sender").is_none(), "{ids}");
    assert_eq!(ids["devices"][0]["data"]["format"], "event_id_only");

    set_pusher(&server, &bob, pusher("org.example.full", "stale", &gateway.url)).await;
    send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "again"})).await;
    gateway.wait_for(5).await;
    eventually("the rejected pusher removed", || async {
        (pushkeys(&server, &bob).await == ["full", "ids"]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failing_gateway_is_tried_again() {
    let answer: Answer =
        Arc::new(
            |n, _: &Value| if n == 0 { (502, json!({})) } else { (200, json!({"rejected": []})) },
        );
    let gateway = gateway(answer).await;
    let (server, alice, bob, room) = family().await;
    set_pusher(&server, &bob, pusher("org.example.app", "key", &gateway.url)).await;
    let event_id =
        send(&server, &alice, &room, json!({"msgtype": "m.text", "body": "retry"})).await;
    let received = gateway.wait_for(2).await;
    assert_eq!(received[0], received[1], "the same notification again");
    assert_eq!(received[1]["notification"]["event_id"], json!(event_id));
    assert_eq!(pushkeys(&server, &bob).await, ["key"], "a failure is not a rejection");
}

#[tokio::test]
async fn bad_push_requests_get_the_spec_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = Some(alice.access_token.as_str());
    let (get, put, post, delete) = (Method::GET, Method::PUT, Method::POST, Method::DELETE);
    let rule = |path: &str| format!("{V3}/pushrules/global/{path}");
    let (status, _) = server
        .put(&rule("content/mine"), &alice.access_token, json!({"pattern": "x", "actions": []}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let long = "x".repeat(1_001);
    let long_rule = format!(r#"{{"pattern": "{long}", "actions": []}}"#);
    let long_key = pusher("org.example.app", &"k".repeat(513), URL).to_string();
    let long_app = pusher(&"a".repeat(65), "key", URL).to_string();
    let long_name = {
        let mut p = pusher("org.example.app", "key", URL);
        p["device_display_name"] = json!(long);
        p.to_string()
    };
    let with_url = |url: &str| pusher("org.example.app", "key", url).to_string();
    let without = |field: &str| {
        let mut p = pusher("org.example.app", "key", URL);
        p.as_object_mut().unwrap().remove(field);
        p.to_string()
    };
    let email = json!({
        "app_id": "m.email", "pushkey": "alice@example.org", "kind": "email",
        "app_display_name": "Email", "device_display_name": "mail", "lang": "en", "data": {},
    })
    .to_string();
    let bad = StatusCode::BAD_REQUEST;
    let rows = vec![
        row("no access token", get.clone(), format!("{V3}/pushrules/"), None, None)
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("an unknown rule kind on GET", get.clone(), rule("weird/x"), a, None)
            .expect(bad, "M_INVALID_PARAM"),
        row("an unknown rule kind on PUT", put.clone(), rule("weird/x"), a, Some(r#"{"actions":[]}"#))
            .expect(bad, "M_INVALID_PARAM"),
        row("an unknown rule kind on DELETE", delete.clone(), rule("weird/x"), a, None)
            .expect(bad, "M_INVALID_PARAM"),
        row("an unknown rule kind on /enabled", get.clone(), rule("weird/x/enabled"), a, None)
            .expect(bad, "M_INVALID_PARAM"),
        row("a rule that does not exist", get.clone(), rule("content/nope"), a, None)
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("deleting a rule that does not exist", delete.clone(), rule("override/nope"), a, None)
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("enabling a rule that does not exist", put.clone(), rule("room/nope/enabled"), a, Some(r#"{"enabled":true}"#))
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("actions of a rule that does not exist", get.clone(), rule("sender/nope/actions"), a, None)
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("setting actions of a rule that does not exist", put.clone(), rule("content/nope/actions"), a, Some(r#"{"actions":[]}"#))
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("deleting a server-default rule", delete.clone(), rule("override/.m.rule.master"), a, None)
            .expect(bad, "M_INVALID_PARAM"),
        row("a rule ID reserved for server-default rules", put.clone(), rule("content/.mine"), a, Some(r#"{"pattern":"x","actions":[]}"#))
            .expect(bad, "M_INVALID_PARAM"),
        row("replacing a server-default rule's conditions", put.clone(), rule("override/.m.rule.master"), a, Some(r#"{"conditions":[],"actions":[]}"#))
            .expect(bad, "M_INVALID_PARAM"),
        row("a rule ID with a backslash", put.clone(), rule("content/a%5Cb"), a, Some(r#"{"pattern":"x","actions":[]}"#))
            .expect(bad, "M_INVALID_PARAM"),
        row("before a rule that does not exist", put.clone(), rule("content/new?before=nope"), a, Some(r#"{"pattern":"x","actions":[]}"#))
            .expect(bad, "M_UNKNOWN"),
        row("after a server-default rule", put.clone(), rule("content/new?after=.m.rule.master"), a, Some(r#"{"pattern":"x","actions":[]}"#))
            .expect(bad, "M_INVALID_PARAM"),
        row("not JSON", put.clone(), rule("content/new"), a, Some("{"))
            .expect(bad, "M_NOT_JSON"),
        row("a content rule without a pattern", put.clone(), rule("content/new"), a, Some(r#"{"actions":[]}"#))
            .expect(bad, "M_BAD_JSON"),
        row("a rule without actions", put.clone(), rule("override/new"), a, Some(r#"{"conditions":[]}"#))
            .expect(bad, "M_BAD_JSON"),
        row("an empty pattern", put.clone(), rule("content/new"), a, Some(r#"{"pattern":"","actions":[]}"#))
            .expect(bad, "M_INVALID_PARAM"),
        row("an oversize pattern", put.clone(), rule("content/new"), a, Some(&long_rule))
            .expect(bad, "M_INVALID_PARAM"),
        row("an event_match condition without a key", put.clone(), rule("override/new"), a, Some(r#"{"conditions":[{"kind":"event_match","pattern":"x"}],"actions":[]}"#))
            .expect(bad, "M_BAD_JSON"),
        row("an unknown condition kind", put.clone(), rule("override/new"), a, Some(r#"{"conditions":[{"kind":"moon_phase"}],"actions":[]}"#))
            .expect(bad, "M_INVALID_PARAM"),
        row("a sender rule whose ID is not a user ID", put.clone(), rule("sender/notauser"), a, Some(r#"{"actions":[]}"#))
            .expect(bad, "M_INVALID_PARAM"),
        row("enabled is not a boolean", put.clone(), rule("content/mine/enabled"), a, Some(r#"{"enabled":"yes"}"#))
            .expect(bad, "M_BAD_JSON"),
        row("actions is not a list", put.clone(), rule("content/mine/actions"), a, Some(r#"{"actions":"notify"}"#))
            .expect(bad, "M_BAD_JSON"),
        row("a pusher URL that is not http(s)", post.clone(), format!("{V3}/pushers/set"), a, Some(&with_url("ftp://push.example.org/_matrix/push/v1/notify")))
            .expect(bad, "M_INVALID_PARAM"),
        row("a pusher URL with another path", post.clone(), format!("{V3}/pushers/set"), a, Some(&with_url("https://push.example.org/notify")))
            .expect(bad, "M_INVALID_PARAM"),
        row("a pusher URL that is no URL", post.clone(), format!("{V3}/pushers/set"), a, Some(&with_url("not a url")))
            .expect(bad, "M_INVALID_PARAM"),
        row("an http pusher without a URL", post.clone(), format!("{V3}/pushers/set"), a, Some(r#"{"app_id":"a","pushkey":"k","kind":"http","app_display_name":"x","device_display_name":"x","lang":"en","data":{}}"#))
            .expect(bad, "M_BAD_JSON"),
        row("a pusher without lang", post.clone(), format!("{V3}/pushers/set"), a, Some(&without("lang")))
            .expect(bad, "M_BAD_JSON"),
        row("a pusher without data", post.clone(), format!("{V3}/pushers/set"), a, Some(&without("data")))
            .expect(bad, "M_BAD_JSON"),
        row("a pusher without pushkey", post.clone(), format!("{V3}/pushers/set"), a, Some(&without("pushkey")))
            .expect(bad, "M_BAD_JSON"),
        row("a pushkey over 512 bytes", post.clone(), format!("{V3}/pushers/set"), a, Some(&long_key))
            .expect(bad, "M_INVALID_PARAM"),
        row("an app ID over 64 characters", post.clone(), format!("{V3}/pushers/set"), a, Some(&long_app))
            .expect(bad, "M_INVALID_PARAM"),
        row("an oversize device display name", post.clone(), format!("{V3}/pushers/set"), a, Some(&long_name))
            .expect(bad, "M_INVALID_PARAM"),
        row("an email pusher (no email here)", post.clone(), format!("{V3}/pushers/set"), a, Some(&email))
            .expect(bad, "M_INVALID_PARAM"),
        row("a from token that is no token", get.clone(), format!("{V3}/notifications?from=abc"), a, None)
            .expect(bad, "M_INVALID_PARAM"),
        row("a limit that is no number", get.clone(), format!("{V3}/notifications?limit=lots"), a, None)
            .expect(bad, "M_INVALID_PARAM"),
        row("a push key with a NUL character", post.clone(), format!("{V3}/pushers/set"), a, Some(&pusher("org.example.app", "k\0ey", URL).to_string()))
            .expect(bad, "M_INVALID_PARAM"),
        row("an app ID with a NUL character", post.clone(), format!("{V3}/pushers/set"), a, Some(&pusher("org.example\0", "key", URL).to_string()))
            .expect(bad, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
}

#[tokio::test]
async fn an_invite_notifies_the_invited_user_who_is_not_joined_yet() {
    let answer: Answer = Arc::new(|_, _: &Value| (200, json!({"rejected": []})));
    let gateway = gateway(answer).await;
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let dave = server.register("dave").await;
    set_pusher(&server, &dave, pusher("org.example.app", "dave", &gateway.url)).await;
    let room = server.create_room(&alice, json!({"preset": "private_chat"})).await;
    let path = format!("{V3}/rooms/{}/invite", enc(&room));
    let (status, json) =
        server.post(&path, &alice.access_token, json!({"user_id": dave.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    let received = gateway.wait_for(1).await;
    let notification = &received[0]["notification"];
    assert_eq!(notification["type"], "m.room.member");
    assert_eq!(notification["user_is_target"], true, ".m.rule.invite_for_me");
    assert_eq!(notification["content"]["membership"], "invite");
    let (_, list) = server.get(&format!("{V3}/notifications"), &dave.access_token).await;
    assert_eq!(list["notifications"][0]["event"]["state_key"], json!(dave.user_id));
    assert_eq!(list["notifications"][0]["room_id"], json!(room));
    // Once joined, the invite is not an unread notification of the room.
    server.join(&dave, &room).await;
    let response = server.sync(&dave, "timeout=0").await;
    assert_eq!(counts(&response, &room), Some((0, 0)));
}

/// A user has at most 20 pushers and 100 push rules of their own; replacing one is always fine,
/// and deleting one makes room again.
#[tokio::test]
async fn pushers_and_push_rules_are_capped_per_user() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = &alice.access_token;
    let set = format!("{V3}/pushers/set");
    for n in 0..20 {
        let (status, body) =
            server.post(&set, token, pusher("org.example.app", &format!("key{n}"), URL)).await;
        assert_eq!(status, StatusCode::OK, "pusher {n}: {body}");
    }
    let (status, body) = server.post(&set, token, pusher("org.example.app", "key20", URL)).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")));
    let mut renamed = pusher("org.example.app", "key3", URL);
    renamed["device_display_name"] = json!("tablet");
    assert_eq!(server.post(&set, token, renamed).await.0, StatusCode::OK, "replacing one");
    let delete = json!({ "app_id": "org.example.app", "pushkey": "key0", "kind": null });
    assert_eq!(server.post(&set, token, delete).await.0, StatusCode::OK);
    let (status, _) = server.post(&set, token, pusher("org.example.app", "key20", URL)).await;
    assert_eq!(status, StatusCode::OK, "room again after a delete");
    let (_, listed) = server.get(&format!("{V3}/pushers"), token).await;
    assert_eq!(listed["pushers"].as_array().map(Vec::len), Some(20));

    let rule = |id: &str| format!("{V3}/pushrules/global/content/{id}");
    let body = |pattern: &str| json!({ "pattern": pattern, "actions": ["notify"] });
    for n in 0..100 {
        let (status, answer) = server.put(&rule(&format!("r{n}")), token, body("x")).await;
        assert_eq!(status, StatusCode::OK, "rule {n}: {answer}");
    }
    let (status, answer) = server.put(&rule("r100"), token, body("x")).await;
    assert_eq!((status, answer["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")));
    assert_eq!(server.put(&rule("r5"), token, body("y")).await.0, StatusCode::OK, "replacing one");
    let deleted = server.call(Method::DELETE, &rule("r0"), Some(token), None).await;
    assert_eq!(deleted.0, StatusCode::OK);
    assert_eq!(server.put(&rule("r100"), token, body("x")).await.0, StatusCode::OK);
}
