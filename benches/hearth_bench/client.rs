//! The few client-server API calls the benchmark makes, over one pooled HTTP/1.1 client.
//!
//! It speaks plain JSON (no ruma) so that it measures the server as any client sees it. A
//! `429 M_LIMIT_EXCEEDED` is waited out and retried, and counted, so that a rate limit shows in
//! the report instead of failing the run. Any other non-200 answer is an error naming the request.
//!
//! `/sync` answers carry the instant their body had fully arrived, taken before the JSON is
//! parsed, so that timings measure the server and the wire rather than the benchmark's parser.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// How long an ordinary request may take before the run gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How many times one request is retried after `429 Too Many Requests`.
const MAX_RATE_LIMIT_RETRIES: u32 = 200;

/// A handle on one homeserver; cheap to clone, and every clone shares the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Arc<str>,
    rate_limited: Arc<AtomicU64>,
}

/// A registered account's credentials.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub device_id: String,
    access_token: String,
}

/// A `/sync` answer and when it had arrived.
pub struct SyncReply {
    pub body: Value,
    /// When the last byte of the body had been read (before parsing).
    pub received: Instant,
    /// The size of the body in bytes.
    pub bytes: usize,
}

impl SyncReply {
    /// The `next_batch` token to pass as `since` next time.
    pub fn next_batch(&self) -> anyhow::Result<String> {
        string_field(&self.body, "next_batch")
    }

    /// Whether the joined room `room_id`'s timeline holds the event `event_id`.
    pub fn has_event(&self, room_id: &str, event_id: &str) -> bool {
        let events = self.body["rooms"]["join"][room_id]["timeline"]["events"].as_array();
        events.is_some_and(|events| events.iter().any(|event| event["event_id"] == event_id))
    }

    /// How many joined rooms the answer lists.
    pub fn joined_rooms(&self) -> usize {
        self.body["rooms"]["join"].as_object().map_or(0, serde_json::Map::len)
    }

    /// The joined room `room_id`'s timeline events.
    pub fn timeline(&self, room_id: &str) -> &[Value] {
        let events = self.body["rooms"]["join"][room_id]["timeline"]["events"].as_array();
        events.map_or(&[], Vec::as_slice)
    }

    /// The to-device events the answer delivers.
    pub fn to_device(&self) -> &[Value] {
        self.body["to_device"]["events"].as_array().map_or(&[], Vec::as_slice)
    }

    /// How many joined rooms carry an ephemeral event of type `event_type`.
    pub fn rooms_with_ephemeral(&self, event_type: &str) -> usize {
        let Some(rooms) = self.body["rooms"]["join"].as_object() else { return 0 };
        let has = |room: &Value| {
            let events = room["ephemeral"]["events"].as_array();
            events.is_some_and(|events| events.iter().any(|event| event["type"] == event_type))
        };
        rooms.values().filter(|room| has(room)).count()
    }
}

/// One raw answer: status, body text, and when the body had been read.
struct Answer {
    status: StatusCode,
    text: String,
    received: Instant,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| Value::String(self.text.clone()))
    }
}

