//! Server-side search through the client-server API (`POST /search`): matches by word prefix in
//! message bodies and room names and topics, both orders with `next_batch` pages, the filter,
//! context with profiles, room state, groupings, count and highlights; only what the searcher may
//! see (history visibility, membership, ignored users), nothing of encrypted events, and redacted
//! events gone; and the bad requests with their exact errors.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// Searches with the given `room_events` criteria; asserts success.
async fn search(server: &TestServer, user: &TestUser, criteria: Value) -> Value {
    search_page(server, user, criteria, None).await
}

async fn search_page(
    server: &TestServer,
    user: &TestUser,
    criteria: Value,
    next_batch: Option<&str>,
) -> Value {
    let path = match next_batch {
        Some(token) => format!("{V3}/search?next_batch={token}"),
        None => format!("{V3}/search"),
    };
    let body = json!({ "search_categories": { "room_events": criteria } });
    let (status, json) = server.post(&path, &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "search: {json}");
    json["search_categories"]["room_events"].clone()
}

/// The event IDs of the results, in order.
fn result_ids(found: &Value) -> Vec<String> {
    let results = found["results"].as_array().cloned().unwrap_or_default();
    results.iter().map(|r| r["result"]["event_id"].as_str().unwrap().to_owned()).collect()
}

async fn send(
    server: &TestServer,
    user: &TestUser,
    room: &str,
    kind: &str,
    content: Value,
) -> String {
    let txn = format!("t{}", rand::random::<u64>());
    let path = format!("{V3}/rooms/{}/send/{kind}/{txn}", enc(room));
    let (status, json) = server.put(&path, &user.access_token, content).await;
    assert_eq!(status, StatusCode::OK, "send: {json}");
    json["event_id"].as_str().unwrap().to_owned()
}

async fn set_state(server: &TestServer, user: &TestUser, room: &str, kind: &str, content: Value) {
    let path = format!("{V3}/rooms/{}/state/{kind}/", enc(room));
    let (status, json) = server.put(&path, &user.access_token, content).await;
    assert_eq!(status, StatusCode::OK, "state: {json}");
}

/// Alice's public room with Bob in it.
async fn room_of_two(server: &TestServer) -> (TestUser, TestUser, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    (alice, bob, room)
}

#[tokio::test]
async fn messages_are_found_by_word_prefix_with_count_rank_and_highlights() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let once = server.send_text(&alice, &room, "Who wants pancakes?").await;
    let thrice = server.send_text(&bob, &room, "Pancakes! pancakes, PANCAKES").await;
    server.send_text(&bob, &room, "waffles instead").await;

    let found = search(&server, &bob, json!({ "search_term": "pancake" })).await;
    assert_eq!(found["count"], 2);
    assert_eq!(result_ids(&found), [thrice.clone(), once.clone()], "rank: the best match first");
    let ranks: Vec<f64> =
        found["results"].as_array().unwrap().iter().map(|r| r["rank"].as_f64().unwrap()).collect();
    assert!(ranks[0] > ranks[1], "{ranks:?}");
    let highlights: Vec<&str> =
        found["highlights"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    for word in ["pancake", "pancakes", "Pancakes", "PANCAKES"] {
        assert!(highlights.contains(&word), "{word} in {highlights:?}");
    }
    assert_eq!(found["results"][0]["result"]["content"]["body"], "Pancakes! pancakes, PANCAKES");
    assert_eq!(found["results"][0]["result"]["room_id"], room.as_str());
    assert!(found.get("next_batch").is_none(), "{found}");

    let recent =
        search(&server, &alice, json!({ "search_term": "PANC", "order_by": "recent" })).await;
    assert_eq!(result_ids(&recent), [thrice, once], "newest first");
    let both_words = search(&server, &alice, json!({ "search_term": "who pancakes" })).await;
    assert_eq!(result_ids(&both_words).len(), 1, "every word must match");
    let nothing = search(&server, &alice, json!({ "search_term": "lasagne" })).await;
    assert_eq!(nothing["count"], 0);
    assert!(nothing.get("results").is_none_or(|r| r.as_array().unwrap().is_empty()));
    let punctuation = search(&server, &alice, json!({ "search_term": "\"*\" OR -" })).await;
    assert_eq!(punctuation["count"], 0, "only the word OR is searched, and it matches nothing");
}

