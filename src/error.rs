//! The one error type of Hearth's operations, and its conversion into the Matrix
//! `{errcode, error}` reply.
//!
//! Client errors carry the spec's error kind and a message meant for the client. Internal failures
//! carry their cause chain, are logged once where they become a response, and reach the client
//! only as an opaque `M_UNKNOWN` 500: no internal text ever leaves the process.

use http::StatusCode;
use ruma::api::{
    client::uiaa::UiaaInfo,
    error::{ErrorBody, ErrorKind, StandardErrorBody},
};

/// A failed operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be served; the client is told why.
    #[error("{status} {kind:?}: {message}")]
    Client { status: StatusCode, kind: ErrorKind, message: String },

    /// User-interactive authentication must continue (or start); a 401 with the UIA state.
    #[error("user-interactive authentication required")]
    Uiaa(Box<UiaaInfo>),

    /// Something failed inside Hearth. The cause is logged; the client sees a bare 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A result of one of Hearth's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A client error with an explicit status, kind and message.
    pub fn client(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Client { status, kind, message: message.into() }
    }

    /// 403 `M_FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::client(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    /// 404 `M_NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    /// 400 `M_BAD_JSON`: valid JSON of the wrong shape.
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }

    /// 400 `M_NOT_JSON`: the body is not JSON at all.
    pub fn not_json(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, ErrorKind::NotJson, message)
    }

    /// 400 `M_INVALID_PARAM`.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }

    /// 400 `M_INVALID_PARAM` when `text`, which is stored as text of its own, holds a NUL
    /// character: PostgreSQL cannot hold one, and no identifier or name of the spec has one.
    pub fn check_no_nul(field: &str, text: &str) -> Result<(), Self> {
        if text.contains('\0') {
            return Err(Self::invalid_param(format!("{field} contains a NUL character")));
        }
        Ok(())
    }

    /// 400 `M_MISSING_PARAM`.
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, message)
    }

    /// 400 `M_UNKNOWN` for requests that are well-formed but cannot be done.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, ErrorKind::Unknown, message)
    }

    /// 401 `M_UNKNOWN_TOKEN`.
    pub fn unknown_token(message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNAUTHORIZED, ErrorKind::UnknownToken(Default::default()), message)
    }

    /// 401 `M_UNKNOWN_TOKEN` with `soft_logout: true`: the token expired or must be refreshed,
    /// and the device may log in again (or refresh) without losing its data. See the spec's
    /// "Soft logout".
    pub fn soft_logout(message: impl Into<String>) -> Self {
        let mut data = ruma::api::error::UnknownTokenErrorData::new();
        data.soft_logout = true;
        Self::client(StatusCode::UNAUTHORIZED, ErrorKind::UnknownToken(data), message)
    }

    /// 401 `M_MISSING_TOKEN`.
    pub fn missing_token() -> Self {
        Self::client(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Missing access token")
    }

    /// 401 `M_USER_LOCKED` with `soft_logout: true`: an administrator locked the account
    /// ([account locking](https://spec.matrix.org/v1.19/client-server-api/#account-locking)).
    pub fn user_locked() -> Self {
        Self::client(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UserLocked,
            "This account has been locked by the server administrator",
        )
    }

    /// 403 `M_USER_SUSPENDED`: an administrator suspended the account, and this action is one a
    /// suspended account may not take
    /// ([account suspension](https://spec.matrix.org/v1.19/client-server-api/#account-suspension)).
    pub fn user_suspended() -> Self {
        Self::client(
            StatusCode::FORBIDDEN,
            ErrorKind::UserSuspended,
            "This account is suspended: it may read, leave rooms and log out, but not do this",
        )
    }

    /// 404 `M_UNRECOGNIZED`: Hearth does not serve this endpoint.
    pub fn unrecognized() -> Self {
        Self::client(StatusCode::NOT_FOUND, ErrorKind::Unrecognized, "Unrecognized request")
    }

    /// 405 `M_UNRECOGNIZED`: the endpoint exists, but not with this method.
    pub fn method_not_allowed() -> Self {
        Self::client(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Unrecognized,
            "This endpoint does not accept this method",
        )
    }

    /// 413 `M_TOO_LARGE`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::client(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, message)
    }

    /// 429 `M_LIMIT_EXCEEDED` with the time after which a retry may succeed.
    pub fn limit_exceeded(retry_after: std::time::Duration) -> Self {
        let mut data = ruma::api::error::LimitExceededErrorData::new();
        data.retry_after = Some(ruma::api::error::RetryAfter::Delay(retry_after));
        Self::client(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded(data),
            "Too many requests",
        )
    }

    /// 503 `M_UNKNOWN`: a dependency is unavailable; the client may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::client(StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Unknown, message)
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client { status, .. } => *status,
            Self::Uiaa(_) => StatusCode::UNAUTHORIZED,
            Self::Internal(cause) if crate::store::is_unavailable(cause) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response body and headers for this error, as the spec shapes them.
    ///
    /// Pure: logging the cause of an internal error is the caller's job.
    pub fn to_http_response(&self) -> http::Response<Vec<u8>> {
        match self {
            Self::Client { status, kind, message } => {
                standard_response(*status, kind.clone(), message.clone())
            }
            Self::Uiaa(info) => json_response(StatusCode::UNAUTHORIZED, info.as_ref()),
            Self::Internal(cause) if crate::store::is_unavailable(cause) => standard_response(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Unknown,
                "The database is unavailable just now; try again shortly".to_owned(),
            ),
            Self::Internal(_) => standard_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::Unknown,
                "Internal server error".to_owned(),
            ),
        }
    }
}

