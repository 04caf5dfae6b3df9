//! Rooms through the client-server API: `/createRoom`, membership, power levels, sending, state,
//! members, `/event`, `/context`, `/messages`, redaction, aliases, the directory, account data and
//! filters. Every test starts the real server and speaks HTTP to it.

mod common;

use std::collections::BTreeSet;

use common::{TestServer, TestUser, enc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// `/_matrix/client/v3/rooms/{room}/{rest}`.
fn room_path(room_id: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room_id))
}

/// `GET /rooms/{room}/state/{type}/{key}`.
async fn get_state(
    server: &TestServer,
    user: &TestUser,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> (StatusCode, Value) {
    let path = room_path(room_id, &format!("state/{event_type}/{}", enc(state_key)));
    server.get(&path, &user.access_token).await
}

/// The content of a state event, asserting that it exists.
async fn state_content(
    server: &TestServer,
    user: &TestUser,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> Value {
    let (status, body) = get_state(server, user, room_id, event_type, state_key).await;
    assert_eq!(status, StatusCode::OK, "GET state {event_type}/{state_key}: {body}");
    body
}

/// `PUT /rooms/{room}/state/{type}/{key}`.
async fn put_state(
    server: &TestServer,
    user: &TestUser,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> (StatusCode, Value) {
    let path = room_path(room_id, &format!("state/{event_type}/{}", enc(state_key)));
    server.put(&path, &user.access_token, content).await
}

/// `PUT /rooms/{room}/send/{type}/{txn}`.
async fn send(
    server: &TestServer,
    user: &TestUser,
    room_id: &str,
    event_type: &str,
    txn: &str,
    content: Value,
) -> (StatusCode, Value) {
    let path = room_path(room_id, &format!("send/{event_type}/{}", enc(txn)));
    server.put(&path, &user.access_token, content).await
}

/// `POST /rooms/{room}/{action}` (invite, leave, forget, kick, ban, unban, join).
async fn membership(
    server: &TestServer,
    user: &TestUser,
    room_id: &str,
    action: &str,
    body: Value,
) -> (StatusCode, Value) {
    server.post(&room_path(room_id, action), &user.access_token, body).await
}

async fn invite(server: &TestServer, user: &TestUser, room_id: &str, target: &TestUser) {
    let (status, body) =
        membership(server, user, room_id, "invite", json!({"user_id": target.user_id})).await;
    assert_eq!(status, StatusCode::OK, "invite: {body}");
}

/// `POST /join/{roomIdOrAlias}` without asserting success.
async fn try_join(server: &TestServer, user: &TestUser, room: &str) -> (StatusCode, Value) {
    server.post(&format!("{V3}/join/{}", enc(room)), &user.access_token, json!({})).await
}

/// The `membership` of a user's member event, as another member sees it.
async fn membership_of(
    server: &TestServer,
    viewer: &TestUser,
    room_id: &str,
    target: &TestUser,
) -> String {
    let content = state_content(server, viewer, room_id, "m.room.member", &target.user_id).await;
    content["membership"].as_str().unwrap_or_default().to_owned()
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, errcode: &str) {
    assert_eq!(status, expected, "status; body {body}");
    assert_eq!(body["errcode"], errcode, "errcode; body {body}");
}

/// A sync token for "now", from an initial `/sync` with an empty timeline.
async fn now_token(server: &TestServer, user: &TestUser) -> String {
    let filter = enc(r#"{"room":{"timeline":{"limit":1}}}"#);
    let (status, body) =
        server.get(&format!("{V3}/sync?filter={filter}"), &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "sync: {body}");
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// `GET /rooms/{room}/messages` with a query string.
async fn messages(
    server: &TestServer,
    user: &TestUser,
    room_id: &str,
    query: &str,
) -> (StatusCode, Value) {
    server.get(&room_path(room_id, &format!("messages?{query}")), &user.access_token).await
}

/// The bodies of the `m.room.message` events of a chunk, in chunk order.
fn bodies(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .expect("chunk is a list")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn event_ids(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .expect("a list of events")
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

/// `GET /rooms/{room}/members{query}` as (state key, membership) pairs, sorted.
async fn members(
    server: &TestServer,
    user: &TestUser,
    room_id: &str,
    query: String,
) -> Vec<(String, String)> {
    let (status, body) =
        server.get(&room_path(room_id, &format!("members{query}")), &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "members{query}: {body}");
    let mut list: Vec<(String, String)> = body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "m.room.member");
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    list.sort();
    list
}

/// Logs in again as `user` (password `password-<localpart>`), which makes a new device.
async fn login_new_device(server: &TestServer, user: &TestUser) -> TestUser {
    let localpart = user.user_id.trim_start_matches('@').split(':').next().unwrap();
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": format!("password-{localpart}"),
    });
    let (status, json) = server.call(Method::POST, &format!("{V3}/login"), None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "login: {json}");
    TestUser {
        user_id: json["user_id"].as_str().unwrap().to_owned(),
        access_token: json["access_token"].as_str().unwrap().to_owned(),
        device_id: json["device_id"].as_str().unwrap().to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// createRoom

#[tokio::test]
async fn presets_set_join_rules_history_and_guest_access() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let private = server.create_room(&alice, json!({"preset": "private_chat"})).await;
    let content = state_content(&server, &alice, &private, "m.room.join_rules", "").await;
    assert_eq!(content["join_rule"], "invite");
    let content = state_content(&server, &alice, &private, "m.room.history_visibility", "").await;
    assert_eq!(content["history_visibility"], "shared");
    let content = state_content(&server, &alice, &private, "m.room.guest_access", "").await;
    assert_eq!(content["guest_access"], "can_join");

    let public = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    let content = state_content(&server, &alice, &public, "m.room.join_rules", "").await;
    assert_eq!(content["join_rule"], "public");
    let (status, body) = get_state(&server, &alice, &public, "m.room.guest_access", "").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let levels = state_content(&server, &alice, &public, "m.room.power_levels", "").await;
    assert_eq!(levels["invite"], 50, "public_chat: inviting needs moderator power");

    // trusted_private_chat: invitees get the creator's power level.
    let trusted = server
        .create_room(&alice, json!({"preset": "trusted_private_chat", "invite": [bob.user_id]}))
        .await;
    let content = state_content(&server, &alice, &trusted, "m.room.join_rules", "").await;
    assert_eq!(content["join_rule"], "invite");
    let levels = state_content(&server, &alice, &trusted, "m.room.power_levels", "").await;
    assert_eq!(levels["users"][&bob.user_id], 100, "{levels}");
    assert_eq!(membership_of(&server, &alice, &trusted, &bob).await, "invite");

    // Without a preset, visibility public means public_chat.
    let by_visibility = server.create_room(&alice, json!({"visibility": "public"})).await;
    let content = state_content(&server, &alice, &by_visibility, "m.room.join_rules", "").await;
    assert_eq!(content["join_rule"], "public");
}

#[tokio::test]
async fn create_room_applies_name_topic_initial_state_alias_override_and_invites() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "private_chat",
                "name": "Kitchen",
                "topic": "What is for dinner",
                "room_alias_name": "kitchen",
                "invite": [bob.user_id],
                "is_direct": true,
                "initial_state": [
                    {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}},
                    {"type": "org.example.custom", "state_key": "k1", "content": {"answer": 42}},
                ],
                "power_level_content_override": {"events_default": 10, "users_default": 5},
            }),
        )
        .await;

    let name = state_content(&server, &alice, &room, "m.room.name", "").await;
    assert_eq!(name["name"], "Kitchen");
    let topic = state_content(&server, &alice, &room, "m.room.topic", "").await;
    assert_eq!(topic["topic"], "What is for dinner");
    let history = state_content(&server, &alice, &room, "m.room.history_visibility", "").await;
    assert_eq!(history["history_visibility"], "joined", "initial_state overrides the preset");
    let custom = state_content(&server, &alice, &room, "org.example.custom", "k1").await;
    assert_eq!(custom, json!({"answer": 42}));
    let levels = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    assert_eq!(levels["events_default"], 10);
    assert_eq!(levels["users_default"], 5);
    assert_eq!(levels["state_default"], 50, "keys not overridden keep their default");

    let server_name = alice.user_id.split_once(':').unwrap().1;
    let alias = format!("#kitchen:{server_name}");
    let canonical = state_content(&server, &alice, &room, "m.room.canonical_alias", "").await;
    assert_eq!(canonical["alias"], alias);
    let (status, body) =
        server.get(&format!("{V3}/directory/room/{}", enc(&alias)), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room);

    let member = state_content(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["is_direct"], true, "is_direct marks the invite: {member}");

    // The same alias name again is refused.
    let (status, body) = server
        .post(
            &format!("{V3}/createRoom"),
            &alice.access_token,
            json!({"room_alias_name": "kitchen"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "M_ROOM_IN_USE");

    // Invitees that could never receive the invite are refused before the room exists.
    let refused = [
        ("@nobody:{server_name}", StatusCode::NOT_FOUND, "M_NOT_FOUND", "no such local user"),
        ("@bob:elsewhere.example", StatusCode::FORBIDDEN, "M_FORBIDDEN", "a remote user"),
    ];
    for (invitee, status_wanted, errcode, reason) in refused {
        let invitee = invitee.replace("{server_name}", server_name);
        let body = json!({"name": "Never made", "invite": [bob.user_id, invitee]});
        let (status, body) =
            server.post(&format!("{V3}/createRoom"), &alice.access_token, body).await;
        assert_eq!((status, body["errcode"].as_str()), (status_wanted, Some(errcode)), "{reason}");
    }
    let (_, joined) = server.get(&format!("{V3}/joined_rooms"), &alice.access_token).await;
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 1, "no room made: {joined}");
}

#[tokio::test]
async fn room_versions_10_11_12_are_created_and_others_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for version in ["10", "11", "12"] {
        let room = server.create_room(&alice, json!({"room_version": version})).await;
        let create = state_content(&server, &alice, &room, "m.room.create", "").await;
        assert_eq!(create["room_version"], version, "{create}");
        // The room works: a message can be sent and read back.
        let event_id = server.send_text(&alice, &room, "hello").await;
        let path = room_path(&room, &format!("event/{}", enc(&event_id)));
        let (status, body) = server.get(&path, &alice.access_token).await;
        assert_eq!(status, StatusCode::OK, "v{version}: {body}");
        assert_eq!(body["content"]["body"], "hello");
    }
    let default = server.create_room(&alice, json!({})).await;
    let create = state_content(&server, &alice, &default, "m.room.create", "").await;
    assert_eq!(create["room_version"], "12", "the default room version");

    for version in ["1", "9", "13", "not-a-version"] {
        let (status, body) = server
            .post(
                &format!("{V3}/createRoom"),
                &alice.access_token,
                json!({"room_version": version}),
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION");
    }
}

// ---------------------------------------------------------------------------------------------
// Membership

#[tokio::test]
async fn invite_join_leave_and_forget() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "private_chat"})).await;

    // A private room cannot be joined without an invite.
    let (status, body) = try_join(&server, &bob, &room).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Nor forgotten by someone who was never in it.
    let (status, body) = membership(&server, &bob, &room, "forget", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    invite(&server, &alice, &room, &bob).await;
    assert_eq!(membership_of(&server, &alice, &room, &bob).await, "invite");
    // Inviting someone who is already a member is refused.
    let (status, body) =
        membership(&server, &alice, &room, "invite", json!({"user_id": alice.user_id})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let (status, body) = membership(&server, &bob, &room, "join", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room);
    assert_eq!(membership_of(&server, &alice, &room, &bob).await, "join");
    let (status, body) = server.get(&format!("{V3}/joined_rooms"), &bob.access_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["joined_rooms"], json!([room]));

    // Forgetting needs leaving first.
    let (status, body) = membership(&server, &bob, &room, "forget", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = membership(&server, &bob, &room, "leave", json!({"reason": "bye"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let member = state_content(&server, &alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "bye");
    let (_, body) = server.get(&format!("{V3}/joined_rooms"), &bob.access_token).await;
    assert_eq!(body["joined_rooms"], json!([]));
    // After leaving a private room, joining again needs a new invite.
    let (status, body) = try_join(&server, &bob, &room).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    let (status, body) = membership(&server, &bob, &room, "forget", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A forgotten room is gone from a sync with include_leave.
    let filter = enc(r#"{"room":{"include_leave":true}}"#);
    let (_, sync) = server.get(&format!("{V3}/sync?filter={filter}"), &bob.access_token).await;
    assert!(sync["rooms"]["leave"].get(&room).is_none(), "forgotten room in sync: {sync}");

    // Forgetting covers the membership that was left, not later ones: invited back, joined and
    // left again, the room is in bob's syncs again.
    invite(&server, &alice, &room, &bob).await;
    let (_, sync) = server.get(&format!("{V3}/sync"), &bob.access_token).await;
    assert!(sync["rooms"]["invite"].get(&room).is_some(), "invite after forget: {sync}");
    let (status, body) = membership(&server, &bob, &room, "join", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = membership(&server, &bob, &room, "leave", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, sync) = server.get(&format!("{V3}/sync?filter={filter}"), &bob.access_token).await;
    assert!(sync["rooms"]["leave"].get(&room).is_some(), "left again after forget: {sync}");

    // Leaving a room one was never in is refused.
    let carol = server.register("carol").await;
    let (status, body) = membership(&server, &carol, &room, "leave", json!({})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn join_by_alias_and_unknown_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "hall"}))
        .await;
    let server_name = alice.user_id.split_once(':').unwrap().1;

    let (status, body) = try_join(&server, &bob, &format!("#hall:{server_name}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room);
    assert_eq!(membership_of(&server, &alice, &room, &bob).await, "join");

    let (status, body) = try_join(&server, &bob, &format!("#nowhere:{server_name}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, body) = try_join(&server, &bob, &format!("!unknown:{server_name}")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Every field of a join is optional, and some clients (matrix-nio) send no body at all.
    let carol = server.register("carol").await;
    for target in [format!("#hall:{server_name}"), room.clone()] {
        let path = format!("{V3}/join/{}", enc(&target));
        let (status, body) =
            server.call_raw(Method::POST, &path, Some(&carol.access_token), Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "join {target} with no body: {body}");
        assert_eq!(body["room_id"], room);
    }
    assert_eq!(membership_of(&server, &alice, &room, &carol).await, "join");
}

#[tokio::test]
async fn kick_ban_and_unban() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    server.join(&carol, &room).await;

    // Bob has no power to kick or ban.
    let (status, body) =
        membership(&server, &bob, &room, "kick", json!({"user_id": carol.user_id})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) =
        membership(&server, &bob, &room, "ban", json!({"user_id": carol.user_id})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(membership_of(&server, &alice, &room, &carol).await, "join");

    // Kick: carol's membership becomes leave, sent by alice; she may come back to a public room.
    let (status, body) = membership(
        &server,
        &alice,
        &room,
        "kick",
        json!({"user_id": carol.user_id, "reason": "too loud"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let path =
        room_path(&room, &format!("state/m.room.member/{}?format=event", enc(&carol.user_id)));
    let (status, event) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"]["membership"], "leave", "{event}");
    assert_eq!(event["content"]["reason"], "too loud");
    assert_eq!(event["sender"], alice.user_id);
    // Kicking someone who is not in the room is refused.
    let (status, body) =
        membership(&server, &alice, &room, "kick", json!({"user_id": carol.user_id})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.join(&carol, &room).await;

    // Ban: carol cannot rejoin.
    let (status, body) =
        membership(&server, &alice, &room, "ban", json!({"user_id": carol.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(membership_of(&server, &alice, &room, &carol).await, "ban");
    let (status, body) = try_join(&server, &carol, &room).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A banned user cannot send either.
    let (status, body) =
        send(&server, &carol, &room, "m.room.message", "t1", json!({"body": "hi"})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Bob may not unban.
    let (status, body) =
        membership(&server, &bob, &room, "unban", json!({"user_id": carol.user_id})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Unban: back to leave, and carol may join again.
    let (status, body) =
        membership(&server, &alice, &room, "unban", json!({"user_id": carol.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(membership_of(&server, &alice, &room, &carol).await, "leave");
    // Unbanning someone who is not banned is refused.
    let (status, body) =
        membership(&server, &alice, &room, "unban", json!({"user_id": carol.user_id})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.join(&carol, &room).await;
    assert_eq!(membership_of(&server, &alice, &room, &carol).await, "join");

    // Banning someone who was never in the room works too, and keeps them out.
    let dave = server.register("dave").await;
    let (status, body) =
        membership(&server, &alice, &room, "ban", json!({"user_id": dave.user_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = try_join(&server, &dave, &room).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn power_levels_are_enforced() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;

    let levels = state_content(&server, &alice, &room, "m.room.power_levels", "").await;
    let mut promoted = levels.clone();
    promoted["users"][&bob.user_id] = json!(100);
    let (status, body) =
        put_state(&server, &bob, &room, "m.room.power_levels", "", promoted.clone()).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) =
        put_state(&server, &bob, &room, "m.room.name", "", json!({"name": "Bob's"})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) =
        put_state(&server, &bob, &room, "m.room.topic", "", json!({"topic": "x"})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Nothing changed.
    assert_eq!(state_content(&server, &alice, &room, "m.room.power_levels", "").await, levels);
    let (status, _) = get_state(&server, &alice, &room, "m.room.name", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Messages only need events_default (0).
    server.send_text(&bob, &room, "hi").await;

    // Alice may name the room, and raise bob.
    let (status, body) =
        put_state(&server, &alice, &room, "m.room.name", "", json!({"name": "Hall"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        put_state(&server, &alice, &room, "m.room.power_levels", "", promoted).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        put_state(&server, &bob, &room, "m.room.name", "", json!({"name": "Bob's"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(state_content(&server, &alice, &room, "m.room.name", "").await["name"], "Bob's");

    // A user outside the room cannot send at all.
    let carol = server.register("carol").await;
    let (status, body) =
        send(&server, &carol, &room, "m.room.message", "t1", json!({"body": "hi"})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) =
        put_state(&server, &carol, &room, "org.example.x", "", json!({"a": 1})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// Sending and reading

#[tokio::test]
async fn send_is_idempotent_per_device_and_transaction() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;

    let content = json!({"msgtype": "m.text", "body": "once"});
    let (status, first) =
        send(&server, &alice, &room, "m.room.message", "txn-1", content.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = send(&server, &alice, &room, "m.room.message", "txn-1", content).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(first["event_id"], again["event_id"], "same device, same transaction");

    let other_device = login_new_device(&server, &alice).await;
    assert_ne!(other_device.device_id, alice.device_id);
    let content = json!({"msgtype": "m.text", "body": "other device"});
    let (status, other) =
        send(&server, &other_device, &room, "m.room.message", "txn-1", content).await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_ne!(first["event_id"], other["event_id"], "another device, same transaction id");

    // The room holds exactly the two messages.
    let (status, page) = messages(&server, &alice, &room, "dir=b&limit=50").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["other device", "once"]);

    // The transaction ID shows up, for the sending device only.
    let path = room_path(&room, &format!("event/{}", enc(first["event_id"].as_str().unwrap())));
    let (_, event) = server.get(&path, &alice.access_token).await;
    assert_eq!(event["unsigned"]["transaction_id"], "txn-1", "{event}");
    let (_, event) = server.get(&path, &other_device.access_token).await;
    assert!(event["unsigned"].get("transaction_id").is_none(), "{event}");
}

/// Transaction IDs are scoped to a device and an endpoint: the same ID on another endpoint
/// (redact instead of send), or a send to another room, is a new request.
#[tokio::test]
async fn transaction_ids_are_scoped_to_the_endpoint() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let other_room = server.create_room(&alice, json!({})).await;

    let content = json!({"msgtype": "m.text", "body": "to be redacted"});
    let (status, sent) = send(&server, &alice, &room, "m.room.message", "same", content).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let sent = sent["event_id"].as_str().unwrap().to_owned();

    let content = json!({"msgtype": "m.text", "body": "elsewhere"});
    let (status, elsewhere) =
        send(&server, &alice, &other_room, "m.room.message", "same", content).await;
    assert_eq!(status, StatusCode::OK, "{elsewhere}");
    assert_ne!(elsewhere["event_id"], sent.as_str(), "another room is another request");
    let (_, page) = messages(&server, &alice, &other_room, "dir=b&limit=10").await;
    assert_eq!(bodies(&page["chunk"]), ["elsewhere"], "{page}");

    let path = room_path(&room, &format!("redact/{}/same", enc(&sent)));
    let (status, redaction) = server.put(&path, &alice.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{redaction}");
    assert_ne!(redaction["event_id"], sent.as_str(), "a redaction is not the message");
    let (_, event) =
        server.get(&room_path(&room, &format!("event/{}", enc(&sent))), &alice.access_token).await;
    assert_eq!(event["content"], json!({}), "the message was redacted: {event}");
    assert_eq!(event["unsigned"]["transaction_id"], "same", "{event}");
    // Retrying the redaction returns the same redaction.
    let (_, again) = server.put(&path, &alice.access_token, json!({})).await;
    assert_eq!(again["event_id"], redaction["event_id"]);
}

#[tokio::test]
async fn state_put_get_and_full_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "private_chat", "name": "Den"})).await;

    let (status, body) =
        put_state(&server, &alice, &room, "org.example.pet", "cat", json!({"name": "Tom"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_owned();
    let (status, body) =
        put_state(&server, &alice, &room, "org.example.pet", "", json!({"name": "Rex"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert_eq!(
        state_content(&server, &alice, &room, "org.example.pet", "cat").await,
        json!({"name": "Tom"})
    );
    assert_eq!(
        state_content(&server, &alice, &room, "org.example.pet", "").await,
        json!({"name": "Rex"})
    );
    let path = room_path(&room, "state/org.example.pet/cat?format=event");
    let (status, event) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["event_id"], event_id);
    assert_eq!(event["state_key"], "cat");

    // Replacing a state event.
    put_state(&server, &alice, &room, "org.example.pet", "cat", json!({"name": "Felix"})).await;
    assert_eq!(
        state_content(&server, &alice, &room, "org.example.pet", "cat").await,
        json!({"name": "Felix"})
    );

    // Missing state.
    for (event_type, key) in [("org.example.pet", "dog"), ("m.room.topic", ""), ("x.y", "z")] {
        let (status, body) = get_state(&server, &alice, &room, event_type, key).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }

    // The whole state: one event per (type, key), current values.
    let (status, state) = server.get(&room_path(&room, "state"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    let state = state.as_array().expect("a list");
    let keys: BTreeSet<(String, String)> = state
        .iter()
        .map(|e| {
            (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(keys.len(), state.len(), "no (type, key) twice");
    for expected in [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("org.example.pet", "cat"),
        ("org.example.pet", ""),
    ] {
        assert!(keys.contains(&(expected.0.into(), expected.1.into())), "{expected:?} in state");
    }
    assert!(keys.contains(&("m.room.member".into(), alice.user_id.clone())));
    let cat = state.iter().find(|e| e["type"] == "org.example.pet" && e["state_key"] == "cat");
    assert_eq!(cat.unwrap()["content"]["name"], "Felix");

    // Someone outside the room may not read it.
    let (status, body) = server.get(&room_path(&room, "state"), &bob.access_token).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) = get_state(&server, &bob, &room, "m.room.name", "").await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Membership cannot be changed through the state endpoint.
    let (status, body) = put_state(
        &server,
        &alice,
        &room,
        "m.room.member",
        &bob.user_id,
        json!({"membership": "join"}),
    )
    .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Unknown room: the spec's 403 for non-members, which does not tell whether it exists.
    let server_name = alice.user_id.split_once(':').unwrap().1;
    let (status, body) =
        get_state(&server, &alice, &format!("!nope:{server_name}"), "m.room.name", "").await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn members_with_filters_and_at_and_joined_members() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    let before_carol = now_token(&server, &alice).await;
    server.join(&carol, &room).await;
    invite(&server, &alice, &room, &dave).await;
    let (status, body) = membership(&server, &bob, &room, "leave", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let list = |query: String| members(&server, &alice, &room, query);
    let pair = |user: &TestUser, membership: &str| (user.user_id.clone(), membership.to_owned());

    assert_eq!(
        list("".into()).await,
        [pair(&alice, "join"), pair(&bob, "leave"), pair(&carol, "join"), pair(&dave, "invite")]
    );
    assert_eq!(list("?membership=join".into()).await, [pair(&alice, "join"), pair(&carol, "join")]);
    assert_eq!(list("?membership=invite".into()).await, [pair(&dave, "invite")]);
    assert_eq!(
        list("?not_membership=join".into()).await,
        [pair(&bob, "leave"), pair(&dave, "invite")]
    );
    assert!(list("?membership=join&not_membership=join".into()).await.is_empty());

    // At a point before carol joined: alice and bob were the members.
    let at = list(format!("?at={before_carol}")).await;
    assert_eq!(at, [pair(&alice, "join"), pair(&bob, "join")]);
    let at = list(format!("?at={before_carol}&membership=join")).await;
    assert_eq!(at, [pair(&alice, "join"), pair(&bob, "join")]);
    let (status, body) =
        server.get(&room_path(&room, "members?at=garbage"), &alice.access_token).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");

    // joined_members: the joined users only, with their profile.
    let (status, body) = server.get(&room_path(&room, "joined_members"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let joined: BTreeSet<&str> =
        body["joined"].as_object().expect("joined").keys().map(String::as_str).collect();
    assert_eq!(joined, BTreeSet::from([alice.user_id.as_str(), carol.user_id.as_str()]));

    // A stranger may read neither of a room whose history is not world-readable.
    let eve = server.register("eve").await;
    let (status, body) = server.get(&room_path(&room, "joined_members"), &eve.access_token).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) = server.get(&room_path(&room, "members"), &eve.access_token).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn get_event_by_id() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = server.create_room(&alice, json!({"preset": "private_chat"})).await;
    let event_id = server.send_text(&alice, &room, "findable").await;

    let path = room_path(&room, &format!("event/{}", enc(&event_id)));
    let (status, event) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["event_id"], event_id);
    assert_eq!(event["room_id"], room);
    assert_eq!(event["sender"], alice.user_id);
    assert_eq!(event["type"], "m.room.message");
    assert_eq!(event["content"]["body"], "findable");
    assert!(event["origin_server_ts"].as_u64().is_some(), "{event}");

    let unknown = room_path(&room, &format!("event/{}", enc("$doesnotexist")));
    let (status, body) = server.get(&unknown, &alice.access_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // A stranger cannot see the event.
    let (status, body) = server.get(&path, &eve.access_token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Through another room, the event is not found.
    let other_room = server.create_room(&alice, json!({})).await;
    let (status, body) = server
        .get(&room_path(&other_room, &format!("event/{}", enc(&event_id))), &alice.access_token)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn context_around_an_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({"name": "Context"})).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(server.send_text(&alice, &room, &format!("m{i}")).await);
    }

    let path = room_path(&room, &format!("context/{}?limit=4", enc(&ids[5])));
    let (status, body) = server.get(&path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"]["event_id"], ids[5]);
    assert_eq!(body["event"]["content"]["body"], "m5");
    // events_before: closest first; events_after: chronological.
    assert_eq!(bodies(&body["events_before"]), ["m4", "m3"]);
    assert_eq!(bodies(&body["events_after"]), ["m6", "m7"]);
    let state_types: BTreeSet<&str> = body["state"]
        .as_array()
        .expect("state")
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(state_types.contains("m.room.create") && state_types.contains("m.room.name"));

    // The tokens continue the timeline in both directions without gaps or repeats.
    let start = body["start"].as_str().expect("start");
    let (_, page) = messages(&server, &alice, &room, &format!("dir=b&limit=2&from={start}")).await;
    assert_eq!(bodies(&page["chunk"]), ["m2", "m1"]);
    let end = body["end"].as_str().expect("end");
    let (_, page) = messages(&server, &alice, &room, &format!("dir=f&limit=2&from={end}")).await;
    assert_eq!(bodies(&page["chunk"]), ["m8", "m9"]);

    let unknown = room_path(&room, &format!("context/{}", enc("$nothing")));
    let (status, body) = server.get(&unknown, &alice.access_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn messages_page_in_both_directions_without_gaps_or_repeats() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let room = server.create_room(&alice, json!({})).await;
    let count = 120;
    let mut middle_token = String::new();
    for i in 0..count {
        if i == 60 {
            middle_token = now_token(&server, &alice).await;
        }
        server.send_text(&alice, &room, &format!("message {i}")).await;
    }
    let expected: Vec<String> = (0..count).map(|i| format!("message {i}")).collect();

    // Backward from the end, 25 at a time.
    let mut seen = Vec::new();
    let mut ids = BTreeSet::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &from {
            Some(from) => format!("dir=b&limit=25&from={from}"),
            None => "dir=b&limit=25".to_owned(),
        };
        let (status, page) = messages(&server, &alice, &room, &query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let chunk = page["chunk"].as_array().expect("chunk");
        assert!(chunk.len() <= 25);
        if chunk.len() < 25 {
            // The spec: `end` is left out when no further events are available.
            assert!(page.get("end").is_none_or(Value::is_null), "end on the last page: {page}");
        }
        if let Some(from) = &from {
            assert_eq!(page["start"], *from, "start echoes from");
        }
        for id in event_ids(&page["chunk"]) {
            assert!(ids.insert(id.clone()), "event {id} returned twice");
        }
        seen.extend(bodies(&page["chunk"]));
        pages += 1;
        assert!(pages < 20, "paging does not end");
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    seen.reverse();
    assert_eq!(seen, expected, "backward paging returns every message once, in order");
    // The room's creation events came through too.
    assert!(ids.len() > count, "creation events are part of the history");

    // Forward from the start, 25 at a time.
    let mut seen = Vec::new();
    let mut forward_ids = BTreeSet::new();
    let mut from = "s0".to_owned();
    for _ in 0..20 {
        let (status, page) =
            messages(&server, &alice, &room, &format!("dir=f&limit=25&from={from}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for id in event_ids(&page["chunk"]) {
            assert!(forward_ids.insert(id.clone()), "event {id} returned twice");
        }
        seen.extend(bodies(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) if !page["chunk"].as_array().unwrap().is_empty() => from = end.to_owned(),
            _ => break,
        }
    }
    assert_eq!(seen, expected, "forward paging returns every message once, in order");
    assert_eq!(forward_ids, ids, "both directions return the same events");

    // Without `from`, forward starts at the beginning of the room.
    let (_, page) = messages(&server, &alice, &room, "dir=f&limit=1").await;
    assert_eq!(page["chunk"][0]["type"], "m.room.create", "{page}");

    // `to` stops the page: backward from the end down to the middle token.
    let (_, page) =
        messages(&server, &alice, &room, &format!("dir=b&limit=1000&to={middle_token}")).await;
    let mut tail = bodies(&page["chunk"]);
    tail.reverse();
    assert_eq!(tail, expected[60..], "backward to the middle");
    assert_eq!(page["chunk"].as_array().unwrap().len(), 60, "nothing but the 60 messages");
    // Forward from the middle token to nowhere: the second half; forward up to it: the first.
    let (_, page) =
        messages(&server, &alice, &room, &format!("dir=f&limit=1000&from={middle_token}")).await;
    assert_eq!(bodies(&page["chunk"]), expected[60..]);
    let (_, page) =
        messages(&server, &alice, &room, &format!("dir=f&limit=1000&from=s0&to={middle_token}"))
            .await;
    assert_eq!(bodies(&page["chunk"]), expected[..60]);

    // Bad tokens.
    let (status, body) = messages(&server, &alice, &room, "dir=b&from=nonsense").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

#[tokio::test]
async fn messages_filter_by_type_and_access() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = server.create_room(&alice, json!({"preset": "private_chat"})).await;
    for i in 0..6 {
        server.send_text(&alice, &room, &format!("text {i}")).await;
        let (status, body) =
            send(&server, &alice, &room, "org.example.ping", &format!("ping{i}"), json!({"n": i}))
                .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let filter = enc(r#"{"types":["org.example.ping"]}"#);
    let (status, page) =
        messages(&server, &alice, &room, &format!("dir=b&limit=4&filter={filter}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 4, "{page}");
    let ns: Vec<i64> = chunk.iter().map(|e| e["content"]["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [5, 4, 3, 2]);
    assert!(chunk.iter().all(|e| e["type"] == "org.example.ping"));
    // The next page continues with the filter.
    let end = page["end"].as_str().unwrap();
    let (_, page) =
        messages(&server, &alice, &room, &format!("dir=b&limit=4&filter={filter}&from={end}"))
            .await;
    let ns: Vec<i64> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["content"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 0]);

    let filter = enc(r#"{"not_types":["org.example.ping","m.room.member"]}"#);
    let (_, page) =
        messages(&server, &alice, &room, &format!("dir=b&limit=6&filter={filter}")).await;
    assert_eq!(
        bodies(&page["chunk"]),
        ["text 5", "text 4", "text 3", "text 2", "text 1", "text 0"]
    );

    let filter = enc(r#"{"types":["m.room.*"],"not_types":["m.room.message"]}"#);
    let (_, page) =
        messages(&server, &alice, &room, &format!("dir=f&limit=100&filter={filter}")).await;
    let types: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        !types.is_empty()
            && types.iter().all(|t| t.starts_with("m.room.") && *t != "m.room.message")
    );

    let (status, body) = messages(&server, &eve, &room, "dir=b").await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn redaction_strips_content_and_needs_power() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    let alices = server.send_text(&alice, &room, "alice's secret").await;
    let bobs = server.send_text(&bob, &room, "bob's regret").await;

    let redact = |user: &TestUser, event_id: &str, txn: &str| {
        let path = room_path(&room, &format!("redact/{}/{txn}", enc(event_id)));
        let token = user.access_token.clone();
        let server = &server;
        async move { server.put(&path, &token, json!({"reason": "oops"})).await }
    };

    // Bob has no power to redact alice's event.
    let (status, body) = redact(&bob, &alices, "r1").await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let event_path = room_path(&room, &format!("event/{}", enc(&alices)));
    let (_, event) = server.get(&event_path, &alice.access_token).await;
    assert_eq!(event["content"]["body"], "alice's secret");

    // Bob may redact his own; alice (moderator) may redact anyone's.
    let (status, body) = redact(&bob, &bobs, "r2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = redact(&alice, &alices, "r3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let redaction_id = body["event_id"].as_str().expect("event_id").to_owned();

    let (status, event) = server.get(&event_path, &bob.access_token).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["content"], json!({}), "redacted content is empty: {event}");
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction_id, "{event}");
    let bobs_path = room_path(&room, &format!("event/{}", enc(&bobs)));
    let (_, event) = server.get(&bobs_path, &alice.access_token).await;
    assert_eq!(event["content"], json!({}), "{event}");

    // /messages shows the stripped events and the redactions.
    let (_, page) = messages(&server, &alice, &room, "dir=b&limit=10").await;
    let chunk = page["chunk"].as_array().unwrap();
    let original = chunk.iter().find(|e| e["event_id"] == alices).expect("redacted event listed");
    assert_eq!(original["content"], json!({}));
    assert!(!page.to_string().contains("secret") && !page.to_string().contains("regret"));
    let redaction = chunk.iter().find(|e| e["event_id"] == redaction_id).expect("redaction listed");
    assert_eq!(redaction["type"], "m.room.redaction");
    assert_eq!(redaction["content"]["reason"], "oops");
    assert_eq!(redaction["content"]["redacts"], alices, "v11+ redacts in content: {redaction}");

    // Redaction in a room that does not exist: 403, as for any room the sender is not in.
    let server_name = alice.user_id.split_once(':').unwrap().1;
    let path =
        format!("{V3}/rooms/{}/redact/{}/r9", enc(&format!("!no:{server_name}")), enc(&bobs));
    let (status, body) = server.put(&path, &alice.access_token, json!({})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// Aliases and the directory

#[tokio::test]
async fn aliases_create_resolve_list_and_delete() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let eve = server.register("eve").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    let other = server.create_room(&alice, json!({})).await;
    server.join(&bob, &room).await;
    let server_name = alice.user_id.split_once(':').unwrap().1;
    let alias = format!("#garden:{server_name}");
    let alias_path = format!("{V3}/directory/room/{}", enc(&alias));

    let (status, body) = server.get(&alias_path, &alice.access_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let (status, body) =
        server.put(&alias_path, &alice.access_token, json!({"room_id": room})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get(&alias_path, &eve.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room_id"], room);
    assert_eq!(body["servers"], json!([server_name]));

    // Taken, even for another room.
    let (status, body) =
        server.put(&alias_path, &alice.access_token, json!({"room_id": other})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN");
    // Another server's alias.
    let foreign = format!("{V3}/directory/room/{}", enc("#garden:elsewhere.example"));
    let (status, body) = server.put(&foreign, &alice.access_token, json!({"room_id": room})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    // An unknown room.
    let lost = format!("{V3}/directory/room/{}", enc(&format!("#lost:{server_name}")));
    let (status, body) = server
        .put(&lost, &alice.access_token, json!({"room_id": format!("!unknown:{server_name}")}))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // A room the user is not in.
    let (status, body) = server.put(&lost, &eve.access_token, json!({"room_id": room})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Bob (a member) adds a second alias; the room lists both.
    let second = format!("#patio:{server_name}");
    let second_path = format!("{V3}/directory/room/{}", enc(&second));
    let (status, body) =
        server.put(&second_path, &bob.access_token, json!({"room_id": room})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get(&room_path(&room, "aliases"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: BTreeSet<&str> =
        body["aliases"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(listed, BTreeSet::from([alias.as_str(), second.as_str()]));
    let (status, body) = server.get(&room_path(&other, "aliases"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["aliases"], json!([]));
    // A non-member cannot list a room's aliases (history is not world-readable).
    let (status, body) = server.get(&room_path(&room, "aliases"), &eve.access_token).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Deleting: a stranger may not, nor may bob delete alice's alias; each creator may.
    let delete = |path: &str, user: &TestUser| {
        let (path, token) = (path.to_owned(), user.access_token.clone());
        let server = &server;
        async move { server.call(Method::DELETE, &path, Some(&token), None).await }
    };
    let (status, body) = delete(&alias_path, &eve).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) = delete(&alias_path, &bob).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) = delete(&second_path, &bob).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = delete(&alias_path, &alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get(&alias_path, &alice.access_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, body) = delete(&alias_path, &alice).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (_, body) = server.get(&room_path(&room, "aliases"), &alice.access_token).await;
    assert_eq!(body["aliases"], json!([]));

    // A deleted alias can be taken again.
    let (status, body) =
        server.put(&alias_path, &alice.access_token, json!({"room_id": other})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server.get(&alias_path, &alice.access_token).await;
    assert_eq!(body["room_id"], other);
}

#[tokio::test]
async fn directory_visibility_and_public_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;

    let private = server.create_room(&alice, json!({"preset": "private_chat"})).await;
    let path = format!("{V3}/directory/list/room/{}", enc(&private));
    let (status, body) = server.call(Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["visibility"], "private");

    let listed = server
        .create_room(&alice, json!({"visibility": "public", "name": "Listed", "topic": "hello"}))
        .await;
    let listed_path = format!("{V3}/directory/list/room/{}", enc(&listed));
    let (_, body) = server.call(Method::GET, &listed_path, None, None).await;
    assert_eq!(body["visibility"], "public");

    // Bob may not list alice's room; alice may; then unlist it again.
    let (status, body) =
        server.put(&path, &bob.access_token, json!({"visibility": "public"})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) =
        server.put(&path, &alice.access_token, json!({"visibility": "public"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server.get(&path, &bob.access_token).await;
    assert_eq!(body["visibility"], "public");

    let (status, body) = server.call(Method::GET, &format!("{V3}/publicRooms"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rooms: BTreeSet<&str> =
        body["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(rooms, BTreeSet::from([private.as_str(), listed.as_str()]));
    let entry = body["chunk"].as_array().unwrap().iter().find(|r| r["room_id"] == listed).unwrap();
    assert_eq!(entry["name"], "Listed");
    assert_eq!(entry["topic"], "hello");
    assert_eq!(entry["num_joined_members"], 1);
    // `join_rule` may be left out for public rooms (the spec's default).
    assert!(entry["join_rule"] == "public" || entry["join_rule"].is_null(), "{entry}");
    let entry = body["chunk"].as_array().unwrap().iter().find(|r| r["room_id"] == private).unwrap();
    assert_eq!(entry["join_rule"], "invite", "{entry}");

    let (status, body) =
        server.put(&path, &alice.access_token, json!({"visibility": "private"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server.call(Method::GET, &format!("{V3}/publicRooms"), None, None).await;
    let rooms: Vec<&str> =
        body["chunk"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap()).collect();
    assert_eq!(rooms, [listed.as_str()]);

    let server_name = alice.user_id.split_once(':').unwrap().1;
    let unknown = format!("{V3}/directory/list/room/{}", enc(&format!("!no:{server_name}")));
    let (status, body) = server.call(Method::GET, &unknown, None, None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn public_rooms_search_and_paging() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let mut all = BTreeSet::new();
    for name in ["Apples", "Bananas", "Cherries", "Dates", "Elderberries"] {
        let room = server
            .create_room(
                &alice,
                json!({"visibility": "public", "preset": "public_chat", "name": name}),
            )
            .await;
        all.insert(room);
    }
    server.create_room(&alice, json!({"name": "Hidden berries"})).await;

    // GET pages of two: three pages, every room once.
    let mut seen = BTreeSet::new();
    let mut since: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &since {
            Some(since) => format!("{V3}/publicRooms?limit=2&since={}", enc(since)),
            None => format!("{V3}/publicRooms?limit=2"),
        };
        let (status, body) = server.call(Method::GET, &path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["total_room_count_estimate"], 5);
        let chunk = body["chunk"].as_array().unwrap();
        assert!(!chunk.is_empty() && chunk.len() <= 2, "{body}");
        for room in chunk {
            assert!(seen.insert(room["room_id"].as_str().unwrap().to_owned()), "repeated: {body}");
        }
        pages += 1;
        if since.is_some() {
            assert!(body["prev_batch"].is_string(), "later pages have prev_batch: {body}");
        }
        match body["next_batch"].as_str() {
            Some(next) => since = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all);

    // POST with a search term: a part of the name, case-insensitive; unlisted rooms stay out.
    let (status, body) = server
        .post(
            &format!("{V3}/publicRooms"),
            &alice.access_token,
            json!({"filter": {"generic_search_term": "RRIES"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: BTreeSet<&str> =
        body["chunk"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["Cherries", "Elderberries"]));

    // POST pages too.
    let (_, first) =
        server.post(&format!("{V3}/publicRooms"), &alice.access_token, json!({"limit": 3})).await;
    assert_eq!(first["chunk"].as_array().unwrap().len(), 3, "{first}");
    let next = first["next_batch"].as_str().expect("next_batch");
    let (_, second) = server
        .post(&format!("{V3}/publicRooms"), &alice.access_token, json!({"limit": 3, "since": next}))
        .await;
    assert_eq!(second["chunk"].as_array().unwrap().len(), 2, "{second}");
    assert!(second.get("next_batch").is_none_or(Value::is_null), "{second}");
    let both: BTreeSet<String> = [&first, &second]
        .iter()
        .flat_map(|b| b["chunk"].as_array().unwrap().iter())
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(both, all);

    let (status, body) = server
        .post(
            &format!("{V3}/publicRooms"),
            &alice.access_token,
            json!({"filter": {"generic_search_term": "nothing like this"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["chunk"], json!([]));

    let (status, body) =
        server.call(Method::GET, &format!("{V3}/publicRooms?since=garbage"), None, None).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
}

// ---------------------------------------------------------------------------------------------
// Account data and filters

#[tokio::test]
async fn account_data_global_and_per_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({})).await;
    let global = format!("{V3}/user/{}/account_data/org.example.settings", enc(&alice.user_id));
    let per_room = format!(
        "{V3}/user/{}/rooms/{}/account_data/org.example.settings",
        enc(&alice.user_id),
        enc(&room)
    );

    let (status, body) = server.get(&global, &alice.access_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, body) = server.put(&global, &alice.access_token, json!({"theme": "dark"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.get(&global, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"theme": "dark"}));
    // Overwrite.
    server.put(&global, &alice.access_token, json!({"theme": "light"})).await;
    let (_, body) = server.get(&global, &alice.access_token).await;
    assert_eq!(body, json!({"theme": "light"}));

    // Per room is separate from global.
    let (status, body) = server.get(&per_room, &alice.access_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, body) = server.put(&per_room, &alice.access_token, json!({"pinned": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = server.get(&per_room, &alice.access_token).await;
    assert_eq!(body, json!({"pinned": true}));
    let (_, body) = server.get(&global, &alice.access_token).await;
    assert_eq!(body, json!({"theme": "light"}));

    // Server-managed types.
    let push_rules = format!("{V3}/user/{}/account_data/m.push_rules", enc(&alice.user_id));
    let (status, body) = server.put(&push_rules, &alice.access_token, json!({})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let fully_read =
        format!("{V3}/user/{}/rooms/{}/account_data/m.fully_read", enc(&alice.user_id), enc(&room));
    let (status, body) = server.put(&fully_read, &alice.access_token, json!({})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");

    // Another user's account data: neither readable nor writable.
    for path in [&global, &per_room] {
        let (status, body) = server.get(path, &bob.access_token).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
        let (status, body) = server.put(path, &bob.access_token, json!({"x": 1})).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let (_, body) = server.get(&global, &alice.access_token).await;
    assert_eq!(body, json!({"theme": "light"}), "bob's write did not land");

    // Content must be an object.
    let (status, body) = server.put(&global, &alice.access_token, json!([1, 2])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn filters_create_and_get() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("{V3}/user/{}/filter", enc(&alice.user_id));
    let definition = json!({
        "room": {"timeline": {"limit": 7, "types": ["m.room.message"]}, "include_leave": true},
        "account_data": {"not_types": ["org.example.*"]},
    });
    let (status, body) = server.post(&path, &alice.access_token, definition).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let filter_id = body["filter_id"].as_str().expect("filter_id").to_owned();
    assert!(!filter_id.is_empty() && !filter_id.starts_with('{'));

    let get_path = format!("{path}/{}", enc(&filter_id));
    let (status, body) = server.get(&get_path, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room"]["timeline"]["limit"], 7, "{body}");
    assert_eq!(body["room"]["timeline"]["types"], json!(["m.room.message"]));
    assert_eq!(body["room"]["include_leave"], true);
    assert_eq!(body["account_data"]["not_types"], json!(["org.example.*"]));

    // Another user's filter.
    let (status, body) = server.get(&get_path, &bob.access_token).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let (status, body) = server.post(&path, &bob.access_token, json!({})).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Bob's own filter IDs do not reach alice's filters.
    let bobs = format!("{V3}/user/{}/filter/{}", enc(&bob.user_id), enc(&filter_id));
    let (status, body) = server.get(&bobs, &bob.access_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // Unknown filters.
    for unknown in ["999999", "abc"] {
        let (status, body) = server.get(&format!("{path}/{unknown}"), &alice.access_token).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
}

// ---------------------------------------------------------------------------------------------
// History visibility

#[tokio::test]
async fn joined_history_hides_events_from_before_the_join() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server
        .create_room(
            &alice,
            json!({
                "preset": "public_chat",
                "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}],
            }),
        )
        .await;
    let secret = server.send_text(&alice, &room, "before bob").await;
    server.join(&bob, &room).await;
    let after = server.send_text(&alice, &room, "after bob").await;

    let (status, page) = messages(&server, &bob, &room, "dir=b&limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["after bob"], "{page}");
    assert!(!event_ids(&page["chunk"]).contains(&secret));
    let (_, page) = messages(&server, &bob, &room, "dir=f&limit=100").await;
    assert_eq!(bodies(&page["chunk"]), ["after bob"], "{page}");
    // Alice sees both.
    let (_, page) = messages(&server, &alice, &room, "dir=b&limit=100").await;
    assert_eq!(bodies(&page["chunk"]), ["after bob", "before bob"]);

    let (status, body) =
        server.get(&room_path(&room, &format!("event/{}", enc(&secret))), &bob.access_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, _) =
        server.get(&room_path(&room, &format!("event/{}", enc(&after))), &bob.access_token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = server
        .get(&room_path(&room, &format!("context/{}", enc(&secret))), &bob.access_token)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (_, body) =
        server.get(&room_path(&room, &format!("context/{}", enc(&after))), &bob.access_token).await;
    assert!(!body.to_string().contains("before bob"), "{body}");

    // Bob's initial sync does not show it either.
    let (_, sync) = server.get(&format!("{V3}/sync"), &bob.access_token).await;
    assert!(!sync.to_string().contains("before bob"), "{sync}");
    assert!(sync.to_string().contains("after bob"), "{sync}");

    // After leaving, bob still sees what happened while he was there, but nothing later.
    let (status, body) = membership(&server, &bob, &room, "leave", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let later = server.send_text(&alice, &room, "after bob left").await;
    let (status, page) = messages(&server, &bob, &room, "dir=b&limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(bodies(&page["chunk"]), ["after bob"], "{page}");
    let (status, body) =
        server.get(&room_path(&room, &format!("event/{}", enc(&later))), &bob.access_token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, _) =
        server.get(&room_path(&room, &format!("event/{}", enc(&after))), &bob.access_token).await;
    assert_eq!(status, StatusCode::OK, "events from his membership stay visible");

    // With shared history, a later joiner sees what came before.
    let shared = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.send_text(&alice, &shared, "shared before").await;
    server.join(&bob, &shared).await;
    let (_, page) = messages(&server, &bob, &shared, "dir=b&limit=100").await;
    assert_eq!(bodies(&page["chunk"]), ["shared before"]);
}
