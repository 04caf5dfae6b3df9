//! The client-server API's server administration: `GET /admin/whois/{userId}`, account locking
//! (`/v1/admin/lock/{userId}`) and account suspension (`/v1/admin/suspend/{userId}`), and what a
//! locked or suspended account may still do.

mod common;

use std::time::Duration;

use common::{
    TestServer, TestUser, assert_error, enc,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const V1: &str = "/_matrix/client/v1";
const ADMIN_PASSWORD: &str = "a long parent password";

/// Creates the server administrator `name` with `hearth user add --admin` and logs in.
async fn admin(server: &TestServer, name: &str) -> TestUser {
    let output = std::process::Command::new(common::binary())
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["user", "add", name, "--password", ADMIN_PASSWORD, "--admin"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    server.login_ok(name, ADMIN_PASSWORD, None).await
}

fn lock_path(user_id: &str) -> String {
    format!("{V1}/admin/lock/{}", enc(user_id))
}

fn suspend_path(user_id: &str) -> String {
    format!("{V1}/admin/suspend/{}", enc(user_id))
}

fn whois_path(user_id: &str) -> String {
    format!("{V3}/admin/whois/{}", enc(user_id))
}

async fn whoami(server: &TestServer, user: &TestUser) -> (StatusCode, Value) {
    server.get(&format!("{V3}/account/whoami"), &user.access_token).await
}

/// `GET /admin/whois` as `asker`, with a user agent of its own.
async fn whois(server: &TestServer, asker: &TestUser, target: &str) -> (StatusCode, Value) {
    let response = server
        .http
        .get(server.url(&whois_path(target)))
        .bearer_auth(&asker.access_token)
        .header("User-Agent", "hearth-test/1.0 (whois)")
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn whois_reports_each_device_with_its_last_address_time_and_user_agent() {
    let server = TestServer::start().await;
    let parent = admin(&server, "parent").await;
    let alice = server.register("alice").await;

    // The device's last request is written in the background: ask until it shows.
    let mut answer = Value::Null;
    for _ in 0..50 {
        let (status, body) = whois(&server, &alice, &alice.user_id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        answer = body;
        if answer["devices"][&alice.device_id]["sessions"][0]["connections"][0].is_object() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer["user_id"], alice.user_id.as_str());
    let connection = &answer["devices"][&alice.device_id]["sessions"][0]["connections"][0];
    assert_eq!(connection["ip"], "127.0.0.1", "{answer}");
    assert_eq!(connection["user_agent"], "hearth-test/1.0 (whois)", "{answer}");
    assert!(connection["last_seen"].as_u64().is_some_and(|ts| ts > 1_600_000_000_000), "{answer}");

    // An administrator may ask about anyone; a device never used since login has no connection.
    let phone = server.login_ok("alice", "password-alice", Some("PHONE")).await;
    let (status, body) = whois(&server, &parent, &alice.user_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["devices"][&alice.device_id]["sessions"][0]["connections"][0].is_object());
    assert_eq!(body["devices"][&phone.device_id]["sessions"], json!([{}]), "{body}");
}

#[tokio::test]
async fn whois_refuses_other_users_and_says_which_accounts_are_unknown_only_to_admins() {
    let server = TestServer::start().await;
    let parent = admin(&server, "parent").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (a, p) = (Some(alice.access_token.as_str()), Some(parent.access_token.as_str()));
    let get = Method::GET;
    run_table(
        &server,
        vec![
            row("a user asking about another", get.clone(), whois_path(&bob.user_id), a, None)
                .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row(
                "a user asking about an unknown user",
                get.clone(),
                whois_path("@x:localhost"),
                a,
                None,
            )
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row(
                "an admin asking about an unknown user",
                get.clone(),
                whois_path("@x:localhost"),
                p,
                None,
            )
            .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            row(
                "an admin asking about a remote user",
                get.clone(),
                whois_path("@x:elsewhere.example"),
                p,
                None,
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row("a user ID without a server name", get.clone(), whois_path("@alice"), p, None)
                .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row("not a user ID at all", get.clone(), whois_path("alice"), p, None)
                .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "a NUL character in the user ID",
                get.clone(),
                whois_path("@al\0ice:localhost"),
                p,
                None,
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row("no access token", get.clone(), whois_path(&alice.user_id), None, None)
                .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_locked_account_is_refused_everything_but_logout_until_it_is_unlocked() {
    let server = TestServer::start().await;
    let parent = admin(&server, "parent").await;
    let bob = server.register("bob").await;
    let token = &parent.access_token;

    let (status, body) = server.get(&lock_path(&bob.user_id), token).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"locked": false})));
    let (status, body) = server.put(&lock_path(&bob.user_id), token, json!({"locked": true})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"locked": true})));
    assert_eq!(server.get(&lock_path(&bob.user_id), token).await.1, json!({"locked": true}));

    // Every authenticated request answers 401 M_USER_LOCKED with soft_logout, login too.
    let locked = whoami(&server, &bob).await;
    assert_error(&locked, StatusCode::UNAUTHORIZED, "M_USER_LOCKED");
    assert_eq!(locked.1["soft_logout"], true, "{}", locked.1);
    let sync = server.get(&format!("{V3}/sync?timeout=0"), &bob.access_token).await;
    assert_error(&sync, StatusCode::UNAUTHORIZED, "M_USER_LOCKED");
    let create = server.post(&format!("{V3}/createRoom"), &bob.access_token, json!({})).await;
    assert_error(&create, StatusCode::UNAUTHORIZED, "M_USER_LOCKED");
    let login = server.login("bob", "password-bob").await;
    assert_error(&login, StatusCode::UNAUTHORIZED, "M_USER_LOCKED");
    let wrong = server.login("bob", "wrong").await;
    assert_error(&wrong, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Unlocked, the same token works again.
    let (status, body) =
        server.put(&lock_path(&bob.user_id), token, json!({"locked": false})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"locked": false})));
    assert_eq!(whoami(&server, &bob).await.0, StatusCode::OK);

    // Locked again, the client may still log out.
    server.put(&lock_path(&bob.user_id), token, json!({"locked": true})).await;
    let logout = server.post(&format!("{V3}/logout"), &bob.access_token, json!({})).await;
    assert_eq!(logout.0, StatusCode::OK, "{}", logout.1);
    assert_error(&whoami(&server, &bob).await, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn a_suspended_account_may_read_leave_and_redact_its_own_events_but_not_reach_others() {
    let server = TestServer::start().await;
    let parent = admin(&server, "parent").await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    let other_room = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    server.join(&bob, &room).await;
    let own = server.send_text(&bob, &room, "before the suspension").await;
    let theirs = server.send_text(&alice, &room, "alice's").await;

    let path = suspend_path(&bob.user_id);
    let (status, body) = server.put(&path, &parent.access_token, json!({"suspended": true})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"suspended": true})));
    assert_eq!(server.get(&path, &parent.access_token).await.1, json!({"suspended": true}));

    let b = bob.access_token.as_str();
    let r = enc(&room);
    let refused = [
        (
            Method::PUT,
            format!("{V3}/rooms/{r}/send/m.room.message/t1"),
            json!({"msgtype": "m.text", "body": "x"}),
        ),
        (Method::PUT, format!("{V3}/rooms/{r}/state/m.room.topic/"), json!({"topic": "x"})),
        (Method::PUT, format!("{V3}/rooms/{r}/redact/{}/t2", enc(&theirs)), json!({})),
        (Method::POST, format!("{V3}/createRoom"), json!({})),
        (Method::POST, format!("{V3}/join/{}", enc(&other_room)), json!({})),
        (Method::POST, format!("{V3}/rooms/{}/join", enc(&other_room)), json!({})),
        (Method::POST, format!("{V3}/knock/{}", enc(&other_room)), json!({})),
        (
            Method::POST,
            format!("{V3}/rooms/{r}/invite"),
            json!({"user_id": parent.user_id.as_str()}),
        ),
        (Method::POST, format!("{V3}/rooms/{r}/kick"), json!({"user_id": alice.user_id.as_str()})),
        (Method::POST, format!("{V3}/rooms/{r}/ban"), json!({"user_id": alice.user_id.as_str()})),
        (Method::POST, format!("{V3}/rooms/{r}/upgrade"), json!({"new_version": "12"})),
        (
            Method::PUT,
            format!("{V3}/profile/{}/displayname", enc(&bob.user_id)),
            json!({"displayname": "B"}),
        ),
        (
            Method::PUT,
            format!("{V3}/profile/{}/m.tz", enc(&bob.user_id)),
            json!({"m.tz": "Europe/Paris"}),
        ),
        (Method::DELETE, format!("{V3}/profile/{}/displayname", enc(&bob.user_id)), json!({})),
        (
            Method::PUT,
            format!("{V3}/directory/room/{}", enc("#bobs:localhost")),
            json!({"room_id": room.as_str()}),
        ),
        (Method::PUT, format!("{V3}/directory/list/room/{r}"), json!({"visibility": "public"})),
        (Method::POST, "/_matrix/media/v1/create".to_owned(), json!({})),
    ];
    for (method, path, body) in refused {
        let answer = server.call(method.clone(), &path, Some(b), Some(body)).await;
        assert_eq!(answer.0, StatusCode::FORBIDDEN, "{method} {path}: {}", answer.1);
        assert_eq!(answer.1["errcode"], "M_USER_SUSPENDED", "{method} {path}: {}", answer.1);
    }

    // Reading, redacting its own event, receipts and leaving stay allowed.
    assert_eq!(server.get(&format!("{V3}/sync?timeout=0"), b).await.0, StatusCode::OK);
    let messages = server.get(&format!("{V3}/rooms/{r}/messages?dir=b"), b).await;
    assert_eq!(messages.0, StatusCode::OK, "{}", messages.1);
    let redact = format!("{V3}/rooms/{r}/redact/{}/t3", enc(&own));
    let redacted = server.put(&redact, b, json!({})).await;
    assert_eq!(redacted.0, StatusCode::OK, "{}", redacted.1);
    let receipt = format!("{V3}/rooms/{r}/receipt/m.read/{}", enc(&theirs));
    assert_eq!(server.post(&receipt, b, json!({})).await.0, StatusCode::OK);
    let left = server.post(&format!("{V3}/rooms/{r}/leave"), b, json!({})).await;
    assert_eq!(left.0, StatusCode::OK, "{}", left.1);

    // Lifted, the account acts again.
    let (status, body) = server.put(&path, &parent.access_token, json!({"suspended": false})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"suspended": false})));
    server.join(&bob, &room).await;
    server.send_text(&bob, &room, "after the suspension").await;
}

