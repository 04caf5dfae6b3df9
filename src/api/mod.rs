//! HTTP: the only module that knows warp. It reads a request, finds its handler in the route
//! table, and turns the handler's result (or error) into a response with the spec's CORS headers.
//!
//! Every request runs under a span named by its route template, never the raw path (which holds
//! IDs and, with `?access_token=`, secrets). A panic in a handler becomes an opaque 500 for that
//! request alone.

#[cfg(feature = "postgres")]
pub mod admin;
pub mod client;
pub mod federation;
pub mod listener;
pub mod ratelimit;
pub mod router;

use std::{future::Future, net::IpAddr, sync::Arc, time::Instant};

use bytes::{Bytes, BytesMut};
use futures::{FutureExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tracing::Instrument as _;
use warp::Filter as _;

use self::router::{BodyKind, Matched, RequestMeta, Router};
use crate::{Error, services::Services};

/// Serves HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    services: Arc<Services>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = Arc::new(routes());
    let timeout = services.config.limits.request_timeout();
    let limits = listener::ConnectionLimits {
        total: services.config.limits.max_connections.max(1),
        per_address: services.config.limits.connections_per_address.max(1),
    };
    let filter = warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<listener::PeerAddr>())
        .and(warp::body::stream())
        .then(
            move |method,
                  path: warp::path::FullPath,
                  query,
                  headers,
                  peer: Option<listener::PeerAddr>,
                  body| {
                let incoming = Incoming {
                    method,
                    path: path.as_str().to_owned(),
                    query,
                    headers,
                    origin: peer.map_or(IpAddr::from([127, 0, 0, 1]), |peer| peer.0.ip()),
                };
                handle(services.clone(), router.clone(), incoming, body)
            },
        );
    listener::run(listener, timeout, limits, warp::service(filter), shutdown).await;
}

/// Every route Hearth serves.
pub fn routes() -> Router {
    let mut router = Router::default();
    client::register(&mut router);
    federation::register(&mut router);
    #[cfg(feature = "postgres")]
    admin::register(&mut router);
    router
}

struct Incoming {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    origin: IpAddr,
}

async fn handle<S, B>(
    services: Arc<Services>,
    router: Arc<Router>,
    incoming: Incoming,
    body: S,
) -> http::Response<Vec<u8>>
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send,
    B: bytes::Buf,
{
    let started = Instant::now();
    if incoming.method == Method::OPTIONS {
        return with_cors(preflight(&router, &incoming.path));
    }
    let (template, response) = match router.find(&incoming.method, &incoming.path) {
        Matched::NotFound => ("unknown".to_owned(), Error::unrecognized().to_http_response()),
        Matched::MethodNotAllowed { template } => {
            (template, Error::method_not_allowed().to_http_response())
        }
        Matched::Found { template, kind, handler, path_args } => {
            let span =
                tracing::debug_span!("request", method = %incoming.method, route = %template);
            let limit = match kind {
                BodyKind::Json => services.config.limits.max_request_bytes,
                BodyKind::Media => services.media.max_upload_bytes(),
            };
            let response = async {
                let pause = services.config.limits.request_timeout();
                let body = read_body(body, limit, pause).await?;
                let meta = RequestMeta {
                    access_token: access_token(&incoming.headers, &incoming.query),
                    origin: incoming.origin,
                    user_agent: user_agent(&incoming.headers),
                    asserted_user_id: query_parameter(&incoming.query, "user_id"),
                    asserted_device_id: query_parameter(&incoming.query, "device_id"),
                };
                let request = build_request(&incoming, body)?;
                std::panic::AssertUnwindSafe(handler(services.clone(), request, path_args, meta))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(Error::Internal(anyhow::anyhow!("handler panicked"))))
            }
            .instrument(span)
            .await;
            let response = response.unwrap_or_else(|error| error_response(&error));
            (
                template,
                if kind == BodyKind::Media { with_media_headers(response) } else { response },
            )
        }
    };
    let response = close_if_too_large(response);
    tracing::debug!(
        method = %incoming.method,
        route = %template,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request done"
    );
    with_cors(response)
}

/// A body refused for its size is left unread, so its connection cannot carry another request:
/// `Connection: close` tells the client not to reuse it (RFC 9112, section 9.6) rather than let
/// its next request fail on a connection the server has closed.
fn close_if_too_large(mut response: http::Response<Vec<u8>>) -> http::Response<Vec<u8>> {
    if response.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
        let close = http::HeaderValue::from_static("close");
        response.headers_mut().insert(http::header::CONNECTION, close);
    }
    response
}

