//! Refresh tokens, login tokens and OpenID tokens over HTTP against the real server: expiry and
//! soft logout, rotation and the spec's rule for when an old refresh token stops working, what
//! revokes refresh tokens, single-use login tokens, the OpenID round trip through the federation
//! endpoint integration managers call, rate limits, and tables of bad input with their exact
//! status and errcode.

mod common;

use std::time::Duration;

use common::{
    TestServer, assert_error, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const GET_TOKEN: &str = "/_matrix/client/v1/login/get_token";
const USERINFO: &str = "/_matrix/federation/v1/openid/userinfo";

/// A server with open registration whose refreshable access tokens work for `lifetime` seconds
/// and whose login limit is out of the way (unless `logins_per_minute` says otherwise).
async fn server_with(lifetime: u64, logins_per_minute: u32) -> TestServer {
    let config = format!(
        "server_name = \"localhost\"\n\
         [auth]\naccess_token_lifetime_seconds = {lifetime}\n\
         [limits]\nlogin_attempts_per_minute = {logins_per_minute}\n"
    );
    TestServer::start_with_config(&config, &["--registration", "open"]).await
}

async fn server(lifetime: u64) -> TestServer {
    server_with(lifetime, 1_000).await
}

fn password_of(name: &str) -> String {
    format!("password-{name}")
}

/// The tokens of a `/login`, `/register` or `/refresh` answer.
#[derive(Clone, Debug)]
struct Tokens {
    access: String,
    refresh: String,
}

impl Tokens {
    #[track_caller]
    fn of(json: &Value) -> Self {
        let token = |key: &str| json[key].as_str().unwrap_or_else(|| panic!("{key} in {json}"));
        Tokens { access: token("access_token").to_owned(), refresh: token("refresh_token").into() }
    }
}

/// Logs `name` in with its password; `refresh` asks for a refresh token.
async fn login(server: &TestServer, name: &str, device: &str, refresh: bool) -> Value {
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": name },
        "password": password_of(name),
        "device_id": device,
        "refresh_token": refresh,
    });
    let (status, json) = server.call(Method::POST, &format!("{V3}/login"), None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "login {name}: {json}");
    json
}

async fn refresh(server: &TestServer, refresh_token: &str) -> (StatusCode, Value) {
    let body = json!({ "refresh_token": refresh_token });
    server.call(Method::POST, &format!("{V3}/refresh"), None, Some(body)).await
}

#[track_caller]
fn assert_refreshed(got: &(StatusCode, Value)) -> Tokens {
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    Tokens::of(&got.1)
}

async fn whoami(server: &TestServer, token: &str) -> (StatusCode, Value) {
    server.get(&format!("{V3}/account/whoami"), token).await
}

/// Asserts 401 `M_UNKNOWN_TOKEN` with `soft_logout` as given.
#[track_caller]
fn assert_unknown_token(got: &(StatusCode, Value), soft_logout: bool) {
    assert_error(got, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(got.1["soft_logout"].as_bool().unwrap_or(false), soft_logout, "{}", got.1);
}

/// The `auth` object of an `m.login.password` UIA stage.
fn password_auth(user_id: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user_id },
        "password": password,
    })
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens

