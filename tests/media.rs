//! The media repository through the client-server API: uploads (direct, and reserved with
//! `POST /_matrix/media/v1/create` then `PUT`), authenticated and legacy downloads, thumbnails
//! (crop and scale of PNG and JPEG, cached after the first request), the headers that keep
//! served files from running in the page, the bad requests with their errors, and the media
//! rows moving to PostgreSQL while the files stay (that one in the PostgreSQL pass).

mod common;

use std::{io::Cursor, path::Path, time::Duration};

use common::{
    TestServer, TestUser,
    table::{row, run_table},
};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;

const UPLOAD: &str = "/_matrix/media/v3/upload";
const CREATE: &str = "/_matrix/media/v1/create";
const AUTHED: &str = "/_matrix/client/v1/media";
const LEGACY: &str = "/_matrix/media/v3";

/// A response as the tests look at it: status, headers and the raw bytes.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |value| value.to_str().unwrap())
    }
}

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut request = server.http.request(method, server.url(path)).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("request sent");
    let (status, headers) = (response.status(), response.headers().clone());
    Answer { status, headers, bytes: response.bytes().await.expect("body").to_vec() }
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> Answer {
    send(server, Method::GET, path, token, None, Vec::new()).await
}

/// Uploads `bytes` and returns the `mxc://` URI's server name and media ID.
async fn upload(
    server: &TestServer,
    user: &TestUser,
    query: &str,
    content_type: &str,
    bytes: &[u8],
) -> (String, String) {
    let path = format!("{UPLOAD}{query}");
    let answer = send(
        server,
        Method::POST,
        &path,
        Some(&user.access_token),
        Some(content_type),
        bytes.into(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json());
    mxc_parts(&answer.json()["content_uri"])
}

fn mxc_parts(uri: &Value) -> (String, String) {
    let uri = uri.as_str().expect("a content URI");
    let (server, id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    (server.to_owned(), id.to_owned())
}

/// A picture with something in it, so that its encodings differ from an empty one.
fn picture(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    }))
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// The files of the media folder (not the temporary ones).
fn media_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && entry.file_name() != "tmp" {
                walk(&path, found);
            } else if path.is_file()
                && path.parent().is_some_and(|p| p.file_name() != Some("tmp".as_ref()))
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&data_dir.join("media"), &mut found);
    found.sort();
    found
}

fn assert_sandboxed(answer: &Answer) {
    assert_eq!(
        answer.header("content-security-policy"),
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
         style-src 'unsafe-inline'; object-src 'self';"
    );
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
    assert_eq!(answer.header("cross-origin-resource-policy"), "cross-origin");
}

#[tokio::test]
async fn an_upload_downloads_byte_identical_with_safe_headers() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bytes = encoded(&picture(20, 10), ImageFormat::Png);
    let (origin, id) =
        upload(&server, &alice, "?filename=holiday%20%C3%A9t%C3%A9.png", "image/png", &bytes).await;

    let answer =
        get(&server, &format!("{AUTHED}/download/{origin}/{id}"), Some(&alice.access_token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.bytes, bytes, "byte-identical");
    assert_eq!(answer.header("content-type"), "image/png");
    let disposition = answer.header("content-disposition");
    assert!(disposition.starts_with("inline"), "{disposition}");
    assert!(disposition.contains("filename*=utf-8''holiday%20%C3%A9t%C3%A9.png"), "{disposition}");
    assert_sandboxed(&answer);

    // The file name in the path replaces the uploader's.
    let renamed = format!("{AUTHED}/download/{origin}/{id}/other.png");
    let answer = get(&server, &renamed, Some(&alice.access_token)).await;
    assert_eq!(answer.bytes, bytes);
    assert_eq!(answer.header("content-disposition"), "inline; filename=other.png");

    // The config tells the upload limit.
    let config = get(&server, &format!("{AUTHED}/config"), Some(&alice.access_token)).await;
    assert_eq!(config.json()["m.upload.size"], 50 * 1024 * 1024);
}

