//! Bad input on the room, event, sync, directory, alias, filter, account-data and profile
//! endpoints, against the real server: tables whose rows each name the request, the exact status
//! and errcode the spec (or, where it is silent, Synapse) gives, and why; and sweeps that send
//! garbage to every routed endpoint and check that nothing ever answers with a 5xx.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{Row, row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

/// The largest stream position a token can spell, and the one below it: both lie far beyond any
/// real position, and arithmetic on either must not overflow.
const MAX_TOKEN: &str = "s9223372036854775807";
const MAX_TOKEN_MINUS_ONE: &str = "s9223372036854775806";

/// The fixture the tables share: alice created a public room (power 100), bob joined it
/// (power 0), carol is in no room; alice sent one message and gave the room an alias.
struct Fixture {
    server: TestServer,
    alice: TestUser,
    bob: TestUser,
    carol: TestUser,
    room: String,
    event_id: String,
    alias: String,
}

async fn fixture() -> Fixture {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = server
        .create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": "lounge" }))
        .await;
    server.join(&bob, &room).await;
    let event_id = server.send_text(&alice, &room, "hello").await;
    let server_name = alice.user_id.split_once(':').unwrap().1.to_owned();
    let alias = format!("#lounge:{server_name}");
    Fixture { server, alice, bob, carol, room, event_id, alias }
}

fn room_path(room: &str, rest: &str) -> String {
    format!("{V3}/rooms/{}/{rest}", enc(room))
}