#[tokio::test]
async fn only_a_client_that_asks_gets_a_refresh_token_and_an_expiring_access_token() {
    let server = server(300).await;
    let body = json!({
        "username": "alice",
        "password": password_of("alice"),
        "auth": { "type": "m.login.dummy" },
        "refresh_token": true,
    });
    let (status, registered) =
        server.call(Method::POST, &format!("{V3}/register"), None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{registered}");
    assert_eq!(registered["expires_in_ms"], 300_000, "{registered}");
    let tokens = Tokens::of(&registered);
    assert_eq!(whoami(&server, &tokens.access).await.0, StatusCode::OK);

    let refreshable = login(&server, "alice", "PHONE", true).await;
    assert_eq!(refreshable["expires_in_ms"], 300_000, "{refreshable}");
    assert_eq!(refreshable["device_id"], "PHONE");
    let tokens = Tokens::of(&refreshable);
    assert_ne!(tokens.access, tokens.refresh);

    let plain = login(&server, "alice", "LAPTOP", false).await;
    assert!(
        plain.get("refresh_token").is_none() && plain.get("expires_in_ms").is_none(),
        "{plain}"
    );
    let plain = server.register("bob").await;
    assert_eq!(whoami(&server, &plain.access_token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_expired_access_token_is_a_soft_logout_until_the_client_refreshes() {
    let server = server(2).await;
    server.register("alice").await;
    let tokens = Tokens::of(&login(&server, "alice", "PHONE", true).await);
    let plain = login(&server, "alice", "LAPTOP", false).await;
    let plain = plain["access_token"].as_str().unwrap().to_owned();
    assert_eq!(whoami(&server, &tokens.access).await.0, StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert_unknown_token(&whoami(&server, &tokens.access).await, true);
    // A token from a login that did not ask for a refresh token never expires.
    assert_eq!(whoami(&server, &plain).await.0, StatusCode::OK);

    let got = refresh(&server, &tokens.refresh).await;
    let new = assert_refreshed(&got);
    assert_eq!(got.1["expires_in_ms"], 2_000, "{}", got.1);
    assert_ne!(new.access, tokens.access);
    assert_ne!(new.refresh, tokens.refresh);
    let me = whoami(&server, &new.access).await;
    assert_eq!(me.0, StatusCode::OK, "{}", me.1);
    assert_eq!(me.1["user_id"], "@alice:localhost");
    assert_eq!(me.1["device_id"], "PHONE", "the same device");
    // Once the new token was used, the old one is gone rather than expired.
    assert_unknown_token(&whoami(&server, &tokens.access).await, false);

    // The refreshed token expires in its turn.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert_unknown_token(&whoami(&server, &new.access).await, true);
    let newer = assert_refreshed(&refresh(&server, &new.refresh).await);
    assert_eq!(whoami(&server, &newer.access).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_old_refresh_token_works_until_the_new_access_token_is_used() {
    let server = server(300).await;
    server.register("alice").await;
    let first = Tokens::of(&login(&server, "alice", "PHONE", true).await);

    // The client lost the answer to its refresh: it refreshes again with the same token, and the
    // tokens of the lost answer stop working.
    let lost = assert_refreshed(&refresh(&server, &first.refresh).await);
    let second = assert_refreshed(&refresh(&server, &first.refresh).await);
    assert_ne!(lost.access, second.access);
    assert_unknown_token(&whoami(&server, &lost.access).await, false);
    assert_unknown_token(&refresh(&server, &lost.refresh).await, true);

    // Using the new access token revokes the old refresh token (and its access token).
    assert_eq!(whoami(&server, &first.access).await.0, StatusCode::OK, "not yet revoked");
    assert_eq!(whoami(&server, &second.access).await.0, StatusCode::OK);
    assert_unknown_token(&refresh(&server, &first.refresh).await, true);
    assert_unknown_token(&whoami(&server, &first.access).await, false);
    assert_eq!(whoami(&server, &second.access).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_old_refresh_token_works_until_the_new_refresh_token_is_used() {
    let server = server(300).await;
    server.register("alice").await;
    let first = Tokens::of(&login(&server, "alice", "PHONE", true).await);
    let second = assert_refreshed(&refresh(&server, &first.refresh).await);
    let third = assert_refreshed(&refresh(&server, &second.refresh).await);
    assert_unknown_token(&refresh(&server, &first.refresh).await, true);
    // The second refresh token may still be used: the third generation was not used yet.
    let again = assert_refreshed(&refresh(&server, &second.refresh).await);
    assert_unknown_token(&whoami(&server, &third.access).await, false);
    assert_eq!(whoami(&server, &again.access).await.0, StatusCode::OK);
    assert_unknown_token(&refresh(&server, &second.refresh).await, true);
}

#[tokio::test]
async fn logging_out_revokes_the_refresh_token() {
    let server = server(300).await;
    server.register("alice").await;
    let phone = Tokens::of(&login(&server, "alice", "PHONE", true).await);
    let refreshed = assert_refreshed(&refresh(&server, &phone.refresh).await);
    let (status, json) = server.post(&format!("{V3}/logout"), &phone.access, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_unknown_token(&refresh(&server, &phone.refresh).await, true);
    assert_unknown_token(&refresh(&server, &refreshed.refresh).await, true);
    assert_unknown_token(&whoami(&server, &refreshed.access).await, false);

    let tablet = Tokens::of(&login(&server, "alice", "TABLET", true).await);
    let laptop = Tokens::of(&login(&server, "alice", "LAPTOP", true).await);
    let (status, json) = server.post(&format!("{V3}/logout/all"), &laptop.access, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_unknown_token(&refresh(&server, &tablet.refresh).await, true);
    assert_unknown_token(&refresh(&server, &laptop.refresh).await, true);

    // Logging in again on a device replaces its refresh token.
    let before = Tokens::of(&login(&server, "alice", "WATCH", true).await);
    let after = Tokens::of(&login(&server, "alice", "WATCH", true).await);
    assert_unknown_token(&refresh(&server, &before.refresh).await, true);
    assert_refreshed(&refresh(&server, &after.refresh).await);
}

#[tokio::test]
async fn deleting_a_device_and_changing_the_password_revoke_refresh_tokens() {
    let server = server(300).await;
    let alice = server.register("alice").await;
    let tablet = Tokens::of(&login(&server, "alice", "TABLET", true).await);
    let auth = json!({ "auth": password_auth(&alice.user_id, &password_of("alice")) });
    let path = format!("{V3}/devices/TABLET");
    let (status, json) =
        server.call(Method::DELETE, &path, Some(&alice.access_token), Some(auth.clone())).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_unknown_token(&refresh(&server, &tablet.refresh).await, true);

    // A password change logs the other devices out, refresh tokens and all; this one stays.
    let phone = Tokens::of(&login(&server, "alice", "PHONE", true).await);
    let laptop = Tokens::of(&login(&server, "alice", "LAPTOP", true).await);
    let mut change = auth;
    change["new_password"] = json!("new-password");
    let (status, json) =
        server.post(&format!("{V3}/account/password"), &phone.access, change).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_unknown_token(&refresh(&server, &laptop.refresh).await, true);
    let phone = assert_refreshed(&refresh(&server, &phone.refresh).await);

    let auth = json!({ "auth": password_auth(&alice.user_id, "new-password") });
    let (status, json) =
        server.post(&format!("{V3}/account/deactivate"), &phone.access, auth).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_unknown_token(&refresh(&server, &phone.refresh).await, true);
}

#[tokio::test]
async fn refreshing_counts_against_the_login_limit() {
    let server = server_with(300, 3).await;
    for _ in 0..3 {
        assert_unknown_token(&refresh(&server, "guess").await, true);
    }
    assert_error(
        &refresh(&server, "guess").await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    );
    let body = json!({ "type": "m.login.token", "token": "guess" });
    let got = server.call(Method::POST, &format!("{V3}/login"), None, Some(body)).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
}

// ---------------------------------------------------------------------------------------------
// Login tokens

#[tokio::test]
async fn a_login_token_logs_one_more_device_in_once() {
    let server = server(300).await;
    let alice = server.register("alice").await;

    // Discovery: the flow and the capability.
    let (status, flows) = server.call(Method::GET, &format!("{V3}/login"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{flows}");
    let token_flow =
        flows["flows"].as_array().unwrap().iter().find(|f| f["type"] == "m.login.token");
    assert_eq!(token_flow, Some(&json!({ "type": "m.login.token", "get_login_token": true })));
    let (status, capabilities) =
        server.get(&format!("{V3}/capabilities"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{capabilities}");
    assert_eq!(capabilities["capabilities"]["m.get_login_token"], json!({ "enabled": true }));

    // The password is asked for every time.
    let challenge = server.post(GET_TOKEN, &alice.access_token, json!({})).await;
    assert_eq!(challenge.0, StatusCode::UNAUTHORIZED, "{}", challenge.1);
    assert_eq!(challenge.1["flows"], json!([{ "stages": ["m.login.password"] }]));
    let wrong = json!({ "auth": password_auth(&alice.user_id, "wrong") });
    let refused = server.post(GET_TOKEN, &alice.access_token, wrong).await;
    assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{}", refused.1);
    assert_eq!(refused.1["errcode"], "M_FORBIDDEN", "{}", refused.1);
    let auth = json!({ "auth": password_auth(&alice.user_id, &password_of("alice")) });
    let (status, issued) = server.post(GET_TOKEN, &alice.access_token, auth.clone()).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(issued["expires_in_ms"], 120_000);
    let token = issued["login_token"].as_str().unwrap().to_owned();

    let body = json!({ "type": "m.login.token", "token": token, "refresh_token": true });
    let (status, json) =
        server.call(Method::POST, &format!("{V3}/login"), None, Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["user_id"], alice.user_id);
    assert_ne!(json["device_id"], alice.device_id.as_str(), "a new device");
    let tokens = Tokens::of(&json);
    assert_eq!(whoami(&server, &tokens.access).await.1["user_id"], alice.user_id);

    // Used once: the same token is refused.
    let again = server.call(Method::POST, &format!("{V3}/login"), None, Some(body)).await;
    assert_error(&again, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // A token issued before the account was deactivated no longer works.
    let (_, issued) = server.post(GET_TOKEN, &alice.access_token, auth.clone()).await;
    let body = json!({ "type": "m.login.token", "token": issued["login_token"] });
    let (status, json) =
        server.post(&format!("{V3}/account/deactivate"), &alice.access_token, auth).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let got = server.call(Method::POST, &format!("{V3}/login"), None, Some(body)).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// OpenID

#[tokio::test]
async fn an_openid_token_tells_a_third_party_who_the_user_is() {
    let server = server(300).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("{V3}/user/{}/openid/request_token", enc(&alice.user_id));
    let (status, issued) = server.post(&path, &alice.access_token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["matrix_server_name"], "localhost");
    assert_eq!(issued["expires_in"], 3_600);
    let token = issued["access_token"].as_str().unwrap();
    assert_ne!(token, alice.access_token);

    // The integration manager asks, without any other credential, as often as it likes.
    for _ in 0..2 {
        let info =
            server.call(Method::GET, &format!("{USERINFO}?access_token={token}"), None, None).await;
        assert_eq!(info, (StatusCode::OK, json!({ "sub": alice.user_id })));
    }
    // It is no access token, and an access token is no OpenID token.
    assert_unknown_token(&whoami(&server, token).await, false);
    let info = server
        .call(Method::GET, &format!("{USERINFO}?access_token={}", alice.access_token), None, None)
        .await;
    assert_error(&info, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");

    // Only for oneself.
    let theirs = server.post(&path, &bob.access_token, json!({})).await;
    assert_error(&theirs, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn bad_refresh_and_token_login_requests_get_exact_errors() {
    let server = server(300).await;
    let alice = server.register("alice").await;
    let tokens = Tokens::of(&login(&server, "alice", "PHONE", true).await);
    let refresh_path = format!("{V3}/refresh");
    let login_path = format!("{V3}/login");
    let refresh_row =
        |reason, body: &str| row(reason, Method::POST, &refresh_path, None, Some(body));
    let login_row = |reason, body: &str| row(reason, Method::POST, &login_path, None, Some(body));
    let unknown_refresh = format!(r#"{{"refresh_token":"{}"}}"#, alice.access_token);
    let refresh_as_login = format!(r#"{{"type":"m.login.token","token":"{}"}}"#, tokens.refresh);
    let (bad, unauthorized, forbidden) =
        (StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN);
    let rows = vec![
        refresh_row("not JSON", "{").expect(bad, "M_NOT_JSON"),
        refresh_row("no refresh token", "{}").expect(bad, "M_BAD_JSON"),
        refresh_row("a number for the token", r#"{"refresh_token":5}"#).expect(bad, "M_BAD_JSON"),
        refresh_row("null for the token", r#"{"refresh_token":null}"#).expect(bad, "M_BAD_JSON"),
        refresh_row("a JSON array", "[]").expect(bad, "M_BAD_JSON"),
        refresh_row("an empty token", r#"{"refresh_token":""}"#)
            .expect(unauthorized, "M_UNKNOWN_TOKEN"),
        refresh_row("an unknown token", r#"{"refresh_token":"hthr_nope"}"#)
            .expect(unauthorized, "M_UNKNOWN_TOKEN"),
        refresh_row("a NUL in the token", r#"{"refresh_token":"a\u0000b"}"#)
            .expect(unauthorized, "M_UNKNOWN_TOKEN"),
        refresh_row("an access token is no refresh token", &unknown_refresh)
            .expect(unauthorized, "M_UNKNOWN_TOKEN"),
        login_row("a token login without the token", r#"{"type":"m.login.token"}"#)
            .expect(bad, "M_BAD_JSON"),
        login_row("a number for the login token", r#"{"type":"m.login.token","token":5}"#)
            .expect(bad, "M_BAD_JSON"),
        login_row("an empty login token", r#"{"type":"m.login.token","token":""}"#)
            .expect(forbidden, "M_FORBIDDEN"),
        login_row("an unknown login token", r#"{"type":"m.login.token","token":"hthl_x"}"#)
            .expect(forbidden, "M_FORBIDDEN"),
        login_row("a NUL in the login token", r#"{"type":"m.login.token","token":"\u0000"}"#)
            .expect(forbidden, "M_FORBIDDEN"),
        login_row("a refresh token is no login token", &refresh_as_login)
            .expect(forbidden, "M_FORBIDDEN"),
        login_row("an unsupported login type", r#"{"type":"m.login.sso"}"#)
            .expect(bad, "M_UNKNOWN"),
    ];
    run_table(&server, rows).await;
    // None of that spent the refresh token.
    assert_refreshed(&refresh(&server, &tokens.refresh).await);
}

#[tokio::test]
async fn bad_login_token_and_openid_requests_get_exact_errors() {
    let server = server(300).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let token = Some(alice.access_token.as_str());
    let openid = |user: &str| format!("{V3}/user/{}/openid/request_token", enc(user));
    let (bad, unauthorized, forbidden) =
        (StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN);
    let userinfo =
        |reason, query: &str| row(reason, Method::GET, format!("{USERINFO}{query}"), None, None);
    let rows = vec![
        row("get_token: not JSON", Method::POST, GET_TOKEN, token, Some("{"))
            .expect(bad, "M_NOT_JSON"),
        row("get_token: auth is a number", Method::POST, GET_TOKEN, token, Some(r#"{"auth":5}"#))
            .expect(bad, "M_BAD_JSON"),
        row("get_token: no access token", Method::POST, GET_TOKEN, None, Some("{}"))
            .expect(unauthorized, "M_MISSING_TOKEN"),
        row("get_token: an unknown access token", Method::POST, GET_TOKEN, Some("x"), Some("{}"))
            .expect(unauthorized, "M_UNKNOWN_TOKEN"),
        row("openid: another user's ID", Method::POST, openid(&bob.user_id), token, Some("{}"))
            .expect(forbidden, "M_FORBIDDEN"),
        row(
            "openid: a user elsewhere",
            Method::POST,
            openid("@alice:elsewhere"),
            token,
            Some("{}"),
        )
        .expect(forbidden, "M_FORBIDDEN"),
        row("openid: not a user ID", Method::POST, openid("alice"), token, Some("{}"))
            .expect(bad, "M_INVALID_PARAM"),
        row("openid: no access token", Method::POST, openid(&alice.user_id), None, Some("{}"))
            .expect(unauthorized, "M_MISSING_TOKEN"),
        userinfo("userinfo: no token", "").expect(bad, "M_INVALID_PARAM"),
        userinfo("userinfo: the token twice", "?access_token=a&access_token=b")
            .expect(bad, "M_INVALID_PARAM"),
        userinfo("userinfo: an empty token", "?access_token=")
            .expect(unauthorized, "M_UNKNOWN_TOKEN"),
        userinfo("userinfo: an unknown token", "?access_token=nope")
            .expect(unauthorized, "M_UNKNOWN_TOKEN"),
        userinfo("userinfo: a NUL in the token", "?access_token=%00")
            .expect(unauthorized, "M_UNKNOWN_TOKEN"),
    ];
    run_table(&server, rows).await;
}
