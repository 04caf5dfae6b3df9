//! Refresh tokens, single-use login tokens and OpenID tokens: the tokens a session has besides
//! its access token. Like access tokens they are random strings handed out once, stored as their
//! SHA-256 only, and never logged.
//!
//! - A refresh (`POST /refresh`) exchanges a refresh token for a new access token and refresh
//!   token. Following the spec's "Refreshing access tokens", the old refresh token keeps working
//!   until the new access token or refresh token is first used, so that a client that lost the
//!   answer can refresh again; the old access token works until then too (or until it expires).
//! - A login token (`POST /login/get_token`, then `m.login.token` at `/login`) logs one more
//!   device in as the same user, once, within [`LOGIN_TOKEN_LIFETIME`].
//! - An OpenID token (`POST /user/{userId}/openid/request_token`) proves to a third party, such
//!   as an integration manager, who the user is (`GET /_matrix/federation/v1/openid/userinfo`),
//!   for [`OPENID_TOKEN_LIFETIME`]. It gives no access to anything else.

use std::time::Duration;

use ruma::{OwnedUserId, UserId};

use super::{Users, hash_token, millis, new_access_token, now_millis, random_string};
use crate::{
    Error, Result,
    store::{NewExpiringToken, RefreshSession},
};

/// How long a login token works: the spec recommends two minutes.
pub const LOGIN_TOKEN_LIFETIME: Duration = Duration::from_secs(2 * 60);

/// How long an OpenID token works.
pub const OPENID_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The answer to a refresh, returned to the client once.
#[derive(Clone, Debug)]
pub struct RefreshedTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// How long the new access token works.
    pub expires_in: Duration,
}

/// A new random refresh token.
pub(super) fn new_refresh_token() -> String {
    format!("hthr_{}", random_string(40))
}

impl Users {
    /// Exchanges a refresh token for a new access token and refresh token on the same device.
    /// An unknown refresh token, or one whose successor was used already, is a soft logout
    /// (401 `M_UNKNOWN_TOKEN`, `soft_logout: true`).
    pub async fn refresh(&self, refresh_token: &str) -> Result<RefreshedTokens> {
        let access_token = new_access_token();
        let new_refresh_token = new_refresh_token();
        let created_ts = now_millis();
        let refresh = RefreshSession {
            refresh_token_hash: hash_token(refresh_token),
            new_refresh_token_hash: hash_token(&new_refresh_token),
            new_access_token_hash: hash_token(&access_token),
            expires_ts: created_ts + millis(self.access_token_lifetime),
            created_ts,
        };
        let refreshed = self
            .store
            .refresh_session(refresh)
            .await?
            .ok_or_else(|| Error::soft_logout("Unknown or already used refresh token"))?;
        self.forget_tokens(&refreshed.revoked);
        // A locked account gets no working tokens. Its new ones stay unused, so the refresh
        // token it sent works again once the account is unlocked.
        if self.get(&refreshed.user_id).await?.is_some_and(|user| user.locked) {
            return Err(Error::user_locked());
        }
        Ok(RefreshedTokens {
            access_token,
            refresh_token: new_refresh_token,
            expires_in: self.access_token_lifetime,
        })
    }

    /// A single-use login token for `user_id`, and how long it works.
    pub async fn create_login_token(&self, user_id: &UserId) -> Result<(String, Duration)> {
        let token = format!("hthl_{}", random_string(40));
        let new = expiring_token(&token, user_id, LOGIN_TOKEN_LIFETIME);
        self.store.create_login_token(new).await?;
        Ok((token, LOGIN_TOKEN_LIFETIME))
    }

    /// Takes a login token: the user it logs in, once. `M_FORBIDDEN` if it is unknown, used or
    /// expired; `M_USER_DEACTIVATED` if the account was deactivated since, `M_USER_LOCKED` if it
    /// is locked (as a password login is refused).
    pub async fn take_login_token(&self, token: &str) -> Result<OwnedUserId> {
        let user_id = self
            .store
            .take_login_token(&hash_token(token), now_millis())
            .await?
            .ok_or_else(|| Error::forbidden("Invalid, used or expired login token"))?;
        let user = self.get(&user_id).await?.ok_or_else(|| Error::forbidden("No such user"))?;
        if user.deactivated {
            return Err(Error::client(
                http::StatusCode::FORBIDDEN,
                ruma::api::error::ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        if user.locked {
            return Err(Error::user_locked());
        }
        Ok(user_id)
    }

    /// An OpenID token for `user_id`, and how long it works.
    pub async fn create_openid_token(&self, user_id: &UserId) -> Result<(String, Duration)> {
        let token = random_string(40);
        let new = expiring_token(&token, user_id, OPENID_TOKEN_LIFETIME);
        self.store.create_openid_token(new).await?;
        Ok((token, OPENID_TOKEN_LIFETIME))
    }

    /// The user an OpenID token was issued to; `M_UNKNOWN_TOKEN` if it is unknown or expired.
    pub async fn openid_user(&self, token: &str) -> Result<OwnedUserId> {
        self.store
            .openid_token_user(&hash_token(token), now_millis())
            .await?
            .ok_or_else(|| Error::unknown_token("Unknown or expired OpenID token"))
    }
}

/// A login or OpenID token to store, working for `lifetime` from now.
fn expiring_token(token: &str, user_id: &UserId, lifetime: Duration) -> NewExpiringToken {
    let now = now_millis();
    NewExpiringToken {
        token_hash: hash_token(token),
        user_id: user_id.to_owned(),
        expires_ts: now + millis(lifetime),
        now,
    }
}
