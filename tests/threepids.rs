//! E-mail addresses on accounts (third-party identifiers), end to end: the server sends its
//! validation mails to a real SMTP server (`tests/smtp/sink.py`, on PyPI's aiosmtpd), the tests
//! read them, follow the link or submit the code, add the address, log in with it, reset a
//! password by mail and delete it; `/account/3pid/bind` and `/unbind` reach an identity server
//! played by the test. Without python3 and aiosmtpd the tests that need mail say they are
//! skipped, and fail under `HEARTH_CI=1`.

mod common;

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{TestServer, TestUser, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    net::{TcpListener, TcpStream},
    process::{Child, ChildStdout, Command},
};

const ACCOUNT_TOKEN: &str = "/_matrix/client/v3/account/3pid/email/requestToken";
const PASSWORD_TOKEN: &str = "/_matrix/client/v3/account/password/email/requestToken";
const REGISTER_TOKEN: &str = "/_matrix/client/v3/register/email/requestToken";
const ADD: &str = "/_matrix/client/v3/account/3pid/add";
const LIST: &str = "/_matrix/client/v3/account/3pid";
const DELETE: &str = "/_matrix/client/v3/account/3pid/delete";

/// A mail the SMTP server received.
#[derive(Debug)]
struct Mail {
    to: Vec<String>,
    subject: String,
    body: String,
}

impl Mail {
    /// The validation link in the mail.
    fn link(&self) -> String {
        let start = self.body.find("http://").expect("a link in the mail");
        self.body[start..].split_whitespace().next().unwrap().to_owned()
    }

    /// A query parameter of the link (the token, the session ID).
    fn link_param(&self, name: &str) -> String {
        let link = self.link();
        let query = link.split_once('?').unwrap().1;
        let pair = query.split('&').find_map(|pair| pair.strip_prefix(&format!("{name}=")));
        pair.unwrap_or_else(|| panic!("{name} in {link}")).to_owned()
    }
}

/// The SMTP server the test server sends to.
struct SmtpSink {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl SmtpSink {
    /// Starts the sink; `None` (and a note) when python3 or aiosmtpd is missing, which fails the
    /// test under `HEARTH_CI=1`.
    async fn start() -> Option<Self> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp/sink.py");
        let python = std::env::var("HEARTH_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let spawned = Command::new(&python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let Ok(mut child) = spawned else { return skip(&format!("{python} cannot be started")) };
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
        let Ok(Ok(Some(first))) = first else {
            return skip(
                "the SMTP sink did not start (is aiosmtpd installed? pip install aiosmtpd)",
            );
        };
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"].as_u64().unwrap();
        Some(Self { _child: child, lines, port: u16::try_from(port).unwrap() })
    }

    /// The `[email]` section that sends to this sink, with `extra` lines.
    fn config(&self, extra: &str) -> String {
        format!(
            "server_name = \"localhost\"\n[registration]\nmode = \"open\"\n[email]\n\
             smtp_url = \"smtp://127.0.0.1:{}\"\nfrom = \"Hearth <hearth@localhost>\"\n\
             token_requests_per_minute = 1000\n{extra}",
            self.port
        )
    }

    async fn next_mail(&mut self) -> Mail {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("a mail within 20 s")
            .unwrap()
            .expect("the sink is running");
        let json: Value = serde_json::from_str(&line).unwrap();
        let to = json["to"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into());
        Mail {
            to: to.collect(),
            subject: json["subject"].as_str().unwrap().into(),
            body: json["body"].as_str().unwrap().into(),
        }
    }

    /// Asserts that no mail arrives for a while.
    async fn no_mail(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(700), self.lines.next_line()).await;
        assert!(next.is_err(), "no mail expected, got {next:?}");
    }
}

fn skip<T>(why: &str) -> Option<T> {
    if std::env::var("HEARTH_CI").as_deref() == Ok("1") {
        panic!("{why} (skips are not allowed in CI)");
    }
    eprintln!("skipped: {why}");
    None
}

/// A server that mails through `sink`, and Alice on it.
async fn server_with_mail(sink: &SmtpSink, extra: &str) -> (TestServer, TestUser) {
    let server = TestServer::start_with_config(&sink.config(extra), &[]).await;
    let alice = server.register("alice").await;
    (server, alice)
}

