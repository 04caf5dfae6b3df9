//! Spaces and room previews through the client-server API: `GET /rooms/{roomId}/hierarchy` (the
//! walk, its order, `max_depth`, `suggested_only`, pages, and which rooms a user may see),
//! `GET /room_summary/{roomIdOrAlias}` with and without an access token, and
//! `GET /mutual_rooms` with its pages; each with its bad requests and their exact errors.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V1: &str = "/_matrix/client/v1";
const V3: &str = "/_matrix/client/v3";

async fn space(server: &TestServer, user: &TestUser, name: &str) -> String {
    let body =
        json!({ "preset": "public_chat", "name": name, "creation_content": { "type": "m.space" } });
    server.create_room(user, body).await
}

async fn link(server: &TestServer, user: &TestUser, parent: &str, child: &str, content: Value) {
    let path = format!("{V3}/rooms/{}/state/m.space.child/{}", enc(parent), enc(child));
    let (status, json) = server.put(&path, &user.access_token, content).await;
    assert_eq!(status, StatusCode::OK, "link: {json}");
}

async fn hierarchy(server: &TestServer, user: &TestUser, room: &str, query: &str) -> Value {
    let path = format!("{V1}/rooms/{}/hierarchy?{query}", enc(room));
    let (status, json) = server.get(&path, &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "hierarchy?{query}: {json}");
    json
}