fn standard_response(
    status: StatusCode,
    kind: ErrorKind,
    message: String,
) -> http::Response<Vec<u8>> {
    use ruma::api::OutgoingResponseExt as _;

    let body = ErrorBody::Standard(StandardErrorBody::new(kind, message));
    ruma::api::error::Error::new(status, body)
        .try_into_http_response::<Vec<u8>>()
        .unwrap_or_else(|_| json_response(status, &serde_json::json!({"errcode": "M_UNKNOWN"})))
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> http::Response<Vec<u8>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = http::Response::new(bytes);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(error: &Error) -> serde_json::Value {
        serde_json::from_slice(error.to_http_response().body()).unwrap()
    }

    #[test]
    fn client_errors_carry_their_errcode_and_message() {
        let body = body_of(&Error::forbidden("no"));
        assert_eq!(body["errcode"], "M_FORBIDDEN");
        assert_eq!(body["error"], "no");
    }

    #[test]
    fn internal_errors_never_leak_their_cause() {
        let error = Error::Internal(anyhow::anyhow!("database file /secret/path is corrupt"));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = String::from_utf8(error.to_http_response().into_body()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("M_UNKNOWN"));
    }

    #[test]
    fn an_unreachable_database_is_a_503_without_its_cause() {
        let cause =
            anyhow::anyhow!(crate::store::Unavailable("connection refused to db:5432".into()));
        let error = Error::Internal(cause.context("reading the room"));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = error.to_http_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = String::from_utf8(response.into_body()).unwrap();
        assert!(text.contains("M_UNKNOWN") && !text.contains("5432"), "{text}");
    }

    #[test]
    fn a_locked_account_is_told_to_log_in_softly() {
        let body = body_of(&Error::user_locked());
        assert_eq!(body["errcode"], "M_USER_LOCKED");
        assert_eq!(body["soft_logout"], true);
        assert_eq!(Error::user_locked().status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body_of(&Error::user_suspended())["errcode"], "M_USER_SUSPENDED");
    }

    #[test]
    fn a_soft_logout_says_so_and_a_plain_unknown_token_does_not() {
        let body = body_of(&Error::soft_logout("expired"));
        assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
        assert_eq!(body["soft_logout"], true);
        let body = body_of(&Error::unknown_token("unknown"));
        assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
        assert_ne!(body["soft_logout"], true);
    }

    #[test]
    fn limit_exceeded_tells_when_to_retry() {
        let error = Error::limit_exceeded(std::time::Duration::from_millis(1500));
        let response = error.to_http_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    }
}