#[tokio::test]
async fn pages_follow_next_batch_in_both_orders_until_the_last() {
    let server = TestServer::start().await;
    let (alice, _bob, room) = room_of_two(&server).await;
    let mut sent = Vec::new();
    for n in 0..7 {
        sent.push(server.send_text(&alice, &room, &format!("chore number {n}")).await);
    }
    for order in ["recent", "rank"] {
        let criteria =
            json!({ "search_term": "chore", "order_by": order, "filter": { "limit": 3 } });
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = search_page(&server, &alice, criteria.clone(), token.as_deref()).await;
            assert_eq!(page["count"], 7, "{order}");
            seen.extend(result_ids(&page));
            match page["next_batch"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        let mut expected = sent.clone();
        if order == "recent" {
            expected.reverse();
            assert_eq!(seen, expected, "newest first over three pages");
        } else {
            seen.sort();
            expected.sort();
            assert_eq!(seen, expected, "every match once");
        }
    }
}

#[tokio::test]
async fn names_topics_and_the_filter_choose_what_is_searched() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let other = server.create_room(&bob, json!({ "preset": "public_chat" })).await;
    server.join(&alice, &other).await;
    set_state(&server, &alice, &room, "m.room.name", json!({ "name": "Garden club" })).await;
    set_state(&server, &alice, &room, "m.room.topic", json!({ "topic": "garden planning" })).await;
    let alice_says = server.send_text(&alice, &room, "the garden needs water").await;
    let bob_says = server.send_text(&bob, &other, "garden party?").await;

    let all = search(&server, &alice, json!({ "search_term": "garden" })).await;
    assert_eq!(all["count"], 4, "two messages, the name and the topic");
    let names =
        search(&server, &alice, json!({ "search_term": "garden", "keys": ["content.name"] })).await;
    assert_eq!(result_ids(&names).len(), 1);
    assert_eq!(names["results"][0]["result"]["type"], "m.room.name");
    let bodies = json!({ "search_term": "garden", "keys": ["content.body"] });
    assert_eq!(search(&server, &alice, bodies).await["count"], 2);

    let in_room = json!({ "search_term": "garden", "keys": ["content.body"],
                          "filter": { "rooms": [other] } });
    assert_eq!(
        result_ids(&search(&server, &alice, in_room).await),
        std::slice::from_ref(&bob_says)
    );
    let not_room = json!({ "search_term": "garden", "keys": ["content.body"],
                           "filter": { "not_rooms": [other] } });
    assert_eq!(
        result_ids(&search(&server, &alice, not_room).await),
        std::slice::from_ref(&alice_says)
    );
    let by_sender = json!({ "search_term": "garden", "filter": { "senders": [bob.user_id] } });
    assert_eq!(
        result_ids(&search(&server, &alice, by_sender).await),
        std::slice::from_ref(&bob_says)
    );
    let not_sender = json!({ "search_term": "garden", "keys": ["content.body"],
                             "filter": { "not_senders": [bob.user_id] } });
    assert_eq!(result_ids(&search(&server, &alice, not_sender).await), [alice_says]);
    let topics = json!({ "search_term": "garden", "filter": { "types": ["m.room.topic"] } });
    let topics = search(&server, &alice, topics).await;
    assert_eq!(topics["results"][0]["result"]["type"], "m.room.topic");
    assert_eq!(topics["count"], 1);
    let no_messages = json!({ "search_term": "garden", "filter": { "not_types": ["m.room.*"] } });
    assert_eq!(search(&server, &alice, no_messages).await["count"], 0);
}