/// A registration without `auth`: the answer lists the flows.
fn no_auth(username: &str) -> Value {
    json!({ "username": username, "password": "p" })
}

fn token_request(secret: &str, email: &str, attempt: u64) -> Value {
    json!({ "client_secret": secret, "email": email, "send_attempt": attempt })
}

/// `POST` without an access token.
async fn anonymous(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    server.call(Method::POST, path, None, Some(body)).await
}

/// Asks for a mail and returns the session ID and the mail.
async fn request_mail(
    server: &TestServer,
    sink: &mut SmtpSink,
    path: &str,
    secret: &str,
    email: &str,
) -> (String, Mail) {
    let (status, body) = anonymous(server, path, token_request(secret, email, 1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mail = sink.next_mail().await;
    (body["sid"].as_str().unwrap().to_owned(), mail)
}

fn password_auth(user: &str, password: &str, session: Option<&str>) -> Value {
    let mut auth = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    });
    if let Some(session) = session {
        auth["session"] = json!(session);
    }
    auth
}

/// Validates `email` by mail (following the link) and adds it to the account of `user` (who
/// registered with [`TestServer::register`]'s password).
async fn add_email(server: &TestServer, sink: &mut SmtpSink, user: &TestUser, email: &str) {
    let localpart = user.user_id[1..].split(':').next().unwrap();
    let (sid, mail) = request_mail(server, sink, ACCOUNT_TOKEN, "secret-add", email).await;
    let page = reqwest::get(mail.link()).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("is confirmed"));
    let body = json!({
        "sid": sid, "client_secret": "secret-add",
        "auth": password_auth(localpart, &format!("password-{localpart}"), None),
    });
    let (status, json) = server.post(ADD, &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn an_address_is_validated_by_mail_added_logged_in_with_and_deleted() {
    let Some(mut sink) = SmtpSink::start().await else { return };
    let (server, alice) = server_with_mail(&sink, "").await;

    let (sid, mail) =
        request_mail(&server, &mut sink, ACCOUNT_TOKEN, "s3cret", "Alice@Example.org").await;
    assert_eq!(mail.to, ["alice@example.org"]);
    assert!(mail.subject.contains("Confirm your e-mail address"), "{}", mail.subject);
    assert!(mail.link().starts_with(&server.base_url), "{} on {}", mail.link(), server.base_url);

    // Not validated yet: the password is asked for first, then the session refused.
    let add = json!({ "sid": sid, "client_secret": "s3cret" });
    let (status, challenge) = server.post(ADD, &alice.access_token, add.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
    assert_eq!(challenge["flows"][0]["stages"], json!(["m.login.password"]));
    let mut with_auth = add.clone();
    with_auth["auth"] = password_auth("alice", "password-alice", None);
    let got = server.post(ADD, &alice.access_token, with_auth.clone()).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_THREEPID_AUTH_FAILED");

    let page = reqwest::get(mail.link()).await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("is confirmed"));
    let (status, json) = server.post(ADD, &alice.access_token, with_auth).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    let (status, list) = server.get(LIST, &alice.access_token).await;
    assert_eq!(status, StatusCode::OK);
    let threepids = list["threepids"].as_array().unwrap();
    assert_eq!(threepids.len(), 1, "{list}");
    assert_eq!(threepids[0]["medium"], "email");
    assert_eq!(threepids[0]["address"], "alice@example.org");
    assert!(threepids[0]["validated_at"].as_u64().unwrap() > 0);
    assert!(threepids[0]["added_at"].as_u64().unwrap() > 0);

    // Log in with the address: the identifier, and the deprecated medium and address.
    let login = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "ALICE@example.org" },
        "password": "password-alice",
    });
    let (status, json) = anonymous(&server, "/_matrix/client/v3/login", login).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["user_id"], alice.user_id);
    let old_style = json!({
        "type": "m.login.password", "medium": "email", "address": "alice@example.org",
        "password": "password-alice",
    });
    let (status, json) = anonymous(&server, "/_matrix/client/v3/login", old_style).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let wrong = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "bob@example.org" },
        "password": "password-alice",
    });
    let got = anonymous(&server, "/_matrix/client/v3/login", wrong).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");

    // Delete: no identity server knows it, so the unbind result is no-support.
    let delete = json!({ "medium": "email", "address": "alice@example.org" });
    let (status, json) = server.post(DELETE, &alice.access_token, delete.clone()).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["id_server_unbind_result"], "no-support");
    let (_, list) = server.get(LIST, &alice.access_token).await;
    assert_eq!(list["threepids"], json!([]));
    let got = server.post(DELETE, &alice.access_token, delete).await;
    assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_forgotten_password_is_reset_by_mail() {
    let Some(mut sink) = SmtpSink::start().await else { return };
    let (server, alice) = server_with_mail(&sink, "").await;
    add_email(&server, &mut sink, &alice, "alice@example.org").await;

    let got = anonymous(&server, PASSWORD_TOKEN, token_request("r", "nobody@example.org", 1)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_THREEPID_NOT_FOUND");
    sink.no_mail().await;

    let (sid, mail) =
        request_mail(&server, &mut sink, PASSWORD_TOKEN, "reset", "alice@example.org").await;
    assert!(mail.subject.contains("Reset your password"), "{}", mail.subject);

    // Before the link is followed, the stage is not complete.
    let creds = json!({ "sid": sid, "client_secret": "reset" });
    let auth = json!({ "type": "m.login.email.identity", "threepid_creds": creds });
    let reset = json!({ "new_password": "new-password", "auth": auth });
    let (status, json) = anonymous(&server, "/_matrix/client/v3/account/password", reset).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
    assert_eq!(json["errcode"], "M_THREEPID_AUTH_FAILED", "{json}");
    assert_eq!(json["flows"][0]["stages"], json!(["m.login.email.identity"]));

    // The code of the mail, through the submit_url this time.
    let submit = json!({ "sid": sid, "client_secret": "reset", "token": mail.link_param("token") });
    let submit_path = "/_hearth/client/v1/3pid/email/submitToken";
    let (status, json) = anonymous(&server, submit_path, submit).await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "success": true })));

    let creds = json!({ "sid": sid, "client_secret": "reset" });
    let auth = json!({ "type": "m.login.email.identity", "threepid_creds": creds });
    let reset = json!({ "new_password": "new-password", "auth": auth });
    let (status, json) =
        anonymous(&server, "/_matrix/client/v3/account/password", reset.clone()).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    // Every device was logged out; the old password no longer works, the new one does.
    let (status, _) = server.get("/_matrix/client/v3/account/whoami", &alice.access_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let got = server.login("alice", "password-alice").await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    server.login_ok("alice", "new-password", None).await;

    // The session was used up.
    let (status, json) = anonymous(&server, "/_matrix/client/v3/account/password", reset).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
    assert_eq!(json["errcode"], "M_THREEPID_AUTH_FAILED", "{json}");
}

