//! Room upgrades through the client-server API: `POST /rooms/{roomId}/upgrade` to version 11 and
//! 12 (whose room IDs come from the create event and whose creators have infinite power), the
//! state that carries over, the aliases and directory listing that move, the tombstone and the
//! restricted old room, and the bad requests with their exact errors.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

async fn upgrade(
    server: &TestServer,
    user: &TestUser,
    room: &str,
    body: Value,
) -> (StatusCode, Value) {
    server.post(&format!("{V3}/rooms/{}/upgrade", enc(room)), &user.access_token, body).await
}

async fn upgrade_ok(server: &TestServer, user: &TestUser, room: &str, body: Value) -> String {
    let (status, json) = upgrade(server, user, room, body).await;
    assert_eq!(status, StatusCode::OK, "upgrade: {json}");
    json["replacement_room"].as_str().expect("replacement_room").to_owned()
}

async fn state(server: &TestServer, user: &TestUser, room: &str, kind: &str, key: &str) -> Value {
    let path = format!("{V3}/rooms/{}/state/{kind}/{}", enc(room), enc(key));
    let (status, json) = server.get(&path, &user.access_token).await;
    assert_eq!(status, StatusCode::OK, "state {kind}: {json}");
    json
}

async fn put_state(server: &TestServer, user: &TestUser, room: &str, kind: &str, content: Value) {
    let path = format!("{V3}/rooms/{}/state/{kind}", enc(room));
    let (status, json) = server.put(&path, &user.access_token, content).await;
    assert_eq!(status, StatusCode::OK, "put {kind}: {json}");
}

/// Alice's public room in `version`, with Bob joined, a topic, an avatar, a banned Mallory, an
/// alias that is canonical, and a listing in the directory.
async fn mature_room(server: &TestServer, version: &str) -> (TestUser, TestUser, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mallory = server.register("mallory").await;
    let body = json!({
        "preset": "public_chat",
        "visibility": "public",
        "room_version": version,
        "name": "Family",
        "topic": "Dinner plans",
        "room_alias_name": "family",
        "power_level_content_override": {
            "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 50 },
        },
    });
    let room = server.create_room(&alice, body).await;
    server.join(&bob, &room).await;
    put_state(server, &alice, &room, "m.room.avatar", json!({ "url": "mxc://localhost/a" })).await;
    let acl = json!({ "allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": false });
    put_state(server, &alice, &room, "m.room.server_acl", acl).await;
    let encryption = json!({ "algorithm": "m.megolm.v1.aes-sha2" });
    put_state(server, &alice, &room, "m.room.encryption", encryption).await;
    put_state(server, &alice, &room, "m.room.guest_access", json!({ "guest_access": "forbidden" }))
        .await;
    let ban = json!({ "user_id": mallory.user_id, "reason": "spam" });
    let path = format!("{V3}/rooms/{}/ban", enc(&room));
    assert_eq!(server.post(&path, &alice.access_token, ban).await.0, StatusCode::OK);
    (alice, bob, room)
}

