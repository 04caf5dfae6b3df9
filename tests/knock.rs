//! Knocking through the client-server API: `POST /knock/{roomIdOrAlias}` on a room whose join
//! rule is `knock`, the knocking room in `/sync`'s `rooms.knock` with its stripped state, a knock
//! accepted with an invite or refused with a kick, and the bad requests with their exact errors.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// Alice's room that one knocks on, with a name and the alias `#knocky:localhost`.
async fn knock_room(server: &TestServer, alice: &TestUser) -> String {
    let body = json!({
        "name": "Knock knock",
        "room_alias_name": "knocky",
        "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }],
    });
    server.create_room(alice, body).await
}

async fn knock(
    server: &TestServer,
    user: &TestUser,
    target: &str,
    body: Value,
) -> (StatusCode, Value) {
    server.post(&format!("{V3}/knock/{}", enc(target)), &user.access_token, body).await
}

async fn sync_since(server: &TestServer, user: &TestUser, since: &str) -> Value {
    server.sync(user, &format!("since={since}&timeout=0")).await
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

/// The (type, membership or name) of each stripped state event.
fn stripped(events: &Value) -> Vec<(String, Value)> {
    events
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["content"].clone()))
        .collect()
}

#[tokio::test]
async fn a_knock_shows_in_sync_and_an_invite_accepts_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = knock_room(&server, &alice).await;
    let alice_token = next_batch(&server.sync(&alice, "").await);

    let (status, json) =
        knock(&server, &bob, "#knocky:localhost", json!({ "reason": "let me in" })).await;
    assert_eq!((status, &json["room_id"]), (StatusCode::OK, &json!(room)), "{json}");

    let sync = server.sync(&bob, "").await;
    let state = stripped(&sync["rooms"]["knock"][&room]["knock_state"]["events"]);
    assert!(
        state.contains(&("m.room.name".to_owned(), json!({ "name": "Knock knock" }))),
        "{sync}"
    );
    let member = state.iter().find(|(t, _)| t == "m.room.member").expect("the knock itself");
    assert_eq!(member.1, json!({ "membership": "knock", "reason": "let me in" }));
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
    let bob_token = next_batch(&sync);

    // Alice sees the knock in her room's timeline.
    let alices = sync_since(&server, &alice, &alice_token).await;
    let timeline = &alices["rooms"]["join"][&room]["timeline"]["events"];
    let knocks: Vec<&Value> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "knock")
        .collect();
    assert_eq!(knocks.len(), 1, "{alices}");
    assert_eq!(knocks[0]["state_key"], bob.user_id.as_str());

    let invite = json!({ "user_id": bob.user_id });
    let path = format!("{V3}/rooms/{}/invite", enc(&room));
    assert_eq!(server.post(&path, &alice.access_token, invite).await.0, StatusCode::OK);
    let later = sync_since(&server, &bob, &bob_token).await;
    assert!(later["rooms"]["invite"].get(&room).is_some(), "{later}");
    assert!(later["rooms"]["knock"].get(&room).is_none(), "{later}");
    server.join(&bob, &room).await;
    let (_, joined) = server.get(&format!("{V3}/joined_rooms"), &bob.access_token).await;
    assert_eq!(joined["joined_rooms"], json!([room]));
}