/// Deactivates `user`'s account, confirming with its password.
async fn deactivate(server: &TestServer, user: &TestUser, password: &str) {
    let path = format!("{V3}/account/deactivate");
    let (_, first) = server.post(&path, &user.access_token, json!({})).await;
    let session = first["session"].as_str().expect("a UIA session").to_owned();
    let auth = json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": password,
        "session": session,
    }});
    let (status, body) = server.post(&path, &user.access_token, auth).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn only_admins_lock_and_suspend_and_never_themselves_or_other_admins() {
    let server = TestServer::start().await;
    let parent = admin(&server, "parent").await;
    let other_parent = admin(&server, "other_parent").await;
    let alice = server.register("alice").await;
    let gone = server.register("gone").await;
    deactivate(&server, &gone, "password-gone").await;

    let (a, p) = (Some(alice.access_token.as_str()), Some(parent.access_token.as_str()));
    let (get, put) = (Method::GET, Method::PUT);
    let locked = Some(r#"{"locked": true}"#);
    let suspended = Some(r#"{"suspended": true}"#);
    let me = parent.user_id.as_str();
    run_table(
        &server,
        vec![
            row("a user asking about a lock", get.clone(), lock_path(&parent.user_id), a, None)
                .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row(
                "a user asking about an unknown user's lock",
                get.clone(),
                lock_path("@x:localhost"),
                a,
                None,
            )
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row("a user locking another", put.clone(), lock_path(&parent.user_id), a, locked)
                .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row(
                "a user suspending another",
                put.clone(),
                suspend_path(&parent.user_id),
                a,
                suspended,
            )
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row(
                "a user suspending themself",
                put.clone(),
                suspend_path(&alice.user_id),
                a,
                suspended,
            )
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row("an admin locking themself", put.clone(), lock_path(me), p, locked)
                .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row("an admin suspending themself", put.clone(), suspend_path(me), p, suspended)
                .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row(
                "an admin locking another admin",
                put.clone(),
                lock_path(&other_parent.user_id),
                p,
                locked,
            )
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row(
                "an admin asking about another admin",
                get.clone(),
                suspend_path(&other_parent.user_id),
                p,
                None,
            )
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            row("a remote user", put.clone(), lock_path("@x:elsewhere.example"), p, locked)
                .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row("an unknown user", get.clone(), suspend_path("@nobody:localhost"), p, None)
                .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            row("a deactivated user", put.clone(), lock_path(&gone.user_id), p, locked)
                .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            row("not a user ID", get.clone(), lock_path("alice"), p, None)
                .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "a NUL character in the user ID",
                get.clone(),
                lock_path("@a\0:localhost"),
                p,
                None,
            )
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            row(
                "locked as a string",
                put.clone(),
                lock_path(&alice.user_id),
                p,
                Some(r#"{"locked": "yes"}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            row(
                "suspended as a number",
                put.clone(),
                suspend_path(&alice.user_id),
                p,
                Some(r#"{"suspended": 1}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            row(
                "no locked field",
                put.clone(),
                lock_path(&alice.user_id),
                p,
                Some(r#"{"suspended": true}"#),
            )
            .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            row(
                "a body that is not JSON",
                put.clone(),
                lock_path(&alice.user_id),
                p,
                Some("locked"),
            )
            .expect(StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            row("no access token", get.clone(), lock_path(&alice.user_id), None, None)
                .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        ],
    )
    .await;

    // None of that changed anything.
    assert_eq!(
        server.get(&lock_path(&alice.user_id), &parent.access_token).await.1,
        json!({"locked": false})
    );
    assert_eq!(whoami(&server, &other_parent).await.0, StatusCode::OK);
}

#[tokio::test]
async fn capabilities_offer_account_moderation_to_admins_only() {
    let server = TestServer::start().await;
    let parent = admin(&server, "parent").await;
    let alice = server.register("alice").await;
    let admin_view = capabilities(&server, &parent).await;
    assert_eq!(admin_view["m.account_moderation"], json!({"lock": true, "suspend": true}));
    assert_eq!(admin_view["m.profile_fields"]["enabled"], true);
    assert!(capabilities(&server, &alice).await.get("m.account_moderation").is_none());
}

async fn capabilities(server: &TestServer, user: &TestUser) -> Value {
    server.get(&format!("{V3}/capabilities"), &user.access_token).await.1["capabilities"].clone()
}

/// A lock also stops the ways to new tokens that need no password: a login token asked for
/// before the lock, and a refresh token. The refresh token works again once the account is
/// unlocked (the tokens refused meanwhile were never used).
#[tokio::test]
async fn a_locked_account_gets_no_tokens_from_a_login_token_or_a_refresh() {
    let server = TestServer::start().await;
    let parent = admin(&server, "parent").await;
    let bob = server.register("bob").await;
    let login = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "bob"},
        "password": "password-bob",
        "refresh_token": true,
    });
    let (status, session) =
        server.call(Method::POST, &format!("{V3}/login"), None, Some(login)).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let refresh = json!({"refresh_token": session["refresh_token"]});
    let auth = json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": bob.user_id},
        "password": "password-bob",
    }});
    let (status, issued) =
        server.post(&format!("{V1}/login/get_token"), &bob.access_token, auth).await;
    assert_eq!(status, StatusCode::OK, "{issued}");

    let token = &parent.access_token;
    server.put(&lock_path(&bob.user_id), token, json!({"locked": true})).await;
    let token_login = json!({"type": "m.login.token", "token": issued["login_token"]});
    let got = server.call(Method::POST, &format!("{V3}/login"), None, Some(token_login)).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "M_USER_LOCKED");
    let refresh_path = format!("{V3}/refresh");
    let got = server.call(Method::POST, &refresh_path, None, Some(refresh.clone())).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "M_USER_LOCKED");

    server.put(&lock_path(&bob.user_id), token, json!({"locked": false})).await;
    let (status, renewed) = server.call(Method::POST, &refresh_path, None, Some(refresh)).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let access = renewed["access_token"].as_str().unwrap();
    let (status, me) = server.get(&format!("{V3}/account/whoami"), access).await;
    assert_eq!((status, me["user_id"].as_str()), (StatusCode::OK, Some(bob.user_id.as_str())));
}