#[tokio::test]
async fn an_upgrade_to_version_11_copies_state_moves_aliases_and_tombstones_the_old_room() {
    let server = TestServer::start().await;
    let (alice, bob, old) = mature_room(&server, "10").await;
    let new = upgrade_ok(&server, &alice, &old, json!({ "new_version": "11" })).await;
    assert!(new.ends_with(":localhost"), "a version 11 room ID names its server: {new}");

    let create = state(&server, &alice, &new, "m.room.create", "").await;
    assert_eq!(create["room_version"], "11");
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert!(create["predecessor"]["event_id"].is_string(), "{create}");
    assert_eq!(state(&server, &alice, &new, "m.room.name", "").await["name"], "Family");
    assert_eq!(state(&server, &alice, &new, "m.room.topic", "").await["topic"], "Dinner plans");
    let avatar = state(&server, &alice, &new, "m.room.avatar", "").await;
    assert_eq!(avatar["url"], "mxc://localhost/a");
    let rules = state(&server, &alice, &new, "m.room.join_rules", "").await;
    assert_eq!(rules["join_rule"], "public");
    let acl = state(&server, &alice, &new, "m.room.server_acl", "").await;
    assert_eq!(acl["deny"], json!(["evil.example"]));
    let encryption = state(&server, &alice, &new, "m.room.encryption", "").await;
    assert_eq!(encryption["algorithm"], "m.megolm.v1.aes-sha2");
    let guests = state(&server, &alice, &new, "m.room.guest_access", "").await;
    assert_eq!(guests["guest_access"], "forbidden");
    let visibility = state(&server, &alice, &new, "m.room.history_visibility", "").await;
    assert_eq!(visibility["history_visibility"], "shared");
    let alias = state(&server, &alice, &new, "m.room.canonical_alias", "").await;
    assert_eq!(alias["alias"], "#family:localhost");
    let power = state(&server, &alice, &new, "m.room.power_levels", "").await;
    assert_eq!(power["users"][&alice.user_id], 100, "{power}");
    assert_eq!(power["users"][&bob.user_id], 50, "{power}");
    let mallory = state(&server, &alice, &new, "m.room.member", "@mallory:localhost").await;
    assert_eq!(mallory, json!({ "membership": "ban", "reason": "spam" }));
    let bob_member = format!("{V3}/rooms/{}/state/m.room.member/{}", enc(&new), enc(&bob.user_id));
    assert_eq!(server.get(&bob_member, &alice.access_token).await.0, StatusCode::NOT_FOUND);

    // The alias and the directory listing moved.
    let (_, resolved) = server
        .get(&format!("{V3}/directory/room/{}", enc("#family:localhost")), &bob.access_token)
        .await;
    assert_eq!(resolved["room_id"], new.as_str(), "{resolved}");
    let listing = |room: &str| format!("{V3}/directory/list/room/{}", enc(room));
    assert_eq!(server.get(&listing(&new), &bob.access_token).await.1["visibility"], "public");
    assert_eq!(server.get(&listing(&old), &bob.access_token).await.1["visibility"], "private");

    // The old room points to the new one and only moderators may speak or invite there.
    let tombstone = state(&server, &bob, &old, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], new.as_str());
    let old_power = state(&server, &bob, &old, "m.room.power_levels", "").await;
    assert_eq!((&old_power["events_default"], &old_power["invite"]), (&json!(50), &json!(50)));
    let old_alias = state(&server, &bob, &old, "m.room.canonical_alias", "").await;
    assert_eq!(old_alias, json!({}));
    let carol = server.register("carol").await;
    server.join(&carol, &old).await;
    let txn = format!("{V3}/rooms/{}/send/m.room.message/t1", enc(&old));
    let said =
        server.put(&txn, &carol.access_token, json!({ "msgtype": "m.text", "body": "hi" })).await;
    assert_eq!(said.0, StatusCode::FORBIDDEN, "{}", said.1);

    // Bob follows the tombstone.
    server.join(&bob, &new).await;
}

#[tokio::test]
async fn an_upgrade_to_version_12_takes_its_room_id_from_the_create_event_and_privileges_creators()
{
    let server = TestServer::start().await;
    let (alice, bob, old) = mature_room(&server, "11").await;
    let body = json!({ "new_version": "12", "additional_creators": [bob.user_id] });
    let new = upgrade_ok(&server, &alice, &old, body).await;
    assert!(!new.contains(':'), "a version 12 room ID has no server part: {new}");

    let create = state(&server, &alice, &new, "m.room.create", "").await;
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["predecessor"], json!({ "room_id": old }), "no event ID from version 12");
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    let power = state(&server, &alice, &new, "m.room.power_levels", "").await;
    assert!(power["users"].get(&alice.user_id).is_none(), "creators are not listed: {power}");
    assert!(power["users"].get(&bob.user_id).is_none(), "creators are not listed: {power}");

    // Bob, a creator, joins and may do anything, as his infinite power allows.
    server.join(&bob, &new).await;
    put_state(&server, &bob, &new, "m.room.power_levels", json!({ "users": {} })).await;

    // A version 12 room upgrades again, and its creators may do so.
    let newer = upgrade_ok(&server, &bob, &new, json!({ "new_version": "12" })).await;
    let create = state(&server, &bob, &newer, "m.room.create", "").await;
    assert_eq!(create["predecessor"]["room_id"], new.as_str());
    assert!(create.get("additional_creators").is_none(), "not copied: {create}");
}

