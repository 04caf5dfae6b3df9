//! Routes requests to typed handlers by the path templates ruma declares for each endpoint.
//!
//! A handler is registered with its ruma request type; the router takes every path (stable and
//! unstable) from the type's metadata, so a handler named after its endpoint is reachable by the
//! exact paths the spec gives, and an unknown path or method gets the spec's `M_UNRECOGNIZED`.

use std::{collections::BTreeMap, future::Future, net::IpAddr, pin::Pin, sync::Arc};

use bytes::Bytes;
use http::Method;
use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::{
        IncomingRequest, IncomingRequestExt as _, OutgoingResponseExt as _,
        error::{DeserializationError, FromHttpRequestError},
        path_builder::PathBuilder as _,
    },
};

use crate::{Error, Result, appservice::Appservice, services::Services};

/// What a handler needs besides the parsed body.
pub struct RequestMeta {
    pub access_token: Option<String>,
    pub origin: IpAddr,
    /// The `User-Agent` header, if the client sent one (recorded for `/admin/whois`).
    pub user_agent: Option<String>,
    /// The `user_id` query parameter: the user an application service acts as.
    pub asserted_user_id: Option<String>,
    /// The `device_id` query parameter: the device of that user it acts as.
    pub asserted_device_id: Option<String>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<
    dyn Fn(
            Arc<Services>,
            http::Request<Bytes>,
            Vec<String>,
            RequestMeta,
        ) -> BoxFuture<Result<http::Response<Vec<u8>>>>
        + Send
        + Sync,
>;

/// The authenticated user and device of a request that requires an access token. The account
/// is not locked: a locked account's requests are refused before any handler runs.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Whether an administrator suspended the account: see [`User::require_not_suspended`].
    pub suspended: bool,
    /// The application service acting as this user with its `as_token`, if one is.
    pub appservice: Option<Arc<Appservice>>,
}

impl User {
    /// 403 `M_USER_SUSPENDED` if the account is suspended. The handlers of the actions a
    /// suspended account may not take call it: sending events, joining, knocking, inviting,
    /// kicking, banning, creating and upgrading rooms, changing the profile, aliases and the
    /// directory, and uploading media. Reading, leaving, key management and logging out stay
    /// allowed, as the spec's
    /// [account suspension](https://spec.matrix.org/v1.19/client-server-api/#account-suspension)
    /// asks.
    pub fn require_not_suspended(&self) -> Result<()> {
        if self.suspended { Err(Error::user_suspended()) } else { Ok(()) }
    }

    /// Whether the user's requests count against rate limits: an application service with
    /// `rate_limited: false` acting as its users does not.
    pub fn is_rate_limited(&self) -> bool {
        self.appservice.as_ref().is_none_or(|service| service.is_rate_limited())
    }
}

/// The user and device of a valid access token even if the account is locked: only logging out
/// asks for it, the one thing the spec's
/// [account locking](https://spec.matrix.org/v1.19/client-server-api/#account-locking) leaves a
/// locked account.
#[derive(Clone, Debug)]
pub struct EvenIfLocked(pub User);

/// The client of a request that needs no access token.
#[derive(Clone, Debug)]
pub struct Anonymous {
    pub origin: IpAddr,
    /// The application service whose `as_token` the request carries, if any (registration and
    /// login of its users).
    pub appservice: Option<Arc<Appservice>>,
}

/// An application service, authenticated by its `as_token`, for the endpoints only services
/// may call. A missing token is 401 `M_MISSING_TOKEN`, an unknown one 401 `M_UNKNOWN_TOKEN`,
/// and a user's access token 403 `M_FORBIDDEN`, as the spec's ping endpoint lists them.
#[derive(Clone, Debug)]
pub struct AppserviceToken(pub Arc<Appservice>);

impl Authenticate for AppserviceToken {
    async fn authenticate(services: Arc<Services>, meta: RequestMeta) -> Result<Self> {
        let token = meta.access_token.ok_or_else(Error::missing_token)?;
        if let Some(service) = services.appservices.by_as_token(&token) {
            return Ok(Self(service));
        }
        services.users.authenticate(&token).await?;
        Err(Error::forbidden("Only an application service may call this endpoint"))
    }
}