#[tokio::test]
async fn context_profiles_state_and_groupings_come_when_asked() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let profile = format!("{V3}/profile/{}/displayname", enc(&bob.user_id));
    assert_eq!(
        server.put(&profile, &bob.access_token, json!({ "displayname": "Bobby" })).await.0,
        StatusCode::OK
    );
    let before = server.send_text(&alice, &room, "first").await;
    let hit = server.send_text(&bob, &room, "the keyword is here").await;
    let after = server.send_text(&alice, &room, "last").await;
    let other = server.create_room(&alice, json!({})).await;
    let other_hit = server.send_text(&alice, &other, "keyword again").await;

    let criteria = json!({
        "search_term": "keyword",
        "order_by": "recent",
        "event_context": { "before_limit": 1, "after_limit": 1, "include_profile": true },
        "include_state": true,
        "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
    });
    let found = search(&server, &alice, criteria).await;
    assert_eq!(result_ids(&found), [other_hit.clone(), hit.clone()]);
    let context = &found["results"][1]["context"];
    assert_eq!(context["events_before"][0]["event_id"], before.as_str());
    assert_eq!(context["events_after"][0]["event_id"], after.as_str());
    assert_eq!(context["profile_info"][&bob.user_id]["displayname"], "Bobby");
    assert!(context["start"].is_string() && context["end"].is_string(), "{context}");
    // The tokens page on with /messages.
    let path = format!(
        "{V3}/rooms/{}/messages?dir=b&limit=1&from={}",
        enc(&room),
        context["start"].as_str().unwrap()
    );
    let (status, older) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{older}");
    assert_ne!(older["chunk"][0]["event_id"], before.as_str(), "start is before the context");

    let state = found["state"][&room].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{state:?}");
    assert!(found["state"][&other].is_array());

    let rooms = &found["groups"]["room_id"];
    assert_eq!(rooms[&other]["order"], 1);
    assert_eq!(rooms[&other]["results"], json!([other_hit]));
    assert_eq!(rooms[&room]["results"], json!([hit]));
    let senders = &found["groups"]["sender"];
    assert_eq!(senders[&bob.user_id]["results"], json!([hit]));

    let bare = search(&server, &alice, json!({ "search_term": "keyword",
                                             "event_context": { "before_limit": 0, "after_limit": 0 } }))
        .await;
    assert!(bare["results"][0].get("context").is_none(), "{bare}");
    assert!(bare.get("state").is_none() && bare.get("groups").is_none(), "{bare}");
}

#[tokio::test]
async fn only_events_the_searcher_may_see_are_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    // History is shown to members from their join on.
    let room = server
        .create_room(
            &alice,
            json!({ "preset": "public_chat",
            "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                                "content": { "history_visibility": "joined" } }] }),
        )
        .await;
    server.send_text(&alice, &room, "secret before bob").await;
    server.join(&bob, &room).await;
    let seen = server.send_text(&alice, &room, "secret while bob is here").await;
    let leave = format!("{V3}/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, &bob.access_token, json!({})).await.0, StatusCode::OK);
    server.send_text(&alice, &room, "secret after bob left").await;

    let found = search(&server, &bob, json!({ "search_term": "secret" })).await;
    assert_eq!(result_ids(&found), std::slice::from_ref(&seen), "only while bob was joined");
    let outsider = search(&server, &carol, json!({ "search_term": "secret" })).await;
    assert_eq!(outsider["count"], 0, "carol was never in the room");
    assert_eq!(search(&server, &alice, json!({ "search_term": "secret" })).await["count"], 3);

    // Forgotten rooms are not searched.
    let forget = format!("{V3}/rooms/{}/forget", enc(&room));
    assert_eq!(server.post(&forget, &bob.access_token, json!({})).await.0, StatusCode::OK);
    assert_eq!(search(&server, &bob, json!({ "search_term": "secret" })).await["count"], 0);

    // Ignored users' events are left out.
    server.join(&carol, &room).await;
    let shown = server.send_text(&alice, &room, "secret for carol").await;
    let ignore = format!("{V3}/user/{}/account_data/m.ignored_user_list", enc(&carol.user_id));
    let list = json!({ "ignored_users": { alice.user_id.clone(): {} } });
    let found = search(&server, &carol, json!({ "search_term": "secret" })).await;
    assert_eq!(result_ids(&found), [shown]);
    assert_eq!(server.put(&ignore, &carol.access_token, list).await.0, StatusCode::OK);
    assert_eq!(search(&server, &carol, json!({ "search_term": "secret" })).await["count"], 0);
}

#[tokio::test]
async fn encrypted_and_redacted_events_are_not_found() {
    let server = TestServer::start().await;
    let (alice, bob, room) = room_of_two(&server).await;
    let encrypted = json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "cake",
                            "body": "cake", "sender_key": "k", "session_id": "s", "device_id": "D" });
    send(&server, &alice, &room, "m.room.encrypted", encrypted).await;
    let cake = server.send_text(&alice, &room, "cake in the kitchen").await;
    assert_eq!(
        result_ids(&search(&server, &bob, json!({ "search_term": "cake" })).await),
        std::slice::from_ref(&cake)
    );

    let redact = format!("{V3}/rooms/{}/redact/{}/r1", enc(&room), enc(&cake));
    assert_eq!(server.put(&redact, &alice.access_token, json!({})).await.0, StatusCode::OK);
    assert_eq!(search(&server, &bob, json!({ "search_term": "cake" })).await["count"], 0);
}