fn room_ids(page: &Value) -> Vec<String> {
    page["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

/// A space S with children B (private, order "a"), A (public, order "b") and a subspace T (no
/// order, suggested) whose suggested child is C; a link without `via` and a link to another
/// server's room, which are not walked.
struct Tree {
    s: String,
    a: String,
    b: String,
    t: String,
    c: String,
}

async fn tree(server: &TestServer, alice: &TestUser) -> Tree {
    let s = space(server, alice, "S").await;
    let a = server.create_room(alice, json!({ "preset": "public_chat", "name": "A" })).await;
    let b = server.create_room(alice, json!({ "preset": "private_chat", "name": "B" })).await;
    let t = space(server, alice, "T").await;
    let c = server.create_room(alice, json!({ "preset": "public_chat", "name": "C" })).await;
    let d = server.create_room(alice, json!({ "preset": "public_chat", "name": "D" })).await;
    link(server, alice, &s, &a, json!({ "via": ["localhost"], "order": "b" })).await;
    link(server, alice, &s, &b, json!({ "via": ["localhost"], "order": "a" })).await;
    link(server, alice, &s, &t, json!({ "via": ["localhost"], "suggested": true })).await;
    link(server, alice, &s, &d, json!({ "via": [] })).await;
    link(server, alice, &s, "!remote:elsewhere.example", json!({ "via": ["elsewhere.example"] }))
        .await;
    link(server, alice, &t, &c, json!({ "via": ["localhost"], "suggested": true })).await;
    Tree { s, a, b, t, c }
}

#[tokio::test]
async fn the_hierarchy_walks_a_space_depth_first_in_order_showing_what_each_user_may_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let tree = tree(&server, &alice).await;

    let all = hierarchy(&server, &alice, &tree.s, "").await;
    assert_eq!(
        room_ids(&all),
        [tree.s.as_str(), tree.b.as_str(), tree.a.as_str(), tree.t.as_str(), tree.c.as_str()]
    );
    assert!(all.get("next_batch").is_none(), "{all}");
    let root = &all["rooms"][0];
    assert_eq!((&root["name"], &root["room_type"]), (&json!("S"), &json!("m.space")));
    assert_eq!(root["num_joined_members"], 1);
    let children = root["children_state"].as_array().unwrap();
    assert_eq!(children.len(), 4, "the links with a via, the other server's too: {root}");
    assert!(
        children.iter().all(|c| c["type"] == "m.space.child" && c["origin_server_ts"].is_i64())
    );
    assert_eq!(all["rooms"][1]["join_rule"], "invite");
    assert!(all["rooms"][2]["children_state"].as_array().unwrap().is_empty(), "A is no space");

    let bobs = hierarchy(&server, &bob, &tree.s, "").await;
    assert_eq!(
        room_ids(&bobs),
        [tree.s.as_str(), tree.a.as_str(), tree.t.as_str(), tree.c.as_str()],
        "B is invite-only"
    );

    let shallow = hierarchy(&server, &alice, &tree.s, "max_depth=1").await;
    assert_eq!(
        room_ids(&shallow),
        [tree.s.as_str(), tree.b.as_str(), tree.a.as_str(), tree.t.as_str()]
    );
    let only_root = hierarchy(&server, &alice, &tree.s, "max_depth=0").await;
    assert_eq!(room_ids(&only_root), [tree.s.as_str()]);
    let suggested = hierarchy(&server, &alice, &tree.s, "suggested_only=true").await;
    assert_eq!(room_ids(&suggested), [tree.s.as_str(), tree.t.as_str(), tree.c.as_str()]);
    let from_t = hierarchy(&server, &bob, &tree.t, "").await;
    assert_eq!(room_ids(&from_t), [tree.t.as_str(), tree.c.as_str()]);
}

#[tokio::test]
async fn the_hierarchy_pages_and_a_page_may_not_change_the_walk() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let tree = tree(&server, &alice).await;

    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    let mut last_token = String::new();
    loop {
        let page = hierarchy(&server, &alice, &tree.s, &query).await;
        let ids = room_ids(&page);
        assert!(ids.len() <= 2, "{page}");
        seen.extend(ids);
        match page["next_batch"].as_str() {
            Some(next) => {
                last_token = next.to_owned();
                query = format!("limit=2&from={}", enc(next));
            }
            None => break,
        }
        assert!(seen.len() <= 5, "paging does not end: {seen:?}");
    }
    assert_eq!(
        seen,
        [tree.s.as_str(), tree.b.as_str(), tree.a.as_str(), tree.t.as_str(), tree.c.as_str()]
    );

    let changed = format!(
        "{V1}/rooms/{}/hierarchy?limit=2&suggested_only=true&from={}",
        enc(&tree.s),
        enc(&last_token)
    );
    let got = server.get(&changed, &alice.access_token).await;
    common::assert_error(&got, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

#[tokio::test]
async fn a_restricted_room_shows_to_members_of_the_rooms_it_allows() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let s = space(&server, &alice, "S").await;
    let rule = json!({
        "join_rule": "restricted",
        "allow": [{ "type": "m.room_membership", "room_id": s }],
    });
    let body = json!({ "initial_state": [{ "type": "m.room.join_rules", "content": rule }] });
    let restricted = server.create_room(&alice, body).await;
    link(&server, &alice, &s, &restricted, json!({ "via": ["localhost"] })).await;

    assert_eq!(room_ids(&hierarchy(&server, &bob, s.as_str(), "").await), [s.as_str()]);
    server.join(&bob, &s).await;
    let page = hierarchy(&server, &bob, &s, "").await;
    assert_eq!(room_ids(&page), [s.as_str(), restricted.as_str()]);
    assert_eq!(page["rooms"][1]["join_rule"], "restricted");
    assert_eq!(page["rooms"][1]["allowed_room_ids"], json!([s]));
}

#[tokio::test]
async fn bad_hierarchy_requests_get_the_spec_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let s = space(&server, &alice, "S").await;
    let private = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let token = Some(alice.access_token.as_str());
    let path = |room: &str, query: &str| format!("{V1}/rooms/{}/hierarchy?{query}", enc(room));
    let rows = vec![
        row("no access token", Method::GET, path(&s, ""), None, None)
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "a private room of others",
            Method::GET,
            path(&private, ""),
            Some(&bob.access_token),
            None,
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("an unknown room", Method::GET, path("!nope:localhost", ""), token, None)
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("an invalid room ID", Method::GET, path("nope", ""), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a zero limit", Method::GET, path(&s, "limit=0"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a negative limit", Method::GET, path(&s, "limit=-1"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("max_depth not a number", Method::GET, path(&s, "max_depth=deep"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "suggested_only not a boolean",
            Method::GET,
            path(&s, "suggested_only=maybe"),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a limit beyond any integer", Method::GET, path(&s, "limit=1e99"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a max_depth beyond 2^53",
            Method::GET,
            path(&s, "max_depth=9007199254740993"),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a made-up from token", Method::GET, path(&s, "from=xyz"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a from token of another walk", Method::GET, path(&s, "from=h1_1_-"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
}

#[tokio::test]
async fn a_room_summary_previews_rooms_one_may_see_with_or_without_a_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let body = json!({ "preset": "public_chat", "name": "Town hall", "room_alias_name": "town" });
    let public = server.create_room(&alice, body).await;
    let body = json!({ "name": "Secret", "invite": [bob.user_id] });
    let private = server.create_room(&alice, body).await;
    let encryption = format!("{V3}/rooms/{}/state/m.room.encryption", enc(&private));
    let algorithm = json!({ "algorithm": "m.megolm.v1.aes-sha2" });
    assert_eq!(server.put(&encryption, &alice.access_token, algorithm).await.0, StatusCode::OK);

    let summary = |target: &str| format!("{V1}/room_summary/{}", enc(target));
    let (status, anonymous) =
        server.call(Method::GET, &summary("#town:localhost"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{anonymous}");
    assert_eq!(anonymous["room_id"], public.as_str());
    assert_eq!(
        (&anonymous["name"], &anonymous["num_joined_members"]),
        (&json!("Town hall"), &json!(1))
    );
    assert_eq!(anonymous["canonical_alias"], "#town:localhost");
    assert_eq!(anonymous["room_version"], "12");
    assert!(anonymous.get("membership").is_none(), "{anonymous}");
    let (_, alices) = server.get(&summary(&public), &alice.access_token).await;
    assert_eq!(alices["membership"], "join", "{alices}");

    // An invited user previews the private room; others do not learn that it exists.
    let (status, invited) = server.get(&summary(&private), &bob.access_token).await;
    assert_eq!(status, StatusCode::OK, "{invited}");
    assert_eq!(
        (&invited["membership"], &invited["join_rule"]),
        (&json!("invite"), &json!("invite"))
    );
    assert_eq!(invited["encryption"], "m.megolm.v1.aes-sha2");
    let carol = server.register("carol").await;
    let rows = vec![
        row(
            "a private room of others",
            Method::GET,
            summary(&private),
            Some(&carol.access_token),
            None,
        )
        .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("a private room, anonymously", Method::GET, summary(&private), None, None)
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("an unknown room", Method::GET, summary("!nope:localhost"), None, None)
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("an unknown alias", Method::GET, summary("#nope:localhost"), None, None)
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("not a room ID or alias", Method::GET, summary("nope"), None, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a bad access token", Method::GET, summary(&public), Some("nope"), None)
            .expect(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
    ];
    run_table(&server, rows).await;
}

#[tokio::test]
async fn mutual_rooms_are_the_rooms_both_joined_in_pages() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut shared = Vec::new();
    for _ in 0..101 {
        let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
        server.join(&bob, &room).await;
        shared.push(room);
    }
    server.create_room(&alice, json!({})).await;
    server.create_room(&alice, json!({ "invite": [bob.user_id] })).await;
    shared.sort();

    let path = |query: &str| format!("{V1}/mutual_rooms?user_id={}{query}", enc(&bob.user_id));
    let (status, first) = server.get(&path(""), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["count"], 101);
    let joined: Vec<String> = serde_json::from_value(first["joined"].clone()).unwrap();
    assert_eq!(joined, shared[..100]);
    let next = first["next_batch"].as_str().expect("a second page");
    let (_, second) = server.get(&path(&format!("&from={}", enc(next))), &alice.access_token).await;
    assert_eq!(second["joined"], json!([shared[100]]));
    assert!(second.get("next_batch").is_none(), "{second}");

    let (_, nobody) = server
        .get(&format!("{V1}/mutual_rooms?user_id={}", enc("@ghost:localhost")), &alice.access_token)
        .await;
    assert_eq!(nobody, json!({ "joined": [], "count": 0 }));

    let token = Some(alice.access_token.as_str());
    let query = |q: &str| format!("{V1}/mutual_rooms?{q}");
    let rows = vec![
        row("no access token", Method::GET, path(""), None, None)
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("no user_id", Method::GET, query(""), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("not a user ID", Method::GET, query("user_id=bob"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "one's own user ID",
            Method::GET,
            query(&format!("user_id={}", enc(&alice.user_id))),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a historical user ID", Method::GET, query("user_id=%40Bob%3Alocalhost"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an oversized from token",
            Method::GET,
            path(&format!("&from=m{}", "x".repeat(10_000))),
            token,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a made-up from token", Method::GET, path("&from=xyz"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
}
