//! Extended profiles (spec v1.16): `m.tz` and custom fields beside the display name and avatar
//! URL, read, set and deleted through `/profile/{userId}/{keyName}`, with the spec's limits.

mod common;

use common::{
    TestServer, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

fn field_path(user_id: &str, field: &str) -> String {
    format!("{V3}/profile/{}/{}", enc(user_id), enc(field))
}

#[tokio::test]
async fn custom_fields_and_the_time_zone_are_set_read_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = &alice.access_token;
    let me = alice.user_id.as_str();

    let set = server.put(&field_path(me, "m.tz"), token, json!({"m.tz": "Europe/Paris"})).await;
    assert_eq!(set, (StatusCode::OK, json!({})));
    let pets = json!({"cats": 2, "names": ["Tom", "Nul\u{0}"]});
    let set = server
        .put(&field_path(me, "org.example.pets"), token, json!({"org.example.pets": pets}))
        .await;
    assert_eq!(set, (StatusCode::OK, json!({})));
    let set =
        server.put(&field_path(me, "displayname"), token, json!({"displayname": "Alice"})).await;
    assert_eq!(set.0, StatusCode::OK, "{}", set.1);

    let profile = server.call(Method::GET, &format!("{V3}/profile/{}", enc(me)), None, None).await;
    assert_eq!(
        profile,
        (
            StatusCode::OK,
            json!({"displayname": "Alice", "m.tz": "Europe/Paris", "org.example.pets": pets})
        )
    );
    let one = server.call(Method::GET, &field_path(me, "org.example.pets"), None, None).await;
    assert_eq!(one, (StatusCode::OK, json!({"org.example.pets": pets})));

    // Deleted, it is gone; deleting what is not set succeeds too, as the spec says.
    for _ in 0..2 {
        let deleted = server
            .call(Method::DELETE, &field_path(me, "org.example.pets"), Some(token), None)
            .await;
        assert_eq!(deleted, (StatusCode::OK, json!({})));
    }
    let gone = server.call(Method::GET, &field_path(me, "org.example.pets"), None, None).await;
    common::assert_error(&gone, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let profile = server.call(Method::GET, &format!("{V3}/profile/{}", enc(me)), None, None).await;
    assert_eq!(profile.1, json!({"displayname": "Alice", "m.tz": "Europe/Paris"}));
}

#[tokio::test]
async fn deleting_the_display_name_and_avatar_updates_the_joined_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = &alice.access_token;
    let me = alice.user_id.as_str();
    server.put(&field_path(me, "displayname"), token, json!({"displayname": "Alice"})).await;
    server
        .put(&field_path(me, "avatar_url"), token, json!({"avatar_url": "mxc://localhost/a"}))
        .await;
    let room = server.create_room(&alice, json!({})).await;
    let member = format!("{V3}/rooms/{}/state/m.room.member/{}", enc(&room), enc(me));
    let before = server.get(&member, token).await.1;
    assert_eq!(
        (before["displayname"].as_str(), before["avatar_url"].as_str()),
        (Some("Alice"), Some("mxc://localhost/a"))
    );

    for field in ["displayname", "avatar_url"] {
        let deleted = server.call(Method::DELETE, &field_path(me, field), Some(token), None).await;
        assert_eq!(deleted, (StatusCode::OK, json!({})), "{field}");
        let got = server.call(Method::GET, &field_path(me, field), None, None).await;
        common::assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    }
    let after = server.get(&member, token).await.1;
    assert_eq!(after["membership"], "join", "{after}");
    assert!(after.get("displayname").is_none() && after.get("avatar_url").is_none(), "{after}");
    let profile = server.call(Method::GET, &format!("{V3}/profile/{}", enc(me)), None, None).await;
    assert_eq!(profile, (StatusCode::OK, json!({})));
}