#[tokio::test]
async fn an_upgraded_space_keeps_its_type_and_children() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let child = server.create_room(&alice, json!({})).await;
    let body = json!({ "creation_content": { "type": "m.space" } });
    let space = server.create_room(&alice, body).await;
    let link = format!("{V3}/rooms/{}/state/m.space.child/{}", enc(&space), enc(&child));
    let (status, _) = server.put(&link, &alice.access_token, json!({ "via": ["localhost"] })).await;
    assert_eq!(status, StatusCode::OK);

    let new = upgrade_ok(&server, &alice, &space, json!({ "new_version": "12" })).await;
    assert_eq!(state(&server, &alice, &new, "m.room.create", "").await["type"], "m.space");
    let copied = state(&server, &alice, &new, "m.space.child", &child).await;
    assert_eq!(copied, json!({ "via": ["localhost"] }));
}

#[tokio::test]
async fn a_moderator_without_the_power_over_tombstones_may_not_upgrade() {
    let server = TestServer::start().await;
    let (_alice, bob, old) = mature_room(&server, "11").await;
    let (status, json) = upgrade(&server, &bob, &old, json!({ "new_version": "12" })).await;
    assert_eq!((status, json["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")));
    let path = format!("{V3}/rooms/{}/state/m.room.tombstone", enc(&old));
    assert_eq!(server.get(&path, &bob.access_token).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_upgrades_get_the_spec_errors() {
    let server = TestServer::start().await;
    let (alice, _bob, room) = mature_room(&server, "11").await;
    let stranger = server.register("stranger").await;
    let token = Some(alice.access_token.as_str());
    let path = |room: &str| format!("{V3}/rooms/{}/upgrade", enc(room));
    let rows = vec![
        row("no access token", Method::POST, path(&room), None, Some(r#"{"new_version":"12"}"#))
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "an unknown version",
            Method::POST,
            path(&room),
            token,
            Some(r#"{"new_version":"99"}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
        row(
            "a version too old to create",
            Method::POST,
            path(&room),
            token,
            Some(r#"{"new_version":"1"}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
        row(
            "a version longer than the grammar's 32 characters is not a version",
            Method::POST,
            path(&room),
            token,
            Some(&format!(r#"{{"new_version":"{}"}}"#, "9".repeat(10_000))),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("no new_version", Method::POST, path(&room), token, Some("{}"))
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "new_version not a string",
            Method::POST,
            path(&room),
            token,
            Some(r#"{"new_version":12}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "additional_creators not user IDs",
            Method::POST,
            path(&room),
            token,
            Some(r#"{"new_version":"12","additional_creators":["bob"]}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row("a body that is not JSON", Method::POST, path(&room), token, Some("{"))
            .expect(StatusCode::BAD_REQUEST, "M_NOT_JSON"),
        row(
            "not a member",
            Method::POST,
            path(&room),
            Some(&stranger.access_token),
            Some(r#"{"new_version":"12"}"#),
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "an unknown room",
            Method::POST,
            path("!nope:localhost"),
            token,
            Some(r#"{"new_version":"12"}"#),
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "an invalid room ID",
            Method::POST,
            path("nope"),
            token,
            Some(r#"{"new_version":"12"}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
}

/// A room is replaced once: of several upgrades at once one makes the replacement and the
/// others are refused, and a room with a tombstone is refused later too (its replacement is the
/// room to upgrade), so the tombstone and the moved alias always name the same room.
#[tokio::test]
async fn a_room_is_replaced_once_even_by_concurrent_upgrades() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let old = server.create_room(&alice, json!({ "room_alias_name": "once" })).await;
    let attempts = (0..6).map(|_| upgrade(&server, &alice, &old, json!({ "new_version": "12" })));
    let answers = futures::future::join_all(attempts).await;
    let made: Vec<&Value> =
        answers.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, json)| json).collect();
    assert_eq!(made.len(), 1, "one replacement: {answers:?}");
    for (status, json) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(
            (*status, json["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_BAD_STATE"))
        );
    }
    let replacement = made[0]["replacement_room"].as_str().unwrap();
    let tombstone = state(&server, &alice, &old, "m.room.tombstone", "").await;
    assert_eq!(tombstone["replacement_room"], replacement);
    let (status, alias) = server
        .get(&format!("{V3}/directory/room/{}", enc("#once:localhost")), &alice.access_token)
        .await;
    assert_eq!((status, alias["room_id"].as_str()), (StatusCode::OK, Some(replacement)));

    let (status, json) = upgrade(&server, &alice, &old, json!({ "new_version": "12" })).await;
    assert_eq!((status, json["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_BAD_STATE")));
    upgrade_ok(&server, &alice, replacement, json!({ "new_version": "12" })).await;
}