#[tokio::test]
async fn html_and_svg_are_attachments_in_a_sandbox_and_untyped_uploads_are_octet_streams() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let cases = [
        ("text/html", b"<script>alert(1)</script>".as_slice()),
        (
            "image/svg+xml",
            b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        ),
    ];
    for (content_type, bytes) in cases {
        let (origin, id) = upload(&server, &alice, "?filename=page", content_type, bytes).await;
        let answer = get(&server, &format!("{AUTHED}/download/{origin}/{id}"), token).await;
        assert_eq!(answer.bytes, bytes);
        assert_eq!(answer.header("content-disposition"), "attachment; filename=page");
        assert_sandboxed(&answer);
    }

    // Without a Content-Type the content is stored as bytes of unknown type.
    let answer = send(&server, Method::POST, UPLOAD, token, None, b"abc".to_vec()).await;
    let (origin, id) = mxc_parts(&answer.json()["content_uri"]);
    let answer = get(&server, &format!("{AUTHED}/download/{origin}/{id}"), token).await;
    assert_eq!(answer.header("content-type"), "application/octet-stream");
    assert_eq!(answer.header("content-disposition"), "attachment");

    // An empty file is a file too.
    let (origin, id) = upload(&server, &alice, "", "text/plain", b"").await;
    let answer = get(&server, &format!("{AUTHED}/download/{origin}/{id}"), token).await;
    assert_eq!((answer.status, answer.bytes.len()), (StatusCode::OK, 0));
}

#[tokio::test]
async fn the_same_bytes_uploaded_twice_share_one_file() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = upload(&server, &alice, "?filename=a.txt", "text/plain", b"same bytes").await;
    let second = upload(&server, &bob, "?filename=b.txt", "text/plain", b"same bytes").await;
    assert_ne!(first.1, second.1, "two media IDs");
    assert_eq!(media_files(&server.data_dir).len(), 1, "{:?}", media_files(&server.data_dir));
    for (origin, id) in [&first, &second] {
        let path = format!("{AUTHED}/download/{origin}/{id}");
        let answer = get(&server, &path, Some(&alice.access_token)).await;
        assert_eq!(answer.bytes, b"same bytes");
    }
    upload(&server, &alice, "", "text/plain", b"other bytes").await;
    assert_eq!(media_files(&server.data_dir).len(), 2);
}

#[tokio::test]
async fn a_reserved_media_id_waits_for_its_upload_and_takes_it_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = alice.access_token.clone();
    let created = send(&server, Method::POST, CREATE, Some(&token), None, Vec::new()).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.json());
    assert!(created.json()["unused_expires_at"].as_u64().is_some());
    let (origin, id) = mxc_parts(&created.json()["content_uri"]);
    let download = format!("{AUTHED}/download/{origin}/{id}");

    let early = get(&server, &format!("{download}?timeout_ms=0"), Some(&token)).await;
    assert_eq!(early.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(early.json()["errcode"], "M_NOT_YET_UPLOADED");

    // A download waiting for the content gets it as soon as it arrives.
    let waiting = {
        let (url, token) = (server.url(&format!("{download}?timeout_ms=20000")), token.clone());
        let http = server.http.clone();
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            (response.status(), response.bytes().await.unwrap().to_vec())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let put = format!("{UPLOAD}/{origin}/{id}?filename=late.txt");
    let answer =
        send(&server, Method::PUT, &put, Some(&token), Some("text/plain"), b"late".into()).await;
    assert_eq!((answer.status, answer.json()), (StatusCode::OK, serde_json::json!({})));
    let (status, bytes) =
        tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!((status, bytes.as_slice()), (StatusCode::OK, b"late".as_slice()));

    let again =
        send(&server, Method::PUT, &put, Some(&token), Some("text/plain"), b"new".into()).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["errcode"], "M_CANNOT_OVERWRITE_MEDIA");
    let answer = get(&server, &download, Some(&token)).await;
    assert_eq!(answer.bytes, b"late", "the first upload stays");
    assert_eq!(answer.header("content-disposition"), "inline; filename=late.txt");
}

async fn thumbnail(
    server: &TestServer,
    token: &str,
    origin: &str,
    id: &str,
    query: &str,
) -> Answer {
    get(server, &format!("{AUTHED}/thumbnail/{origin}/{id}?{query}"), Some(token)).await
}

fn dimensions(answer: &Answer) -> (u32, u32) {
    let image = image::load_from_memory(&answer.bytes).expect("a decodable thumbnail");
    (image.width(), image.height())
}

