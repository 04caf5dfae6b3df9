//! The calls the server makes to an application service, with ruma's request types and the
//! service's `hs_token`: pushing a transaction of events, a ping, and asking whether a user or
//! an alias in its namespaces exists.
//!
//! This is one of Hearth's outgoing HTTP clients, like the push gateway's (`crate::push`). A
//! service's tokens never reach the logs; its URL may (it is the operator's own configuration).

use std::time::{Duration, Instant};

use ruma::{
    OwnedTransactionId, RoomAliasId, UserId,
    api::{
        OutgoingRequest, OutgoingRequestExt as _,
        appservice::{
            event::push_events, ping::send_ping, query::query_room_alias, query::query_user_id,
        },
        error::{BadStatusErrorData, ErrorKind},
    },
    events::AnyTimelineEvent,
    serde::Raw,
};
use tokio::sync::OnceCell;

use super::Appservice;
use crate::{Error, Result};

/// How long a ping may take before it answers `M_CONNECTION_TIMEOUT`.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a transaction or query may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What became of a call to a service.
#[derive(Debug)]
pub enum CallError {
    /// The registration has no `url`.
    UrlNotSet,
    /// No answer within the time allowed.
    Timeout,
    /// The connection failed (refused, reset, DNS...).
    Connection,
    /// The service answered with an error status.
    Status { status: http::StatusCode, body: String },
    /// The request could not be built (a bug or an unusable URL).
    Request(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UrlNotSet => write!(f, "the registration has no url"),
            Self::Timeout => write!(f, "no answer in time"),
            Self::Connection => write!(f, "the connection failed"),
            Self::Status { status, .. } => write!(f, "it answered {status}"),
            Self::Request(error) => write!(f, "cannot build the request: {error}"),
        }
    }
}

/// The HTTP client for every service, built at the first call.
#[derive(Clone, Default)]
pub struct AppserviceClient {
    client: std::sync::Arc<OnceCell<reqwest::Client>>,
}

impl AppserviceClient {
    /// `PUT /_matrix/app/v1/transactions/{txnId}`.
    pub async fn push_events(
        &self,
        service: &Appservice,
        txn_id: OwnedTransactionId,
        events: Vec<Raw<AnyTimelineEvent>>,
    ) -> Result<(), CallError> {
        let request = push_events::v1::Request::new(txn_id, events);
        self.call(service, request, REQUEST_TIMEOUT).await.map(|_| ())
    }

    /// `POST /_matrix/app/v1/ping`; how long the service took to answer.
    pub async fn ping(
        &self,
        service: &Appservice,
        transaction_id: Option<OwnedTransactionId>,
    ) -> Result<Duration, CallError> {
        let mut request = send_ping::v1::Request::new();
        request.transaction_id = transaction_id;
        let started = Instant::now();
        self.call(service, request, PING_TIMEOUT).await?;
        Ok(started.elapsed())
    }

    /// `GET /_matrix/app/v1/users/{userId}`: whether the service says the user exists (it
    /// creates it before answering yes).
    pub async fn query_user_id(&self, service: &Appservice, user_id: &UserId) -> bool {
        let request = query_user_id::v1::Request::new(user_id.to_owned());
        self.call(service, request, REQUEST_TIMEOUT).await.is_ok()
    }

    /// `GET /_matrix/app/v1/rooms/{roomAlias}`: whether the service says the alias exists (it
    /// creates the room and the alias before answering yes).
    pub async fn query_room_alias(&self, service: &Appservice, alias: &RoomAliasId) -> bool {
        let request = query_room_alias::v1::Request::new(alias.to_owned());
        self.call(service, request, REQUEST_TIMEOUT).await.is_ok()
    }

    async fn call<R>(
        &self,
        service: &Appservice,
        request: R,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError>
    where
        R: OutgoingRequest<
                Authentication = ruma::api::appservice::HomeserverToken,
                PathBuilder = ruma::api::path_builder::SinglePath,
            >,
    {
        let base = service.registration.url.as_deref().ok_or(CallError::UrlNotSet)?;
        let base = base.trim_end_matches('/');
        let hs_token = service.registration.hs_token.as_str();
        let request: http::Request<Vec<u8>> = request
            .try_into_http_request(base, hs_token, ())
            .map_err(|error| CallError::Request(error.to_string()))?;
        let request = reqwest::Request::try_from(request)
            .map_err(|error| CallError::Request(error.without_url().to_string()))?;
        let build = || async { reqwest::Client::builder().build() };
        let client = self
            .client
            .get_or_try_init(build)
            .await
            .map_err(|error| CallError::Request(error.to_string()))?;
        let sent = tokio::time::timeout(timeout, async {
            let response = client.execute(request).await?;
            let status = response.status();
            let body = crate::outgoing::body_within(response, crate::outgoing::MAX_ANSWER_BYTES);
            // An answer too large to be a service's is read as an empty one.
            Ok::<_, reqwest::Error>((status, body.await?.unwrap_or_default()))
        });
        match sent.await {
            Err(_) => Err(CallError::Timeout),
            Ok(Err(error)) if error.is_timeout() => Err(CallError::Timeout),
            Ok(Err(_)) => Err(CallError::Connection),
            Ok(Ok((status, body))) if status.is_success() => Ok(body),
            Ok(Ok((status, body))) => {
                Err(CallError::Status { status, body: String::from_utf8_lossy(&body).into_owned() })
            }
        }
    }
}

/// The client error a failed ping answers, as the spec's `/appservice/{appserviceId}/ping`
/// lists them.
pub fn ping_error(error: CallError) -> Error {
    use http::StatusCode;
    match error {
        CallError::UrlNotSet => Error::client(
            StatusCode::BAD_REQUEST,
            ErrorKind::UrlNotSet,
            "The application service has no URL configured",
        ),
        CallError::Timeout => Error::client(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::ConnectionTimeout,
            "The application service did not answer in time",
        ),
        CallError::Connection => Error::client(
            StatusCode::BAD_GATEWAY,
            ErrorKind::ConnectionFailed,
            "Cannot connect to the application service",
        ),
        CallError::Status { status, body } => {
            let mut data = BadStatusErrorData::new();
            data.status = Some(status);
            data.body = Some(body);
            Error::client(
                StatusCode::BAD_GATEWAY,
                ErrorKind::BadStatus(data),
                format!("The application service answered {status}"),
            )
        }
        CallError::Request(error) => Error::Internal(anyhow::anyhow!("cannot ping: {error}")),
    }
}
