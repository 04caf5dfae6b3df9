//! Room tags through the client-server API: `GET /user/{userId}/rooms/{roomId}/tags`,
//! `PUT`/`DELETE .../tags/{tag}`, the `m.tag` room account data in `/sync`, tags set at once
//! all kept, and the bad requests with their exact errors.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

fn tags_path(user: &TestUser, room_id: &str) -> String {
    format!("{V3}/user/{}/rooms/{}/tags", enc(&user.user_id), enc(room_id))
}

fn tag_path(user: &TestUser, room_id: &str, tag: &str) -> String {
    format!("{}/{}", tags_path(user, room_id), enc(tag))
}

async fn tags(server: &TestServer, user: &TestUser, room_id: &str) -> Value {
    let (status, json) = server.get(&tags_path(user, room_id), &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["tags"].clone()
}

#[tokio::test]
async fn tags_are_set_listed_synced_and_removed() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    assert_eq!(tags(&server, &alice, &room).await, json!({}));

    let favourite = tag_path(&alice, &room, "m.favourite");
    let (status, json) = server.put(&favourite, &alice.access_token, json!({"order": 0.25})).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
    let work = tag_path(&alice, &room, "u.work");
    assert_eq!(server.put(&work, &alice.access_token, json!({})).await.0, StatusCode::OK);
    let expected = json!({ "m.favourite": { "order": 0.25 }, "u.work": {} });
    assert_eq!(tags(&server, &alice, &room).await, expected);

    // The tags are the room's m.tag account data, and sync shows them.
    let (_, sync) = server.get(&format!("{V3}/sync"), &alice.access_token).await;
    let data = sync["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    let tag_event = data.iter().find(|e| e["type"] == "m.tag").expect("m.tag in sync");
    assert_eq!(tag_event["content"]["tags"], expected, "{sync}");

    let (status, json) = server.call(Method::DELETE, &work, Some(&alice.access_token), None).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
    // Removing a tag the room does not have is no error.
    let again = server.call(Method::DELETE, &work, Some(&alice.access_token), None).await;
    assert_eq!(again.0, StatusCode::OK);
    assert_eq!(tags(&server, &alice, &room).await, json!({ "m.favourite": { "order": 0.25 } }));
}

#[tokio::test]
async fn tags_set_at_the_same_time_are_all_kept() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let puts = (0..20).map(|n| {
        let path = tag_path(&alice, &room, &format!("u.tag{n}"));
        let server = &server;
        let token = alice.access_token.clone();
        async move { server.put(&path, &token, json!({ "order": f64::from(n) / 20.0 })).await }
    });
    for (status, json) in futures::future::join_all(puts).await {
        assert_eq!(status, StatusCode::OK, "{json}");
    }
    let all = tags(&server, &alice, &room).await;
    assert_eq!(all.as_object().unwrap().len(), 20, "{all}");
}

#[tokio::test]
async fn bad_tag_requests_get_the_exact_error() {
    use StatusCode as S;
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({})).await;
    let a = Some(alice.access_token.as_str());
    let put = Method::PUT;
    let favourite = tag_path(&alice, &room, "m.favourite");
    let long = tag_path(&alice, &room, &"t".repeat(256));
    let rows = vec![
        row("another user's tags", Method::GET, tags_path(&bob, &room), a, None)
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("a tag for another user", put.clone(), tag_path(&bob, &room, "u.x"), a, Some("{}"))
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("deleting another user's tag", Method::DELETE, tag_path(&bob, &room, "u.x"), a, None)
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("an order that is a string", put.clone(), &favourite, a, Some(r#"{"order": "1"}"#))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("a body that is an array", put.clone(), &favourite, a, Some("[]"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("a body cut short", put.clone(), &favourite, a, Some(r#"{"order": 0."#))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("a tag of 256 bytes", put.clone(), &long, a, Some("{}"))
            .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a room ID that is not one",
            Method::GET,
            format!("{V3}/user/{}/rooms/lounge/tags", enc(&alice.user_id)),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row("no access token", put.clone(), &favourite, None, Some("{}"))
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
    ];
    run_table(&server, rows).await;
    assert_eq!(tags(&server, &alice, &room).await, json!({}), "nothing was tagged");
}