/// Bodies that are not JSON, or JSON of the wrong shape, on every endpoint that takes a body.
#[tokio::test]
async fn malformed_and_mistyped_bodies_get_not_json_or_bad_json() {
    use StatusCode as S;
    let f = fixture().await;
    let a = Some(f.alice.access_token.as_str());
    let me = enc(&f.alice.user_id);
    let (post, put) = (Method::POST, Method::PUT);
    let send = room_path(&f.room, "send/m.room.message/txn1");
    let topic = room_path(&f.room, "state/m.room.topic/");
    let redact = room_path(&f.room, &format!("redact/{}/txn2", enc(&f.event_id)));
    let new_alias = format!("{V3}/directory/room/{}", enc("#fresh:localhost"));
    let listing = format!("{V3}/directory/list/room/{}", enc(&f.room));
    let filter = format!("{V3}/user/{me}/filter");
    let data = format!("{V3}/user/{me}/account_data/org.example.settings");
    let room_data =
        format!("{V3}/user/{me}/rooms/{}/account_data/org.example.settings", enc(&f.room));

    let rows = vec![
        // Not JSON at all: M_NOT_JSON.
        row("createRoom body cut short", post.clone(), format!("{V3}/createRoom"), a, Some("{"))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("message content cut short", put.clone(), &send, a, Some(r#"{"body":"#))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("state content that is prose", put.clone(), &topic, a, Some("not json"))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row(
            "invite body with a stray bracket",
            post.clone(),
            room_path(&f.room, "invite"),
            a,
            Some("{]"),
        )
        .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row(
            "kick body cut short",
            post.clone(),
            room_path(&f.room, "kick"),
            a,
            Some("{\"user_id\""),
        )
        .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row(
            "join body cut short",
            post.clone(),
            format!("{V3}/join/{}", enc(&f.room)),
            a,
            Some("{"),
        )
        .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("redaction body cut short", put.clone(), &redact, a, Some("{"))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("alias body cut short", put.clone(), &new_alias, a, Some("{\"room_id\":"))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("directory listing body cut short", put.clone(), &listing, a, Some("{"))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row(
            "publicRooms search cut short",
            post.clone(),
            format!("{V3}/publicRooms"),
            a,
            Some("{"),
        )
        .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("filter body cut short", post.clone(), &filter, a, Some("{\"room\":"))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("global account data cut short", put.clone(), &data, a, Some("{"))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("room account data cut short", put.clone(), &room_data, a, Some("{\"a\":"))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("trailing garbage after the object", put.clone(), &send, a, Some("{} x"))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("JSON nested past the parser's depth limit", put.clone(), &send, a, Some(&nested(200)))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        // JSON of the wrong shape: M_BAD_JSON.
        row("createRoom body is an array", post.clone(), format!("{V3}/createRoom"), a, Some("[]"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom name is a number",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"name": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom invite is a string",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"invite": "@bob:localhost"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom room_version is a number",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"room_version": 12}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom creation_content is an array",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"creation_content": []}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom power level override is a string",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"power_level_content_override": "x"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom initial_state content is a string",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"initial_state": [{"type": "m.room.topic", "content": "x"}]}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom initial_state event without a type",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"initial_state": [{"content": {}}]}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom preset unknown",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"preset": "nope"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom visibility unknown",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"visibility": "friends"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom is_direct is a string",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"is_direct": "yes"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("message content is an array", put.clone(), &send, a, Some("[]"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("message content is a string", put.clone(), &send, a, Some("\"hello\""))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("message content is null", put.clone(), &send, a, Some("null"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "message content holds a float, which canonical JSON forbids",
            put.clone(),
            &send,
            a,
            Some(r#"{"body": "x", "n": 1.5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "message content holds an integer beyond 2^53",
            put.clone(),
            &send,
            a,
            Some(r#"{"body": "x", "n": 9007199254740993}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("state content is a number", put.clone(), &topic, a, Some("5"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "power levels with a string where a level goes",
            put.clone(),
            room_path(&f.room, "state/m.room.power_levels/"),
            a,
            Some(r#"{"users": {"@alice:localhost": "high"}}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("invite without user_id", post.clone(), room_path(&f.room, "invite"), a, Some("{}"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "invite user_id is a number",
            post.clone(),
            room_path(&f.room, "invite"),
            a,
            Some(r#"{"user_id": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "kick user_id is a list",
            post.clone(),
            room_path(&f.room, "kick"),
            a,
            Some(r#"{"user_id": ["@bob:localhost"]}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "ban without user_id",
            post.clone(),
            room_path(&f.room, "ban"),
            a,
            Some(r#"{"reason": "x"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "ban reason is a number",
            post.clone(),
            room_path(&f.room, "ban"),
            a,
            Some(r#"{"user_id": "@bob:localhost", "reason": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("unban body is an array", post.clone(), room_path(&f.room, "unban"), a, Some("[]"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "join reason is a number",
            post.clone(),
            room_path(&f.room, "join"),
            a,
            Some(r#"{"reason": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "leave reason is an object",
            post.clone(),
            room_path(&f.room, "leave"),
            a,
            Some(r#"{"reason": {}}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("redaction reason is a number", put.clone(), &redact, a, Some(r#"{"reason": 5}"#))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("alias without room_id", put.clone(), &new_alias, a, Some("{}"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("alias room_id is a number", put.clone(), &new_alias, a, Some(r#"{"room_id": 5}"#))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "directory visibility is a number",
            put.clone(),
            &listing,
            a,
            Some(r#"{"visibility": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "publicRooms limit is a string",
            post.clone(),
            format!("{V3}/publicRooms"),
            a,
            Some(r#"{"limit": "ten"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "publicRooms filter is an array",
            post.clone(),
            format!("{V3}/publicRooms"),
            a,
            Some(r#"{"filter": []}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("filter room section is an array", post.clone(), &filter, a, Some(r#"{"room": []}"#))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "filter event_fields is a string",
            post.clone(),
            &filter,
            a,
            Some(r#"{"event_fields": "type"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "filter timeline limit is a string",
            post.clone(),
            &filter,
            a,
            Some(r#"{"room": {"timeline": {"limit": "ten"}}}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("global account data is an array", put.clone(), &data, a, Some("[1, 2]"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("global account data is a string", put.clone(), &data, a, Some("\"dark\""))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row("room account data is a number", put.clone(), &room_data, a, Some("5"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "the avatar URL sent to the display name field",
            put.clone(),
            format!("{V3}/profile/{me}/displayname"),
            a,
            Some(r#"{"avatar_url": "mxc://localhost/a"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "a display name body without the display name",
            put.clone(),
            format!("{V3}/profile/{me}/displayname"),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "display name is a list",
            put.clone(),
            format!("{V3}/profile/{me}/displayname"),
            a,
            Some(r#"{"displayname": ["a"]}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
    ];
    run_table(&f.server, rows).await;

    // None of it took effect: no alias, no filter, no account data, still one message.
    let got = f.server.get(&new_alias, &f.alice.access_token).await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);
    let got = f.server.get(&data, &f.alice.access_token).await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);
    let got = f.server.get(&format!("{filter}/0"), &f.alice.access_token).await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);
    let messages = room_path(&f.room, "messages?dir=b&limit=50");
    let (status, page) = f.server.get(&messages, &f.alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let sent: Vec<_> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message" || e["type"] == "m.room.redaction")
        .collect();
    assert_eq!(sent.len(), 1, "{page}");
}

/// `depth` objects nested inside each other.
fn nested(depth: usize) -> String {
    format!("{}{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
}

/// Rooms the server does not know. The spec answers a non-member's reads and writes with 403
/// ("You aren't a member of the room"), and Synapse does the same for rooms that do not exist
/// (its event creation says "Unknown room" with a 403), so that an outsider cannot probe which
/// room IDs exist. Joining, the directory listing and single events answer 404, as the spec says.
#[tokio::test]
async fn unknown_rooms_get_forbidden_or_not_found_as_the_spec_says() {
    use StatusCode as S;
    let f = fixture().await;
    let a = Some(f.alice.access_token.as_str());
    let me = enc(&f.alice.user_id);
    let unknown = "!unknown:localhost";
    let missing_event = enc("$missing");
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    let bob = format!(r#"{{"user_id": "{}"}}"#, f.bob.user_id);

    let rows = vec![
        row(
            "sending a message",
            put.clone(),
            room_path(unknown, "send/m.room.message/t1"),
            a,
            Some(r#"{"body":"x"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "sending a state event",
            put.clone(),
            room_path(unknown, "state/m.room.topic/"),
            a,
            Some(r#"{"topic":"x"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "reading one state event",
            get.clone(),
            room_path(unknown, "state/m.room.name/"),
            a,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("reading the whole state", get.clone(), room_path(unknown, "state"), a, None)
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("listing members", get.clone(), room_path(unknown, "members"), a, None)
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("listing joined members", get.clone(), room_path(unknown, "joined_members"), a, None)
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("paging messages", get.clone(), room_path(unknown, "messages?dir=b"), a, None)
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "redacting",
            put.clone(),
            room_path(unknown, &format!("redact/{missing_event}/t2")),
            a,
            Some("{}"),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("inviting", post.clone(), room_path(unknown, "invite"), a, Some(&bob))
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("kicking", post.clone(), room_path(unknown, "kick"), a, Some(&bob))
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("banning", post.clone(), room_path(unknown, "ban"), a, Some(&bob))
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("unbanning", post.clone(), room_path(unknown, "unban"), a, Some(&bob))
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("leaving", post.clone(), room_path(unknown, "leave"), a, Some("{}"))
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "listing local aliases (the spec's 403 for non-members)",
            get.clone(),
            room_path(unknown, "aliases"),
            a,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        // Not found.
        row(
            "joining by room ID (Synapse: no known servers)",
            post.clone(),
            room_path(unknown, "join"),
            a,
            Some("{}"),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "joining by ID or alias",
            post.clone(),
            format!("{V3}/join/{}", enc(unknown)),
            a,
            Some("{}"),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "joining an alias nobody made",
            post.clone(),
            format!("{V3}/join/{}", enc("#nowhere:localhost")),
            a,
            Some("{}"),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "an event in an unknown room",
            get.clone(),
            room_path(unknown, &format!("event/{missing_event}")),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "context in an unknown room",
            get.clone(),
            room_path(unknown, &format!("context/{missing_event}")),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "a known event under another room's ID",
            get.clone(),
            room_path(unknown, &format!("event/{}", enc(&f.event_id))),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "an unknown event in a known room",
            get.clone(),
            room_path(&f.room, &format!("event/{missing_event}")),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "context of an unknown event",
            get.clone(),
            room_path(&f.room, &format!("context/{missing_event}")),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "directory visibility of an unknown room",
            get.clone(),
            format!("{V3}/directory/list/room/{}", enc(unknown)),
            None,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "publishing an unknown room",
            put.clone(),
            format!("{V3}/directory/list/room/{}", enc(unknown)),
            a,
            Some(r#"{"visibility":"public"}"#),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "an alias for an unknown room",
            put.clone(),
            format!("{V3}/directory/room/{}", enc("#ghost:localhost")),
            a,
            Some(&format!(r#"{{"room_id":"{unknown}"}}"#)),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "resolving an alias nobody made",
            get.clone(),
            format!("{V3}/directory/room/{}", enc("#nowhere:localhost")),
            None,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "deleting an alias nobody made",
            delete.clone(),
            format!("{V3}/directory/room/{}", enc("#nowhere:localhost")),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "room account data never set",
            get.clone(),
            format!("{V3}/user/{me}/rooms/{}/account_data/org.example.x", enc(unknown)),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "forgetting a room one was never in",
            post.clone(),
            room_path(unknown, "forget"),
            a,
            Some("{}"),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "a state event the room does not have",
            get.clone(),
            room_path(&f.room, "state/m.room.avatar/"),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "global account data never set",
            get.clone(),
            format!("{V3}/user/{me}/account_data/org.example.x"),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "a filter ID never handed out",
            get.clone(),
            format!("{V3}/user/{me}/filter/12345"),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "a filter ID that is not a number",
            get.clone(),
            format!("{V3}/user/{me}/filter/abc"),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "a profile field that is not set",
            get.clone(),
            format!("{V3}/profile/{me}/avatar_url"),
            None,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
    ];
    run_table(&f.server, rows).await;
}

/// Room IDs, user IDs, event IDs and aliases that do not follow the grammar, in paths (and a few
/// in bodies), get 400 with `M_INVALID_PARAM` (in a body, ruma reads them as JSON of the wrong
/// shape: `M_BAD_JSON`).
#[tokio::test]
async fn invalid_identifiers_get_invalid_param() {
    use StatusCode as S;
    let f = fixture().await;
    let a = Some(f.alice.access_token.as_str());
    let me = enc(&f.alice.user_id);
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    let not_a_room = enc("not-a-room");
    let an_alias = enc("#lounge:localhost");
    let room = enc(&f.room);

    let rows = vec![
        row(
            "a room ID without its sigil",
            put.clone(),
            format!("{V3}/rooms/{not_a_room}/send/m.room.message/t1"),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an alias where a room ID goes",
            get.clone(),
            format!("{V3}/rooms/{an_alias}/state"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a user ID where a room ID goes",
            get.clone(),
            format!("{V3}/rooms/{}/members", enc("@alice:localhost")),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad room ID on messages",
            get.clone(),
            format!("{V3}/rooms/{not_a_room}/messages?dir=b"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad room ID on state",
            put.clone(),
            format!("{V3}/rooms/{not_a_room}/state/m.room.topic/"),
            a,
            Some(r#"{"topic":"x"}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad room ID on kick",
            post.clone(),
            format!("{V3}/rooms/{not_a_room}/kick"),
            a,
            Some(r#"{"user_id":"@bob:localhost"}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad room ID on join",
            post.clone(),
            format!("{V3}/rooms/{not_a_room}/join"),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "neither a room ID nor an alias on join",
            post.clone(),
            format!("{V3}/join/{not_a_room}"),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an alias without a server name on join",
            post.clone(),
            format!("{V3}/join/{}", enc("#lounge")),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an event ID without its sigil",
            get.clone(),
            format!("{V3}/rooms/{room}/event/not-an-event"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a room ID where an event ID goes",
            get.clone(),
            format!("{V3}/rooms/{room}/context/{room}"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad event ID on redact",
            put.clone(),
            format!("{V3}/rooms/{room}/redact/nope/t1"),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an alias without its sigil (the spec's example)",
            get.clone(),
            format!("{V3}/directory/room/lounge"),
            None,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an alias without a server name",
            get.clone(),
            format!("{V3}/directory/room/{}", enc("#lounge")),
            None,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a room ID where an alias goes",
            put.clone(),
            format!("{V3}/directory/room/{room}"),
            a,
            Some(&format!(r#"{{"room_id":"{}"}}"#, f.room)),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad alias on delete",
            delete.clone(),
            format!("{V3}/directory/room/lounge"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad room ID on the aliases list",
            get.clone(),
            format!("{V3}/rooms/{not_a_room}/aliases"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad room ID on the directory listing",
            get.clone(),
            format!("{V3}/directory/list/room/{not_a_room}"),
            None,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad user ID on account data",
            get.clone(),
            format!("{V3}/user/alice/account_data/org.example.x"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a user ID where a room ID goes in room account data (the spec's example)",
            put.clone(),
            format!(
                "{V3}/user/{me}/rooms/{}/account_data/org.example.x",
                enc("@notaroomid:example.org")
            ),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad room ID on reading room account data",
            get.clone(),
            format!("{V3}/user/{me}/rooms/{not_a_room}/account_data/org.example.x"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad user ID on filter upload",
            post.clone(),
            format!("{V3}/user/alice/filter"),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad user ID on filter download",
            get.clone(),
            format!("{V3}/user/{}/filter/0", enc("#alice:localhost")),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a bad user ID on a profile field",
            get.clone(),
            format!("{V3}/profile/alice/displayname"),
            None,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an event type longer than 255 bytes",
            put.clone(),
            room_path(&f.room, &format!("send/{}/t9", "t".repeat(300))),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        // In bodies.
        row(
            "an invitee that is not a user ID",
            post.clone(),
            room_path(&f.room, "invite"),
            a,
            Some(r#"{"user_id": "bob"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "a kick target that is not a user ID",
            post.clone(),
            room_path(&f.room, "kick"),
            a,
            Some(r##"{"user_id": "#bob:localhost"}"##),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "an alias target that is not a room ID",
            put.clone(),
            format!("{V3}/directory/room/{}", enc("#odd:localhost")),
            a,
            Some(r#"{"room_id": "lounge"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom invites something that is not a user ID",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"invite": ["bob"]}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "createRoom alias name with a colon",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"room_alias_name": "a:b"}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "createRoom alias name with a space",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"room_alias_name": "a b"}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "createRoom alias name that is empty",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"room_alias_name": ""}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
    ];
    run_table(&f.server, rows).await;
}

/// Actions the sender lacks membership or power for get 403 `M_FORBIDDEN`; the other refusals
/// the spec names get their own errcode.
#[tokio::test]
async fn forbidden_and_refused_actions_get_the_spec_errcode() {
    use StatusCode as S;
    let f = fixture().await;
    let (a, b, c) = (
        Some(f.alice.access_token.as_str()),
        Some(f.bob.access_token.as_str()),
        Some(f.carol.access_token.as_str()),
    );
    let alice = enc(&f.alice.user_id);
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    let target = |user: &TestUser| format!(r#"{{"user_id": "{}"}}"#, user.user_id);
    let alias_path = format!("{V3}/directory/room/{}", enc(&f.alias));

    let rows = vec![
        // Not in the room.
        row(
            "sending to a room one is not in",
            put.clone(),
            room_path(&f.room, "send/m.room.message/t1"),
            c,
            Some(r#"{"body":"x"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "setting state in a room one is not in",
            put.clone(),
            room_path(&f.room, "state/m.room.topic/"),
            c,
            Some(r#"{"topic":"x"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "reading the state of a room one was never in",
            get.clone(),
            room_path(&f.room, "state"),
            c,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "reading a state event of a room one was never in",
            get.clone(),
            room_path(&f.room, "state/m.room.create/"),
            c,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "listing members of a room one was never in",
            get.clone(),
            room_path(&f.room, "members"),
            c,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "listing joined members of a room one is not in",
            get.clone(),
            room_path(&f.room, "joined_members"),
            c,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "paging messages of a room one is not in",
            get.clone(),
            room_path(&f.room, "messages?dir=b"),
            c,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "inviting into a room one is not in",
            post.clone(),
            room_path(&f.room, "invite"),
            c,
            Some(&target(&f.bob)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "kicking from a room one is not in",
            post.clone(),
            room_path(&f.room, "kick"),
            c,
            Some(&target(&f.bob)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "banning in a room one is not in",
            post.clone(),
            room_path(&f.room, "ban"),
            c,
            Some(&target(&f.bob)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "redacting in a room one is not in",
            put.clone(),
            room_path(&f.room, &format!("redact/{}/t1", enc(&f.event_id))),
            c,
            Some("{}"),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "leaving a room one is not in",
            post.clone(),
            room_path(&f.room, "leave"),
            c,
            Some("{}"),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "listing aliases of a room one is not in",
            get.clone(),
            room_path(&f.room, "aliases"),
            c,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        // In the room, without the power.
        row(
            "kicking without power",
            post.clone(),
            room_path(&f.room, "kick"),
            b,
            Some(&target(&f.alice)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "banning without power",
            post.clone(),
            room_path(&f.room, "ban"),
            b,
            Some(&target(&f.alice)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "kicking someone who is not in the room",
            post.clone(),
            room_path(&f.room, "kick"),
            a,
            Some(&target(&f.carol)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "unbanning someone who is not banned",
            post.clone(),
            room_path(&f.room, "unban"),
            a,
            Some(&target(&f.bob)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "inviting someone already joined",
            post.clone(),
            room_path(&f.room, "invite"),
            a,
            Some(&target(&f.bob)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "renaming the room without power",
            put.clone(),
            room_path(&f.room, "state/m.room.name/"),
            b,
            Some(r#"{"name":"mine"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "raising one's own power level",
            put.clone(),
            room_path(&f.room, "state/m.room.power_levels/"),
            b,
            Some(&format!(r#"{{"users": {{"{}": 100}}}}"#, f.bob.user_id)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "a custom state event without power",
            put.clone(),
            room_path(&f.room, "state/org.example.pet/dog"),
            b,
            Some(r#"{"name":"rex"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "setting someone else's member event through /state",
            put.clone(),
            room_path(&f.room, &format!("state/m.room.member/{alice}")),
            b,
            Some(r#"{"membership":"leave"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "joining through /state instead of /join",
            put.clone(),
            room_path(&f.room, &format!("state/m.room.member/{}", enc(&f.carol.user_id))),
            c,
            Some(r#"{"membership":"join"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "redacting another's event without power",
            put.clone(),
            room_path(&f.room, &format!("redact/{}/t2", enc(&f.event_id))),
            b,
            Some("{}"),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "a second create event",
            put.clone(),
            room_path(&f.room, "state/m.room.create/"),
            a,
            Some(r#"{"room_version":"12"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "publishing the room without power",
            put.clone(),
            format!("{V3}/directory/list/room/{}", enc(&f.room)),
            b,
            Some(r#"{"visibility":"private"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row("deleting another user's alias", delete.clone(), &alias_path, b, None)
            .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        // Someone else's data.
        row(
            "reading another user's account data",
            get.clone(),
            format!("{V3}/user/{alice}/account_data/org.example.x"),
            b,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "writing another user's account data",
            put.clone(),
            format!("{V3}/user/{alice}/account_data/org.example.x"),
            b,
            Some("{}"),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "writing another user's room account data",
            put.clone(),
            format!("{V3}/user/{alice}/rooms/{}/account_data/org.example.x", enc(&f.room)),
            b,
            Some("{}"),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "uploading a filter for another user",
            post.clone(),
            format!("{V3}/user/{alice}/filter"),
            b,
            Some("{}"),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "reading another user's filter",
            get.clone(),
            format!("{V3}/user/{alice}/filter/0"),
            b,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "setting another user's display name",
            put.clone(),
            format!("{V3}/profile/{alice}/displayname"),
            b,
            Some(r#"{"displayname":"x"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        // The spec's other refusals.
        row(
            "setting m.fully_read through account data (405 per spec)",
            put.clone(),
            format!("{V3}/user/{alice}/account_data/m.fully_read"),
            a,
            Some(r#"{"event_id":"$x"}"#),
        )
        .expect(S::METHOD_NOT_ALLOWED, "M_BAD_JSON"),
        row(
            "setting m.push_rules through account data (405 per spec)",
            put.clone(),
            format!("{V3}/user/{alice}/account_data/m.push_rules"),
            a,
            Some("{}"),
        )
        .expect(S::METHOD_NOT_ALLOWED, "M_BAD_JSON"),
        row(
            "setting m.fully_read through room account data",
            put.clone(),
            format!("{V3}/user/{alice}/rooms/{}/account_data/m.fully_read", enc(&f.room)),
            a,
            Some(r#"{"event_id":"$x"}"#),
        )
        .expect(S::METHOD_NOT_ALLOWED, "M_BAD_JSON"),
        row(
            "a canonical alias that does not point at the room",
            put.clone(),
            room_path(&f.room, "state/m.room.canonical_alias/"),
            a,
            Some(r##"{"alias":"#elsewhere:localhost"}"##),
        )
        .expect(S::BAD_REQUEST, "M_BAD_ALIAS"),
        row(
            "an alias that is taken (409 per spec)",
            put.clone(),
            &alias_path,
            a,
            Some(&format!(r#"{{"room_id":"{}"}}"#, f.room)),
        )
        .expect(S::CONFLICT, "M_UNKNOWN"),
        row(
            "createRoom with an alias that is taken",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"room_alias_name":"lounge"}"#),
        )
        .expect(S::BAD_REQUEST, "M_ROOM_IN_USE"),
        row(
            "createRoom with a room version nobody knows",
            post.clone(),
            format!("{V3}/createRoom"),
            a,
            Some(r#"{"room_version":"999"}"#),
        )
        .expect(S::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
        row(
            "forgetting a room one is still in",
            post.clone(),
            room_path(&f.room, "forget"),
            a,
            Some("{}"),
        )
        .expect(S::BAD_REQUEST, "M_UNKNOWN"),
        row(
            "inviting a user who does not exist",
            post.clone(),
            room_path(&f.room, "invite"),
            a,
            Some(r#"{"user_id":"@nobody:localhost"}"#),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "sending without a token",
            put.clone(),
            room_path(&f.room, "send/m.room.message/t3"),
            None,
            Some("{}"),
        )
        .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("syncing with an unknown token", get.clone(), format!("{V3}/sync"), Some("nope"), None)
            .expect(S::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
    ];
    run_table(&f.server, rows).await;

    // Nothing changed: bob is still joined with power 0 and the room kept its name and alias.
    let (status, members) =
        f.server.get(&room_path(&f.room, "joined_members"), &f.alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{members}");
    assert!(members["joined"].get(&f.bob.user_id).is_some(), "{members}");
    assert!(members["joined"].get(&f.alice.user_id).is_some(), "{members}");
    let (status, levels) = f
        .server
        .get(&room_path(&f.room, "state/m.room.power_levels/"), &f.alice.access_token)
        .await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    assert!(levels["users"].get(&f.bob.user_id).is_none(), "{levels}");
    let (status, resolved) = f.server.get(&alias_path, &f.alice.access_token).await;
    assert_eq!((status, resolved["room_id"].as_str()), (StatusCode::OK, Some(f.room.as_str())));
}

/// Pagination and sync tokens that are not ours, or that name positions no stream will reach,
/// and query values of the wrong type or out of range: 400 `M_INVALID_PARAM`, never a 500.
#[tokio::test]
async fn bad_tokens_filters_and_limits_get_invalid_param() {
    use StatusCode as S;
    let f = fixture().await;
    let a = Some(f.alice.access_token.as_str());
    let get = Method::GET;
    let messages = |query: &str| room_path(&f.room, &format!("messages?{query}"));
    let context =
        |query: &str| room_path(&f.room, &format!("context/{}?{query}", enc(&f.event_id)));
    let sync = |query: &str| format!("{V3}/sync?{query}");
    let members = |query: &str| room_path(&f.room, &format!("members?{query}"));
    let public = |query: &str| format!("{V3}/publicRooms?{query}");

    let mut rows = Vec::new();
    // Tokens that are not ours, or that overflow or name positions no stream reaches.
    for (reason, token) in [
        ("a token that is not ours", "garbage"),
        ("a token without digits", "s"),
        ("a negative position", "s-1"),
        ("digits without the prefix", "12"),
        ("a position past i64", "s99999999999999999999"),
        ("the largest i64 position", MAX_TOKEN),
        ("one below the largest i64 position", MAX_TOKEN_MINUS_ONE),
    ] {
        let t = enc(token);
        rows.push(row(reason, get.clone(), messages(&format!("dir=b&from={t}")), a, None));
        rows.push(row(reason, get.clone(), messages(&format!("dir=f&from={t}")), a, None));
        rows.push(row(reason, get.clone(), messages(&format!("dir=b&to={t}")), a, None));
        rows.push(row(reason, get.clone(), messages(&format!("dir=f&to={t}")), a, None));
        rows.push(row(reason, get.clone(), sync(&format!("since={t}&timeout=0")), a, None));
        rows.push(row(reason, get.clone(), members(&format!("at={t}")), a, None));
    }
    let mut rows: Vec<Row> =
        rows.into_iter().map(|r| r.expect(S::BAD_REQUEST, "M_INVALID_PARAM")).collect();

    let filter_json = |json: &str| enc(json);
    rows.extend(
        [
            // Query values of the wrong type or out of range.
            row("a direction that is neither b nor f", get.clone(), messages("dir=up"), a, None),
            row("a missing direction", get.clone(), messages(""), a, None),
            row("a negative limit", get.clone(), messages("dir=b&limit=-5"), a, None),
            row("a limit that is not a number", get.clone(), messages("dir=b&limit=ten"), a, None),
            row(
                "a limit past the largest JSON-safe integer",
                get.clone(),
                messages("dir=b&limit=9007199254740992"),
                a,
                None,
            ),
            row(
                "a limit past u64",
                get.clone(),
                messages("dir=b&limit=99999999999999999999999"),
                a,
                None,
            ),
            row("a negative context limit", get.clone(), context("limit=-1"), a, None),
            row("a context limit that is not a number", get.clone(), context("limit=x"), a, None),
            row("a negative sync timeout", get.clone(), sync("timeout=-1"), a, None),
            row("a sync timeout that is not a number", get.clone(), sync("timeout=soon"), a, None),
            row(
                "a sync timeout past u64",
                get.clone(),
                sync("timeout=99999999999999999999999"),
                a,
                None,
            ),
            row("full_state that is not a boolean", get.clone(), sync("full_state=maybe"), a, None),
            row(
                "a publicRooms limit that is negative",
                get.clone(),
                public("limit=-1"),
                None,
                None,
            ),
            row(
                "a publicRooms limit that is not a number",
                get.clone(),
                public("limit=many"),
                None,
                None,
            ),
            row(
                "a publicRooms token that is not ours",
                get.clone(),
                public("since=garbage"),
                None,
                None,
            ),
            row(
                "a publicRooms token past usize",
                get.clone(),
                public("since=d99999999999999999999999"),
                None,
                None,
            ),
            row(
                "a publicRooms token with a negative offset",
                get.clone(),
                public("since=d-1"),
                None,
                None,
            ),
            // Filters in query parameters.
            row(
                "a sync filter that is neither an ID nor JSON",
                get.clone(),
                sync("filter=nonsense"),
                a,
                None,
            ),
            row("a sync filter ID never handed out", get.clone(), sync("filter=424242"), a, None),
            row(
                "inline sync filter JSON cut short",
                get.clone(),
                sync(&format!("filter={}", filter_json("{\"room\":"))),
                a,
                None,
            ),
            row(
                "an inline sync filter of the wrong shape",
                get.clone(),
                sync(&format!("filter={}", filter_json(r#"{"room": []}"#))),
                a,
                None,
            ),
            row(
                "an inline sync filter with a string limit",
                get.clone(),
                sync(&format!(
                    "filter={}",
                    filter_json(r#"{"room": {"timeline": {"limit": "x"}}}"#)
                )),
                a,
                None,
            ),
            row(
                "a messages filter cut short",
                get.clone(),
                messages(&format!("dir=b&filter={}", filter_json("{\"types\":"))),
                a,
                None,
            ),
            row(
                "a messages filter of the wrong shape",
                get.clone(),
                messages(&format!(
                    "dir=b&filter={}",
                    filter_json(r#"{"types": "m.room.message"}"#)
                )),
                a,
                None,
            ),
            row(
                "a messages filter that is not JSON",
                get.clone(),
                messages("dir=b&filter=nonsense"),
                a,
                None,
            ),
            row(
                "a context filter of the wrong shape",
                get.clone(),
                context(&format!("filter={}", filter_json(r#"{"limit": "x"}"#))),
                a,
                None,
            ),
        ]
        .map(|r| r.expect(S::BAD_REQUEST, "M_INVALID_PARAM")),
    );
    run_table(&f.server, rows).await;

    // Limits far past the cap are clamped, not refused.
    let (status, page) =
        f.server.get(&messages("dir=b&limit=9007199254740991"), &f.alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, page) =
        f.server.get(&public("limit=9007199254740991"), &f.alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
}

/// An event whose PDU exceeds 65536 bytes is refused with 413 `M_TOO_LARGE` (the spec's size
/// limit on events), as is a request body past `max_request_bytes`; smaller ones still work.
#[tokio::test]
async fn oversized_events_and_bodies_get_too_large() {
    use StatusCode as S;
    let f = fixture().await;
    let a = Some(f.alice.access_token.as_str());
    let put = Method::PUT;
    let big = |bytes: usize| format!(r#"{{"msgtype":"m.text","body":"{}"}}"#, "x".repeat(bytes));
    let me = enc(&f.alice.user_id);

    let rows = vec![
        row(
            "a message whose PDU exceeds 65536 bytes",
            put.clone(),
            room_path(&f.room, "send/m.room.message/big1"),
            a,
            Some(&big(70_000)),
        )
        .expect(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        row(
            "content just under 65536 bytes, which the PDU's other keys push over",
            put.clone(),
            room_path(&f.room, "send/m.room.message/big2"),
            a,
            Some(&big(65_500)),
        )
        .expect(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        row(
            "a state event whose PDU exceeds 65536 bytes",
            put.clone(),
            room_path(&f.room, "state/m.room.topic/"),
            a,
            Some(&format!(r#"{{"topic":"{}"}}"#, "t".repeat(70_000))),
        )
        .expect(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        // Just past the default 1 MiB limit, so the client has written it all before the refusal.
        row(
            "a body past max_request_bytes",
            put.clone(),
            room_path(&f.room, "send/m.room.message/big3"),
            a,
            Some(&big(1024 * 1024)),
        )
        .expect(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        row(
            "account data past max_request_bytes",
            put.clone(),
            format!("{V3}/user/{me}/account_data/org.example.big"),
            a,
            Some(&format!(r#"{{"v":"{}"}}"#, "v".repeat(1024 * 1024))),
        )
        .expect(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        row(
            "createRoom whose topic event exceeds 65536 bytes",
            Method::POST,
            format!("{V3}/createRoom"),
            a,
            Some(&format!(r#"{{"topic":"{}"}}"#, "t".repeat(70_000))),
        )
        .expect(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
    ];
    run_table(&f.server, rows).await;

    // An event comfortably under the limit is accepted.
    let path = room_path(&f.room, "send/m.room.message/fits");
    let (status, body) = f.server.call_raw(put, &path, a, big(60_000).into_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The refused createRoom left no room behind.
    let (status, rooms) = f.server.get(&format!("{V3}/joined_rooms"), &f.alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{rooms}");
    assert_eq!(rooms["joined_rooms"], json!([f.room]), "{rooms}");
}

/// Every endpoint this file covers, with the path filled in for alice.
fn routed_endpoints(f: &Fixture) -> Vec<(Method, String)> {
    let me = enc(&f.alice.user_id);
    let room = &f.room;
    let event = enc(&f.event_id);
    let alias = enc(&f.alias);
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    vec![
        (post.clone(), format!("{V3}/createRoom")),
        (post.clone(), format!("{V3}/join/{}", enc(room))),
        (post.clone(), room_path(room, "join")),
        (post.clone(), room_path(room, "invite")),
        (post.clone(), room_path(room, "kick")),
        (post.clone(), room_path(room, "ban")),
        (post.clone(), room_path(room, "unban")),
        (post.clone(), room_path(room, "forget")),
        (get.clone(), format!("{V3}/joined_rooms")),
        (put.clone(), room_path(room, "send/m.room.message/sweep")),
        (put.clone(), room_path(room, "send/org.example.custom/sweep")),
        (put.clone(), room_path(room, "state/m.room.topic/")),
        (put.clone(), room_path(room, "state/m.room.name")),
        (put.clone(), room_path(room, "state/m.room.canonical_alias/")),
        (put.clone(), room_path(room, &format!("state/m.room.member/{me}"))),
        (put.clone(), room_path(room, "state/m.room.join_rules/")),
        (put.clone(), room_path(room, "state/org.example.pet/dog")),
        (get.clone(), room_path(room, "state/m.room.topic/")),
        (get.clone(), room_path(room, "state")),
        (get.clone(), room_path(room, "members")),
        (get.clone(), room_path(room, "joined_members")),
        (get.clone(), room_path(room, &format!("event/{event}"))),
        (get.clone(), room_path(room, &format!("context/{event}"))),
        (get.clone(), room_path(room, "messages")),
        (put.clone(), room_path(room, &format!("redact/{event}/sweep"))),
        (get.clone(), format!("{V3}/sync")),
        (post.clone(), format!("{V3}/user/{me}/filter")),
        (get.clone(), format!("{V3}/user/{me}/filter/0")),
        (put.clone(), format!("{V3}/directory/room/{}", enc("#sweep:localhost"))),
        (get.clone(), format!("{V3}/directory/room/{alias}")),
        (delete.clone(), format!("{V3}/directory/room/{}", enc("#sweep:localhost"))),
        (get.clone(), room_path(room, "aliases")),
        (get.clone(), format!("{V3}/directory/list/room/{}", enc(room))),
        (put.clone(), format!("{V3}/directory/list/room/{}", enc(room))),
        (get.clone(), format!("{V3}/publicRooms")),
        (post.clone(), format!("{V3}/publicRooms")),
        (get.clone(), format!("{V3}/user/{me}/account_data/org.example.sweep")),
        (put.clone(), format!("{V3}/user/{me}/account_data/org.example.sweep")),
        (get.clone(), format!("{V3}/user/{me}/rooms/{}/account_data/org.example.sweep", enc(room))),
        (put.clone(), format!("{V3}/user/{me}/rooms/{}/account_data/org.example.sweep", enc(room))),
        (get.clone(), format!("{V3}/profile/{me}")),
        (get.clone(), format!("{V3}/profile/{me}/displayname")),
        (put.clone(), format!("{V3}/profile/{me}/displayname")),
        (put.clone(), format!("{V3}/profile/{me}/avatar_url")),
        // The last, since it takes alice out of the room for what follows.
        (post.clone(), room_path(room, "leave")),
    ]
}

/// Garbage bodies and query values on every room, event, sync, directory, alias, filter,
/// account-data and profile endpoint: whatever the answer, it is never a 5xx, a client error
/// always names its errcode, and the server keeps serving.
#[tokio::test]
async fn no_garbage_makes_a_room_endpoint_fail_internally() {
    let f = fixture().await;
    let bob = f.bob.user_id.as_str();
    let bodies = [
        String::new(),
        "null".into(),
        "{}".into(),
        "[]".into(),
        "\"text\"".into(),
        "5".into(),
        "-0".into(),
        "1e400".into(),
        "{\"\u{0}\": \"\u{0}\"}".into(),
        r#"{"user_id": null, "room_id": null, "reason": null}"#.into(),
        format!(r#"{{"user_id": "{bob}", "reason": "{}"}}"#, "r".repeat(70_000)),
        r#"{"user_id": "@:localhost"}"#.into(),
        r#"{"user_id": "@\u0000:localhost"}"#.into(),
        r#"{"user_id": "@bob:localhost:99999999"}"#.into(),
        r#"{"room_id": "!"}"#.into(),
        r#"{"room_id": "!a:b:c:d"}"#.into(),
        r#"{"visibility": null}"#.into(),
        r#"{"visibility": "public", "limit": -1, "since": "s-1"}"#.into(),
        r#"{"limit": 9007199254740991, "filter": {"generic_search_term": ""}}"#.into(),
        r#"{"limit": 18446744073709551616}"#.into(),
        r#"{"since": "d18446744073709551615", "limit": 5}"#.into(),
        r#"{"n": 9007199254740993, "f": 1.5, "e": -1e308}"#.into(),
        r#"{"body": "x", "msgtype": 5, "m.relates_to": "nope"}"#.into(),
        r#"{"m.relates_to": {"rel_type": "m.replace", "event_id": 5}}"#.into(),
        r#"{"membership": "join", "displayname": 5}"#.into(),
        r#"{"membership": "ban"}"#.into(),
        r#"{"join_rule": 5}"#.into(),
        r#"{"alias": 5, "alt_aliases": "x"}"#.into(),
        r##"{"alias": "#nope", "alt_aliases": ["#a:b", "x"]}"##.into(),
        r#"{"users": {"@bob:localhost": 9007199254740993}}"#.into(),
        r#"{"preset": "x", "visibility": "x", "room_version": "x", "invite": [5]}"#.into(),
        r#"{"initial_state": [{"type": "m.room.create", "state_key": "", "content": {}}]}"#.into(),
        r#"{"initial_state": [{"type": "m.room.power_levels", "content": {"users": []}}]}"#.into(),
        r#"{"creation_content": {"room_version": 5, "m.federate": "x", "type": 5}}"#.into(),
        r#"{"power_level_content_override": {"users": {"x": 1}, "ban": "high"}}"#.into(),
        r#"{"room": {"rooms": ["x"], "not_rooms": 5, "timeline": {"limit": -1}}}"#.into(),
        r#"{"event_fields": ["content.body", ""], "event_format": "x"}"#.into(),
        r#"{"displayname": "", "avatar_url": "not a url"}"#.into(),
        nested(100),
        nested(10_000),
    ];
    let queries = [
        "dir=b&from=s-1",
        &format!("dir=b&from={MAX_TOKEN}&to={MAX_TOKEN}"),
        &format!("dir=f&from={MAX_TOKEN_MINUS_ONE}&to={MAX_TOKEN_MINUS_ONE}"),
        &format!("since={MAX_TOKEN}&timeout=0"),
        &format!("since={MAX_TOKEN_MINUS_ONE}&timeout=0"),
        &format!("at={MAX_TOKEN}"),
        "limit=0",
        "limit=-1",
        "limit=9007199254740991",
        "limit=18446744073709551616",
        "since=d18446744073709551615",
        "since=d9223372036854775807",
        "filter=%7B",
        "filter=%5B%5D",
        "filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A-1%7D%7D%7D",
        "filter=99999999999999999999999",
        "filter=-1",
        "format=nonsense",
        "membership=nonsense&not_membership=5",
        "server=%00",
        "server=elsewhere.example",
        "full_state=2&set_presence=nonsense&timeout=0",
        "%ZZ=%ZZ",
        "dir=b&dir=f&limit=1&limit=2",
    ];
    let token = Some(f.alice.access_token.as_str());
    let mut failures = Vec::new();
    for (method, path) in routed_endpoints(&f) {
        let mut requests: Vec<(String, Vec<u8>)> =
            bodies.iter().map(|body| (path.clone(), body.clone().into_bytes())).collect();
        requests.extend(queries.iter().map(|query| (format!("{path}?{query}"), b"{}".to_vec())));
        for (target, body) in requests {
            let (status, json) =
                f.server.call_raw(method.clone(), &target, token, body.clone()).await;
            let explained = json["errcode"].is_string();
            if !(status.is_success() || status.is_client_error() && explained) {
                let body = String::from_utf8_lossy(&body);
                let body: String = body.chars().take(80).collect();
                failures.push(format!("{method} {target} {body}: {status} {json}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} requests failed:\n{}", failures.len(), failures.join("\n"));

    // Still serving.
    let (status, body) = f.server.get(&format!("{V3}/account/whoami"), &f.bob.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = f.server.get(&format!("{V3}/sync?timeout=0"), &f.bob.access_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A NUL character cannot be part of an identifier, a type, a key or a name: PostgreSQL's text
/// cannot hold one, so both backends refuse it alike. (In event content it is only JSON text.)
#[tokio::test]
async fn nul_characters_in_ids_types_keys_and_names_are_invalid_params() {
    use StatusCode as S;
    let f = fixture().await;
    let a = Some(f.alice.access_token.as_str());
    let me = enc(&f.alice.user_id);
    let put = Method::PUT;
    let text = Some(r#"{"msgtype":"m.text","body":"hi"}"#);
    let rows = vec![
        row("event type", put.clone(), room_path(&f.room, "send/m.x%00y/t1"), a, text),
        row("transaction ID", put.clone(), room_path(&f.room, "send/m.room.message/t%00"), a, text),
        row("state type", put.clone(), room_path(&f.room, "state/m.x%00/"), a, Some("{}")),
        row("state key", put.clone(), room_path(&f.room, "state/m.x/k%00"), a, Some("{}")),
        row(
            "account data type",
            put.clone(),
            format!("{V3}/user/{me}/account_data/m.x%00"),
            a,
            Some("{}"),
        ),
        row(
            "display name",
            put.clone(),
            format!("{V3}/profile/{me}/displayname"),
            a,
            Some(r#"{"displayname":"a\u0000b"}"#),
        ),
        row(
            "device name",
            put.clone(),
            format!("{V3}/devices/{}", enc(&f.alice.device_id)),
            a,
            Some(r#"{"display_name":"phone\u0000"}"#),
        ),
    ];
    let rows = rows.into_iter().map(|r| r.expect(S::BAD_REQUEST, "M_INVALID_PARAM")).collect();
    run_table(&f.server, rows).await;
    // The device a client names when it logs in or registers.
    let login = |field: &str| {
        json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "alice"},
            "password": "password-alice",
            field: "a\u{0}b",
        })
        .to_string()
    };
    let register = |name: &str, field: &str| {
        json!({
            "username": name,
            "password": "a long password",
            "auth": {"type": "m.login.dummy"},
            field: "a\u{0}b",
        })
        .to_string()
    };
    let bodies = [
        ("login device ID", format!("{V3}/login"), login("device_id")),
        ("login device name", format!("{V3}/login"), login("initial_device_display_name")),
        ("registration device ID", format!("{V3}/register"), register("nul1", "device_id")),
        (
            "registration device name",
            format!("{V3}/register"),
            register("nul2", "initial_device_display_name"),
        ),
    ];
    let rows = bodies
        .iter()
        .map(|(reason, path, body)| {
            row(reason, Method::POST, path.as_str(), None, Some(body.as_str()))
                .expect(S::BAD_REQUEST, "M_INVALID_PARAM")
        })
        .collect();
    run_table(&f.server, rows).await;
    // A refused registration leaves no account behind.
    for name in ["nul1", "nul2"] {
        let path = format!("{V3}/register/available?username={name}");
        let (status, body) = f.server.call(Method::GET, &path, None, None).await;
        assert_eq!(status, S::OK, "{name} is still free: {body}");
    }
    // The same characters in message content are plain JSON text, kept as sent.
    let (status, body) = f
        .server
        .put(
            &room_path(&f.room, "send/m.room.message/t2"),
            &f.alice.access_token,
            json!({"msgtype": "m.text", "body": "a\u{0}b"}),
        )
        .await;
    assert_eq!(status, S::OK, "{body}");
}
