//! Reporting content through the client-server API: `POST /rooms/{roomId}/report/{eventId}`,
//! `POST /rooms/{roomId}/report` and `POST /users/{userId}/report`, with the spec's rules on who
//! may report what, and the bad reports with their errors.

mod common;

use common::{
    TestServer, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

#[tokio::test]
async fn members_report_events_and_anyone_reports_rooms_and_users() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let outsider = server.register("outsider").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.join(&bob, &room).await;
    let event = server.send_text(&alice, &room, "rude").await;
    let event_report = format!("{V3}/rooms/{}/report/{}", enc(&room), enc(&event));
    for body in [json!({ "reason": "rude" }), json!({})] {
        let (status, json) = server.post(&event_report, &bob.access_token, body).await;
        assert_eq!((status, json), (StatusCode::OK, json!({})));
    }
    let room_report = format!("{V3}/rooms/{}/report", enc(&room));
    let (status, json) =
        server.post(&room_report, &outsider.access_token, json!({ "reason": "" })).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})), "no need to be a member");
    let user_report = format!("{V3}/users/{}/report", enc(&alice.user_id));
    let (status, json) =
        server.post(&user_report, &outsider.access_token, json!({ "reason": "x" })).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
    // An outsider cannot report the room's events.
    let refused =
        server.post(&event_report, &outsider.access_token, json!({ "reason": "x" })).await;
    common::assert_error(&refused, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn bad_reports_get_the_spec_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = Some(alice.access_token.as_str());
    let room = server.create_room(&alice, json!({})).await;
    let other_room = server.create_room(&alice, json!({})).await;
    let event = server.send_text(&alice, &room, "hello").await;
    let post = Method::POST;
    let (bad, not_found) = (StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND);
    let event_path =
        |room: &str, event: &str| format!("{V3}/rooms/{}/report/{}", enc(room), enc(event));
    let room_path = |room: &str| format!("{V3}/rooms/{}/report", enc(room));
    let user_path = |user: &str| format!("{V3}/users/{}/report", enc(user));
    let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(1001));
    let long_multibyte = format!(r#"{{"reason":"{}"}}"#, "é".repeat(1000));
    let rows = vec![
        row("no access token", post.clone(), room_path(&room), None, Some(r#"{"reason":"x"}"#))
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("an unknown event", post.clone(), event_path(&room, "$nothing"), a, Some("{}"))
            .expect(not_found, "M_NOT_FOUND"),
        row(
            "an event of another room",
            post.clone(),
            event_path(&other_room, &event),
            a,
            Some("{}"),
        )
        .expect(not_found, "M_NOT_FOUND"),
        row(
            "an event of an unknown room",
            post.clone(),
            event_path("!nowhere:localhost", &event),
            a,
            Some("{}"),
        )
        .expect(not_found, "M_NOT_FOUND"),
        row(
            "an unknown room",
            post.clone(),
            room_path("!nowhere:localhost"),
            a,
            Some(r#"{"reason":"x"}"#),
        )
        .expect(not_found, "M_NOT_FOUND"),
        row(
            "an unknown user",
            post.clone(),
            user_path("@nobody:localhost"),
            a,
            Some(r#"{"reason":"x"}"#),
        )
        .expect(not_found, "M_NOT_FOUND"),
        row(
            "a user of another server",
            post.clone(),
            user_path("@bob:elsewhere.example"),
            a,
            Some(r#"{"reason":"x"}"#),
        )
        .expect(not_found, "M_NOT_FOUND"),
        row(
            "an event reason over 1000 characters",
            post.clone(),
            event_path(&room, &event),
            a,
            Some(&long),
        )
        .expect(bad, "M_BAD_JSON"),
        row("a room reason over 1000 characters", post.clone(), room_path(&room), a, Some(&long))
            .expect(bad, "M_BAD_JSON"),
        row(
            "a user reason over 1000 characters",
            post.clone(),
            user_path(&alice.user_id),
            a,
            Some(&long),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "a user report without a reason",
            post.clone(),
            user_path(&alice.user_id),
            a,
            Some("{}"),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "a reason that is a number",
            post.clone(),
            event_path(&room, &event),
            a,
            Some(r#"{"reason":5}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row("a body that is not JSON", post.clone(), room_path(&room), a, Some("{\"reason\""))
            .expect(bad, "M_NOT_JSON"),
        row(
            "a user ID that is not one",
            post.clone(),
            user_path("nobody"),
            a,
            Some(r#"{"reason":"x"}"#),
        )
        .expect(bad, "M_INVALID_PARAM"),
        row(
            "a reason with a NUL character",
            post.clone(),
            room_path(&room),
            a,
            Some(r#"{"reason":"a\u0000b"}"#),
        )
        .expect(bad, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
    // A room report without a reason is taken as one with an empty reason: v1.13 had it
    // optional (ruma reads it so), v1.14 made it required.
    let (status, json) = server.call_raw(post.clone(), &room_path(&room), a, b"{}".to_vec()).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
    // A thousand characters are fine, however many bytes they take.
    let (status, json) =
        server.call_raw(post, &room_path(&room), a, long_multibyte.into_bytes()).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
}