#[tokio::test]
async fn a_refused_knock_is_a_leave_and_one_may_knock_again() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = knock_room(&server, &alice).await;
    assert_eq!(knock(&server, &bob, &room, json!({})).await.0, StatusCode::OK);
    let token = next_batch(&server.sync(&bob, "").await);

    let kick = json!({ "user_id": bob.user_id, "reason": "not today" });
    let path = format!("{V3}/rooms/{}/kick", enc(&room));
    assert_eq!(server.post(&path, &alice.access_token, kick).await.0, StatusCode::OK);
    let sync = sync_since(&server, &bob, &token).await;
    assert!(sync["rooms"]["leave"].get(&room).is_some(), "{sync}");
    assert!(sync["rooms"]["knock"].get(&room).is_none(), "{sync}");

    assert_eq!(knock(&server, &bob, &room, json!({})).await.0, StatusCode::OK);
    // Withdrawing one's own knock is a leave too.
    let leave = format!("{V3}/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, &bob.access_token, json!({})).await.0, StatusCode::OK);
    let membership = format!("{V3}/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id));
    let (_, content) = server.get(&membership, &alice.access_token).await;
    assert_eq!(content["membership"], "leave", "{content}");
}

#[tokio::test]
async fn a_knock_restricted_room_takes_knocks_too() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let space = server.create_room(&alice, json!({})).await;
    let rule = json!({
        "join_rule": "knock_restricted",
        "allow": [{ "type": "m.room_membership", "room_id": space }],
    });
    let body = json!({ "initial_state": [{ "type": "m.room.join_rules", "content": rule }] });
    let room = server.create_room(&alice, body).await;
    assert_eq!(knock(&server, &bob, &room, json!({})).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bad_knocks_get_the_spec_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let knockable = knock_room(&server, &alice).await;
    let invite_only = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let banned_from = knock_room_named(&server, &alice, "banned").await;
    let ban = json!({ "user_id": bob.user_id });
    let path = format!("{V3}/rooms/{}/ban", enc(&banned_from));
    assert_eq!(server.post(&path, &alice.access_token, ban).await.0, StatusCode::OK);

    let token = Some(bob.access_token.as_str());
    let knock_path = |target: &str| format!("{V3}/knock/{}", enc(target));
    let huge = json!({ "reason": "x".repeat(70_000) }).to_string();
    let rows = vec![
        row("no access token", Method::POST, knock_path(&knockable), None, Some("{}"))
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("an invite-only room", Method::POST, knock_path(&invite_only), token, Some("{}"))
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("a room one is banned from", Method::POST, knock_path(&banned_from), token, Some("{}"))
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "a room one is joined to",
            Method::POST,
            knock_path(&knockable),
            Some(&alice.access_token),
            Some("{}"),
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("an unknown room", Method::POST, knock_path("!nope:localhost"), token, Some("{}"))
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("an unknown alias", Method::POST, knock_path("#nope:localhost"), token, Some("{}"))
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row("not a room ID or alias", Method::POST, knock_path("nope"), token, Some("{}"))
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a reason that is not a string",
            Method::POST,
            knock_path(&knockable),
            token,
            Some(r#"{"reason": 7}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a body that is not JSON", Method::POST, knock_path(&knockable), token, Some("{"))
            .expect(StatusCode::BAD_REQUEST, "M_NOT_JSON"),
        row(
            "a reason beyond the event size",
            Method::POST,
            knock_path(&knockable),
            token,
            Some(&huge),
        )
        .expect(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        row(
            "a via that is not a server name",
            Method::POST,
            format!("{}?via=not%20a%20server", knock_path(&knockable)),
            token,
            Some("{}"),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("the wrong method", Method::GET, knock_path(&knockable), token, None)
            .expect(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
    ];
    run_table(&server, rows).await;
}

/// A knock room with another alias.
async fn knock_room_named(server: &TestServer, alice: &TestUser, alias: &str) -> String {
    let body = json!({
        "room_alias_name": alias,
        "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }],
    });
    server.create_room(alice, body).await
}

/// A `restricted` (or `knock_restricted`) room lets in the members of the rooms its join rule
/// allows: the server names a local member who may invite as the join's authoriser. Others still
/// need an invite.
#[tokio::test]
async fn members_of_an_allowed_room_join_a_restricted_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let (bob, carol) = (server.register("bob").await, server.register("carol").await);
    for (version, rule) in [("10", "restricted"), ("11", "knock_restricted"), ("12", "restricted")]
    {
        let space = server
            .create_room(&alice, json!({ "preset": "public_chat", "room_version": version }))
            .await;
        server.join(&bob, &space).await;
        let body = json!({
            "room_version": version,
            "initial_state": [{ "type": "m.room.join_rules", "content": {
                "join_rule": rule, "allow": [{ "type": "m.room_membership", "room_id": space }],
            } }],
        });
        let room = server.create_room(&alice, body).await;
        let join = format!("{V3}/join/{}", enc(&room));
        let (status, json) = server.post(&join, &bob.access_token, json!({})).await;
        assert_eq!(status, StatusCode::OK, "v{version} {rule}: {json}");
        let path = format!("{V3}/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id));
        let (_, member) = server.get(&path, &bob.access_token).await;
        assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str(), "{member}");
        let (status, json) = server.post(&join, &carol.access_token, json!({})).await;
        assert_eq!(
            (status, json["errcode"].as_str()),
            (StatusCode::FORBIDDEN, Some("M_FORBIDDEN"))
        );
    }
}
