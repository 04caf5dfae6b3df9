//! The user directory through the client-server API: `POST /user_directory/search` finds the
//! local users who share a room with the searcher or are in a published room, by localpart or
//! display name in any case, says when it found more than it returns, and refuses bad bodies.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const SEARCH: &str = "/_matrix/client/v3/user_directory/search";

async fn set_name(server: &TestServer, user: &TestUser, name: &str) {
    let path = format!("{V3}/profile/{}/displayname", enc(&user.user_id));
    let (status, json) =
        server.put(&path, &user.access_token, json!({ "displayname": name })).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

async fn search(server: &TestServer, user: &TestUser, body: Value) -> Value {
    let (status, json) = server.post(SEARCH, &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

fn found(response: &Value) -> Vec<String> {
    let results = response["results"].as_array().unwrap();
    results.iter().map(|u| u["user_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn users_are_found_through_shared_and_published_rooms_by_name_in_any_case() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    set_name(&server, &bob, "Bobby Tables").await;
    set_name(&server, &dave, "Bob's Brother").await;
    // Alice shares a private room with Bob; Carol is alone in a published room; Dave shares
    // nothing with Alice.
    let private = server
        .create_room(&alice, json!({ "preset": "private_chat", "invite": [bob.user_id] }))
        .await;
    server.join(&bob, &private).await;
    server.create_room(&carol, json!({ "visibility": "public" })).await;
    server.create_room(&dave, json!({ "preset": "private_chat" })).await;

    let bobs = search(&server, &alice, json!({ "search_term": "BOB" })).await;
    assert_eq!(found(&bobs), [bob.user_id.as_str()], "Dave shares no room: {bobs}");
    assert_eq!(bobs["limited"], false);
    assert_eq!(bobs["results"][0]["display_name"], "Bobby Tables");
    let by_name = search(&server, &alice, json!({ "search_term": "tables" })).await;
    assert_eq!(found(&by_name), [bob.user_id.as_str()]);
    let published = search(&server, &alice, json!({ "search_term": "car" })).await;
    assert_eq!(found(&published), [carol.user_id.as_str()], "Carol is in a published room");
    let for_dave = search(&server, &dave, json!({ "search_term": "bob" })).await;
    assert_eq!(
        found(&for_dave),
        [dave.user_id.as_str()],
        "Bob shares no room with Dave: {for_dave}"
    );
    let server_name = search(&server, &alice, json!({ "search_term": "localhost" })).await;
    assert!(found(&server_name).is_empty(), "the server name matches nobody: {server_name}");
}

#[tokio::test]
async fn a_limit_cuts_the_results_and_says_so_and_deactivated_users_are_gone() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "visibility": "public" })).await;
    let mut members = Vec::new();
    for name in ["member1", "member2", "member3"] {
        let member = server.register(name).await;
        server.join(&member, &room).await;
        members.push(member);
    }
    let cut = search(&server, &alice, json!({ "search_term": "member", "limit": 2 })).await;
    assert_eq!(found(&cut).len(), 2, "{cut}");
    assert_eq!(cut["limited"], true);
    let huge =
        search(&server, &alice, json!({ "search_term": "member", "limit": 1_000_000 })).await;
    assert_eq!((found(&huge).len(), &huge["limited"]), (3, &json!(false)), "{huge}");

    let path = format!("{V3}/account/deactivate");
    let member = &members[0];
    let (_, uia) = server.post(&path, &member.access_token, json!({})).await;
    let auth = json!({ "auth": {
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": member.user_id },
        "password": "password-member1",
        "session": uia["session"],
    }});
    assert_eq!(server.post(&path, &member.access_token, auth).await.0, StatusCode::OK);
    let left = search(&server, &alice, json!({ "search_term": "member" })).await;
    assert!(!found(&left).contains(&member.user_id), "{left}");
    assert_eq!(found(&left).len(), 2);
}

#[tokio::test]
async fn bad_search_bodies_get_the_spec_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = Some(alice.access_token.as_str());
    let post = Method::POST;
    let bad = StatusCode::BAD_REQUEST;
    let long_term = format!(r#"{{"search_term":"{}"}}"#, "a".repeat(1001));
    let rows = vec![
        row("no access token", post.clone(), SEARCH, None, Some(r#"{"search_term":"a"}"#))
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("no search_term", post.clone(), SEARCH, a, Some("{}")).expect(bad, "M_BAD_JSON"),
        row("search_term is a number", post.clone(), SEARCH, a, Some(r#"{"search_term":7}"#))
            .expect(bad, "M_BAD_JSON"),
        row(
            "limit is negative",
            post.clone(),
            SEARCH,
            a,
            Some(r#"{"search_term":"a","limit":-1}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "limit is a string",
            post.clone(),
            SEARCH,
            a,
            Some(r#"{"search_term":"a","limit":"10"}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "limit beyond what JSON integers hold",
            post.clone(),
            SEARCH,
            a,
            Some(r#"{"search_term":"a","limit":100000000000000000000}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "limit is a fraction",
            post.clone(),
            SEARCH,
            a,
            Some(r#"{"search_term":"a","limit":1.5}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row("body is a list", post.clone(), SEARCH, a, Some("[]")).expect(bad, "M_BAD_JSON"),
        row("body is not JSON", post.clone(), SEARCH, a, Some("{\"search_term\":"))
            .expect(bad, "M_NOT_JSON"),
        row("search term over 1000 characters", post.clone(), SEARCH, a, Some(&long_term))
            .expect(bad, "M_INVALID_PARAM"),
        row("GET instead of POST", Method::GET, SEARCH, a, None)
            .expect(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
    ];
    run_table(&server, rows).await;
}
