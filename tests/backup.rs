//! Server-side key backups through the client-server API: backup versions under
//! `/room_keys/version` and keys under `/room_keys/keys`, with the spec's rule for which of two
//! keys of a session is kept, the `etag` and `count` of every answer, and the bad requests with
//! their errors.

mod common;

use common::{
    TestServer, TestUser, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const MEGOLM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM: &str = "!room:localhost";

fn auth_data(public_key: &str) -> Value {
    json!({
        "public_key": public_key,
        "signatures": { "@alice:localhost": { "ed25519:DEVICE": "c2lnbmF0dXJl" } },
        "org.example.extra": [1, 2, 3],
    })
}

/// Key data of a session, ranked by `(is_verified, first_message_index, forwarded_count)`.
fn key(rank: (bool, u64, u64), ciphertext: &str) -> Value {
    json!({
        "first_message_index": rank.1,
        "forwarded_count": rank.2,
        "is_verified": rank.0,
        "session_data": { "ephemeral": "ZXBo", "ciphertext": ciphertext, "mac": "bWFj" },
    })
}

async fn create_version(server: &TestServer, user: &TestUser, public_key: &str) -> String {
    let body = json!({ "algorithm": MEGOLM, "auth_data": auth_data(public_key) });
    let (status, json) =
        server.post(&format!("{V3}/room_keys/version"), &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["version"].as_str().unwrap().to_owned()
}

fn keys_path(rest: &str, version: &str) -> String {
    format!("{V3}/room_keys/keys{rest}?version={version}")
}

fn session_path(session: &str, version: &str) -> String {
    keys_path(&format!("/{}/{session}", enc(ROOM)), version)
}

/// Puts a key and returns the answer's `(count, etag)`.
async fn put_key(
    server: &TestServer,
    user: &TestUser,
    version: &str,
    session: &str,
    data: Value,
) -> (u64, String) {
    let (status, json) =
        server.put(&session_path(session, version), &user.access_token, data).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    (json["count"].as_u64().unwrap(), json["etag"].as_str().unwrap().to_owned())
}

async fn delete(server: &TestServer, token: &str, path: &str) -> (StatusCode, Value) {
    server.call(Method::DELETE, path, Some(token), None).await
}

#[tokio::test]
async fn backup_versions_are_created_read_updated_and_deleted_and_never_renumbered() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let token = &alice.access_token;
    let latest = format!("{V3}/room_keys/version");
    let none = server.get(&latest, token).await;
    common::assert_error(&none, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    assert_eq!(create_version(&server, &alice, "a2V5MQ").await, "1");
    assert_eq!(create_version(&server, &alice, "a2V5Mg").await, "2");
    let (status, info) = server.get(&latest, token).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["version"], "2");
    assert_eq!(info["algorithm"], MEGOLM);
    assert_eq!(info["auth_data"], auth_data("a2V5Mg"), "auth_data comes back as it was sent");
    assert_eq!(info["count"], 0);
    assert!(info["etag"].is_string(), "{info}");
    let (_, first) = server.get(&format!("{latest}/1"), token).await;
    assert_eq!(first["auth_data"]["public_key"], "a2V5MQ");
    // Each user has backups of their own.
    let theirs = server.get(&latest, &bob.access_token).await;
    common::assert_error(&theirs, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let update = json!({ "algorithm": MEGOLM, "auth_data": auth_data("bmV3"), "version": "1" });
    let (status, json) = server.put(&format!("{latest}/1"), token, update).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
    let (_, first) = server.get(&format!("{latest}/1"), token).await;
    assert_eq!(first["auth_data"]["public_key"], "bmV3");

    let version_2 = format!("{V3}/room_keys/version/2");
    assert_eq!(delete(&server, token, &version_2).await, (StatusCode::OK, json!({})));
    let again = delete(&server, token, &version_2).await;
    assert_eq!(again, (StatusCode::OK, json!({})), "deleted before: still a success");
    assert_eq!(server.get(&latest, token).await.1["version"], "1", "the latest left");
    let gone = server.get(&format!("{latest}/2"), token).await;
    common::assert_error(&gone, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(create_version(&server, &alice, "a2V5Mw").await, "3", "2 is never handed out again");
}

#[tokio::test]
async fn a_stored_key_is_replaced_only_by_a_better_one_and_the_etag_follows() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let version = create_version(&server, &alice, "a2V5").await;
    let (count, start) =
        put_key(&server, &alice, &version, "s1", key((false, 3, 1), "Zmlyc3Q")).await;
    assert_eq!(count, 1);
    // (rank, whether it replaces the stored key, why)
    let cases = [
        ((false, 3, 1), false, "a tie keeps the stored key"),
        ((false, 4, 0), false, "a later first message index loses"),
        ((false, 3, 2), false, "a higher forwarded count loses"),
        ((false, 3, 0), true, "a lower forwarded count wins"),
        ((false, 1, 5), true, "an earlier first message index wins"),
        ((true, 9, 9), true, "a verified key beats an unverified one"),
        ((false, 0, 0), false, "an unverified key never beats a verified one"),
    ];
    let mut etag = start;
    for (n, (rank, replaces, why)) in cases.into_iter().enumerate() {
        let ciphertext = format!("Y2FzZ{n}");
        let (count, new_etag) =
            put_key(&server, &alice, &version, "s1", key(rank, &ciphertext)).await;
        assert_eq!(count, 1, "{why}");
        assert_eq!(new_etag != etag, replaces, "the etag changes exactly when the key does: {why}");
        let (_, stored) = server.get(&session_path("s1", &version), &alice.access_token).await;
        let kept = stored["session_data"]["ciphertext"] == ciphertext.as_str();
        assert_eq!(kept, replaces, "{why}: {stored}");
        etag = new_etag;
    }
    let (_, info) =
        server.get(&format!("{V3}/room_keys/version/{version}"), &alice.access_token).await;
    assert_eq!((info["count"].as_u64(), info["etag"].as_str()), (Some(1), Some(etag.as_str())));
}

#[tokio::test]
async fn keys_are_stored_read_and_deleted_for_all_rooms_one_room_and_one_session() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = &alice.access_token;
    let version = create_version(&server, &alice, "a2V5").await;
    let other_room = "!other:localhost";
    let body = json!({ "rooms": {
        ROOM: { "sessions": { "s1": key((true, 0, 0), "YQ"), "s2": key((false, 0, 0), "Yg") } },
        other_room: { "sessions": { "s3": key((false, 0, 0), "Yw") } },
    }});
    let (status, json) = server.put(&keys_path("", &version), token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["count"], 3);
    let room_body = json!({ "sessions": { "s4": key((false, 0, 0), "ZA") } });
    let (status, json) =
        server.put(&keys_path(&format!("/{}", enc(ROOM)), &version), token, room_body).await;
    assert_eq!((status, json["count"].as_u64()), (StatusCode::OK, Some(4)), "{json}");

    let (_, all) = server.get(&keys_path("", &version), token).await;
    let sessions = |rooms: &Value, room: &str| -> Vec<String> {
        rooms[room]["sessions"].as_object().map(|s| s.keys().cloned().collect()).unwrap_or_default()
    };
    assert_eq!(sessions(&all["rooms"], ROOM), ["s1", "s2", "s4"], "{all}");
    assert_eq!(sessions(&all["rooms"], other_room), ["s3"]);
    assert_eq!(all["rooms"][ROOM]["sessions"]["s1"], key((true, 0, 0), "YQ"));
    let (_, one_room) =
        server.get(&keys_path(&format!("/{}", enc(other_room)), &version), token).await;
    assert_eq!(one_room, json!({ "sessions": { "s3": key((false, 0, 0), "Yw") } }));
    let (_, empty_room) = server.get(&keys_path("/!none:localhost", &version), token).await;
    assert_eq!(empty_room, json!({ "sessions": {} }));
    let missing = server.get(&session_path("nothing", &version), token).await;
    common::assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let (status, json) = delete(&server, token, &session_path("s2", &version)).await;
    assert_eq!((status, json["count"].as_u64()), (StatusCode::OK, Some(3)), "{json}");
    let (_, json) = delete(&server, token, &keys_path(&format!("/{}", enc(ROOM)), &version)).await;
    assert_eq!(json["count"], 1, "{json}");
    let (_, json) = delete(&server, token, &keys_path("", &version)).await;
    assert_eq!(json["count"], 0, "{json}");
    let (_, all) = server.get(&keys_path("", &version), token).await;
    assert_eq!(all, json!({ "rooms": {} }));
}

#[tokio::test]
async fn keys_go_only_into_the_current_version_and_leave_with_a_deleted_one() {
    let mut server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = alice.access_token.clone();
    let old = create_version(&server, &alice, "b2xk").await;
    put_key(&server, &alice, &old, "s1", key((false, 0, 0), "YQ")).await;
    let current = create_version(&server, &alice, "bmV3").await;
    let (status, json) =
        server.put(&session_path("s1", &old), &token, key((false, 0, 0), "Yg")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert_eq!(json["errcode"], "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(json["current_version"], current.as_str());
    // The old version can still be read.
    let (_, kept) = server.get(&session_path("s1", &old), &token).await;
    assert_eq!(kept["session_data"]["ciphertext"], "YQ");

    put_key(&server, &alice, &current, "s2", key((false, 0, 0), "Yw")).await;
    server.kill_and_restart().await;
    let (_, info) = server.get(&format!("{V3}/room_keys/version"), &token).await;
    assert_eq!(
        (info["version"].as_str(), info["count"].as_u64()),
        (Some(current.as_str()), Some(1))
    );
    let path = format!("{V3}/room_keys/version/{current}");
    assert_eq!(server.call(Method::DELETE, &path, Some(&token), None).await.0, StatusCode::OK);
    let gone = server.get(&keys_path("", &current), &token).await;
    common::assert_error(&gone, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (_, info) = server.get(&format!("{V3}/room_keys/version"), &token).await;
    assert_eq!(info["version"], old.as_str(), "the old version is the latest again");
}

#[tokio::test]
async fn bad_backup_requests_get_the_spec_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let a = Some(alice.access_token.as_str());
    let version = create_version(&server, &alice, "a2V5").await;
    let (post, put, get, delete) = (Method::POST, Method::PUT, Method::GET, Method::DELETE);
    let versions = format!("{V3}/room_keys/version");
    let good_key = key((false, 0, 0), "YQ").to_string();
    let session = session_path("s1", &version);
    let good_auth = auth_data("a2V5").to_string();
    let with = |algorithm: &str, auth: &str| {
        format!(r#"{{"algorithm":"{algorithm}","auth_data":{auth}}}"#)
    };
    let (not_found, bad, forbidden) =
        (StatusCode::NOT_FOUND, StatusCode::BAD_REQUEST, StatusCode::FORBIDDEN);
    let rows = vec![
        row("no access token", get.clone(), &versions, None, None)
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("create body is not JSON", post.clone(), &versions, a, Some("{"))
            .expect(bad, "M_NOT_JSON"),
        row(
            "create without auth_data",
            post.clone(),
            &versions,
            a,
            Some(&format!(r#"{{"algorithm":"{MEGOLM}"}}"#)),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "megolm auth_data without a public key",
            post.clone(),
            &versions,
            a,
            Some(&with(MEGOLM, r#"{"signatures":{}}"#)),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "auth_data that is not an object",
            post.clone(),
            &versions,
            a,
            Some(&with("org.example", "[1]")),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "algorithm that is not a string",
            post.clone(),
            &versions,
            a,
            Some(&format!(r#"{{"algorithm":7,"auth_data":{good_auth}}}"#)),
        )
        .expect(bad, "M_BAD_JSON"),
        row("unknown version", get.clone(), format!("{versions}/99"), a, None)
            .expect(not_found, "M_NOT_FOUND"),
        row("non-numeric version", get.clone(), format!("{versions}/abc"), a, None)
            .expect(not_found, "M_NOT_FOUND"),
        row("version zero", get.clone(), format!("{versions}/0"), a, None)
            .expect(not_found, "M_NOT_FOUND"),
        row(
            "update with another algorithm",
            put.clone(),
            format!("{versions}/{version}"),
            a,
            Some(&with("org.example.other", "{}")),
        )
        .expect(bad, "M_INVALID_PARAM"),
        row(
            "update whose body names another version",
            put.clone(),
            format!("{versions}/{version}"),
            a,
            Some(&format!(r#"{{"algorithm":"{MEGOLM}","auth_data":{good_auth},"version":"7"}}"#)),
        )
        .expect(bad, "M_INVALID_PARAM"),
        row(
            "update of an unknown version",
            put.clone(),
            format!("{versions}/99"),
            a,
            Some(&with(MEGOLM, &good_auth)),
        )
        .expect(not_found, "M_NOT_FOUND"),
        row("delete of an unknown version", delete.clone(), format!("{versions}/99"), a, None)
            .expect(not_found, "M_NOT_FOUND"),
        row("delete of a non-numeric version", delete.clone(), format!("{versions}/v1"), a, None)
            .expect(not_found, "M_NOT_FOUND"),
        row("keys without ?version=", get.clone(), format!("{V3}/room_keys/keys"), a, None)
            .expect(bad, "M_INVALID_PARAM"),
        row(
            "key put without ?version=",
            put.clone(),
            format!("{V3}/room_keys/keys/{}/s1", enc(ROOM)),
            a,
            Some(&good_key),
        )
        .expect(bad, "M_INVALID_PARAM"),
        row(
            "key put into an unknown version",
            put.clone(),
            session_path("s1", "99"),
            a,
            Some(&good_key),
        )
        .expect(forbidden, "M_WRONG_ROOM_KEYS_VERSION"),
        row(
            "key put into a non-numeric version",
            put.clone(),
            session_path("s1", "abc"),
            a,
            Some(&good_key),
        )
        .expect(forbidden, "M_WRONG_ROOM_KEYS_VERSION"),
        row("keys read from an unknown version", get.clone(), keys_path("", "99"), a, None)
            .expect(not_found, "M_NOT_FOUND"),
        row("keys read from a non-numeric version", get.clone(), keys_path("", "x"), a, None)
            .expect(not_found, "M_NOT_FOUND"),
        row("keys deleted from an unknown version", delete.clone(), keys_path("", "99"), a, None)
            .expect(not_found, "M_NOT_FOUND"),
        row(
            "session data without session_data",
            put.clone(),
            &session,
            a,
            Some(r#"{"first_message_index":0,"forwarded_count":0,"is_verified":false}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "session data with a negative index",
            put.clone(),
            &session,
            a,
            Some(&good_key.replace(r#""first_message_index":0"#, r#""first_message_index":-1"#)),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "session data with is_verified as a string",
            put.clone(),
            &session,
            a,
            Some(&good_key.replace(r#""is_verified":false"#, r#""is_verified":"no""#)),
        )
        .expect(bad, "M_BAD_JSON"),
        row("session data that is not JSON", put.clone(), &session, a, Some("{\"first"))
            .expect(bad, "M_NOT_JSON"),
        row(
            "room keys whose sessions are a list",
            put.clone(),
            keys_path(&format!("/{}", enc(ROOM)), &version),
            a,
            Some(r#"{"sessions":[]}"#),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "all keys with a malformed session among good ones",
            put.clone(),
            keys_path("", &version),
            a,
            Some(&format!(
                r#"{{"rooms":{{"{ROOM}":{{"sessions":{{"good":{good_key},"bad":{{}}}}}}}}}}"#
            )),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "all keys under a room ID that is not one",
            put.clone(),
            keys_path("", &version),
            a,
            Some(&format!(r#"{{"rooms":{{"room":{{"sessions":{{"s":{good_key}}}}}}}}}"#)),
        )
        .expect(bad, "M_BAD_JSON"),
        row(
            "a session ID with a NUL character",
            put.clone(),
            keys_path("", &version),
            a,
            Some(&format!(r#"{{"rooms":{{"{ROOM}":{{"sessions":{{"s\u0000t":{good_key}}}}}}}}}"#)),
        )
        .expect(bad, "M_INVALID_PARAM"),
        row(
            "an algorithm with a NUL character",
            post.clone(),
            &versions,
            a,
            Some(&with("m.custom\\u0000", &good_auth)),
        )
        .expect(bad, "M_INVALID_PARAM"),
    ];
    run_table(&server, rows).await;
    // Nothing of the refused requests was stored.
    let (_, info) = server.get(&format!("{versions}/{version}"), &alice.access_token).await;
    assert_eq!(info["count"], 0, "{info}");
}