#[tokio::test]
async fn thumbnails_crop_and_scale_png_and_jpeg_without_upscaling() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = &alice.access_token;
    let source = picture(300, 200);
    for (format, content_type) in
        [(ImageFormat::Png, "image/png"), (ImageFormat::Jpeg, "image/jpeg")]
    {
        let bytes = encoded(&source, format);
        let (origin, id) = upload(&server, &alice, "", content_type, &bytes).await;
        let cases = [
            ("width=100&height=100&method=crop", (100, 100)),
            ("width=100&height=100&method=scale", (100, 67)),
            ("width=100&height=100", (100, 67)),
            ("width=1000&height=1000&method=scale", (300, 200)),
            ("width=800&height=400&method=crop", (300, 150)),
        ];
        for (query, expected) in cases {
            let answer = thumbnail(&server, token, &origin, &id, query).await;
            assert_eq!(answer.status, StatusCode::OK, "{content_type} {query}: {}", answer.json());
            assert_eq!(answer.header("content-type"), content_type, "{query}");
            assert!(
                answer.header("content-disposition").starts_with("inline; filename=thumbnail.")
            );
            assert_sandboxed(&answer);
            assert_eq!(dimensions(&answer), expected, "{content_type} {query}");
        }
    }
}

#[tokio::test]
async fn a_thumbnail_is_made_once_and_then_looked_up() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let token = &alice.access_token;
    let bytes = encoded(&picture(64, 64), ImageFormat::Png);
    let (origin, id) = upload(&server, &alice, "", "image/png", &bytes).await;
    let first = thumbnail(&server, token, &origin, &id, "width=32&height=32&method=crop").await;
    assert_eq!(dimensions(&first), (32, 32));
    assert_eq!(media_files(&server.data_dir).len(), 2, "the original and its thumbnail");

    // Damage the original on disk: the thumbnail made before is still served from its own file,
    // and only a new size needs (and fails to read) the original.
    let original = sha256_path(&server.data_dir, &bytes);
    std::fs::write(&original, b"damaged").unwrap();
    let second = thumbnail(&server, token, &origin, &id, "width=32&height=32&method=crop").await;
    assert_eq!((second.status, &second.bytes), (StatusCode::OK, &first.bytes));
    let other = thumbnail(&server, token, &origin, &id, "width=16&height=16&method=crop").await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST, "{}", other.json());
}

/// Where the media folder keeps these bytes.
fn sha256_path(data_dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    use sha2::{Digest as _, Sha256};
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    data_dir.join("media").join(&hex[0..2]).join(&hex[2..4]).join(hex)
}

#[tokio::test]
async fn the_legacy_endpoints_serve_without_a_token_but_the_config() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bytes = encoded(&picture(40, 40), ImageFormat::Png);
    let (origin, id) = upload(&server, &alice, "?filename=x.png", "image/png", &bytes).await;

    let download = get(&server, &format!("{LEGACY}/download/{origin}/{id}"), None).await;
    assert_eq!((download.status, &download.bytes), (StatusCode::OK, &bytes));
    assert_sandboxed(&download);
    let named = get(&server, &format!("{LEGACY}/download/{origin}/{id}/y.png"), None).await;
    assert_eq!(named.header("content-disposition"), "inline; filename=y.png");
    let path = format!("{LEGACY}/thumbnail/{origin}/{id}?width=20&height=20&method=scale");
    let small = get(&server, &path, None).await;
    assert_eq!(small.status, StatusCode::OK);
    assert_eq!(dimensions(&small), (20, 20));

    let config = get(&server, &format!("{LEGACY}/config"), Some(&alice.access_token)).await;
    assert_eq!(config.json()["m.upload.size"], 50 * 1024 * 1024);
}