/// How a handler's first argument is obtained from the request.
pub trait Authenticate: Sized + Send + 'static {
    fn authenticate(
        services: Arc<Services>,
        meta: RequestMeta,
    ) -> impl Future<Output = Result<Self>> + Send;
}

impl Authenticate for User {
    async fn authenticate(services: Arc<Services>, meta: RequestMeta) -> Result<Self> {
        let (user, locked) = session_of(&services, meta).await?;
        if locked {
            return Err(Error::user_locked());
        }
        Ok(user)
    }
}

impl Authenticate for EvenIfLocked {
    async fn authenticate(services: Arc<Services>, meta: RequestMeta) -> Result<Self> {
        session_of(&services, meta).await.map(|(user, _)| Self(user))
    }
}

/// The user of a request's access token and whether the account is locked; notes the device's
/// activity unless it is.
async fn session_of(services: &Services, meta: RequestMeta) -> Result<(User, bool)> {
    let token = meta.access_token.as_deref().ok_or_else(Error::missing_token)?;
    if let Some(service) = services.appservices.by_as_token(token) {
        return appservice_session(services, service, &meta).await;
    }
    let session = services.users.authenticate(token).await?;
    let restrictions = session.restrictions;
    if !restrictions.locked {
        let user_agent = meta.user_agent.as_deref();
        services.device_activity.note(
            &session.user_id,
            &session.device_id,
            meta.origin,
            user_agent,
        );
    }
    let user = User {
        user_id: session.user_id,
        device_id: session.device_id.into(),
        suspended: restrictions.suspended,
        appservice: None,
    };
    Ok((user, restrictions.locked))
}

/// The user an application service acts as (the spec's
/// [identity assertion](https://spec.matrix.org/v1.19/application-service-api/#identity-assertion)):
/// `user_id` must be in its namespaces and registered, and `device_id`, if given, one of that
/// user's devices (400 `M_UNKNOWN_DEVICE` otherwise).
///
/// FIXME: without `device_id` the request acts on no real device: the user gets the device ID
/// [`APPSERVICE_DEVICE`], which endpoints that need a device of the user (keys, to-device)
/// treat as unknown.
async fn appservice_session(
    services: &Services,
    service: Arc<Appservice>,
    meta: &RequestMeta,
) -> Result<(User, bool)> {
    let user_id = service.asserted_user(meta.asserted_user_id.as_deref())?;
    let account = services.users.get(&user_id).await?.filter(|account| !account.deactivated);
    let Some(account) = account else {
        return Err(Error::forbidden("The application service has not registered this user"));
    };
    let device_id = match meta.asserted_device_id.as_deref() {
        Some(device_id) => {
            let known = services.store.device(&user_id, device_id).await?.is_some();
            if !known {
                return Err(Error::client(
                    http::StatusCode::BAD_REQUEST,
                    ruma::api::error::ErrorKind::UnknownDevice,
                    "The user has no such device",
                ));
            }
            device_id.into()
        }
        None => APPSERVICE_DEVICE.into(),
    };
    let user = User { user_id, device_id, suspended: account.suspended, appservice: Some(service) };
    Ok((user, account.locked))
}

/// The device ID of a request an application service makes for a user without `device_id`.
pub const APPSERVICE_DEVICE: &str = "APPSERVICE";

impl Authenticate for Option<User> {
    async fn authenticate(services: Arc<Services>, meta: RequestMeta) -> Result<Self> {
        if meta.access_token.is_none() {
            return Ok(None);
        }
        User::authenticate(services, meta).await.map(Some)
    }
}

impl Authenticate for Anonymous {
    async fn authenticate(services: Arc<Services>, meta: RequestMeta) -> Result<Self> {
        let appservice =
            meta.access_token.as_deref().and_then(|token| services.appservices.by_as_token(token));
        Ok(Self { origin: meta.origin, appservice })
    }
}

/// How a route reads its request body and what its responses carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON, within `[limits] max_request_bytes`; an empty `POST` or `PUT` body counts as `{}`.
    Json,
    /// Media bytes in or out: a body of up to `[media] max_upload_bytes`, taken as it is (an
    /// empty file stays empty), and responses that carry the media security headers.
    Media,
}

