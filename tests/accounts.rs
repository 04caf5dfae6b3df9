//! Accounts over HTTP against the real server: registration in its three modes, availability,
//! registration tokens, login, logout, whoami, password change, deactivation, profiles, devices,
//! rate limits, and tables of bad input with their exact status and errcode.

mod common;

use common::{
    TestServer, assert_error, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// A `hearth.toml` for `localhost` with extra lines appended.
fn config(extra: &str) -> String {
    format!("server_name = \"localhost\"\n{extra}")
}

#[track_caller]
fn password_of(name: &str) -> String {
    format!("password-{name}")
}

async fn whoami(server: &TestServer, token: &str) -> (StatusCode, Value) {
    server.get(&format!("{V3}/account/whoami"), token).await
}

/// The `auth` object of an `m.login.password` UIA stage.
fn password_auth(user_id: &str, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user_id },
        "password": password,
    });
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}

/// The stages a UIA reply lists as completed (the field may be left out when empty).
fn completed(reply: &Value) -> Vec<String> {
    reply["completed"]
        .as_array()
        .map(|stages| stages.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Asserts a UIA 401 offering exactly `flows` and returns its session.
#[track_caller]
fn assert_uia(got: &(StatusCode, Value), flows: &[&[&str]]) -> String {
    assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{}", got.1);
    let expected: Vec<Value> = flows.iter().map(|stages| json!({ "stages": stages })).collect();
    assert_eq!(got.1["flows"], json!(expected), "{}", got.1);
    let session = got.1["session"].as_str().expect("a UIA session").to_owned();
    assert!(!session.is_empty());
    session
}

// ---------------------------------------------------------------------------------------------
// Registration

#[tokio::test]
async fn open_registration_starts_with_the_dummy_flow_then_creates_the_account() {
    let server = TestServer::start().await;
    let path = format!("{V3}/register");

    // Without `auth`: the 401 that lists the flows and opens a session.
    let body = json!({ "username": "alice", "password": "secret-a" });
    let first = server.call(Method::POST, &path, None, Some(body.clone())).await;
    let session = assert_uia(&first, &[&["m.login.dummy"]]);
    assert_eq!(completed(&first.1), Vec::<String>::new(), "{}", first.1);
    // Nothing was created by the challenge.
    let available = server
        .call(Method::GET, &format!("{V3}/register/available?username=alice"), None, None)
        .await;
    assert_eq!(available, (StatusCode::OK, json!({ "available": true })));

    // Completing the dummy stage in that session creates the account and logs it in.
    let mut body = body;
    body["auth"] = json!({ "type": "m.login.dummy", "session": session });
    body["initial_device_display_name"] = json!("Alice's phone");
    let (status, json) = server.call(Method::POST, &path, None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["user_id"], "@alice:localhost");
    let token = json["access_token"].as_str().expect("an access token");
    let device_id = json["device_id"].as_str().expect("a device ID");
    let me = whoami(&server, token).await;
    assert_eq!(me.0, StatusCode::OK, "{}", me.1);
    assert_eq!(me.1["user_id"], "@alice:localhost");
    assert_eq!(me.1["device_id"], device_id);
    let (status, devices) = server.get(&format!("{V3}/devices"), token).await;
    assert_eq!(status, StatusCode::OK, "{devices}");
    assert_eq!(devices["devices"][0]["device_id"], device_id);
    assert_eq!(devices["devices"][0]["display_name"], "Alice's phone");

    // The session is used up: replaying it is refused.
    let replay = json!({
        "username": "alice2",
        "password": "x",
        "auth": { "type": "m.login.dummy", "session": session },
    });
    let replayed = server.call(Method::POST, &path, None, Some(replay)).await;
    assert_error(&replayed, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // The password works for login.
    let session = server.login_ok("alice", "secret-a", None).await;
    assert_eq!(session.user_id, "@alice:localhost");

    // The name is now taken.
    let again = json!({
        "username": "alice",
        "password": "other",
        "auth": { "type": "m.login.dummy" },
    });
    let taken = server.call(Method::POST, &path, None, Some(again)).await;
    assert_error(&taken, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
}

#[tokio::test]
async fn registration_options_inhibit_login_device_id_and_generated_names() {
    let server = TestServer::start().await;
    let path = format!("{V3}/register");

    let body = json!({
        "username": "quiet",
        "password": "pw-quiet",
        "inhibit_login": true,
        "auth": { "type": "m.login.dummy" },
    });
    let (status, json) = server.call(Method::POST, &path, None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["user_id"], "@quiet:localhost");
    assert!(json["access_token"].is_null(), "no login with inhibit_login: {json}");
    assert!(json["device_id"].is_null(), "no device with inhibit_login: {json}");
    let quiet = server.login_ok("quiet", "pw-quiet", None).await;
    let (_, devices) = server.get(&format!("{V3}/devices"), &quiet.access_token).await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1), "{devices}");

    let body = json!({
        "username": "chosen",
        "password": "pw",
        "device_id": "MYDEVICE",
        "auth": { "type": "m.login.dummy" },
    });
    let (status, json) = server.call(Method::POST, &path, None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["device_id"], "MYDEVICE");

    // No user name: the server picks one on its own server name.
    let body = json!({ "password": "pw", "auth": { "type": "m.login.dummy" } });
    let (status, json) = server.call(Method::POST, &path, None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let user_id = json["user_id"].as_str().unwrap();
    assert!(user_id.starts_with('@') && user_id.ends_with(":localhost"), "{user_id}");
    let me = whoami(&server, json["access_token"].as_str().unwrap()).await;
    assert_eq!(me.1["user_id"], user_id);
}

#[tokio::test]
async fn token_registration_needs_a_configured_token() {
    let toml =
        config("[registration]\nmode = \"token\"\ntokens = [\"family-secret\", \"other\"]\n");
    let server = TestServer::start_with_config(&toml, &["--registration", "token"]).await;
    let path = format!("{V3}/register");

    let body = json!({ "username": "kid", "password": "pw-kid" });
    let first = server.call(Method::POST, &path, None, Some(body.clone())).await;
    let session = assert_uia(&first, &[&["m.login.registration_token"]]);

    // A wrong token: the 401 again, with the stage's error, and no account.
    let mut wrong = body.clone();
    wrong["auth"] =
        json!({ "type": "m.login.registration_token", "token": "guess", "session": session });
    let refused = server.call(Method::POST, &path, None, Some(wrong)).await;
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{}", refused.1);
    assert_eq!(refused.1["errcode"], "M_FORBIDDEN", "{}", refused.1);
    assert_eq!(refused.1["session"], session.as_str());
    assert_eq!(completed(&refused.1), Vec::<String>::new(), "{}", refused.1);

    // The dummy stage does not complete the token flow.
    let mut dummy = body.clone();
    dummy["auth"] = json!({ "type": "m.login.dummy", "session": session });
    let not_enough = server.call(Method::POST, &path, None, Some(dummy)).await;
    assert_eq!(assert_uia(&not_enough, &[&["m.login.registration_token"]]), session);
    assert!(not_enough.1.get("access_token").is_none());
    let available = server
        .call(Method::GET, &format!("{V3}/register/available?username=kid"), None, None)
        .await;
    assert_eq!(available, (StatusCode::OK, json!({ "available": true })));

    // The right token creates the account.
    let mut right = body;
    right["auth"] = json!({ "type": "m.login.registration_token", "token": "family-secret", "session": session });
    let (status, json) = server.call(Method::POST, &path, None, Some(right)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["user_id"], "@kid:localhost");
    assert_eq!(whoami(&server, json["access_token"].as_str().unwrap()).await.0, StatusCode::OK);

    // The validity endpoint answers for each token.
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    for (token, valid) in [("family-secret", true), ("other", true), ("guess", false), ("", false)]
    {
        let got =
            server.call(Method::GET, &format!("{validity}?token={}", enc(token)), None, None).await;
        assert_eq!(got, (StatusCode::OK, json!({ "valid": valid })), "token {token:?}");
    }
}

#[tokio::test]
async fn closed_registration_is_forbidden() {
    let server = TestServer::start_with(&[]).await;
    let path = format!("{V3}/register");
    for body in [
        json!({ "username": "alice", "password": "pw" }),
        json!({ "username": "alice", "password": "pw", "auth": { "type": "m.login.dummy" } }),
        json!({}),
    ] {
        let got = server.call(Method::POST, &path, None, Some(body.clone())).await;
        assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // The token validity endpoint: no token is valid where tokens are not used.
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc";
    let got = server.call(Method::GET, validity, None, None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn guest_registration_is_forbidden() {
    let server = TestServer::start().await;
    let body = json!({ "password": "pw", "auth": { "type": "m.login.dummy" } });
    let got =
        server.call(Method::POST, &format!("{V3}/register?kind=guest"), None, Some(body)).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
}

#[tokio::test]
async fn username_availability_reports_taken_and_invalid_names() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let check = |name: &str| {
        let path = format!("{V3}/register/available?username={}", enc(name));
        let server = &server;
        async move { server.call(Method::GET, &path, None, None).await }
    };
    assert_eq!(check("bob").await, (StatusCode::OK, json!({ "available": true })));
    assert_error(&check("alice").await, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    for invalid in ["has space", "@alice:localhost", "alice:localhost", "", "Ünïcode", "ALICE"] {
        let got = check(invalid).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    }
    let too_long = "a".repeat(300);
    assert_error(&check(&too_long).await, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
}

// ---------------------------------------------------------------------------------------------
// Login, logout, whoami

#[tokio::test]
async fn login_lists_password_and_token_flows_and_accepts_each_identifier_form() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;

    let (status, flows) = server.call(Method::GET, &format!("{V3}/login"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{flows}");
    let types: Vec<&str> =
        flows["flows"].as_array().unwrap().iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(types, ["m.login.password", "m.login.token", "m.login.application_service"]);

    // Localpart, full user ID, and the deprecated top-level `user`.
    let by_name = server.login_ok("alice", &password_of("alice"), None).await;
    assert_eq!(by_name.user_id, alice.user_id);
    let by_id = server.login_ok("@alice:localhost", &password_of("alice"), None).await;
    assert_eq!(by_id.user_id, alice.user_id);
    let legacy =
        json!({ "type": "m.login.password", "user": "alice", "password": "password-alice" });
    let (status, json) =
        server.call(Method::POST, &format!("{V3}/login"), None, Some(legacy)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["user_id"], alice.user_id);

    // Every login is its own device with its own token.
    let tokens = [&alice.access_token, &by_name.access_token, &by_id.access_token];
    let devices = [&alice.device_id, &by_name.device_id, &by_id.device_id];
    for (i, token) in tokens.iter().enumerate() {
        let me = whoami(&server, token).await;
        assert_eq!(me.0, StatusCode::OK, "{}", me.1);
        assert_eq!(me.1["device_id"], devices[i].as_str());
    }
    assert_ne!(by_name.device_id, by_id.device_id);

    // A chosen device ID and display name.
    let chosen = server.login_ok("alice", &password_of("alice"), Some("LAPTOP")).await;
    assert_eq!(chosen.device_id, "LAPTOP");
    let (status, device) = server.get(&format!("{V3}/devices/LAPTOP"), &chosen.access_token).await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert_eq!(device["display_name"], "LAPTOP display name");
}

#[tokio::test]
async fn login_with_a_known_device_id_replaces_that_devices_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let first = server.login_ok("alice", &password_of("alice"), Some("LAPTOP")).await;
    // Resolve the token once, so a cached session would be noticed.
    assert_eq!(whoami(&server, &first.access_token).await.0, StatusCode::OK);
    let second = server.login_ok("alice", &password_of("alice"), Some("LAPTOP")).await;
    assert_eq!(second.device_id, "LAPTOP");
    assert_ne!(second.access_token, first.access_token);
    let old = whoami(&server, &first.access_token).await;
    assert_error(&old, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    let new = whoami(&server, &second.access_token).await;
    assert_eq!((new.0, new.1["device_id"].clone()), (StatusCode::OK, json!("LAPTOP")));
    assert_eq!(whoami(&server, &alice.access_token).await.0, StatusCode::OK);
    // Still one LAPTOP device, keeping its display name.
    let (_, json) = server.get(&format!("{V3}/devices"), &second.access_token).await;
    let laptops: Vec<&Value> =
        json["devices"].as_array().unwrap().iter().filter(|d| d["device_id"] == "LAPTOP").collect();
    assert_eq!(laptops.len(), 1, "{json}");
    assert_eq!(laptops[0]["display_name"], "LAPTOP display name");

    // Bob may use the same device ID: devices belong to users, and alice keeps hers.
    server.register("bob").await;
    let bob = server.login_ok("bob", &password_of("bob"), Some("LAPTOP")).await;
    assert_eq!(whoami(&server, &bob.access_token).await.1["user_id"], "@bob:localhost");
    assert_eq!(whoami(&server, &second.access_token).await.1["user_id"], "@alice:localhost");
}

#[tokio::test]
async fn login_refuses_wrong_credentials() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let path = format!("{V3}/login");
    assert_error(&server.login("alice", "wrong").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&server.login("alice", "").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&server.login("nobody", "x").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // The password of another user never matches.
    server.register("bob").await;
    let got = server.login("alice", &password_of("bob")).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A user of another server.
    let got = server.login("@alice:elsewhere.example", &password_of("alice")).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // A login token that was never issued (tests/tokens.rs has those that were).
    let token_login = json!({ "type": "m.login.token", "token": "abc" });
    let got = server.call(Method::POST, &path, None, Some(token_login)).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Login types Hearth does not offer.
    let sso_login = json!({ "type": "m.login.sso" });
    let got = server.call(Method::POST, &path, None, Some(sso_login)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_UNKNOWN");
}

#[tokio::test]
async fn logout_revokes_one_token_and_logout_all_every_token() {
    let mut server = TestServer::start().await;
    let first = server.register("alice").await;
    let second = server.login_ok("alice", &password_of("alice"), None).await;
    let third = server.login_ok("alice", &password_of("alice"), None).await;
    let bob = server.register("bob").await;

    let (status, json) = server.post(&format!("{V3}/logout"), &first.access_token, json!({})).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
    assert_error(
        &whoami(&server, &first.access_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(whoami(&server, &second.access_token).await.0, StatusCode::OK);
    // The logged-out device is gone from the list.
    let (_, devices) = server.get(&format!("{V3}/devices"), &second.access_token).await;
    let mut ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = [second.device_id.as_str(), third.device_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // Revocation is stored: it holds after a restart, as does the surviving token.
    server.kill_and_restart().await;
    assert_error(
        &whoami(&server, &first.access_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_eq!(whoami(&server, &second.access_token).await.0, StatusCode::OK);

    let (status, _) =
        server.post(&format!("{V3}/logout/all"), &second.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    for token in [&second.access_token, &third.access_token] {
        let got = whoami(&server, token).await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    }
    // Other users keep their sessions, and alice can log in again.
    assert_eq!(whoami(&server, &bob.access_token).await.0, StatusCode::OK);
    let again = server.login_ok("alice", &password_of("alice"), None).await;
    let (_, devices) = server.get(&format!("{V3}/devices"), &again.access_token).await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1), "{devices}");

    // A revoked token cannot log out again.
    let got = server.post(&format!("{V3}/logout"), &first.access_token, json!({})).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn whoami_names_the_user_and_device_of_the_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    for user in [&alice, &bob] {
        let (status, json) = whoami(&server, &user.access_token).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["user_id"], user.user_id.as_str());
        assert_eq!(json["device_id"], user.device_id.as_str());
        assert_ne!(json["is_guest"], true);
    }
    // The deprecated query parameter works too.
    let path = format!("{V3}/account/whoami?access_token={}", enc(&bob.access_token));
    let (status, json) = server.call(Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["user_id"], bob.user_id.as_str());
}

// ---------------------------------------------------------------------------------------------
// Password and deactivation

#[tokio::test]
async fn password_change_needs_the_old_password_and_logs_out_other_devices() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let other = server.login_ok("alice", &password_of("alice"), None).await;
    server.register("bob").await;
    let path = format!("{V3}/account/password");

    // No auth: the UIA challenge with the password flow.
    let first = server.post(&path, &alice.access_token, json!({ "new_password": "new-pw" })).await;
    let session = assert_uia(&first, &[&["m.login.password"]]);

    // A wrong password, or bob's identity, is a stage error and changes nothing.
    for auth in [
        password_auth(&alice.user_id, "wrong", Some(&session)),
        password_auth("@bob:localhost", &password_of("bob"), Some(&session)),
    ] {
        let body = json!({ "new_password": "new-pw", "auth": auth });
        let got = server.post(&path, &alice.access_token, body).await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{}", got.1);
        assert_eq!(got.1["errcode"], "M_FORBIDDEN", "{}", got.1);
        assert_eq!(got.1["flows"], json!([{ "stages": ["m.login.password"] }]));
    }
    assert_eq!(server.login("alice", &password_of("alice")).await.0, StatusCode::OK);

    // The right password (by localpart) changes it.
    let auth = password_auth("alice", &password_of("alice"), Some(&session));
    let (status, json) = server
        .post(&path, &alice.access_token, json!({ "new_password": "new-pw", "auth": auth }))
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_error(
        &server.login("alice", &password_of("alice")).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let fresh = server.login_ok("alice", "new-pw", None).await;

    // `logout_devices` defaults to true: the other devices are logged out, this one is kept.
    assert_eq!(whoami(&server, &alice.access_token).await.0, StatusCode::OK);
    assert_error(
        &whoami(&server, &other.access_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );

    // With `logout_devices: false` every session stays.
    let auth = password_auth(&alice.user_id, "new-pw", None);
    let body = json!({ "new_password": "newer-pw", "logout_devices": false, "auth": auth });
    let (status, json) = server.post(&path, &alice.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(whoami(&server, &fresh.access_token).await.0, StatusCode::OK);
    assert_eq!(server.login("alice", "newer-pw").await.0, StatusCode::OK);
    assert_eq!(server.login("alice", "new-pw").await.0, StatusCode::FORBIDDEN);

    // Bob's UIA session cannot be used by alice.
    let bob = server.login_ok("bob", &password_of("bob"), None).await;
    let bob_challenge = server.post(&path, &bob.access_token, json!({ "new_password": "x" })).await;
    let bob_session = assert_uia(&bob_challenge, &[&["m.login.password"]]);
    let auth = password_auth(&alice.user_id, "newer-pw", Some(&bob_session));
    let got =
        server.post(&path, &alice.access_token, json!({ "new_password": "x", "auth": auth })).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_eq!(server.login("alice", "newer-pw").await.0, StatusCode::OK);
}

#[tokio::test]
async fn deactivation_needs_the_password_then_the_account_is_gone() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&bob, json!({ "preset": "public_chat" })).await;
    server.join(&alice, &room).await;
    let path = format!("{V3}/account/deactivate");

    let first = server.post(&path, &alice.access_token, json!({})).await;
    let session = assert_uia(&first, &[&["m.login.password"]]);
    let wrong = json!({ "auth": password_auth(&alice.user_id, "wrong", Some(&session)) });
    let refused = server.post(&path, &alice.access_token, wrong).await;
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{}", refused.1);
    assert_eq!(whoami(&server, &alice.access_token).await.0, StatusCode::OK);

    let right =
        json!({ "auth": password_auth(&alice.user_id, &password_of("alice"), Some(&session)) });
    let (status, json) = server.post(&path, &alice.access_token, right).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["id_server_unbind_result"], "no-support");

    // Every token is revoked, login is refused, the name stays taken.
    assert_error(
        &whoami(&server, &alice.access_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let got = server.login("alice", &password_of("alice")).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_USER_DEACTIVATED");
    let available = server
        .call(Method::GET, &format!("{V3}/register/available?username=alice"), None, None)
        .await;
    assert_error(&available, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    let register =
        json!({ "username": "alice", "password": "pw", "auth": { "type": "m.login.dummy" } });
    let got = server.call(Method::POST, &format!("{V3}/register"), None, Some(register)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_USER_IN_USE");

    // Alice left the room she was in.
    let member = format!("{V3}/rooms/{}/state/m.room.member/{}", enc(&room), enc(&alice.user_id));
    let (status, json) = server.get(&member, &bob.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["membership"], "leave");
    // And her profile is no longer served.
    let profile =
        server.get(&format!("{V3}/profile/{}", enc(&alice.user_id)), &bob.access_token).await;
    assert_error(&profile, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// Profiles

#[tokio::test]
async fn profile_changes_are_stored_and_repeated_in_joined_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let joined = server.create_room(&bob, json!({ "preset": "public_chat" })).await;
    server.join(&alice, &joined).await;
    let left = server.create_room(&bob, json!({ "preset": "public_chat" })).await;
    server.join(&alice, &left).await;
    let (status, _) = server
        .post(&format!("{V3}/rooms/{}/leave", enc(&left)), &alice.access_token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let me = enc(&alice.user_id);
    // Nothing set yet.
    let unset =
        server.call(Method::GET, &format!("{V3}/profile/{me}/displayname"), None, None).await;
    assert_error(&unset, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    let (status, json) = server
        .put(
            &format!("{V3}/profile/{me}/displayname"),
            &alice.access_token,
            json!({ "displayname": "Alice A." }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json) = server
        .put(
            &format!("{V3}/profile/{me}/avatar_url"),
            &alice.access_token,
            json!({ "avatar_url": "mxc://localhost/avatar1" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");

    // Readable by anyone, without a token.
    let got = server.call(Method::GET, &format!("{V3}/profile/{me}/displayname"), None, None).await;
    assert_eq!(got, (StatusCode::OK, json!({ "displayname": "Alice A." })));
    let got = server.call(Method::GET, &format!("{V3}/profile/{me}/avatar_url"), None, None).await;
    assert_eq!(got, (StatusCode::OK, json!({ "avatar_url": "mxc://localhost/avatar1" })));
    let got = server.call(Method::GET, &format!("{V3}/profile/{me}"), None, None).await;
    assert_eq!(
        got,
        (
            StatusCode::OK,
            json!({ "displayname": "Alice A.", "avatar_url": "mxc://localhost/avatar1" })
        )
    );

    // The membership event in the joined room carries the new profile.
    let member = |room: &str| format!("{V3}/rooms/{}/state/m.room.member/{me}", enc(room));
    let (status, json) = server.get(&member(&joined), &bob.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["membership"], "join");
    assert_eq!(json["displayname"], "Alice A.");
    assert_eq!(json["avatar_url"], "mxc://localhost/avatar1");
    // The room she left is untouched: she did not rejoin it.
    let (status, json) = server.get(&member(&left), &bob.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["membership"], "leave");
    assert!(json.get("displayname").is_none_or(|name| name != "Alice A."), "{json}");

    // A second change replaces the first everywhere.
    let (status, _) = server
        .put(
            &format!("{V3}/profile/{me}/displayname"),
            &alice.access_token,
            json!({ "displayname": "Al" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, json) = server.get(&member(&joined), &bob.access_token).await;
    assert_eq!(json["displayname"], "Al");
    assert_eq!(json["avatar_url"], "mxc://localhost/avatar1");

    // Bob may not change alice's profile; hers is unchanged.
    let got = server
        .put(
            &format!("{V3}/profile/{me}/displayname"),
            &bob.access_token,
            json!({ "displayname": "Mallory" }),
        )
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let got = server.call(Method::GET, &format!("{V3}/profile/{me}/displayname"), None, None).await;
    assert_eq!(got, (StatusCode::OK, json!({ "displayname": "Al" })));
}

// ---------------------------------------------------------------------------------------------
// Devices

#[tokio::test]
async fn a_device_shows_when_and_from_where_it_was_last_used() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let tablet = server.login_ok("alice", &password_of("alice"), Some("TABLET")).await;
    let path = format!("{V3}/devices/TABLET");
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;

    // The tablet makes a request; its device is written in the background, soon after.
    assert_eq!(whoami(&server, &tablet.access_token).await.0, StatusCode::OK);
    let mut device = Value::Null;
    for _ in 0..50 {
        device = server.get(&path, &alice.access_token).await.1;
        if device["last_seen_ts"].is_i64() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(device["last_seen_ip"], "127.0.0.1", "{device}");
    let seen = device["last_seen_ts"].as_i64().unwrap();
    assert!(seen >= before - 1_000, "{seen} is after the request ({before})");
    // A device whose token was never used after its login has no time yet.
    server.login_ok("alice", &password_of("alice"), Some("NEVER")).await;
    let (_, never) = server.get(&format!("{V3}/devices/NEVER"), &alice.access_token).await;
    assert!(never.get("last_seen_ts").is_none_or(Value::is_null), "{never}");
}

#[tokio::test]
async fn devices_can_be_listed_read_renamed_and_deleted_with_uia() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let laptop = server.login_ok("alice", &password_of("alice"), Some("LAPTOP")).await;
    let tablet = server.login_ok("alice", &password_of("alice"), Some("TABLET")).await;
    let bob = server.register("bob").await;

    let (status, json) = server.get(&format!("{V3}/devices"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let mut ids: Vec<&str> = json["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec!["LAPTOP", "TABLET", alice.device_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    let (status, json) = server.get(&format!("{V3}/devices/LAPTOP"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["device_id"], "LAPTOP");
    assert_eq!(json["display_name"], "LAPTOP display name");

    // Rename.
    let (status, json) = server
        .put(
            &format!("{V3}/devices/LAPTOP"),
            &alice.access_token,
            json!({ "display_name": "Work" }),
        )
        .await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));
    let (_, json) = server.get(&format!("{V3}/devices/LAPTOP"), &laptop.access_token).await;
    assert_eq!(json["display_name"], "Work");

    // Unknown devices, and other users' devices, are not found.
    let missing = server.get(&format!("{V3}/devices/NOPE"), &alice.access_token).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let renamed = server
        .put(&format!("{V3}/devices/NOPE"), &alice.access_token, json!({ "display_name": "x" }))
        .await;
    assert_error(&renamed, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let theirs = server.get(&format!("{V3}/devices/LAPTOP"), &bob.access_token).await;
    assert_error(&theirs, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let theirs = server
        .put(&format!("{V3}/devices/LAPTOP"), &bob.access_token, json!({ "display_name": "x" }))
        .await;
    assert_error(&theirs, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (_, json) = server.get(&format!("{V3}/devices/LAPTOP"), &alice.access_token).await;
    assert_eq!(json["display_name"], "Work");

    // Delete: UIA first; a wrong password keeps the device.
    let path = format!("{V3}/devices/LAPTOP");
    let first =
        server.call(Method::DELETE, &path, Some(&alice.access_token), Some(json!({}))).await;
    let session = assert_uia(&first, &[&["m.login.password"]]);
    let wrong = json!({ "auth": password_auth(&alice.user_id, "wrong", Some(&session)) });
    let refused = server.call(Method::DELETE, &path, Some(&alice.access_token), Some(wrong)).await;
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{}", refused.1);
    assert_eq!(refused.1["errcode"], "M_FORBIDDEN", "{}", refused.1);
    assert_eq!(whoami(&server, &laptop.access_token).await.0, StatusCode::OK);
    let right =
        json!({ "auth": password_auth(&alice.user_id, &password_of("alice"), Some(&session)) });
    let (status, json) =
        server.call(Method::DELETE, &path, Some(&alice.access_token), Some(right)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_error(
        &whoami(&server, &laptop.access_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let gone = server.get(&path, &alice.access_token).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let deleted_again =
        server.call(Method::DELETE, &path, Some(&alice.access_token), Some(json!({}))).await;
    assert_error(&deleted_again, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Bob cannot delete alice's device, even with his own password.
    let theirs = json!({ "auth": password_auth(&bob.user_id, &password_of("bob"), None) });
    let got = server
        .call(
            Method::DELETE,
            &format!("{V3}/devices/TABLET"),
            Some(&bob.access_token),
            Some(theirs),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_eq!(whoami(&server, &tablet.access_token).await.0, StatusCode::OK);

    // Bulk delete.
    let bulk = format!("{V3}/delete_devices");
    let first = server.post(&bulk, &alice.access_token, json!({ "devices": ["TABLET"] })).await;
    let session = assert_uia(&first, &[&["m.login.password"]]);
    let body = json!({
        "devices": ["TABLET"],
        "auth": password_auth(&alice.user_id, &password_of("alice"), Some(&session)),
    });
    let (status, json) = server.post(&bulk, &alice.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_error(
        &whoami(&server, &tablet.access_token).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let (_, json) = server.get(&format!("{V3}/devices"), &alice.access_token).await;
    assert_eq!(json["devices"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json["devices"][0]["device_id"], alice.device_id.as_str());
}

// ---------------------------------------------------------------------------------------------
// Rate limits

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let toml = config("[limits]\nlogin_attempts_per_minute = 4\n");
    let server = TestServer::start_with_config(&toml, &["--registration", "open"]).await;
    let alice = server.register("alice").await; // attempt 1
    for _ in 0..3 {
        // attempts 2 to 4
        assert_error(&server.login("alice", "wrong").await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    // The bucket is empty: even the right password is refused, and so is registration.
    let limited = server.login("alice", &password_of("alice")).await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let retry = limited.1["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(retry > 0, "{}", limited.1);
    let register =
        json!({ "username": "bob", "password": "pw", "auth": { "type": "m.login.dummy" } });
    let got = server.call(Method::POST, &format!("{V3}/register"), None, Some(register)).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let got = server
        .call(Method::GET, &format!("{V3}/register/available?username=bob"), None, None)
        .await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    // Authenticated requests are not affected.
    assert_eq!(whoami(&server, &alice.access_token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn password_confirmations_are_rate_limited_per_account() {
    let toml = config("[limits]\nlogin_attempts_per_minute = 3\n");
    let server = TestServer::start_with_config(&toml, &["--registration", "open"]).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("{V3}/account/password");
    let change = |password: &str| {
        json!({ "new_password": "new", "auth": {
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "alice" },
            "password": password,
        }})
    };
    // Someone holding alice's token guesses her password: three guesses, then no more, and
    // not even the right password gets through until the bucket refills.
    for _ in 0..3 {
        let guessed = server
            .call(Method::POST, &path, Some(&alice.access_token), Some(change("guess")))
            .await;
        assert_error(&guessed, StatusCode::UNAUTHORIZED, "M_FORBIDDEN");
    }
    for password in ["guess", &password_of("alice")] {
        let got = server
            .call(Method::POST, &path, Some(&alice.access_token), Some(change(password)))
            .await;
        assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    }
    // Bob's account has a bucket of its own, and alice's other requests go on.
    let got = server
        .call(
            Method::POST,
            &path,
            Some(&bob.access_token),
            Some(json!({ "new_password": "new", "auth": {
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "bob" },
                "password": password_of("bob"),
            }})),
        )
        .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(whoami(&server, &alice.access_token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn registration_attempts_are_rate_limited() {
    let toml = config("[limits]\nlogin_attempts_per_minute = 2\n");
    let server = TestServer::start_with_config(&toml, &["--registration", "open"]).await;
    let path = format!("{V3}/register");
    let body = json!({ "username": "alice", "password": "pw" });
    for _ in 0..2 {
        let got = server.call(Method::POST, &path, None, Some(body.clone())).await;
        assert_uia(&got, &[&["m.login.dummy"]]);
    }
    let mut complete = body;
    complete["auth"] = json!({ "type": "m.login.dummy" });
    let got = server.call(Method::POST, &path, None, Some(complete)).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    assert!(got.1["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0), "{}", got.1);
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn bad_account_requests_get_the_exact_error() {
    use StatusCode as S;
    let toml = config("[limits]\nlogin_attempts_per_minute = 1000\n");
    let server = TestServer::start_with_config(&toml, &["--registration", "open"]).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let a = Some(alice.access_token.as_str());
    let me = enc(&alice.user_id);
    let them = enc(&bob.user_id);
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);

    // Bodies too long to sit in their rows, byte for byte as they are sent.
    let as_alice = r#"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"}"#;
    let untyped_login =
        r#"{"identifier":{"type":"m.id.user","user":"alice"},"password":"password-alice"}"#;
    let full_user_id =
        r#"{"username":"@carol:localhost","password":"x","auth":{"type":"m.login.dummy"}}"#;
    let long_device_name = format!(
        r#"{as_alice},"password":"password-alice","initial_device_display_name":"{}"}}"#,
        "x".repeat(300)
    );
    let long_device_id = format!(
        concat!(
            r#"{{"username":"longdevice","password":"x","device_id":"{}","#,
            r#""auth":{{"type":"m.login.dummy"}}}}"#,
        ),
        "D".repeat(300)
    );

    let rows = vec![
        // Bodies that are not JSON, or JSON of the wrong shape.
        row(
            "register body that is not JSON",
            post.clone(),
            format!("{V3}/register"),
            None,
            Some("{not json"),
        )
        .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("login body cut short", post.clone(), format!("{V3}/login"), None, Some("{\"type\": "))
            .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row("login body is an array", post.clone(), format!("{V3}/login"), None, Some("[1, 2]"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "login password is a number",
            post.clone(),
            format!("{V3}/login"),
            None,
            Some(&format!(r#"{as_alice},"password":5}}"#)),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "register username is a number",
            post.clone(),
            format!("{V3}/register"),
            None,
            Some(r#"{"username": 5, "password": "x"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "register inhibit_login is a string",
            post.clone(),
            format!("{V3}/register"),
            None,
            Some(r#"{"inhibit_login": "yes"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "display name body that is prose",
            put.clone(),
            format!("{V3}/profile/{me}/displayname"),
            a,
            Some("nope"),
        )
        .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row(
            "display name is a number",
            put.clone(),
            format!("{V3}/profile/{me}/displayname"),
            a,
            Some(r#"{"displayname": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "avatar URL is a list",
            put.clone(),
            format!("{V3}/profile/{me}/avatar_url"),
            a,
            Some(r#"{"avatar_url": ["x"]}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "device display name is a number",
            put.clone(),
            format!("{V3}/devices/{}", alice.device_id),
            a,
            Some(r#"{"display_name": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "new password is a number",
            post.clone(),
            format!("{V3}/account/password"),
            a,
            Some(r#"{"new_password": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "password change body that is not JSON",
            post.clone(),
            format!("{V3}/account/password"),
            a,
            Some("{{"),
        )
        .expect(S::BAD_REQUEST, "M_NOT_JSON"),
        row(
            "devices to delete is a string, not a list",
            post.clone(),
            format!("{V3}/delete_devices"),
            a,
            Some(r#"{"devices": "ABC"}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        // `/login` without a `type` (ruma's parser panics on it; still the client's bad JSON).
        row("login with no type", post.clone(), format!("{V3}/login"), None, Some("{}"))
            .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "login with an empty body, so no type",
            post.clone(),
            format!("{V3}/login"),
            None,
            Some(""),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "password login that leaves out the type",
            post.clone(),
            format!("{V3}/login"),
            None,
            Some(untyped_login),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "login type is a number",
            post.clone(),
            format!("{V3}/login"),
            None,
            Some(r#"{"type": 5}"#),
        )
        .expect(S::BAD_REQUEST, "M_BAD_JSON"),
        // Registration input.
        row(
            "username with a space",
            post.clone(),
            format!("{V3}/register"),
            None,
            Some(r#"{"username":"has space","password":"x","auth":{"type":"m.login.dummy"}}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_USERNAME"),
        row(
            "username that is a full user ID, not a localpart",
            post.clone(),
            format!("{V3}/register"),
            None,
            Some(full_user_id),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_USERNAME"),
        row(
            "registration without a password",
            post.clone(),
            format!("{V3}/register"),
            None,
            Some(r#"{"username":"carol","auth":{"type":"m.login.dummy"}}"#),
        )
        .expect(S::BAD_REQUEST, "M_MISSING_PARAM"),
        row(
            "username already registered (by alice)",
            post.clone(),
            format!("{V3}/register"),
            None,
            Some(r#"{"username":"alice","password":"x","auth":{"type":"m.login.dummy"}}"#),
        )
        .expect(S::BAD_REQUEST, "M_USER_IN_USE"),
        // Missing and unknown tokens.
        row("whoami without a token", get.clone(), format!("{V3}/account/whoami"), None, None)
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("device list without a token", get.clone(), format!("{V3}/devices"), None, None)
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("logout without a token", post.clone(), format!("{V3}/logout"), None, Some("{}"))
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "logout everywhere without a token",
            post.clone(),
            format!("{V3}/logout/all"),
            None,
            Some("{}"),
        )
        .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "setting a display name without a token",
            put.clone(),
            format!("{V3}/profile/{me}/displayname"),
            None,
            Some(r#"{"displayname":"x"}"#),
        )
        .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "password change without a token",
            post.clone(),
            format!("{V3}/account/password"),
            None,
            Some(r#"{"new_password":"x"}"#),
        )
        .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "deactivation without a token",
            post.clone(),
            format!("{V3}/account/deactivate"),
            None,
            Some("{}"),
        )
        .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "whoami with a made-up token in Hearth's format",
            get.clone(),
            format!("{V3}/account/whoami"),
            Some("hth_bogus"),
            None,
        )
        .expect(S::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        row(
            "whoami with a made-up token in the query string",
            get.clone(),
            format!("{V3}/account/whoami?access_token=bogus"),
            None,
            None,
        )
        .expect(S::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        row(
            "logout with a made-up token",
            post.clone(),
            format!("{V3}/logout"),
            Some("x"),
            Some("{}"),
        )
        .expect(S::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        row(
            "device deletion with a made-up token",
            delete.clone(),
            format!("{V3}/devices/{}", alice.device_id),
            Some("x"),
            Some("{}"),
        )
        .expect(S::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        // Forbidden.
        row(
            "setting another user's display name",
            put.clone(),
            format!("{V3}/profile/{them}/displayname"),
            a,
            Some(r#"{"displayname":"x"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "setting another user's avatar URL",
            put.clone(),
            format!("{V3}/profile/{them}/avatar_url"),
            a,
            Some(r#"{"avatar_url":"mxc://a/b"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "setting a remote user's display name",
            put.clone(),
            format!("{V3}/profile/{}/displayname", enc("@alice:elsewhere.example")),
            a,
            Some(r#"{"displayname":"x"}"#),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        // Invalid user IDs in paths.
        row(
            "profile of a path segment that is not a user ID",
            get.clone(),
            format!("{V3}/profile/not-a-user-id"),
            None,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "profile field of a bare localpart",
            get.clone(),
            format!("{V3}/profile/{}/displayname", enc("alice")),
            None,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "profile of a user ID without a server name",
            get.clone(),
            format!("{V3}/profile/{}", enc("@alice")),
            None,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "setting the display name of a room alias",
            put.clone(),
            format!("{V3}/profile/{}/displayname", enc("#room:localhost")),
            a,
            Some(r#"{"displayname":"x"}"#),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        // Unknown users and devices.
        row(
            "profile of a user who never registered",
            get.clone(),
            format!("{V3}/profile/{}", enc("@nobody:localhost")),
            None,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "avatar URL of a user who never registered",
            get.clone(),
            format!("{V3}/profile/{}/avatar_url", enc("@nobody:localhost")),
            None,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "a device alice does not have",
            get.clone(),
            format!("{V3}/devices/NO_SUCH_DEVICE"),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        // Other parameters.
        row(
            "device display name over 255 bytes",
            put.clone(),
            format!("{V3}/devices/{}", alice.device_id),
            a,
            Some(&format!(r#"{{"display_name": "{}"}}"#, "x".repeat(300))),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "display name over 256 bytes",
            put.clone(),
            format!("{V3}/profile/{me}/displayname"),
            a,
            Some(&format!(r#"{{"displayname": "{}"}}"#, "n".repeat(300))),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "avatar URL over 1000 bytes",
            put.clone(),
            format!("{V3}/profile/{me}/avatar_url"),
            a,
            Some(&format!(r#"{{"avatar_url": "mxc://localhost/{}"}}"#, "a".repeat(1100))),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "registration with a device ID over 255 bytes",
            post.clone(),
            format!("{V3}/register"),
            None,
            Some(&long_device_id),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "login with a device display name over 255 bytes",
            post.clone(),
            format!("{V3}/login"),
            None,
            Some(&long_device_name),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "availability of a username with a space",
            get.clone(),
            format!("{V3}/register/available?username={}", enc("a b")),
            None,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_USERNAME"),
        row(
            "login with the wrong password",
            post.clone(),
            format!("{V3}/login"),
            None,
            Some(&format!(r#"{as_alice},"password":"wrong"}}"#)),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
    ];
    run_table(&server, rows).await;

    // None of it changed anything: no profile was set, no account half-created.
    let got = server.call(Method::GET, &format!("{V3}/profile/{them}"), None, None).await;
    assert_eq!(got, (StatusCode::OK, json!({})));
    let got = server.call(Method::GET, &format!("{V3}/profile/{me}"), None, None).await;
    assert_eq!(got, (StatusCode::OK, json!({})));
    for name in ["longdevice", "carol"] {
        let path = format!("{V3}/register/available?username={name}");
        let got = server.call(Method::GET, &path, None, None).await;
        assert_eq!(got, (StatusCode::OK, json!({ "available": true })), "{name}");
    }
    assert_eq!(whoami(&server, &alice.access_token).await.0, StatusCode::OK);
    assert_eq!(server.login("alice", &password_of("alice")).await.0, StatusCode::OK);
}

/// Odd bodies on every account endpoint: whatever the answer, it is a client error, never a 500,
/// and the server keeps serving.
#[tokio::test]
async fn no_body_shape_makes_an_account_endpoint_fail_internally() {
    let toml = config("[limits]\nlogin_attempts_per_minute = 100000\n");
    let server = TestServer::start_with_config(&toml, &["--registration", "open"]).await;
    let alice = server.register("alice").await;
    let me = enc(&alice.user_id);
    let endpoints = [
        (Method::POST, format!("{V3}/register")),
        (Method::POST, format!("{V3}/login")),
        (Method::POST, format!("{V3}/account/password")),
        (Method::POST, format!("{V3}/account/deactivate")),
        (Method::PUT, format!("{V3}/profile/{me}/displayname")),
        (Method::PUT, format!("{V3}/profile/{me}/avatar_url")),
        (Method::PUT, format!("{V3}/devices/{}", alice.device_id)),
        (Method::DELETE, format!("{V3}/devices/{}", alice.device_id)),
        (Method::POST, format!("{V3}/delete_devices")),
    ];
    let bodies = [
        "",
        "null",
        "{}",
        "[]",
        "\"text\"",
        "5",
        r#"{"type": null}"#,
        r#"{"type": {}}"#,
        r#"{"auth": {}}"#,
        r#"{"auth": null}"#,
        r#"{"auth": {"type": 5}}"#,
        r#"{"auth": {"type": "m.login.password"}}"#,
        r#"{"auth": {"type": "m.login.password", "identifier": {}}}"#,
        r#"{"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user"}, "password": "x"}}"#,
        r#"{"auth": {"type": "m.login.registration_token"}}"#,
        r#"{"auth": {"type": "org.example.custom", "session": "nope"}}"#,
        r#"{"type": "m.login.password"}"#,
        r#"{"type": "m.login.password", "identifier": {}}"#,
        r#"{"type": "m.login.password", "identifier": {"type": "m.id.thirdparty"}, "password": "x"}"#,
        r#"{"type": "m.login.password", "identifier": {"type": "m.id.phone", "country": "GB", "phone": "1"}, "password": "x"}"#,
        r#"{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": ""}, "password": "x"}"#,
        r#"{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@:localhost"}, "password": "x"}"#,
        r#"{"type": "m.login.token"}"#,
        r#"{"type": "m.login.application_service"}"#,
        r#"{"displayname": null, "avatar_url": null, "display_name": null}"#,
        r#"{"devices": null, "new_password": null, "username": null}"#,
        r#"{"username": "", "password": ""}"#,
        r#"{"username": "\u0000", "password": "x", "auth": {"type": "m.login.dummy"}}"#,
        r#"{"device_id": "", "password": "x", "auth": {"type": "m.login.dummy"}}"#,
    ];
    let mut failures = Vec::new();
    for (method, path) in &endpoints {
        for body in bodies {
            let token = Some(alice.access_token.as_str());
            let (status, json) =
                server.call_raw(method.clone(), path, token, body.as_bytes().to_vec()).await;
            // A client error names its errcode, or is a UIA challenge listing the flows.
            let explained = json["errcode"].is_string() || json["flows"].is_array();
            if !(status.is_success() || status.is_client_error() && explained) {
                failures.push(format!("{method} {path} {body}: {status} {json}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} requests failed:\n{}", failures.len(), failures.join("\n"));
    // Still serving, and alice's session and password were never touched.
    assert_eq!(whoami(&server, &alice.access_token).await.0, StatusCode::OK);
    assert_eq!(server.login("alice", &password_of("alice")).await.0, StatusCode::OK);
}
