//! Application services (bridges) end to end: the real server with a registration file, and an
//! HTTP server of the test's own playing the service. Transactions arrive with the `hs_token`,
//! in order, are retried after a failure and survive a restart of the service and the server;
//! the service registers, logs in and acts as users of its namespaces, which others cannot
//! take; an alias of its namespace that no room has is asked of it; the ping and the service's
//! room directory answer as the spec says.

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicU32, Ordering},
    },
    time::Duration,
};

use common::{
    TestServer, TestUser, assert_error, enc, run_hearth,
    table::{row, run_table},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use warp::Filter as _;

const V3: &str = "/_matrix/client/v3";
const AS_TOKEN: &str = "as-token-of-the-bridge";
const HS_TOKEN: &str = "hs-token-of-the-bridge";
const OTHER_AS_TOKEN: &str = "as-token-of-the-service-without-url";

/// One `PUT /transactions/{txnId}` the service received.
#[derive(Clone, Debug)]
struct Transaction {
    txn_id: String,
    authorization: Option<String>,
    events: Vec<Value>,
    accepted: bool,
}

/// What the service received and how it answers.
#[derive(Default)]
struct ServiceState {
    transactions: Mutex<Vec<Transaction>>,
    /// Pings: the `Authorization` header and the body.
    pings: Mutex<Vec<(Option<String>, Value)>>,
    /// Transactions still to refuse with a 500.
    refuse_next: AtomicU32,
    /// The status pings are answered with (0: 200).
    ping_status: AtomicU16,
    /// Room alias queries: the alias asked for and the `Authorization` header.
    alias_queries: Mutex<Vec<(String, Option<String>)>>,
    /// The homeserver's URL, once known: the service then answers an alias query for
    /// `#bridge_lounge:localhost` by creating the room (as its own user) and saying yes.
    homeserver: Mutex<Option<String>>,
}

impl ServiceState {
    /// `GET /_matrix/app/v1/rooms/{roomAlias}`.
    async fn answer_alias_query(
        &self,
        alias: String,
        authorization: Option<String>,
    ) -> warp::reply::WithStatus<warp::reply::Json> {
        let alias = percent_encoding::percent_decode_str(&alias).decode_utf8_lossy().into_owned();
        self.alias_queries.lock().unwrap().push((alias.clone(), authorization));
        let homeserver = self.homeserver.lock().unwrap().clone();
        let (Some(homeserver), "#bridge_lounge:localhost") = (homeserver, alias.as_str()) else {
            return reply(404, json!({"errcode": "M_NOT_FOUND"}));
        };
        let body = json!({"room_alias_name": "bridge_lounge", "preset": "public_chat"});
        let created = reqwest::Client::new()
            .post(format!("{homeserver}{V3}/createRoom"))
            .bearer_auth(AS_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::OK, "{}", created.text().await.unwrap());
        reply(200, json!({}))
    }
}

/// The test's application service: an HTTP server on a port reserved for it, which may be down.
struct FakeService {
    address: SocketAddr,
    state: Arc<ServiceState>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeService {
    /// A service whose port is reserved but which is not listening yet.
    fn reserve() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        Self { address, state: Arc::default(), task: None }
    }

    async fn started() -> Self {
        let mut service = Self::reserve();
        service.start().await;
        service
    }

    async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.address).await.unwrap();
        let state = self.state.clone();
        let transactions = warp::put()
            .and(warp::path!("_matrix" / "app" / "v1" / "transactions" / String))
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::json())
            .map(move |txn_id, authorization, body: Value| {
                let accepted = state
                    .refuse_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_err();
                let events = body["events"].as_array().cloned().unwrap_or_default();
                let transaction = Transaction { txn_id, authorization, events, accepted };
                state.transactions.lock().unwrap().push(transaction);
                let status = if accepted { 200 } else { 500 };
                reply(status, json!({}))
            });
        let state = self.state.clone();
        let ping = warp::post()
            .and(warp::path!("_matrix" / "app" / "v1" / "ping"))
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::json())
            .map(move |authorization, body: Value| {
                state.pings.lock().unwrap().push((authorization, body));
                match state.ping_status.load(Ordering::SeqCst) {
                    0 => reply(200, json!({})),
                    status => reply(status, json!({"errcode": "M_UNKNOWN_TOKEN"})),
                }
            });
        let state = self.state.clone();
        let alias_query = warp::get()
            .and(warp::path!("_matrix" / "app" / "v1" / "rooms" / String))
            .and(warp::header::optional::<String>("authorization"))
            .then(move |alias, authorization| {
                let state = state.clone();
                async move { state.answer_alias_query(alias, authorization).await }
            });
        let server = warp::serve(transactions.or(ping).or(alias_query)).incoming(listener);
        self.task = Some(tokio::spawn(server.run()));
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The events of the accepted transactions, each transaction once, in arrival order.
    fn events(&self) -> Vec<Value> {
        let transactions = self.state.transactions.lock().unwrap();
        let mut seen = Vec::new();
        let mut events = Vec::new();
        for transaction in transactions.iter().filter(|t| t.accepted) {
            if !seen.contains(&transaction.txn_id) {
                seen.push(transaction.txn_id.clone());
                events.extend(transaction.events.iter().cloned());
            }
        }
        events
    }

    /// Waits until the accepted events hold the user's join (a minute at most).
    async fn wait_until_joined(&self, user_id: &str) {
        for _ in 0..600 {
            let joined = self.events().iter().any(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == user_id
                    && e["content"]["membership"] == "join"
            });
            if joined {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the service never got the join of {user_id}");
    }

    /// Waits until the accepted events hold message bodies `bodies` (a minute at most) and
    /// returns the bodies of every message received, in order.
    async fn wait_for_messages(&self, bodies: &[&str]) -> Vec<String> {
        let found = || -> Vec<String> {
            self.events()
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        };
        for _ in 0..600 {
            let messages = found();
            if bodies.iter().all(|body| messages.iter().any(|m| m == body)) {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the service never got {bodies:?}; it got {:?}", found());
    }
}

impl Drop for FakeService {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn reply(status: u16, body: Value) -> warp::reply::WithStatus<warp::reply::Json> {
    let status = warp::http::StatusCode::from_u16(status).unwrap();
    warp::reply::with_status(warp::reply::json(&body), status)
}

/// The bridge's registration: users `@bridge_*` and aliases `#bridge_*`, exclusively.
fn bridge_registration(url: &str) -> String {
    format!(
        r##"id: bridge
url: "{url}"
as_token: {AS_TOKEN}
hs_token: {HS_TOKEN}
sender_localpart: bridgebot
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:localhost"
  aliases:
    - exclusive: true
      regex: "#bridge_.*:localhost"
  rooms: []
rate_limited: false
"##
    )
}

/// A second service, without URL: it receives nothing and cannot be pinged.
const SERVICE_WITHOUT_URL: &str = r#"id: silent
url: null
as_token: as-token-of-the-service-without-url
hs_token: hs-token-of-the-service-without-url
sender_localpart: silentbot
namespaces:
  users:
    - exclusive: false
      regex: "@silent_.*:localhost"
"#;

/// A server with the bridge (at `url`) and the service without URL registered, and the
/// directory holding the registration files.
async fn server_with_services(url: &str) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let bridge = write_file(dir.path(), "bridge.yaml", &bridge_registration(url));
    let silent = write_file(dir.path(), "silent.yaml", SERVICE_WITHOUT_URL);
    let config = format!(
        "server_name = \"localhost\"\n[appservices]\nregistration_files = [{:?}, {:?}]\n",
        bridge.to_str().unwrap(),
        silent.to_str().unwrap()
    );
    let server = TestServer::start_with_config(&config, &["--registration", "open"]).await;
    (server, dir)
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Sends a request with the bridge's `as_token`.
async fn as_call(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    server.call(method, path, Some(AS_TOKEN), body).await
}

/// The bridge registers a user of its namespace without logging in.
async fn register_bridge_user(server: &TestServer, localpart: &str) -> String {
    let body = json!({"type": "m.login.application_service", "username": localpart,
                      "inhibit_login": true});
    let (status, json) = as_call(server, Method::POST, &format!("{V3}/register"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "register {localpart}: {json}");
    json["user_id"].as_str().unwrap().to_owned()
}

/// Alice's room with `@bridge_bob` invited and joined (acting as him); its ID.
async fn room_with_bridge_user(server: &TestServer, alice: &TestUser) -> String {
    let bob = register_bridge_user(server, "bridge_bob").await;
    let room_id = server.create_room(alice, json!({"invite": [bob]})).await;
    let path = format!("{V3}/join/{}?user_id={}", enc(&room_id), enc(&bob));
    let (status, json) = as_call(server, Method::POST, &path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "join as bob: {json}");
    room_id
}

#[tokio::test]
async fn transactions_arrive_in_order_with_the_hs_token() {
    let service = FakeService::started().await;
    let (server, _dir) = server_with_services(&service.url()).await;
    let alice = server.register("alice").await;
    let room_id = room_with_bridge_user(&server, &alice).await;
    for body in ["one", "two", "three"] {
        server.send_text(&alice, &room_id, body).await;
    }
    let messages = service.wait_for_messages(&["one", "two", "three"]).await;
    assert_eq!(messages, ["one", "two", "three"]);

    let events = service.events();
    let membership = |membership: &str| {
        events.iter().position(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@bridge_bob:localhost"
                && e["content"]["membership"] == membership
        })
    };
    let (invite, join) = (membership("invite"), membership("join"));
    assert!(invite.is_some() && invite < join, "the invite, then the join: {events:?}");
    assert!(events.iter().all(|e| e["room_id"] == room_id.as_str()), "{events:?}");
    let transactions = service.state.transactions.lock().unwrap().clone();
    for transaction in &transactions {
        let expected = format!("Bearer {HS_TOKEN}");
        assert_eq!(transaction.authorization.as_deref(), Some(expected.as_str()));
    }
}

#[tokio::test]
async fn a_refused_transaction_is_sent_again_with_the_same_id() {
    let service = FakeService::started().await;
    let (server, _dir) = server_with_services(&service.url()).await;
    let alice = server.register("alice").await;
    let room_id = room_with_bridge_user(&server, &alice).await;
    service.wait_until_joined("@bridge_bob:localhost").await;
    service.state.refuse_next.store(2, Ordering::SeqCst);
    server.send_text(&alice, &room_id, "retried").await;
    server.send_text(&alice, &room_id, "after it").await;

    let messages = service.wait_for_messages(&["retried", "after it"]).await;
    assert_eq!(messages, ["retried", "after it"]);
    let transactions = service.state.transactions.lock().unwrap().clone();
    let refused: Vec<_> = transactions.iter().filter(|t| !t.accepted).collect();
    assert_eq!(refused.len(), 2, "{transactions:?}");
    let accepted_again =
        transactions.iter().filter(|t| t.accepted && t.txn_id == refused[0].txn_id).count();
    assert_eq!(accepted_again, 1, "the refused transaction came again: {transactions:?}");
    assert_eq!(refused[0].txn_id, refused[1].txn_id, "same ID on every attempt");
}

#[tokio::test]
async fn a_transaction_refused_before_a_restart_is_sent_again_as_it_was() {
    let service = FakeService::started().await;
    let (mut server, _dir) = server_with_services(&service.url()).await;
    let alice = server.register("alice").await;
    let room_id = room_with_bridge_user(&server, &alice).await;
    service.wait_until_joined("@bridge_bob:localhost").await;
    service.state.refuse_next.store(u32::MAX, Ordering::SeqCst);
    server.send_text(&alice, &room_id, "refused").await;
    let refused = loop {
        let transactions = service.state.transactions.lock().unwrap().clone();
        if let Some(refused) = transactions.into_iter().find(|t| !t.accepted) {
            break refused;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.send_text(&alice, &room_id, "queued behind it").await;

    server.kill_and_restart().await;
    service.state.refuse_next.store(0, Ordering::SeqCst);
    let messages = service.wait_for_messages(&["refused", "queued behind it"]).await;
    assert_eq!(messages, ["refused", "queued behind it"]);
    let transactions = service.state.transactions.lock().unwrap().clone();
    let mut after_refusal = transactions.iter().skip_while(|t| t.txn_id != refused.txn_id);
    let first_accepted = after_refusal.find(|t| t.accepted).unwrap();
    assert_eq!(first_accepted.txn_id, refused.txn_id, "the same transaction: {transactions:?}");
    assert_eq!(first_accepted.events.len(), refused.events.len(), "{transactions:?}");
}

#[tokio::test]
async fn events_sent_while_the_service_is_down_arrive_after_a_restart_of_both() {
    let mut service = FakeService::reserve();
    let (mut server, _dir) = server_with_services(&service.url()).await;
    let alice = server.register("alice").await;
    let room_id = room_with_bridge_user(&server, &alice).await;
    server.send_text(&alice, &room_id, "before the restart").await;

    server.kill_and_restart().await;
    server.send_text(&alice, &room_id, "after the restart").await;
    service.start().await;

    let messages = service.wait_for_messages(&["before the restart", "after the restart"]).await;
    assert_eq!(messages, ["before the restart", "after the restart"]);
}

#[tokio::test]
async fn the_service_registers_and_logs_in_its_users_which_others_cannot_take() {
    let (server, _dir) = server_with_services("http://127.0.0.1:9").await;
    for name in ["bridge_carol", "bridgebot"] {
        let body = json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}});
        let got = server.call(Method::POST, &format!("{V3}/register"), None, Some(body)).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
    }
    let got = server
        .call(Method::GET, &format!("{V3}/register/available?username=bridge_carol"), None, None)
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");

    let body = json!({"type": "m.login.application_service", "username": "bridge_dave",
                      "device_id": "DAVEPHONE"});
    let (status, json) =
        as_call(&server, Method::POST, &format!("{V3}/register"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let token = json["access_token"].as_str().unwrap();
    let (_, whoami) = server.get(&format!("{V3}/account/whoami"), token).await;
    assert_eq!(whoami["user_id"], "@bridge_dave:localhost");

    let login = json!({"type": "m.login.application_service",
                       "identifier": {"type": "m.id.user", "user": "bridge_dave"}});
    // More logins than `login_attempts_per_minute` allows: the bridge is not rate-limited.
    for _ in 0..35 {
        let (status, json) =
            as_call(&server, Method::POST, &format!("{V3}/login"), Some(login.clone())).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["user_id"], "@bridge_dave:localhost");
    }
    let alice = server.register("alice").await;
    let login_alice = json!({"type": "m.login.application_service",
                             "identifier": {"type": "m.id.user", "user": "alice"}});
    let got = as_call(&server, Method::POST, &format!("{V3}/login"), Some(login_alice)).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let got = server
        .call(Method::POST, &format!("{V3}/login"), Some(&alice.access_token), Some(login))
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn the_service_acts_as_the_users_and_devices_it_asserts() {
    let (server, _dir) = server_with_services("http://127.0.0.1:9").await;
    let on = &server;
    let whoami = move |query: &str| {
        let path = format!("{V3}/account/whoami{query}");
        async move { as_call(on, Method::GET, &path, None).await }
    };
    let (status, json) = whoami("").await;
    assert_eq!((status, &json["user_id"]), (StatusCode::OK, &json!("@bridgebot:localhost")));

    let body = json!({"type": "m.login.application_service", "username": "bridge_erin",
                      "device_id": "ERINPHONE"});
    let (status, json) =
        as_call(&server, Method::POST, &format!("{V3}/register"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json) = whoami("?user_id=%40bridge_erin%3Alocalhost").await;
    assert_eq!((status, &json["user_id"]), (StatusCode::OK, &json!("@bridge_erin:localhost")));
    assert_eq!(json.get("device_id"), None, "no device named, none acted on: {json}");
    let (status, json) = whoami("?user_id=%40bridge_erin%3Alocalhost&device_id=ERINPHONE").await;
    assert_eq!((status, &json["device_id"]), (StatusCode::OK, &json!("ERINPHONE")));

    // Its users have no password: the bridge deletes their devices without one.
    let path = format!("{V3}/devices/ERINPHONE?user_id=%40bridge_erin%3Alocalhost");
    let (status, json) = as_call(&server, Method::DELETE, &path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let got = whoami("?user_id=%40bridge_erin%3Alocalhost&device_id=ERINPHONE").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_UNKNOWN_DEVICE");

    let got = whoami("?user_id=%40bridge_erin%3Alocalhost&device_id=NOSUCHDEVICE").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_UNKNOWN_DEVICE");
    server.register("alice").await;
    let got = whoami("?user_id=%40alice%3Alocalhost").await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let got = whoami("?user_id=%40bridge_nobody%3Alocalhost").await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

fn ping_path(id: &str) -> String {
    format!("/_matrix/client/v1/appservice/{id}/ping")
}

#[tokio::test]
async fn a_ping_reaches_the_service_or_says_why_not() {
    let service = FakeService::started().await;
    let (server, _dir) = server_with_services(&service.url()).await;
    let body = json!({"transaction_id": "ping-1"});
    let (status, json) =
        as_call(&server, Method::POST, &ping_path("bridge"), Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert!(json["duration_ms"].is_u64(), "{json}");
    let pings = service.state.pings.lock().unwrap().clone();
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].0.as_deref(), Some(format!("Bearer {HS_TOKEN}").as_str()));
    assert_eq!(pings[0].1["transaction_id"], "ping-1");

    service.state.ping_status.store(401, Ordering::SeqCst);
    let got = as_call(&server, Method::POST, &ping_path("bridge"), Some(body.clone())).await;
    assert_error(&got, StatusCode::BAD_GATEWAY, "M_BAD_STATUS");
    assert_eq!(got.1["status"], 401, "{}", got.1);
    assert!(got.1["body"].as_str().unwrap().contains("M_UNKNOWN_TOKEN"), "{}", got.1);

    let got = server
        .call(Method::POST, &ping_path("silent"), Some(OTHER_AS_TOKEN), Some(body.clone()))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_URL_NOT_SET");

    // A service that is not listening: its port is reserved, but nothing ever answers there.
    let down = FakeService::reserve();
    let (server, _dir) = server_with_services(&down.url()).await;
    let got = as_call(&server, Method::POST, &ping_path("bridge"), Some(body)).await;
    assert_error(&got, StatusCode::BAD_GATEWAY, "M_CONNECTION_FAILED");
}

#[tokio::test]
async fn an_unknown_alias_of_the_service_is_asked_of_it_and_then_resolves() {
    let service = FakeService::started().await;
    let (server, _dir) = server_with_services(&service.url()).await;
    *service.state.homeserver.lock().unwrap() = Some(server.base_url.clone());
    let alice = server.register("alice").await;
    let alias_path = |alias: &str| format!("{V3}/directory/room/{}", enc(alias));

    // No room has the alias: the service is asked, creates it and says yes.
    let (status, json) =
        server.get(&alias_path("#bridge_lounge:localhost"), &alice.access_token).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let room_id = json["room_id"].as_str().unwrap().to_owned();
    let queries = service.state.alias_queries.lock().unwrap().clone();
    let bearer = format!("Bearer {HS_TOKEN}");
    assert_eq!(queries, [("#bridge_lounge:localhost".to_owned(), Some(bearer))]);

    // Now it exists: joining by it asks nothing more.
    let path = format!("{V3}/join/{}", enc("#bridge_lounge:localhost"));
    let (status, json) = server.post(&path, &alice.access_token, json!({})).await;
    assert_eq!((status, json["room_id"].as_str()), (StatusCode::OK, Some(room_id.as_str())));
    assert_eq!(service.state.alias_queries.lock().unwrap().len(), 1);

    // The service says no: 404, after asking. An alias outside its namespaces is not asked.
    let got = server.get(&alias_path("#bridge_nothing:localhost"), &alice.access_token).await;
    assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let got = server.get(&alias_path("#elsewhere:localhost"), &alice.access_token).await;
    assert_error(&got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let asked: Vec<String> =
        service.state.alias_queries.lock().unwrap().iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(asked, ["#bridge_lounge:localhost", "#bridge_nothing:localhost"]);
}

#[tokio::test]
async fn aliases_of_the_service_namespace_are_the_service_s_alone() {
    let (server, _dir) = server_with_services("http://127.0.0.1:9").await;
    let alice = server.register("alice").await;
    let room_id = server.create_room(&alice, json!({})).await;
    let alias_path = |alias: &str| format!("{V3}/directory/room/{}", enc(alias));
    let body = json!({"room_id": room_id});

    let mine = alias_path("#bridge_mine:localhost");
    let got = server.put(&mine, &alice.access_token, body.clone()).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");
    let create = json!({"room_alias_name": "bridge_lounge"});
    let got = server.post(&format!("{V3}/createRoom"), &alice.access_token, create).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "M_EXCLUSIVE");

    // The service points an alias of its namespace at a room it is not in; not one of others.
    let (status, json) =
        as_call(&server, Method::PUT, &alias_path("#bridge_mine:localhost"), Some(body.clone()))
            .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json) =
        server.get(&alias_path("#bridge_mine:localhost"), &alice.access_token).await;
    assert_eq!((status, json["room_id"].as_str()), (StatusCode::OK, Some(room_id.as_str())));
    let got = as_call(&server, Method::PUT, &alias_path("#elsewhere:localhost"), Some(body)).await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

fn directory_path(network: &str, room_id: &str) -> String {
    format!("{V3}/directory/list/appservice/{network}/{}", enc(room_id))
}

/// The room IDs `/publicRooms` lists for a filter body.
async fn public_rooms(server: &TestServer, user: &TestUser, body: Value) -> Vec<String> {
    let (status, json) = server.post(&format!("{V3}/publicRooms"), &user.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let chunk = json["chunk"].as_array().unwrap();
    chunk.iter().map(|room| room["room_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn rooms_the_service_publishes_are_listed_under_their_network() {
    let (server, _dir) = server_with_services("http://127.0.0.1:9").await;
    let alice = server.register("alice").await;
    let bridged = server.create_room(&alice, json!({})).await;
    let ours = server.create_room(&alice, json!({"visibility": "public"})).await;
    let publish = json!({"visibility": "public"});
    let (status, json) =
        as_call(&server, Method::PUT, &directory_path("irc", &bridged), Some(publish)).await;
    assert_eq!((status, json), (StatusCode::OK, json!({})));

    assert_eq!(public_rooms(&server, &alice, json!({})).await, vec![ours.clone()]);
    let irc = json!({"third_party_instance_id": "irc"});
    assert_eq!(public_rooms(&server, &alice, irc.clone()).await, vec![bridged.clone()]);
    let other = json!({"third_party_instance_id": "slack"});
    assert!(public_rooms(&server, &alice, other).await.is_empty());
    let mut all = public_rooms(&server, &alice, json!({"include_all_networks": true})).await;
    all.sort();
    let mut expected = vec![bridged.clone(), ours.clone()];
    expected.sort();
    assert_eq!(all, expected);

    let unpublish = json!({"visibility": "private"});
    let (status, _) =
        as_call(&server, Method::PUT, &directory_path("irc", &bridged), Some(unpublish)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(public_rooms(&server, &alice, irc).await.is_empty());
}

#[tokio::test]
async fn bad_application_service_requests_get_the_spec_errcode() {
    let (server, _dir) = server_with_services("http://127.0.0.1:9").await;
    let alice = server.register("alice").await;
    let room_id = server.create_room(&alice, json!({})).await;
    let user = Some(alice.access_token.as_str());
    let bridge = Some(AS_TOKEN);
    let public = Some(r#"{"visibility": "public"}"#);
    let ping = Some("{}");
    let long_network = "n".repeat(300);
    let whoami = |query: &str| format!("{V3}/account/whoami?user_id={query}");
    let rows = vec![
        row("ping without a token", Method::POST, ping_path("bridge"), None, ping)
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("ping with an unknown token", Method::POST, ping_path("bridge"), Some("nope"), ping)
            .expect(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        row("ping with a user's token", Method::POST, ping_path("bridge"), user, ping)
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("ping of another service", Method::POST, ping_path("silent"), bridge, ping)
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row("ping of no service", Method::POST, ping_path("nobody"), bridge, ping)
            .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "directory with a user's token",
            Method::PUT,
            directory_path("irc", &room_id),
            user,
            public,
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "directory with an unknown token",
            Method::PUT,
            directory_path("irc", &room_id),
            Some("nope"),
            public,
        )
        .expect(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        row(
            "directory of an unknown room",
            Method::PUT,
            directory_path("irc", "!nope:localhost"),
            bridge,
            public,
        )
        .expect(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "directory of a malformed room ID",
            Method::PUT,
            directory_path("irc", "nope"),
            bridge,
            public,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "directory with a network ID over 255 bytes",
            Method::PUT,
            directory_path(&long_network, &room_id),
            bridge,
            public,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "directory with an unknown visibility",
            Method::PUT,
            directory_path("irc", &room_id),
            bridge,
            Some(r#"{"visibility": "secret"}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "directory without visibility",
            Method::PUT,
            directory_path("irc", &room_id),
            bridge,
            Some("{}"),
        )
        .expect(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
        row(
            "acting as a user outside the namespaces",
            Method::GET,
            whoami("%40alice%3Alocalhost"),
            bridge,
            None,
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "acting as a user of another server",
            Method::GET,
            whoami("%40bridge_x%3Aelsewhere"),
            bridge,
            None,
        )
        .expect(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "acting as something that is not a user ID",
            Method::GET,
            whoami("garbage"),
            bridge,
            None,
        )
        .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an unknown as_token asserting a user",
            Method::GET,
            whoami("%40bridge_x%3Alocalhost"),
            Some("nope"),
            None,
        )
        .expect(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        row(
            "service registration with a user's token",
            Method::POST,
            format!("{V3}/register"),
            user,
            Some(r#"{"type": "m.login.application_service", "username": "bridge_y"}"#),
        )
        .expect(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        row(
            "service registration outside its namespace",
            Method::POST,
            format!("{V3}/register"),
            bridge,
            Some(r#"{"type": "m.login.application_service", "username": "mallory"}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_EXCLUSIVE"),
        row(
            "service registration of another service's user",
            Method::POST,
            format!("{V3}/register"),
            Some(OTHER_AS_TOKEN),
            Some(r#"{"type": "m.login.application_service", "username": "bridge_z"}"#),
        )
        .expect(StatusCode::BAD_REQUEST, "M_EXCLUSIVE"),
    ];
    run_table(&server, rows).await;
}

/// Starts `hearth serve` on a data directory whose configuration names `files`, expecting it
/// to stop; its stderr.
async fn serve_with_registrations_fails(files: &[&Path]) -> String {
    let temp = tempfile::tempdir().unwrap();
    let list: Vec<String> = files.iter().map(|f| format!("{:?}", f.to_str().unwrap())).collect();
    let config = format!(
        "server_name = \"localhost\"\n[appservices]\nregistration_files = [{}]\n",
        list.join(", ")
    );
    std::fs::write(temp.path().join("hearth.toml"), config).unwrap();
    let data_dir = temp.path().to_str().unwrap();
    let output = run_hearth(&["--data-dir", data_dir, "serve", "--listen", "127.0.0.1:0"]).await;
    assert!(!output.status.success(), "hearth must stop");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_bad_registration_file_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_file(dir.path(), "good.yaml", &bridge_registration("http://127.0.0.1:9"));
    let same_id = bridge_registration("http://127.0.0.1:9")
        .replace(AS_TOKEN, "another-as")
        .replace(HS_TOKEN, "another-hs")
        .replace("bridgebot", "otherbot");
    let same_token = bridge_registration("http://127.0.0.1:9")
        .replace("id: bridge", "id: other")
        .replace("bridgebot", "otherbot");
    // (file, its text, words of the reason, why)
    let cases = [
        ("not-yaml.yaml", "id: [unclosed".to_owned(), "not a registration", "not YAML"),
        ("no-token.yaml", "id: x\nurl: null\n".to_owned(), "not a registration", "fields missing"),
        (
            "bad-regex.yaml",
            bridge_registration("http://127.0.0.1:9").replace("@bridge_.*", "@bridge_("),
            "invalid regex",
            "a regex that does not compile",
        ),
        (
            "bad-sender.yaml",
            bridge_registration("http://127.0.0.1:9").replace("bridgebot", "\"Bad Local!\""),
            "sender_localpart may only contain",
            "a sender localpart outside the grammar",
        ),
        (
            "huge.yaml",
            format!("# {}\n", "x".repeat(2 * 1024 * 1024)),
            "larger than",
            "a file far larger than any registration",
        ),
        ("same-id.yaml", same_id, "id \"bridge\"", "a duplicate id"),
        ("same-token.yaml", same_token, "same as_token", "a duplicate token"),
    ];
    for (name, text, reason, why) in cases {
        let bad = write_file(dir.path(), name, &text);
        let stderr = serve_with_registrations_fails(&[&good, &bad]).await;
        assert!(stderr.contains(bad.to_str().unwrap()), "names the file ({why}): {stderr}");
        assert!(stderr.contains(reason), "says why ({why}): {stderr}");
        assert!(stderr.len() < 10_000, "the reason, not the file ({why})");
    }
    let missing = dir.path().join("missing.yaml");
    let stderr = serve_with_registrations_fails(&[&missing]).await;
    assert!(stderr.contains(missing.to_str().unwrap()), "names the missing file: {stderr}");
}