/// One path template and the handlers per method.
struct Route {
    template: String,
    kind: BodyKind,
    /// Arguments appended to the path's own (for aliases such as an empty state key).
    extra_args: Vec<String>,
    handlers: BTreeMap<String, Handler>,
}

/// The routing table.
#[derive(Default)]
pub struct Router {
    matcher: matchit::Router<usize>,
    routes: Vec<Route>,
    /// Templates that could not be registered because they clash with another.
    pub conflicts: Vec<String>,
}

/// A matched route: the template (for logs) and how to run it.
pub enum Matched {
    Found { template: String, kind: BodyKind, handler: Handler, path_args: Vec<String> },
    MethodNotAllowed { template: String },
    NotFound,
}

impl Router {
    /// Registers `handler` for every path of the endpoint `R`.
    pub fn add<R, A, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        R: IncomingRequest + Send + 'static,
        A: Authenticate,
        F: Fn(Arc<Services>, A, R) -> Fut + Send + Sync + Copy + 'static,
        Fut: Future<Output = Result<R::OutgoingResponse>> + Send + 'static,
    {
        self.add_as(BodyKind::Json, handler)
    }

    /// Registers `handler` for every path of the media endpoint `R` (see [`BodyKind::Media`]).
    pub fn add_media<R, A, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        R: IncomingRequest + Send + 'static,
        A: Authenticate,
        F: Fn(Arc<Services>, A, R) -> Fut + Send + Sync + Copy + 'static,
        Fut: Future<Output = Result<R::OutgoingResponse>> + Send + 'static,
    {
        self.add_as(BodyKind::Media, handler)
    }

    fn add_as<R, A, F, Fut>(&mut self, kind: BodyKind, handler: F) -> &mut Self
    where
        R: IncomingRequest + Send + 'static,
        A: Authenticate,
        F: Fn(Arc<Services>, A, R) -> Fut + Send + Sync + Copy + 'static,
        Fut: Future<Output = Result<R::OutgoingResponse>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |services, request, path_args, meta| {
            Box::pin(run_handler::<R, A, F, Fut>(handler, kind, services, request, path_args, meta))
        });
        for path in R::PATH_BUILDER.all_paths() {
            self.insert(path, Vec::new(), kind, R::METHOD, handler.clone());
            // `PUT /state/{eventType}/{stateKey}` also serves an empty state key, written with
            // or without the trailing slash.
            if let Some(prefix) =
                path.strip_suffix("/{state_key}").or_else(|| path.strip_suffix("/{stateKey}"))
            {
                let empty = vec![String::new()];
                self.insert(prefix, empty.clone(), kind, R::METHOD, handler.clone());
                self.insert(&format!("{prefix}/"), empty, kind, R::METHOD, handler.clone());
            }
        }
        self
    }

    fn insert(
        &mut self,
        template: &str,
        extra_args: Vec<String>,
        kind: BodyKind,
        method: Method,
        handler: Handler,
    ) {
        let index = match self.matcher.at(template) {
            Ok(found) if self.routes[*found.value].template == template => *found.value,
            _ => {
                self.routes.push(Route {
                    template: template.to_owned(),
                    kind,
                    extra_args,
                    handlers: BTreeMap::new(),
                });
                let index = self.routes.len() - 1;
                if let Err(error) = self.matcher.insert(template, index) {
                    // A bug in the route table: a test asserts there are none.
                    tracing::error!(%error, template, "conflicting route template");
                    self.conflicts.push(format!("{template}: {error}"));
                    self.routes.pop();
                    return;
                }
                index
            }
        };
        self.routes[index].handlers.insert(method.as_str().to_owned(), handler);
        if method == Method::GET {
            let get = self.routes[index].handlers["GET"].clone();
            self.routes[index].handlers.entry("HEAD".to_owned()).or_insert(get);
        }
    }

    /// Finds the handler for a request path and method.
    pub fn find(&self, method: &Method, path: &str) -> Matched {
        let Ok(found) = self.matcher.at(path) else { return Matched::NotFound };
        let route = &self.routes[*found.value];
        let Some(handler) = route.handlers.get(method.as_str()) else {
            return Matched::MethodNotAllowed { template: route.template.clone() };
        };
        let mut path_args: Vec<String> = found
            .params
            .iter()
            .map(|(_, value)| {
                percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()
            })
            .collect();
        path_args.extend(route.extra_args.iter().cloned());
        let template = route.template.clone();
        Matched::Found { template, kind: route.kind, handler: handler.clone(), path_args }
    }

    /// Whether any route serves this path (for CORS preflight).
    pub fn knows_path(&self, path: &str) -> bool {
        self.matcher.at(path).is_ok()
    }
}

