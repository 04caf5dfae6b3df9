//! Third-party identifiers (the tables of migration V14): validation sessions, the identifiers on
//! accounts, and the identity servers they were bound on. Client secrets and tokens reach the
//! store only as SHA-256 hashes; what a session may be used for is decided in
//! `crate::threepids`, and written here in one step each.

use async_trait::async_trait;
use ruma::OwnedUserId;

use super::StoreResult;

/// Validation sessions and the identifiers of accounts, for `crate::threepids`.
#[async_trait]
pub trait ThreepidStore {
    /// A `requestToken`: the session of the client secret and address, or a new one (with
    /// `session.sid`). A mail is due (`send`) for a new session and for a `send_attempt` higher
    /// than the session's, which then gets the new token; otherwise nothing changes. Sessions
    /// created before `session.forget_before` are deleted first.
    async fn request_validation_session(
        &self,
        session: NewValidationSession,
    ) -> StoreResult<RequestedSession>;

    /// Marks a session validated if the client secret and token match and the token has not
    /// expired at `now` (a session already validated stays so).
    async fn validate_session_token(
        &self,
        sid: &str,
        client_secret_hash: &str,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<TokenCheck>;

    async fn validation_session(&self, sid: &str) -> StoreResult<Option<ValidationSessionRecord>>;

    /// Deletes a session once it was used (an address added, a password reset).
    async fn delete_validation_session(&self, sid: &str) -> StoreResult<()>;

    /// Adds an identifier to an account. `false` (and nothing changes) if another account has
    /// it; adding it again to the same account keeps the first row.
    async fn add_threepid(&self, threepid: ThreepidRecord) -> StoreResult<bool>;

    /// An account's identifiers, by medium and address.
    async fn threepids(&self, user_id: &ruma::UserId) -> StoreResult<Vec<ThreepidRecord>>;

    /// The account that has an identifier.
    async fn threepid_user(&self, medium: &str, address: &str) -> StoreResult<Option<OwnedUserId>>;

    /// Removes an identifier from an account, with its binds; `false` if it has none such.
    async fn delete_threepid(
        &self,
        user_id: &ruma::UserId,
        medium: &str,
        address: &str,
    ) -> StoreResult<bool>;

    /// Records a bind of an identifier on an identity server.
    async fn add_threepid_bind(&self, bind: ThreepidBind) -> StoreResult<()>;

    /// The identity servers an account's identifier was bound on.
    async fn threepid_binds(
        &self,
        user_id: &ruma::UserId,
        medium: &str,
        address: &str,
    ) -> StoreResult<Vec<String>>;

    /// Forgets a bind (after an unbind).
    async fn delete_threepid_bind(&self, bind: ThreepidBind) -> StoreResult<()>;
}

/// What [`ThreepidStore::request_validation_session`] stores.
#[derive(Clone, Debug)]
pub struct NewValidationSession {
    /// The ID a new session gets.
    pub sid: String,
    pub medium: String,
    pub address: String,
    pub client_secret_hash: String,
    pub send_attempt: i64,
    pub token_hash: String,
    pub token_expires_ts: i64,
    pub now: i64,
    /// Sessions created before this are deleted.
    pub forget_before: i64,
}

/// The session a `requestToken` refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedSession {
    pub sid: String,
    /// Whether the new token is to be mailed.
    pub send: bool,
}

/// How a token matched its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    Validated,
    /// No session with this ID and client secret.
    UnknownSession,
    WrongToken,
    Expired,
}

/// A validation session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationSessionRecord {
    pub sid: String,
    pub medium: String,
    pub address: String,
    pub client_secret_hash: String,
    /// When its token came back; `None`: not validated.
    pub validated_ts: Option<i64>,
}

/// An identifier on an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreepidRecord {
    pub user_id: OwnedUserId,
    pub medium: String,
    pub address: String,
    pub validated_ts: i64,
    pub added_ts: i64,
}

/// An identifier bound on an identity server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreepidBind {
    pub user_id: OwnedUserId,
    pub medium: String,
    pub address: String,
    pub id_server: String,
}

/// How a token matches the one stored, the same on both backends. A wrong token is refused
/// before an expired one, so that only the session's owner learns that it expired.
pub(crate) fn check_token(stored: &str, given: &str, expires_ts: i64, now: i64) -> TokenCheck {
    if stored != given {
        TokenCheck::WrongToken
    } else if expires_ts <= now {
        TokenCheck::Expired
    } else {
        TokenCheck::Validated
    }
}