#[tokio::test]
async fn the_whole_profile_stays_under_64_kib() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = &alice.access_token;
    let me = alice.user_id.as_str();
    let half = "x".repeat(30 * 1024);
    let first =
        server.put(&field_path(me, "org.example.a"), token, json!({"org.example.a": half})).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let second =
        server.put(&field_path(me, "org.example.b"), token, json!({"org.example.b": half})).await;
    common::assert_error(&second, StatusCode::BAD_REQUEST, "M_PROFILE_TOO_LARGE");
    // Replacing a field counts its new value only.
    let replaced =
        server.put(&field_path(me, "org.example.a"), token, json!({"org.example.a": half})).await;
    assert_eq!(replaced.0, StatusCode::OK, "{}", replaced.1);
    let profile = server.call(Method::GET, &format!("{V3}/profile/{}", enc(me)), None, None).await;
    assert!(profile.1.get("org.example.b").is_none(), "the refused field was not stored");
}

#[tokio::test]
async fn bad_profile_field_requests_get_the_spec_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let a = Some(alice.access_token.as_str());
    let me = alice.user_id.as_str();
    let (put, delete) = (Method::PUT, Method::DELETE);
    let long_name = format!("org.{}", "a".repeat(260));
    let long_body = format!(r#"{{"{long_name}": 1}}"#);
    let too_big = format!(r#"{{"org.example.big": "{}"}}"#, "y".repeat(60 * 1024));
    run_table(
        &server,
        vec![
            row(
                "a custom name without a namespace",
                put.clone(),
                field_path(me, "custom"),
                a,
                Some(r#"{"custom": 1}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "a custom name in upper case",
                put.clone(),
                field_path(me, "Org.Example"),
                a,
                Some(r#"{"Org.Example": 1}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "a custom name longer than 255 bytes",
                put.clone(),
                field_path(me, &long_name),
                a,
                Some(long_body.as_str()),
            )
            .expect(StatusCode::BAD_REQUEST, "M_KEY_TOO_LARGE"),
            row(
                "deleting a field with a bad name",
                delete.clone(),
                field_path(me, "not valid"),
                a,
                None,
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "deleting another user's field",
                delete.clone(),
                field_path(&bob.user_id, "m.tz"),
                a,
                None,
            )
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row(
                "setting another user's custom field",
                put.clone(),
                field_path(&bob.user_id, "org.example.x"),
                a,
                Some(r#"{"org.example.x": 1}"#),
            )
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row("deleting without a token", delete.clone(), field_path(me, "m.tz"), None, None)
                .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
            row(
                "a display name that is a number",
                put.clone(),
                field_path(me, "displayname"),
                a,
                Some(r#"{"displayname": 5}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            row(
                "a time zone that is an object",
                put.clone(),
                field_path(me, "m.tz"),
                a,
                Some(r#"{"m.tz": {"zone": "UTC"}}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            row(
                "a body without the field",
                put.clone(),
                field_path(me, "org.example.x"),
                a,
                Some(r#"{"org.example.y": 1}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            row(
                "a body that is not JSON",
                put.clone(),
                field_path(me, "org.example.x"),
                a,
                Some("{"),
            )
            .expect(StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            row(
                "a display name with a NUL character",
                put.clone(),
                field_path(me, "displayname"),
                a,
                Some(r#"{"displayname": "a\u0000b"}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "a field name with a NUL character",
                put.clone(),
                field_path(me, "org.ex\0ample"),
                a,
                Some(r#"{"org.ex\u0000ample": 1}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "a value larger than the whole profile may be",
                put.clone(),
                field_path(me, "org.example.big"),
                a,
                Some(too_big.as_str()),
            )
            .expect(StatusCode::BAD_REQUEST, "M_PROFILE_TOO_LARGE"),
            row("a malformed user ID", delete.clone(), format!("{V3}/profile/alice/m.tz"), a, None)
                .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        ],
    )
    .await;
    let profile = server.call(Method::GET, &format!("{V3}/profile/{}", enc(me)), None, None).await;
    assert_eq!(profile, (StatusCode::OK, json!({})), "nothing was stored");
}
