//! Clients that send slowly, against the real server with `[limits] request_timeout_seconds = 1`:
//! one that sends nothing or never finishes its headers is disconnected, one whose body stalls
//! or drips gets 408, and one that sends a body slowly but steadily is served. And the connection limits:
//! past `connections_per_address` a connection is closed at once, past `max_connections` it
//! waits until another closes.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

async fn server() -> TestServer {
    let config = "server_name = \"localhost\"\n[limits]\nrequest_timeout_seconds = 1\n";
    TestServer::start_with_config(config, &["--registration", "open"]).await
}

async fn connect(server: &TestServer) -> TcpStream {
    let address = server.base_url.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("connect to the test server")
}

/// Reads until the server closes the connection (or 10 s pass) and returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    read.await.expect("the server closes the connection").expect("read the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let server = server().await;
    let mut stream = connect(&server).await;
    let started = Instant::now();
    stream.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    assert!(!answer.contains("200 OK"), "no answer to half a request: {answer}");
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_disconnected() {
    let server = server().await;
    let mut stream = connect(&server).await;
    let started = Instant::now();
    let answer = read_to_close(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    assert!(answer.is_empty(), "nothing to answer: {answer}");
}

#[tokio::test]
async fn an_http2_connection_is_refused_rather_than_kept_idle() {
    let server = server().await;
    let mut stream = connect(&server).await;
    let started = Instant::now();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // An empty SETTINGS frame, as an HTTP/2 client sends next, and then nothing.
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    assert!(!answer.contains("200"), "{answer}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let server = server().await;
    let mut stream = connect(&server).await;
    let request = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
}

/// The request head of a registration whose body is `body`.
fn register_head(body: &[u8]) -> String {
    format!(
        "POST /_matrix/client/v3/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
}

#[tokio::test]
async fn a_stalled_or_dripped_body_gets_408_and_a_slow_steady_one_is_served() {
    let server = server().await;
    let body = br#"{"username":"slowpoke","password":"a long enough password","auth":{"type":"m.login.dummy"}}"#;
    let head = register_head(body);

    let mut stalled = connect(&server).await;
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&body[..10]).await.unwrap();
    let answer = read_to_close(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("M_UNKNOWN"), "{answer}");

    // A byte every 200 ms never pauses for the 1 s timeout, but comes far slower than the
    // 1,000 bytes a second a body may take on average: 408 after about a second.
    let mut dripped = connect(&server).await;
    dripped.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    for byte in body.iter().take(20) {
        if dripped.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = read_to_close(&mut dripped).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "refused after {:?}", started.elapsed());

    // 4 kB in four pieces over 1.6 s (never 1 s idle, 2.5 kB a second) is served.
    let mut padded = body.to_vec();
    padded.splice(1..1, std::iter::repeat_n(b' ', 4_000));
    let mut steady = connect(&server).await;
    steady.write_all(register_head(&padded).as_bytes()).await.unwrap();
    for piece in padded.chunks(padded.len() / 4 + 1) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        steady.write_all(piece).await.unwrap();
    }
    let answer = read_to_close(&mut steady).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "1.6 s in all, never 1 s idle: {answer}");
}

/// A server whose connections may sit idle for 30 s, with the given `[limits]` lines.
async fn server_with_limits(limits: &str) -> TestServer {
    let config = format!("server_name = \"localhost\"\n[limits]\n{limits}\n");
    TestServer::start_with_config(&config, &[]).await
}

/// Asks for `/versions` on `stream` and returns the answer's first line, or `None` when none
/// comes within `wait`.
async fn versions(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let request = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(request).await.ok()?;
    let mut answer = vec![0_u8; 4096];
    let read = tokio::time::timeout(wait, stream.read(&mut answer)).await.ok()?.ok()?;
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    answer.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn connections_past_the_per_address_limit_are_closed_at_once() {
    let server = server_with_limits("connections_per_address = 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&server).await);
    }
    let mut refused = connect(&server).await;
    let started = Instant::now();
    let answer = read_to_close(&mut refused).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());

    let first = versions(&mut held[0], Duration::from_secs(5)).await;
    assert_eq!(first.as_deref(), Some("HTTP/1.1 200 OK"), "the held ones are served");
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut later = connect(&server).await;
    let answer = versions(&mut later, Duration::from_secs(5)).await;
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 200 OK"), "a freed slot is used again");
}

#[tokio::test]
async fn connections_past_the_total_limit_wait_for_one_to_close() {
    let server = server_with_limits("max_connections = 2").await;
    let mut held = vec![connect(&server).await, connect(&server).await];
    let first = versions(&mut held[0], Duration::from_secs(5)).await;
    assert_eq!(first.as_deref(), Some("HTTP/1.1 200 OK"));

    let mut waiting = connect(&server).await;
    let early = versions(&mut waiting, Duration::from_millis(1500)).await;
    assert_eq!(early, None, "a third connection is not served while two are open");
    held.pop();
    let mut answer = vec![0_u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut answer)).await;
    let read = read.expect("served once a connection closed").expect("read the answer");
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}
