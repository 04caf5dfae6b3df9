//! URL previews (`GET /_matrix/client/v1/media/preview_url` and the deprecated
//! `GET /_matrix/media/v3/preview_url`) against a tiny web server inside the test, on 127.0.0.1,
//! which the server's `[media] url_preview_ip_allowlist` lets previews reach: Open Graph tags,
//! a page with only a `<title>`, pages in other charsets, an image, redirects, bodies over the
//! limit, a server too slow to answer, the cache, also across a restart (the web server counts
//! its hits), the refusal of private addresses, previews switched off, the limit per user, and a
//! table of bad requests.

mod common;

use std::{
    collections::BTreeMap,
    io::Cursor,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{
    TestServer, TestUser, assert_error, enc,
    table::{row, run_table},
};
use image::{ImageFormat, Rgb, RgbImage};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

const AUTHED: &str = "/_matrix/client/v1/media/preview_url";
const LEGACY: &str = "/_matrix/media/v3/preview_url";

/// The page-size limit the test server is configured with.
const MAX_BYTES: usize = 65_536;

/// A web server on 127.0.0.1 serving the test pages; counts the requests per path.
struct Web {
    base: String,
    #[allow(clippy::disallowed_types)]
    hits: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Web {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let hits = Arc::new(Mutex::new(BTreeMap::new()));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, counted.clone()));
            }
        });
        Web { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

#[allow(clippy::disallowed_types)]
async fn serve(mut stream: TcpStream, hits: Arc<Mutex<BTreeMap<String, usize>>>) {
    let mut request = Vec::new();
    let mut buffer = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let (head, body) = page(&path).await;
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

/// The answer to `path`: the status line and headers, and the body.
async fn page(path: &str) -> (String, Vec<u8>) {
    let ok = |content_type: &str, body: Vec<u8>| {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        (head, body)
    };
    let redirect = |to: &str| {
        let head = format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        (head, Vec::new())
    };
    match path {
        "/og" => ok("text/html; charset=utf-8", OG_PAGE.as_bytes().to_vec()),
        "/title" => {
            ok("text/html", b"<html><head><title> Just a title </title></head></html>".into())
        }
        "/latin1" => ok("text/html; charset=ISO-8859-1", b"<title>Caf\xe9 cr\xe8me</title>".into()),
        "/meta-charset" => {
            ok("text/html", b"<meta charset=\"windows-1252\"><title>Na\xefve</title>".into())
        }
        "/image.png" => ok("image/png", png(4, 3)),
        "/text" => ok("text/plain", b"plain text".into()),
        "/big" => ok("text/html", vec![b'a'; MAX_BYTES + 1]),
        "/big-unannounced" => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n";
            (head.to_owned(), vec![b'a'; MAX_BYTES * 2])
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(15)).await;
            ok("text/html", b"<title>Too late</title>".into())
        }
        "/redirect/0" => redirect("/title"),
        "/redirect/ftp" => redirect("ftp://example.com/"),
        "/missing" => ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(), Vec::new()),
        other => match other.strip_prefix("/redirect/").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) => redirect(&format!("/redirect/{}", n - 1)),
            None => ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(), Vec::new()),
        },
    }
}

const OG_PAGE: &str = r#"<!doctype html><html><head>
<title>The plain title</title>
<meta property="og:title" content="Cr&#232;me &amp; &#x1F370; cake">
<meta property="og:description" content="A recipe">
<meta property="og:site_name" content="Kitchen">
<meta property="og:type" content="article">
<meta property="og:url" content="https://kitchen.example/cake">
<meta property="og:image" content="/image.png">
<meta name="description" content="Not this one">
</head><body><svg><title>Not this either</title></svg></body></html>"#;

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_pixel(width, height, Rgb([200, 40, 40]));
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

fn config(extra: &str) -> String {
    format!("server_name = \"localhost\"\n[media]\n{extra}")
}

/// A server with previews on and 127.0.0.1 and ::1 allowed, and a user of it.
async fn allowing_localhost() -> (TestServer, TestUser) {
    let toml = config(&format!(
        "url_previews = true\nurl_preview_max_bytes = {MAX_BYTES}\n\
         url_preview_ip_allowlist = [\"127.0.0.1/32\", \"::1/128\"]\n"
    ));
    let server = TestServer::start_with_config(&toml, &["--registration", "open"]).await;
    let user = server.register("alice").await;
    (server, user)
}