#[tokio::test]
async fn the_same_send_attempt_sends_no_second_mail() {
    let Some(mut sink) = SmtpSink::start().await else { return };
    let (server, _) = server_with_mail(&sink, "").await;
    let (sid, first) =
        request_mail(&server, &mut sink, ACCOUNT_TOKEN, "again", "alice@example.org").await;

    let (status, json) =
        anonymous(&server, ACCOUNT_TOKEN, token_request("again", "alice@example.org", 1)).await;
    assert_eq!((status, json["sid"].as_str()), (StatusCode::OK, Some(sid.as_str())));
    sink.no_mail().await;

    let (status, json) =
        anonymous(&server, ACCOUNT_TOKEN, token_request("again", "alice@example.org", 2)).await;
    assert_eq!((status, json["sid"].as_str()), (StatusCode::OK, Some(sid.as_str())));
    let second = sink.next_mail().await;
    assert_ne!(first.link_param("token"), second.link_param("token"));

    // Another client secret is another session.
    let (status, json) =
        anonymous(&server, ACCOUNT_TOKEN, token_request("other", "alice@example.org", 1)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(json["sid"].as_str(), Some(sid.as_str()));
    sink.next_mail().await;

    // The first mail's token was replaced by the second's.
    let submit = |token: String| json!({ "sid": sid, "client_secret": "again", "token": token });
    let path = "/_hearth/client/v1/3pid/email/submitToken";
    let got = anonymous(&server, path, submit(first.link_param("token"))).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_THREEPID_AUTH_FAILED");
    let (status, _) = anonymous(&server, path, submit(second.link_param("token"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn registration_offers_email_and_adds_the_address_to_the_new_account() {
    let Some(mut sink) = SmtpSink::start().await else { return };
    let (server, alice) = server_with_mail(&sink, "").await;
    add_email(&server, &mut sink, &alice, "alice@example.org").await;

    let (status, json) = anonymous(&server, "/_matrix/client/v3/register", no_auth("carol")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let flows: Vec<Value> =
        json["flows"].as_array().unwrap().iter().map(|f| f["stages"].clone()).collect();
    assert_eq!(flows, [json!(["m.login.dummy"]), json!(["m.login.email.identity"])]);

    let got =
        anonymous(&server, REGISTER_TOKEN, token_request("reg", "alice@example.org", 1)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_THREEPID_IN_USE");
    let got = anonymous(&server, ACCOUNT_TOKEN, token_request("reg", "ALICE@example.org", 1)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_THREEPID_IN_USE");

    let (sid, mail) =
        request_mail(&server, &mut sink, REGISTER_TOKEN, "reg", "bob@example.org").await;
    assert!(reqwest::get(mail.link()).await.unwrap().status().is_success());
    let creds = json!({ "sid": sid, "client_secret": "reg" });
    let register = json!({
        "username": "bob", "password": "password-bob",
        "auth": { "type": "m.login.email.identity", "threepid_creds": creds },
    });
    let (status, json) = anonymous(&server, "/_matrix/client/v3/register", register).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let bob = json["access_token"].as_str().unwrap();
    let (_, list) = server.get(LIST, bob).await;
    assert_eq!(list["threepids"][0]["address"], "bob@example.org", "{list}");
}

#[tokio::test]
async fn required_email_registration_has_no_flow_without_it() {
    let Some(sink) = SmtpSink::start().await else { return };
    let server =
        TestServer::start_with_config(&sink.config("registration = \"required\"\n"), &[]).await;
    let (status, json) = anonymous(&server, "/_matrix/client/v3/register", no_auth("carol")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["flows"], json!([{ "stages": ["m.login.email.identity"] }]));
    let dummy = json!({
        "username": "carol", "password": "p", "auth": { "type": "m.login.dummy" }
    });
    let (status, _) = anonymous(&server, "/_matrix/client/v3/register", dummy).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_mail_configured_email_is_neither_offered_nor_accepted() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for path in [ACCOUNT_TOKEN, PASSWORD_TOKEN, REGISTER_TOKEN] {
        let got = anonymous(&server, path, token_request("s", "alice@example.org", 1)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    }
    let (_, json) = anonymous(&server, "/_matrix/client/v3/register", no_auth("carol")).await;
    assert_eq!(json["flows"], json!([{ "stages": ["m.login.dummy"] }]));
    let (_, caps) = server.get("/_matrix/client/v3/capabilities", &alice.access_token).await;
    assert_eq!(caps["capabilities"]["m.3pid_changes"]["enabled"], false, "{caps}");
    let (_, list) = server.get(LIST, &alice.access_token).await;
    assert_eq!(list, json!({ "threepids": [] }));
    // A password change without an access token needs e-mail.
    let reset = json!({ "new_password": "x" });
    let got = anonymous(&server, "/_matrix/client/v3/account/password", reset).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn bad_inputs_get_the_spec_errors() {
    let Some(mut sink) = SmtpSink::start().await else { return };
    let (server, alice) = server_with_mail(&sink, "").await;
    let (sid, _) = request_mail(&server, &mut sink, ACCOUNT_TOKEN, "good", "a@example.org").await;
    let msisdn = json!({
        "client_secret": "s", "country": "GB", "phone_number": "07700900001", "send_attempt": 1
    });
    let token = "/_hearth/client/v1/3pid/email/submitToken";
    let auth = password_auth("alice", "password-alice", None);
    let rows: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "no @",
            ACCOUNT_TOKEN,
            token_request("s", "alice", 1),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "no domain",
            ACCOUNT_TOKEN,
            token_request("s", "alice@", 1),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "no local part",
            ACCOUNT_TOKEN,
            token_request("s", "@example.org", 1),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "a space",
            PASSWORD_TOKEN,
            token_request("s", "a b@example.org", 1),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "outside ASCII (mail to it would need SMTPUTF8)",
            ACCOUNT_TOKEN,
            token_request("s", "δοκιμή@παράδειγμα.δοκιμή", 1),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "an upper-case letter outside ASCII",
            ACCOUNT_TOKEN,
            token_request("s", "ÄLICE@EXAMPLE.ORG", 1),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "a display name",
            REGISTER_TOKEN,
            token_request("s", "A <a@example.org>", 1),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "too long",
            ACCOUNT_TOKEN,
            token_request("s", &format!("{}@example.org", "a".repeat(250)), 1),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "client secret outside the grammar",
            ACCOUNT_TOKEN,
            token_request("no spaces", "a@example.org", 1),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "empty client secret",
            ACCOUNT_TOKEN,
            token_request("", "a@example.org", 1),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "client secret of 256 characters",
            ACCOUNT_TOKEN,
            token_request(&"a".repeat(256), "a@example.org", 1),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "negative send attempt",
            ACCOUNT_TOKEN,
            json!({"client_secret": "s", "email": "a@example.org", "send_attempt": -1}),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "no send attempt",
            ACCOUNT_TOKEN,
            json!({"client_secret": "s", "email": "a@example.org"}),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "a phone number to add",
            "/_matrix/client/v3/account/3pid/msisdn/requestToken",
            msisdn.clone(),
            StatusCode::BAD_REQUEST,
            "M_THREEPID_MEDIUM_NOT_SUPPORTED",
        ),
        (
            "a phone number to register",
            "/_matrix/client/v3/register/msisdn/requestToken",
            msisdn.clone(),
            StatusCode::BAD_REQUEST,
            "M_THREEPID_MEDIUM_NOT_SUPPORTED",
        ),
        (
            "a phone number to reset",
            "/_matrix/client/v3/account/password/msisdn/requestToken",
            msisdn,
            StatusCode::BAD_REQUEST,
            "M_THREEPID_MEDIUM_NOT_SUPPORTED",
        ),
        (
            "a phone number without a country",
            "/_matrix/client/v3/account/3pid/msisdn/requestToken",
            json!({"client_secret": "s", "country": "", "phone_number": "1", "send_attempt": 1}),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "a wrong token",
            token,
            json!({"sid": sid, "client_secret": "good", "token": "nope"}),
            StatusCode::BAD_REQUEST,
            "M_THREEPID_AUTH_FAILED",
        ),
        (
            "a wrong client secret for the token",
            token,
            json!({"sid": sid, "client_secret": "bad", "token": "nope"}),
            StatusCode::BAD_REQUEST,
            "M_THREEPID_AUTH_FAILED",
        ),
        (
            "an unknown session for the token",
            token,
            json!({"sid": "unknown", "client_secret": "good", "token": "x"}),
            StatusCode::BAD_REQUEST,
            "M_THREEPID_AUTH_FAILED",
        ),
    ];
    for (reason, path, body, status, errcode) in rows {
        let got = anonymous(&server, path, body).await;
        assert_eq!(
            (got.0, got.1["errcode"].as_str()),
            (status, Some(errcode)),
            "{reason}: {}",
            got.1
        );
    }
    sink.no_mail().await;

    let add_rows: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "an unknown session",
            json!({"sid": "unknown", "client_secret": "good", "auth": auth}),
            StatusCode::BAD_REQUEST,
            "M_THREEPID_AUTH_FAILED",
        ),
        (
            "another client secret",
            json!({"sid": sid, "client_secret": "other", "auth": auth}),
            StatusCode::BAD_REQUEST,
            "M_THREEPID_AUTH_FAILED",
        ),
        (
            "a session not validated",
            json!({"sid": sid, "client_secret": "good", "auth": auth}),
            StatusCode::BAD_REQUEST,
            "M_THREEPID_AUTH_FAILED",
        ),
        (
            "a wrong password",
            json!({"sid": sid, "client_secret": "good", "auth": password_auth("alice", "wrong", None)}),
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            "no sid",
            json!({"client_secret": "good", "auth": auth}),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
    ];
    for (reason, body, status, errcode) in add_rows {
        let got = server.post(ADD, &alice.access_token, body).await;
        assert_eq!(got.0, status, "{reason}: {}", got.1);
        if !errcode.is_empty() {
            assert_eq!(got.1["errcode"], errcode, "{reason}: {}", got.1);
        }
    }
    let other_rows: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "delete an address not on the account",
            DELETE,
            json!({"medium": "email", "address": "x@example.org"}),
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        (
            "delete without an address",
            DELETE,
            json!({"medium": "email"}),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "bind without an identity server",
            "/_matrix/client/v3/account/3pid/bind",
            json!({"sid": "s", "client_secret": "c", "id_access_token": "t"}),
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
        ),
        (
            "bind with an identity server that is not a host",
            "/_matrix/client/v3/account/3pid/bind",
            json!({"sid": "s", "client_secret": "c", "id_server": "https://id.example.org/", "id_access_token": "t"}),
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        (
            "bind through a loopback identity server",
            "/_matrix/client/v3/account/3pid/bind",
            json!({"sid": "s", "client_secret": "c", "id_server": "127.0.0.1:9", "id_access_token": "t"}),
            StatusCode::BAD_REQUEST,
            "M_SERVER_NOT_TRUSTED",
        ),
    ];
    for (reason, path, body, status, errcode) in other_rows {
        let got = server.post(path, &alice.access_token, body).await;
        assert_eq!(
            (got.0, got.1["errcode"].as_str()),
            (status, Some(errcode)),
            "{reason}: {}",
            got.1
        );
    }
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let Some(mut sink) = SmtpSink::start().await else { return };
    let (server, _) = server_with_mail(&sink, "token_lifetime_seconds = 1\n").await;
    let (sid, mail) =
        request_mail(&server, &mut sink, ACCOUNT_TOKEN, "late", "alice@example.org").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let submit = json!({ "sid": sid, "client_secret": "late", "token": mail.link_param("token") });
    let got = anonymous(&server, "/_hearth/client/v1/3pid/email/submitToken", submit).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_THREEPID_AUTH_FAILED");
    assert!(got.1["error"].as_str().unwrap().contains("expired"), "{}", got.1);
    let page = reqwest::get(mail.link()).await.unwrap().text().await.unwrap();
    assert!(page.contains("not confirmed") && page.contains("expired"), "{page}");
}

#[tokio::test]
async fn token_requests_are_rate_limited_per_client() {
    let Some(mut sink) = SmtpSink::start().await else { return };
    let config = sink
        .config("")
        .replace("token_requests_per_minute = 1000", "token_requests_per_minute = 2");
    let server = TestServer::start_with_config(&config, &[]).await;
    for attempt in 1..=2 {
        let email = format!("user{attempt}@example.org");
        let (status, _) = anonymous(&server, ACCOUNT_TOKEN, token_request("s", &email, 1)).await;
        assert_eq!(status, StatusCode::OK);
        sink.next_mail().await;
        // Retries of the same attempt send nothing, as the spec says, and so cost nothing.
        for _ in 0..3 {
            let retry = anonymous(&server, ACCOUNT_TOKEN, token_request("s", &email, 1)).await;
            assert_eq!(retry.0, StatusCode::OK, "{}", retry.1);
        }
    }
    let got = anonymous(&server, ACCOUNT_TOKEN, token_request("s", "user3@example.org", 1)).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    // The refused request left no session behind: its retry is refused too, not answered as if
    // a mail had gone out.
    let retry = anonymous(&server, ACCOUNT_TOKEN, token_request("s", "user3@example.org", 1)).await;
    assert_error(&retry, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn deactivation_removes_the_accounts_addresses() {
    let Some(mut sink) = SmtpSink::start().await else { return };
    let (server, alice) = server_with_mail(&sink, "").await;
    add_email(&server, &mut sink, &alice, "alice@example.org").await;
    let body = json!({ "auth": password_auth("alice", "password-alice", None) });
    let (status, json) =
        server.post("/_matrix/client/v3/account/deactivate", &alice.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["id_server_unbind_result"], "no-support");

    // The address is free again, and no longer resets a password.
    let got =
        anonymous(&server, PASSWORD_TOKEN, token_request("after", "alice@example.org", 1)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_THREEPID_NOT_FOUND");
    let bob = server.register("bob").await;
    add_email(&server, &mut sink, &bob, "alice@example.org").await;
}

/// An identity server played by the test: answers `/3pid/bind` for the access token
/// `good-token` and `/3pid/unbind` signed with `X-Matrix`; records each request.
struct IdentityServer {
    port: u16,
    #[allow(clippy::disallowed_types)]
    requests: Arc<Mutex<Vec<(String, String, Value)>>>,
}

impl IdentityServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, recorded.clone()));
            }
        });
        Self { port, requests }
    }
}

#[allow(clippy::disallowed_types)]
async fn answer(mut stream: TcpStream, requests: Arc<Mutex<Vec<(String, String, Value)>>>) {
    let mut data = Vec::new();
    let mut buffer = [0; 4096];
    let (head, body) = loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buffer[..n]),
        }
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&data[..end]).to_string();
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            break (head, data[end + 4..end + 4 + length].to_vec());
        }
    };
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    let auth = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: "))
        })
        .unwrap_or("")
        .to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    requests.lock().unwrap().push((path.clone(), auth.clone(), body.clone()));
    if auth == "Bearer huge-token" {
        // Says 100 MB are coming, sends a little and then nothing: a server that read it all
        // would wait out its timeout holding what came.
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                    content-length: 100000000\r\n\r\n";
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&[b' '; 1024]).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        return;
    }
    let (status, reply) = match path.as_str() {
        "/_matrix/identity/v2/3pid/bind" if auth == "Bearer good-token" => (
            "200 OK",
            json!({ "medium": "email", "address": "alice@example.org", "mxid": body["mxid"] }),
        ),
        "/_matrix/identity/v2/3pid/bind" => {
            ("401 Unauthorized", json!({ "errcode": "M_UNAUTHORIZED", "error": "Unknown token" }))
        }
        "/_matrix/identity/v2/3pid/unbind" if auth.starts_with("X-Matrix origin=\"localhost\"") => {
            ("200 OK", json!({}))
        }
        _ => ("403 Forbidden", json!({ "errcode": "M_FORBIDDEN", "error": "no" })),
    };
    let reply = reply.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