/// Builds the error reply, logging internal causes once with their whole chain.
fn error_response(error: &Error) -> http::Response<Vec<u8>> {
    match error {
        Error::Internal(cause) if crate::store::is_unavailable(cause) => {
            tracing::warn!(error = format!("{cause:#}"), "database unavailable");
        }
        Error::Internal(cause) => tracing::error!(error = format!("{cause:#}"), "internal error"),
        _ => {}
    }
    error.to_http_response()
}

/// The slowest a request body may come, on average, in bytes per second (see [`read_body`]).
const MIN_BODY_RATE: u64 = 1_000;

/// Reads a request body of at most `limit` bytes (413 past it). The client gets 408 when it sends
/// nothing for `pause`, or when the body takes longer than `pause` plus a second per
/// [`MIN_BODY_RATE`] bytes received: an upload over a slow line is fine, a body dripped a byte
/// at a time to hold the connection is not.
async fn read_body<S, B>(body: S, limit: u64, pause: std::time::Duration) -> crate::Result<Bytes>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    futures::pin_mut!(body);
    let started = tokio::time::Instant::now();
    let mut collected = BytesMut::new();
    let too_slow = |why: &str| {
        let message = format!("The request body {why}");
        Error::client(StatusCode::REQUEST_TIMEOUT, ruma::api::error::ErrorKind::Unknown, message)
    };
    loop {
        let allowance =
            std::time::Duration::from_millis(collected.len() as u64 * 1_000 / MIN_BODY_RATE);
        let deadline = (started + pause + allowance).min(tokio::time::Instant::now() + pause);
        let next = tokio::time::timeout_at(deadline, body.next()).await;
        let Some(chunk) = next.map_err(|_| too_slow("came too slowly or stalled"))? else { break };
        let mut chunk =
            chunk.map_err(|_| Error::bad_request("The request body could not be read"))?;
        if (collected.len() + chunk.remaining()) as u64 > limit {
            return Err(Error::too_large(format!("The request body exceeds {limit} bytes")));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            collected.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(collected.freeze())
}

fn build_request(incoming: &Incoming, body: Bytes) -> crate::Result<http::Request<Bytes>> {
    let uri = if incoming.query.is_empty() {
        incoming.path.clone()
    } else {
        format!("{}?{}", incoming.path, incoming.query)
    };
    let mut request = http::Request::builder()
        .method(incoming.method.clone())
        .uri(uri)
        .body(body)
        .map_err(|_| Error::invalid_param("Malformed request URI"))?;
    *request.headers_mut() = incoming.headers.clone();
    Ok(request)
}

/// The access token from `Authorization: Bearer` or the deprecated `access_token` query parameter.
fn access_token(headers: &HeaderMap, query: &str) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return value.strip_prefix("Bearer ").map(|token| token.trim().to_owned());
    }
    query_parameter(query, "access_token")
}

/// The `User-Agent` header as text (bytes that are not UTF-8 replaced), if sent.
fn user_agent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::USER_AGENT)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// The first value of a query parameter, percent-decoded.
fn query_parameter(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix('=')?;
        Some(percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
    })
}

fn preflight(router: &Router, path: &str) -> http::Response<Vec<u8>> {
    if !router.knows_path(path) {
        return Error::unrecognized().to_http_response();
    }
    let mut response = http::Response::new(b"{}".to_vec());
    *response.status_mut() = StatusCode::OK;
    response
}

/// The sandbox a browser keeps served media in: no script, no plugin but PDF, no requests of its
/// own, so an uploaded HTML or SVG file cannot run in this server's origin.
const MEDIA_CSP: &str = "sandbox; default-src 'none'; script-src 'none'; \
                         plugin-types application/pdf; style-src 'unsafe-inline'; \
                         object-src 'self';";

/// Adds the headers every media response carries (the spec's "serving inline content"): the
/// sandboxing `Content-Security-Policy`, no content sniffing, and embedding from other origins
/// allowed (web clients load media from their own origin).
fn with_media_headers(mut response: http::Response<Vec<u8>>) -> http::Response<Vec<u8>> {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(MEDIA_CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        http::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    response
}

/// Adds the CORS headers the spec asks every response to carry.
fn with_cors(mut response: http::Response<Vec<u8>>) -> http::Response<Vec<u8>> {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_has_no_conflicts() {
        let router = routes();
        assert!(router.conflicts.is_empty(), "{:#?}", router.conflicts);
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(access_token(&headers, "a=1&access_token=abc%2B"), Some("abc+".into()));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer xyz"));
        assert_eq!(access_token(&headers, "access_token=abc"), Some("xyz".into()));
    }
}