async fn run_handler<R, A, F, Fut>(
    handler: F,
    kind: BodyKind,
    services: Arc<Services>,
    request: http::Request<Bytes>,
    path_args: Vec<String>,
    meta: RequestMeta,
) -> Result<http::Response<Vec<u8>>>
where
    R: IncomingRequest + Send + 'static,
    A: Authenticate,
    F: Fn(Arc<Services>, A, R) -> Fut,
    Fut: Future<Output = Result<R::OutgoingResponse>>,
{
    let auth = A::authenticate(services.clone(), meta).await?;
    // IDs, types, keys and transaction IDs from the path are stored as text of their own, which
    // PostgreSQL cannot hold with a NUL in it; no identifier the spec allows has one.
    if path_args.iter().any(|arg| arg.contains('\0')) {
        return Err(Error::invalid_param("A path parameter contains a NUL character"));
    }
    let args: Vec<&str> = path_args.iter().map(String::as_str).collect();
    let (parts, body) = request.into_parts();
    let body = match kind {
        BodyKind::Json => empty_as_object(&parts.method, body),
        BodyKind::Media => body,
    };
    let request = http::Request::from_parts(parts, body.as_ref());
    // Some ruma parsers panic on input of the wrong shape (`/login` without `type` indexes a
    // missing key): that is the client's bad JSON, not a 500.
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        R::try_from_http_request(request, &args)
    }))
    .map_err(|_| Error::bad_json("The request body does not match the endpoint"))?
    .map_err(|error| request_error(error, &body))?;
    let response = handler(services, auth, parsed).await?;
    response
        .try_into_http_response::<Vec<u8>>()
        .map_err(|error| Error::Internal(anyhow::anyhow!("cannot serialize a response: {error}")))
}

/// An empty `POST` or `PUT` body counts as `{}`. Clients send none where every field is
/// optional (matrix-nio joins with a bare `POST /join/{roomIdOrAlias}`), and ruma parses some
/// such endpoints from an empty body but not others.
fn empty_as_object(method: &http::Method, body: Bytes) -> Bytes {
    let has_body = *method == http::Method::POST || *method == http::Method::PUT;
    if has_body && body.is_empty() { Bytes::from_static(b"{}") } else { body }
}

/// Turns ruma's parse failure into the spec's error: not JSON, JSON of the wrong shape, or a bad
/// parameter.
///
/// A syntax error counts as "not JSON" only if the body really is not JSON: some of ruma's parsers
/// read a valid body only in part (the profile field parser stops after its one key) and report
/// what follows as a syntax error.
fn request_error(error: FromHttpRequestError, body: &[u8]) -> Error {
    match error {
        FromHttpRequestError::Deserialization(DeserializationError::Json(error)) => {
            let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
            if (error.is_syntax() || error.is_eof()) && !is_json {
                Error::not_json("The request body is not valid JSON")
            } else {
                Error::bad_json(format!("The request body does not match the endpoint: {error}"))
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(error)) => {
            Error::invalid_param(format!("Invalid identifier in the request: {error}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(error)) => {
            Error::invalid_param(format!("Invalid query parameters: {error}"))
        }
        FromHttpRequestError::Deserialization(error) => {
            Error::bad_json(format!("The request does not match the endpoint: {error}"))
        }
        FromHttpRequestError::MethodMismatch { .. } => Error::method_not_allowed(),
        _ => Error::bad_json("The request does not match the endpoint"),
    }
}
