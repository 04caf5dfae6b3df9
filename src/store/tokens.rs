//! The tokens besides a session's plain access token: refresh tokens, single-use login tokens and
//! OpenID tokens (the tables of migration V11). Only their SHA-256 hashes reach the store; which
//! token is valid when is decided in `crate::users::tokens` and written here in one step each.
//!
//! A refreshable session is a chain of generations, each a refresh token and the access token
//! issued with it. A refresh adds the next generation and leaves the one it used in place, so
//! that a client that lost the answer can refresh again; the next use of the new generation
//! (its access token or its refresh token) deletes the old one. See the spec's "Refreshing access
//! tokens" (client-server API).

use async_trait::async_trait;
use ruma::OwnedUserId;

use super::StoreResult;

/// Refresh, login and OpenID tokens, for `crate::users`.
#[async_trait]
pub trait TokenStore {
    /// Exchanges the refresh token `refresh.refresh_token_hash` for a new generation: a new
    /// refresh token (its successor) and a new access token on the same device. A successor it
    /// had already and that was never used is replaced, with its access token; the refresh token
    /// it replaced itself (its predecessor) is deleted, with its access tokens. `None` (and
    /// nothing changes) if the refresh token is unknown, which includes one whose successor was
    /// used.
    async fn refresh_session(
        &self,
        refresh: RefreshSession,
    ) -> StoreResult<Option<RefreshedSession>>;

    /// The first use of an access token that a refresh issued (`Session::first_use_revokes`):
    /// deletes the refresh token its own refresh token replaced, with that token's access
    /// tokens, and returns the hashes of the access tokens deleted. `None` if the access token
    /// no longer exists.
    async fn first_use_of_access_token(&self, token_hash: &str)
    -> StoreResult<Option<Vec<String>>>;

    /// Stores a login token; expired ones (of every user) are deleted first.
    async fn create_login_token(&self, token: NewExpiringToken) -> StoreResult<()>;

    /// Deletes a login token and returns its user, if it had not expired at `now`. A token is
    /// taken once: a second call finds nothing.
    async fn take_login_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<OwnedUserId>>;

    /// Stores an OpenID token; expired ones (of every user) are deleted first.
    async fn create_openid_token(&self, token: NewExpiringToken) -> StoreResult<()>;

    /// The user of an OpenID token that has not expired at `now`.
    async fn openid_token_user(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<OwnedUserId>>;
}

/// A refresh as [`TokenStore::refresh_session`] does it.
#[derive(Clone, Debug)]
pub struct RefreshSession {
    /// The refresh token the client presented.
    pub refresh_token_hash: String,
    pub new_refresh_token_hash: String,
    pub new_access_token_hash: String,
    /// When the new access token stops working (ms since the epoch).
    pub expires_ts: i64,
    pub created_ts: i64,
}

/// What a refresh did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshedSession {
    pub user_id: OwnedUserId,
    pub device_id: String,
    /// The hashes of the access tokens it deleted (an unused successor's, the predecessor's).
    pub revoked: Vec<String>,
}

/// A login or OpenID token to store.
#[derive(Clone, Debug)]
pub struct NewExpiringToken {
    pub token_hash: String,
    pub user_id: OwnedUserId,
    /// When it stops working (ms since the epoch).
    pub expires_ts: i64,
    /// Now: tokens that expired by then are deleted.
    pub now: i64,
}