impl Client {
    /// A client for the homeserver at `base_url` (scheme, host and port, no trailing slash).
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(300))
            .build()
            .context("cannot build the HTTP client")?;
        let base_url = base_url.trim_end_matches('/').into();
        Ok(Self { http, base_url, rate_limited: Arc::default() })
    }

    /// How many `429` answers the server has given so far.
    pub fn rate_limited_count(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Registers `username` with a dummy-auth interactive flow (repeating with the session the
    /// server hands out, if it asks for one).
    pub async fn register(&self, username: &str) -> anyhow::Result<User> {
        let mut body = json!({
            "username": username,
            "password": format!("bench-password-{username}"),
            "auth": { "type": "m.login.dummy" },
        });
        let path = "/_matrix/client/v3/register";
        let mut answer = self.call(Method::POST, path, None, Some(&body)).await?;
        if answer.status == StatusCode::UNAUTHORIZED
            && let Some(session) = answer.json().get("session").cloned()
        {
            body["auth"]["session"] = session;
            answer = self.call(Method::POST, path, None, Some(&body)).await?;
        }
        let reply = expect_ok("register", &answer)?;
        Ok(User {
            user_id: string_field(&reply, "user_id")?,
            device_id: string_field(&reply, "device_id")?,
            access_token: string_field(&reply, "access_token")?,
        })
    }

    /// Creates a public room and returns its ID.
    pub async fn create_room(&self, user: &User, name: &str) -> anyhow::Result<String> {
        self.create_room_with(user, json!({ "preset": "public_chat", "name": name })).await
    }

    /// Creates a room from the `/createRoom` body `body` and returns its ID.
    pub async fn create_room_with(&self, user: &User, body: Value) -> anyhow::Result<String> {
        let path = "/_matrix/client/v3/createRoom";
        let reply = self.ok(Method::POST, path, user, Some(&body), "createRoom").await?;
        string_field(&reply, "room_id")
    }

    /// Joins `room_id`.
    pub async fn join(&self, user: &User, room_id: &str) -> anyhow::Result<()> {
        let path = format!("/_matrix/client/v3/join/{}", encode(room_id));
        self.ok(Method::POST, &path, user, Some(&json!({})), "join").await.map(drop)
    }

    /// Sends an `m.text` message with transaction ID `txn_id`; returns the event ID.
    pub async fn send_text(
        &self,
        user: &User,
        room_id: &str,
        txn_id: &str,
        text: &str,
    ) -> anyhow::Result<String> {
        let content = json!({ "msgtype": "m.text", "body": text });
        self.send_event(user, room_id, "m.room.message", txn_id, &content).await
    }

    /// Sends a message event of type `event_type`; returns the event ID.
    pub async fn send_event(
        &self,
        user: &User,
        room_id: &str,
        event_type: &str,
        txn_id: &str,
        content: &Value,
    ) -> anyhow::Result<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{}/{}",
            encode(room_id),
            encode(event_type),
            encode(txn_id)
        );
        let reply = self.ok(Method::PUT, &path, user, Some(content), "send").await?;
        string_field(&reply, "event_id")
    }

    /// `PUT /sendToDevice/{eventType}/{txnId}` with `messages` (user → device → content).
    pub async fn send_to_device(
        &self,
        user: &User,
        event_type: &str,
        txn_id: &str,
        messages: Value,
    ) -> anyhow::Result<()> {
        let path =
            format!("/_matrix/client/v3/sendToDevice/{}/{}", encode(event_type), encode(txn_id));
        let body = json!({ "messages": messages });
        self.ok(Method::PUT, &path, user, Some(&body), "sendToDevice").await.map(drop)
    }

    /// Starts (`typing`) or stops typing in `room_id`.
    pub async fn typing(&self, user: &User, room_id: &str, typing: bool) -> anyhow::Result<()> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/typing/{}",
            encode(room_id),
            encode(&user.user_id)
        );
        let body = json!({ "typing": typing, "timeout": 30_000 });
        self.ok(Method::PUT, &path, user, Some(&body), "typing").await.map(drop)
    }

    /// Sends an `m.read` receipt for `event_id`.
    pub async fn read_receipt(
        &self,
        user: &User,
        room_id: &str,
        event_id: &str,
    ) -> anyhow::Result<()> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            encode(room_id),
            encode(event_id)
        );
        self.ok(Method::POST, &path, user, Some(&json!({})), "receipt").await.map(drop)
    }

    /// `GET /sync` with the default filter: an initial sync when `since` is `None`, else a long
    /// poll of up to `timeout_ms`.
    pub async fn sync(
        &self,
        user: &User,
        since: Option<&str>,
        timeout_ms: u64,
    ) -> anyhow::Result<SyncReply> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={}", encode(since)));
        }
        let answer = self.call(Method::GET, &path, Some(&user.access_token), None).await?;
        let body = expect_ok("sync", &answer)?;
        Ok(SyncReply { body, received: answer.received, bytes: answer.text.len() })
    }

    /// Probes `GET /_matrix/client/versions` once; true on `200 OK`.
    pub async fn versions_ok(&self) -> bool {
        let url = format!("{}/_matrix/client/versions", self.base_url);
        let response = self.http.get(url).timeout(Duration::from_secs(2)).send().await;
        response.is_ok_and(|response| response.status() == StatusCode::OK)
    }

    /// An authenticated request whose answer must be `200 OK`; `what` names it in errors.
    async fn ok(
        &self,
        method: Method,
        path: &str,
        user: &User,
        body: Option<&Value>,
        what: &str,
    ) -> anyhow::Result<Value> {
        let answer = self.call(method, path, Some(&user.access_token), body).await?;
        expect_ok(what, &answer)
    }

    /// Sends one request, waiting out and retrying `429` answers.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        for _ in 0..MAX_RATE_LIMIT_RETRIES {
            let answer = self.call_once(method.clone(), path, token, body).await?;
            if answer.status != StatusCode::TOO_MANY_REQUESTS {
                return Ok(answer);
            }
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            let retry_after = answer.json().get("retry_after_ms").and_then(Value::as_u64);
            let wait_ms = retry_after.unwrap_or(500).clamp(10, 5_000);
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
        bail!("{method} {} stayed rate limited after {MAX_RATE_LIMIT_RETRIES} tries", route(path))
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url))
            .timeout(REQUEST_TIMEOUT);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let failed = || format!("{method} {} failed", route(path));
        let response = request.send().await.with_context(failed)?;
        let status = response.status();
        let text = response.text().await.with_context(failed)?;
        Ok(Answer { status, text, received: Instant::now() })
    }
}

/// The parsed reply when the answer is `200 OK`, else an error quoting the server's answer.
fn expect_ok(what: &str, answer: &Answer) -> anyhow::Result<Value> {
    if answer.status != StatusCode::OK {
        bail!("{what} answered {}: {}", answer.status, truncate(&answer.text, 300));
    }
    serde_json::from_str(&answer.text)
        .with_context(|| format!("{what} answered 200 with a body that is not JSON"))
}

fn string_field(reply: &Value, field: &str) -> anyhow::Result<String> {
    match reply.get(field).and_then(Value::as_str) {
        Some(value) => Ok(value.to_owned()),
        None => bail!("the reply has no string `{field}`: {}", truncate(&reply.to_string(), 300)),
    }
}

fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, NON_ALPHANUMERIC).to_string()
}

/// A path without its query string, which may carry tokens.
fn route(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

fn truncate(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