#[tokio::test]
async fn bad_searches_get_the_exact_error() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let path = format!("{V3}/search");
    let body =
        |criteria: Value| json!({ "search_categories": { "room_events": criteria } }).to_string();
    let long_term = body(json!({ "search_term": "a".repeat(1001) }));
    let words: Vec<String> = (0..33).map(|n| format!("w{n}")).collect();
    let many_words = body(json!({ "search_term": words.join(" ") }));
    let rows = vec![
        row(
            "no access token",
            Method::POST,
            &path,
            None,
            Some(&body(json!({ "search_term": "x" }))),
        )
        .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("not JSON", Method::POST, &path, token, Some("{"))
            .expect(StatusCode::BAD_REQUEST, "M_NOT_JSON"),
        row("no search_categories", Method::POST, &path, token, Some("{}"))
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "an unknown category only",
            Method::POST,
            &path,
            token,
            Some(r#"{"search_categories":{"rooms":{"search_term":"x"}}}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "no categories at all",
            Method::POST,
            &path,
            token,
            Some(r#"{"search_categories":{}}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("no search_term", Method::POST, &path, token, Some(&body(json!({}))))
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "search_term is a number",
            Method::POST,
            &path,
            token,
            Some(&body(json!({ "search_term": 5 }))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "an unknown order_by",
            Method::POST,
            &path,
            token,
            Some(&body(json!({ "search_term": "x", "order_by": "oldest" }))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "order_by is not a string",
            Method::POST,
            &path,
            token,
            Some(&body(json!({ "search_term": "x", "order_by": 1 }))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "an unknown key",
            Method::POST,
            &path,
            token,
            Some(&body(json!({ "search_term": "x", "keys": ["content.msgtype"] }))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an unknown grouping",
            Method::POST,
            &path,
            token,
            Some(&body(
                json!({ "search_term": "x", "groupings": { "group_by": [{ "key": "type" }] } }),
            )),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a filter of the wrong shape",
            Method::POST,
            &path,
            token,
            Some(&body(json!({ "search_term": "x", "filter": { "rooms": "!a:b" } }))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "a negative context limit",
            Method::POST,
            &path,
            token,
            Some(&body(json!({ "search_term": "x", "event_context": { "before_limit": -1 } }))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a search term over 1000 bytes", Method::POST, &path, token, Some(&long_term))
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a search term of 33 words", Method::POST, &path, token, Some(&many_words))
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a next_batch not made here",
            Method::POST,
            format!("{path}?next_batch=s12"),
            token,
            Some(&body(json!({ "search_term": "x" }))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a next_batch of the other order",
            Method::POST,
            format!("{path}?next_batch=p12"),
            token,
            Some(&body(json!({ "search_term": "x", "order_by": "rank" }))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a next_batch beyond any stream",
            Method::POST,
            format!("{path}?next_batch=p99999999999999999999"),
            token,
            Some(&body(json!({ "search_term": "x", "order_by": "recent" }))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("the wrong method", Method::GET, &path, token, None)
            .expect(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
    ];
    run_table(&server, rows).await;
}