async fn preview(server: &TestServer, user: &TestUser, url: &str) -> (StatusCode, Value) {
    server.get(&format!("{AUTHED}?url={}", enc(url)), &user.access_token).await
}

#[tokio::test]
async fn open_graph_tags_are_previewed_with_the_image_stored_here() {
    let web = Web::start().await;
    let (server, alice) = allowing_localhost().await;

    let (status, body) = preview(&server, &alice, &web.url("/og")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["og:title"], "Cr\u{e8}me & \u{1F370} cake");
    assert_eq!(body["og:description"], "A recipe");
    assert_eq!(body["og:site_name"], "Kitchen");
    assert_eq!(body["og:type"], "article");
    assert_eq!(body["og:url"], "https://kitchen.example/cake");
    assert_eq!(body["og:image:type"], "image/png");
    assert_eq!(body["og:image:width"], 4);
    assert_eq!(body["og:image:height"], 3);
    assert_eq!(body["matrix:image:size"], png(4, 3).len());

    let mxc = body["og:image"].as_str().expect("og:image");
    let (origin, media_id) = mxc.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    assert_eq!(origin, "localhost");
    let download = format!("/_matrix/client/v1/media/download/{origin}/{media_id}");
    let response = server
        .http
        .get(server.url(&download))
        .bearer_auth(&alice.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().to_vec(), png(4, 3));
}

#[tokio::test]
async fn a_preview_is_cached_and_the_legacy_path_answers_the_same() {
    let web = Web::start().await;
    let (mut server, alice) = allowing_localhost().await;

    let first = preview(&server, &alice, &web.url("/og")).await;
    let again = preview(&server, &alice, &web.url("/og#fragment")).await;
    let legacy_path = format!("{LEGACY}?url={}", enc(&web.url("/og")));
    let legacy = server.get(&legacy_path, &alice.access_token).await;

    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(again, first);
    assert_eq!(legacy, first);
    assert_eq!(web.hits("/og"), 1, "the page is fetched once");
    assert_eq!(web.hits("/image.png"), 1, "the image is fetched once");

    // The cache is in the database: a restarted server still has it.
    server.kill().await;
    server.restart().await;
    assert_eq!(preview(&server, &alice, &web.url("/og")).await, first);
    assert_eq!(web.hits("/og"), 1, "the page is not fetched again after a restart");
}

#[tokio::test]
async fn pages_without_open_graph_fall_back_to_their_title_in_their_charset() {
    let web = Web::start().await;
    let (server, alice) = allowing_localhost().await;

    for (path, title) in [
        ("/title", "Just a title"),
        ("/latin1", "Caf\u{e9} cr\u{e8}me"),
        ("/meta-charset", "Na\u{ef}ve"),
        ("/redirect/3", "Just a title"),
    ] {
        let (status, body) = preview(&server, &alice, &web.url(path)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["og:title"], title, "{path}: {body}");
        assert!(body.get("og:image").is_none(), "{path}: {body}");
    }
    assert_eq!(web.hits("/redirect/1"), 1, "each hop of the chain is fetched once");

    // A host name is resolved by the server, checked, and connected to at what it checked.
    let port = web.base.rsplit(':').next().unwrap();
    let (status, body) =
        preview(&server, &alice, &format!("http://localhost:{port}/meta-charset")).await;
    assert_eq!((status, &body["og:title"]), (StatusCode::OK, &Value::from("Na\u{ef}ve")), "{body}");
    assert_eq!(web.hits("/meta-charset"), 2, "fetched again through the name");
}

#[tokio::test]
async fn an_image_url_is_previewed_as_the_image_and_other_types_as_nothing() {
    let web = Web::start().await;
    let (server, alice) = allowing_localhost().await;

    let (status, body) = preview(&server, &alice, &web.url("/image.png")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["og:image"].as_str().unwrap().starts_with("mxc://localhost/"), "{body}");
    assert_eq!(body["og:image:type"], "image/png");
    assert_eq!(body["matrix:image:size"], png(4, 3).len());

    let (status, body) = preview(&server, &alice, &web.url("/text")).await;
    assert_eq!((status, body), (StatusCode::OK, serde_json::json!({})));
}