#[tokio::test]
async fn bind_and_unbind_go_through_the_identity_server() {
    let identity = IdentityServer::start().await;
    let config = "server_name = \"localhost\"\n[identity_server]\n\
                  ip_allowlist = [\"127.0.0.1/32\"]\nplain_http = true\n";
    let server = TestServer::start_with_config(config, &["--registration", "open"]).await;
    let alice = server.register("alice").await;
    let id_server = format!("127.0.0.1:{}", identity.port);
    let bind = |token: &str| json!({ "sid": "is-sid", "client_secret": "is-secret", "id_server": id_server, "id_access_token": token });
    let bind_path = "/_matrix/client/v3/account/3pid/bind";

    let got = server.post(bind_path, &alice.access_token, bind("bad-token")).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED");
    let asked = std::time::Instant::now();
    let got = server.post(bind_path, &alice.access_token, bind("huge-token")).await;
    assert_error(&got, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
    assert!(got.1["error"].as_str().unwrap().contains("too large"), "{}", got.1);
    assert!(asked.elapsed() < Duration::from_secs(5), "refused before reading it all");
    let (status, json) = server.post(bind_path, &alice.access_token, bind("good-token")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    {
        let requests = identity.requests.lock().unwrap();
        let (path, auth, body) = requests.last().unwrap();
        assert_eq!(path, "/_matrix/identity/v2/3pid/bind");
        assert_eq!(auth, "Bearer good-token");
        assert_eq!(body["mxid"], alice.user_id);
        assert_eq!((&body["sid"], &body["client_secret"]), (&json!("is-sid"), &json!("is-secret")));
    }

    // Without an id_server the bind made here says where to unbind.
    let unbind = json!({ "medium": "email", "address": "alice@example.org" });
    let unbind_path = "/_matrix/client/v3/account/3pid/unbind";
    let (status, json) = server.post(unbind_path, &alice.access_token, unbind.clone()).await;
    assert_eq!((status, &json["id_server_unbind_result"]), (StatusCode::OK, &json!("success")));
    {
        let requests = identity.requests.lock().unwrap();
        let (path, auth, body) = requests.last().unwrap();
        assert_eq!(path, "/_matrix/identity/v2/3pid/unbind");
        assert!(auth.contains("key=\"ed25519:") && auth.contains("sig=\""), "{auth}");
        assert_eq!(body["threepid"], json!({ "medium": "email", "address": "alice@example.org" }));
    }
    // Forgotten after the unbind: nothing more to ask.
    let (status, json) = server.post(unbind_path, &alice.access_token, unbind).await;
    assert_eq!((status, &json["id_server_unbind_result"]), (StatusCode::OK, &json!("no-support")));
}