#[tokio::test]
async fn uploads_may_pass_the_request_limit_up_to_the_media_limit() {
    let config = "server_name = \"localhost\"\n[registration]\nmode = \"open\"\n\
                  [media]\nmax_upload_bytes = 3000000\nmax_pending_uploads = 2\n";
    let server = TestServer::start_with_config(config, &["--registration", "open"]).await;
    let alice = server.register("alice").await;
    let token = Some(alice.access_token.as_str());
    let big = vec![7u8; 2_000_000];
    let (origin, id) = upload(&server, &alice, "", "application/octet-stream", &big).await;
    let answer = get(&server, &format!("{AUTHED}/download/{origin}/{id}"), token).await;
    assert_eq!(answer.bytes, big);

    let too_big = vec![7u8; 3_000_001];
    let answer = send(&server, Method::POST, UPLOAD, token, Some("text/plain"), too_big).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json()["errcode"], "M_TOO_LARGE");
    // Other endpoints keep the request limit.
    let profile = "/_matrix/client/v3/profile/@alice:localhost/displayname";
    let body = format!("{{\"displayname\":\"{}\"}}", "a".repeat(2_000_000)).into_bytes();
    let answer = send(&server, Method::PUT, profile, token, Some("application/json"), body).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Two reservations may wait for their content at once.
    for _ in 0..2 {
        let answer = send(&server, Method::POST, CREATE, token, None, Vec::new()).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let answer = send(&server, Method::POST, CREATE, token, None, Vec::new()).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.json()["errcode"], "M_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn bad_media_requests_get_the_spec_errors() {
    let config = "server_name = \"localhost\"\n[registration]\nmode = \"open\"\n\
                  [media]\nmax_upload_bytes = 4096\nmax_thumbnail_source_pixels = 1000\n";
    let server = TestServer::start_with_config(config, &["--registration", "open"]).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let (a, b) = (Some(alice.access_token.as_str()), Some(bob.access_token.as_str()));
    let png = encoded(&picture(8, 8), ImageFormat::Png);
    let (origin, image) = upload(&server, &alice, "", "image/png", &png).await;
    let (_, text) = upload(&server, &alice, "", "text/plain", b"hello").await;
    let large = encoded(&DynamicImage::new_rgb8(40, 40), ImageFormat::Png);
    let (_, large) = upload(&server, &alice, "", "image/png", &large).await;
    let (_, fake) = upload(&server, &alice, "", "image/png", b"not really a png").await;
    let created = send(&server, Method::POST, CREATE, a, None, Vec::new()).await;
    let (_, reserved) = mxc_parts(&created.json()["content_uri"]);

    let big = "x".repeat(4097);
    let thumb = |id: &str, query: &str| format!("{AUTHED}/thumbnail/{origin}/{id}?{query}");
    use Method as M;
    use StatusCode as S;
    let rows = vec![
        row("an upload over max_upload_bytes", M::POST, UPLOAD, a, Some(&big))
            .expect(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        row("an upload without a token", M::POST, UPLOAD, None, Some("x"))
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "a file name with a control character",
            M::POST,
            format!("{UPLOAD}?filename=a%0Ab"),
            a,
            Some("x"),
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an unknown media ID",
            M::GET,
            format!("{AUTHED}/download/{origin}/nosuchmedia"),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "media of another server",
            M::GET,
            format!("{AUTHED}/download/example.org/{image}"),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "a server name that is not one",
            M::GET,
            format!("{AUTHED}/download/bad%20name/{image}"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a media ID outside the grammar",
            M::GET,
            format!("{AUTHED}/download/{origin}/a.b"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a download without a token",
            M::GET,
            format!("{AUTHED}/download/{origin}/{image}"),
            None,
            None,
        )
        .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "a named download without a token",
            M::GET,
            format!("{AUTHED}/download/{origin}/{image}/x.png"),
            None,
            None,
        )
        .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("a thumbnail without a token", M::GET, thumb(&image, "width=8&height=8"), None, None)
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("the config without a token", M::GET, format!("{AUTHED}/config"), None, None)
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("the legacy config without a token", M::GET, format!("{LEGACY}/config"), None, None)
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row("a create without a token", M::POST, CREATE, None, None)
            .expect(S::UNAUTHORIZED, "M_MISSING_TOKEN"),
        row(
            "someone else's reserved media ID",
            M::PUT,
            format!("{UPLOAD}/{origin}/{reserved}"),
            b,
            Some("x"),
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
        row(
            "uploading to media that has content",
            M::PUT,
            format!("{UPLOAD}/{origin}/{image}"),
            a,
            Some("x"),
        )
        .expect(S::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA"),
        row(
            "uploading to an unknown media ID",
            M::PUT,
            format!("{UPLOAD}/{origin}/nosuchmedia"),
            a,
            Some("x"),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "uploading to another server's media ID",
            M::PUT,
            format!("{UPLOAD}/example.org/{reserved}"),
            a,
            Some("x"),
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "an oversized upload to a reserved ID",
            M::PUT,
            format!("{UPLOAD}/{origin}/{reserved}"),
            a,
            Some(&big),
        )
        .expect(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        row(
            "a reserved ID not uploaded in time",
            M::GET,
            format!("{AUTHED}/download/{origin}/{reserved}?timeout_ms=50"),
            a,
            None,
        )
        .expect(S::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED"),
        row("a thumbnail of a damaged image", M::GET, thumb(&fake, "width=8&height=8"), a, None)
            .expect(S::BAD_REQUEST, "M_UNKNOWN"),
        row(
            "a thumbnail of an image over max_thumbnail_source_pixels",
            M::GET,
            thumb(&large, "width=8&height=8"),
            a,
            None,
        )
        .expect(S::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
        row("a thumbnail of text", M::GET, thumb(&text, "width=8&height=8"), a, None)
            .expect(S::BAD_REQUEST, "M_UNKNOWN"),
        row("a thumbnail of width zero", M::GET, thumb(&image, "width=0&height=8"), a, None)
            .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a thumbnail of height zero", M::GET, thumb(&image, "width=8&height=0"), a, None)
            .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a huge thumbnail", M::GET, thumb(&image, "width=100000&height=100000"), a, None)
            .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a negative thumbnail size", M::GET, thumb(&image, "width=-1&height=8"), a, None)
            .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row("a thumbnail without a size", M::GET, thumb(&image, "method=crop"), a, None)
            .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "an unknown thumbnail method",
            M::GET,
            thumb(&image, "width=8&height=8&method=stretch"),
            a,
            None,
        )
        .expect(S::BAD_REQUEST, "M_INVALID_PARAM"),
        row(
            "a thumbnail of an unknown media ID",
            M::GET,
            thumb("nosuchmedia", "width=8&height=8"),
            a,
            None,
        )
        .expect(S::NOT_FOUND, "M_NOT_FOUND"),
        row(
            "URL previews are off by default",
            M::GET,
            format!("{AUTHED}/preview_url?url=https%3A%2F%2Fexample.org"),
            a,
            None,
        )
        .expect(S::FORBIDDEN, "M_FORBIDDEN"),
    ];
    run_table(&server, rows).await;

    // A Content-Type that is not type/subtype is refused (the table cannot set headers).
    let answer = send(&server, Method::POST, UPLOAD, a, Some("nonsense"), b"x".to_vec()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["errcode"], "M_INVALID_PARAM");
}

/// A cluster of the test's own, or `None` (with a note) outside the PostgreSQL pass.
fn private_cluster() -> Option<common::cluster::PrivateCluster> {
    if !common::backend().is_postgres() {
        eprintln!("skipped here: runs in the PostgreSQL pass (HEARTH_TEST_BACKEND=postgres)");
        return None;
    }
    assert!(common::cluster::available(), "the PostgreSQL pass needs initdb and pg_ctl");
    Some(common::cluster::PrivateCluster::start())
}

#[tokio::test]
async fn media_rows_move_to_postgres_and_the_files_stay_in_the_data_directory() {
    let Some(cluster) = private_cluster() else { return };
    let target = common::TestDatabase::create(&cluster.admin_url).await;
    let server = TestServer::start_on_sqlite(&["--registration", "open"]).await;
    let output = std::process::Command::new(common::binary())
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["user", "add", "parent", "--password", "a long parent password", "--admin"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let parent = server.login_ok("parent", "a long parent password", None).await;
    let token = Some(parent.access_token.as_str());
    let png = encoded(&picture(50, 50), ImageFormat::Png);
    let (origin, id) = upload(&server, &parent, "?filename=p.png", "image/png", &png).await;
    let small = thumbnail(&server, &parent.access_token, &origin, &id, "width=10&height=10").await;
    let created = send(&server, Method::POST, CREATE, token, None, Vec::new()).await;
    let (_, reserved) = mxc_parts(&created.json()["content_uri"]);
    let files = media_files(&server.data_dir);

    let migration = "/_hearth/admin/v1/database/migration";
    let body = serde_json::json!({"to": target.url()});
    let (status, started) = server.post(migration, &parent.access_token, body).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let mut phase = Value::Null;
    for _ in 0..600 {
        let (_, progress) = server.get(migration, &parent.access_token).await;
        phase = progress["phase"].clone();
        if ["done", "failed", "cancelled"].contains(&phase.as_str().unwrap_or("")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(phase, "done");
    assert!(target.tables().await.iter().any(|t| t == "media_thumbnails"));

    let download = get(&server, &format!("{AUTHED}/download/{origin}/{id}"), token).await;
    assert_eq!(download.bytes, png);
    let again = thumbnail(&server, &parent.access_token, &origin, &id, "width=10&height=10").await;
    assert_eq!(again.bytes, small.bytes);
    assert_eq!(media_files(&server.data_dir), files, "no file was written again");
    // The reservation moved with its owner and expiry: it takes its upload once, on PostgreSQL.
    let put = format!("{UPLOAD}/{origin}/{reserved}");
    let answer = send(&server, Method::PUT, &put, token, Some("text/plain"), b"now".into()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json());
    let answer = send(&server, Method::PUT, &put, token, Some("text/plain"), b"now".into()).await;
    assert_eq!(answer.json()["errcode"], "M_CANNOT_OVERWRITE_MEDIA");
}