#[tokio::test]
async fn pages_that_cannot_be_previewed_answer_bad_gateway() {
    let web = Web::start().await;
    let (server, alice) = allowing_localhost().await;

    for (path, errcode, why) in [
        ("/big", "M_TOO_LARGE", "a Content-Length over the limit"),
        ("/big-unannounced", "M_TOO_LARGE", "a body over the limit without a length"),
        ("/redirect/9", "M_UNKNOWN", "more than five redirects"),
        ("/redirect/ftp", "M_UNKNOWN", "a redirect to another scheme"),
        ("/missing", "M_UNKNOWN", "a 404 page"),
        ("/slow", "M_UNKNOWN", "no answer within 10 s"),
    ] {
        let got = preview(&server, &alice, &web.url(path)).await;
        assert_eq!(got.0, StatusCode::BAD_GATEWAY, "{why}: {}", got.1);
        assert_eq!(got.1["errcode"], errcode, "{why}: {}", got.1);
    }
    let closed = "http://127.0.0.1:9/";
    assert_error(&preview(&server, &alice, closed).await, StatusCode::BAD_GATEWAY, "M_UNKNOWN");
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let web = Web::start().await;
    let server = TestServer::start_with_config(
        &config("url_previews = true\n"),
        &["--registration", "open"],
    )
    .await;
    let alice = server.register("alice").await;

    let port = web.base.rsplit(':').next().unwrap().to_owned();
    for url in [
        web.url("/og"),
        format!("http://localhost:{port}/og"),
        "http://10.0.0.1/".into(),
        "http://192.168.1.1/".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://100.64.0.1/".into(),
        "http://0.0.0.0/".into(),
        "http://[::1]/".into(),
        "http://[fd00::1]/".into(),
        "http://[fe80::1]/".into(),
        "http://[::ffff:127.0.0.1]/".into(),
    ] {
        let got = preview(&server, &alice, &url).await;
        assert_eq!(got.0, StatusCode::FORBIDDEN, "{url}: {}", got.1);
        assert_eq!(got.1["errcode"], "M_FORBIDDEN", "{url}: {}", got.1);
    }
    assert_eq!(web.hits("/og"), 0, "nothing reached the web server");

    // The allowlist lets only what it lists through.
    let (allowing, bob) = allowing_localhost().await;
    let got = preview(&allowing, &bob, "http://10.0.0.1/").await;
    assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}

#[tokio::test]
async fn previews_are_refused_when_disabled() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    for path in [AUTHED, LEGACY] {
        let path = format!("{path}?url=https%3A%2F%2Fexample.com%2F");
        let got = server.get(&path, &alice.access_token).await;
        assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn bad_preview_requests_get_exact_errors() {
    let (server, alice) = allowing_localhost().await;
    let token = Some(alice.access_token.as_str());
    let long = format!("https://example.com/{}", "a".repeat(2100));
    let with = |url: &str| format!("{AUTHED}?url={}", enc(url));
    let rows = vec![
        row("no url parameter", Method::GET, AUTHED, token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("an ftp URL", Method::GET, with("ftp://example.com/file"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a file URL", Method::GET, with("file:///etc/passwd"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("not a URL at all", Method::GET, with("not a url"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("an http URL without a host", Method::GET, with("http://"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a URL over 2048 bytes", Method::GET, with(&long), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a NUL in the URL", Method::GET, with("https://example.com/\0"), token, None)
            .expect(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        row("no access token", Method::GET, with("https://example.com/"), None, None)
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("legacy path without a token", Method::GET, LEGACY, None, None)
            .expect(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
    ];
    run_table(&server, rows).await;
}

#[tokio::test]
async fn a_user_asking_for_too_many_previews_is_limited() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = format!("{AUTHED}?url=https%3A%2F%2Fexample.com%2F");
    for _ in 0..60 {
        let got = server.get(&path, &alice.access_token).await;
        assert_error(&got, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    }
    let got = server.get(&path, &alice.access_token).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED");
    let other = server.get(&path, &bob.access_token).await;
    assert_error(&other, StatusCode::FORBIDDEN, "M_FORBIDDEN");
}
