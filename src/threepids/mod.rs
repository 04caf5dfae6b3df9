//! Third-party identifiers (3PIDs): e-mail addresses on accounts, proven by a mail with a link,
//! used to reset a forgotten password and to log in. See the client-server API's "Adding Account
//! Administrative Contact Information" and the `requestToken` endpoints.
//!
//! A `requestToken` starts (or continues) a validation session, keyed by the client's secret and
//! the address: a new session, or a `send_attempt` higher than the last, mails a new token; the
//! same attempt again sends nothing and answers the same `sid`. The token comes back through the
//! link in the mail (or the `submit_url`), which validates the session; a validated session then
//! adds the address to an account, completes the `m.login.email.identity` stage of registration
//! or password reset, and is used up. Phone numbers (msisdn) are not supported: Hearth sends no
//! SMS. Identity servers are reached only for `/account/3pid/bind` and `/unbind`
//! ([`identity`]).
//!
//! Client secrets and tokens are stored as SHA-256 hashes and never logged. This module knows
//! neither HTTP routing nor SQL.

pub mod identity;
pub mod mail;

use std::{sync::RwLock, time::Duration};

use http::StatusCode;
use ruma::{OwnedUserId, UserId, api::error::ErrorKind};

use self::{
    identity::IdentityClient,
    mail::{Mail, Mailer},
};
use crate::{
    Error, Result,
    config::{Config, EmailRegistration},
    federation::ServerKeys,
    store::{NewValidationSession, Store, ThreepidBind, ThreepidRecord, TokenCheck},
    users::{hash_token, now_millis, random_string},
};

/// The medium of e-mail addresses.
pub const EMAIL: &str = "email";

/// The longest e-mail address accepted (RFC 5321's limit on a path).
const MAX_EMAIL_LENGTH: usize = 254;

/// Validation sessions are forgotten a day after they started.
const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The path of the page the link in a validation mail opens.
pub const VALIDATE_PATH: &str = "/_hearth/client/v1/3pid/email/validate";

/// The path a client may submit a token to (the spec's `submit_url`).
pub const SUBMIT_TOKEN_PATH: &str = "/_hearth/client/v1/3pid/email/submitToken";

/// What a validation mail is asked for; it decides which addresses are accepted and the mail's
/// words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `/register/email/requestToken`: the address must be free.
    Registration,
    /// `/account/3pid/email/requestToken`: the address must be free.
    AddToAccount,
    /// `/account/password/email/requestToken`: the address must be on an account.
    PasswordReset,
}

/// A `requestToken` for an e-mail address.
pub struct EmailTokenRequest<'a> {
    pub client_secret: &'a str,
    pub email: &'a str,
    pub send_attempt: u64,
}

/// A validated session's identifier.
#[derive(Clone, Debug)]
pub struct Validated {
    pub sid: String,
    pub medium: String,
    pub address: String,
    pub validated_ts: i64,
}

/// The third-party identifier service.
pub struct Threepids {
    store: Store,
    /// `None` without `[email]`: e-mail endpoints then answer `M_THREEPID_MEDIUM_NOT_SUPPORTED`.
    mailer: Option<Mailer>,
    /// The start of the links in mails; set at start from the config or the listening address.
    base_url: RwLock<String>,
    token_lifetime: Duration,
    registration: EmailRegistration,
    server_name: String,
    identity: IdentityClient,
}

impl Threepids {
    pub fn new(config: &Config, store: Store, keys: ServerKeys) -> anyhow::Result<Self> {
        let base_url = match (&config.email.public_base_url, &config.well_known.client) {
            (base, _) if !base.is_empty() => base.clone(),
            (_, client) if !client.is_empty() => client.clone(),
            _ => format!("http://{}", config.listen),
        };
        Ok(Self {
            store,
            mailer: Mailer::from_config(&config.email)?,
            base_url: RwLock::new(base_url.trim_end_matches('/').to_owned()),
            token_lifetime: Duration::from_secs(config.email.token_lifetime_seconds),
            registration: config.email.registration,
            server_name: config.server_name.to_string(),
            identity: IdentityClient::new(&config.identity_server, keys),
        })
    }

    /// Links point at the address the server listens on, when the config names no public URL.
    pub fn listening_on(&self, address: std::net::SocketAddr, configured: bool) {
        if !configured {
            *self.base_url.write().unwrap_or_else(|e| e.into_inner()) = format!("http://{address}");
        }
    }

    /// Where a client may submit the token of a mail (the spec's `submit_url`).
    pub fn submit_url(&self) -> String {
        let base = self.base_url.read().unwrap_or_else(|e| e.into_inner()).clone();
        format!("{base}{SUBMIT_TOKEN_PATH}")
    }

    /// Whether e-mail addresses can be validated (mail is configured).
    pub fn email_enabled(&self) -> bool {
        self.mailer.is_some()
    }

    /// Whether registration offers (or requires) the `m.login.email.identity` stage.
    pub fn email_at_registration(&self) -> EmailRegistration {
        if self.email_enabled() { self.registration } else { EmailRegistration::Off }
    }

    /// Starts or continues a validation session and mails its token when due; the session ID.
    ///
    /// `limit` is asked (with the canonical address) only when a mail is to go out, so that a
    /// client's retry of the same attempt, which sends nothing, costs nothing; when it refuses,
    /// the session is forgotten as after a failed send.
    pub async fn request_email_token(
        &self,
        purpose: Purpose,
        request: EmailTokenRequest<'_>,
        limit: impl FnOnce(&str) -> Result<()>,
    ) -> Result<String> {
        let mailer = self.mailer.as_ref().ok_or_else(email_not_supported)?;
        let address = canonical_email(request.email)?;
        self.check_purpose(purpose, &address).await?;
        let token = random_string(24);
        let now = now_millis();
        let session = NewValidationSession {
            sid: random_string(24),
            medium: EMAIL.to_owned(),
            address: address.clone(),
            client_secret_hash: hash_token(request.client_secret),
            send_attempt: i64::try_from(request.send_attempt).unwrap_or(i64::MAX),
            token_hash: hash_token(&token),
            token_expires_ts: now + millis(self.token_lifetime),
            now,
            forget_before: now - millis(SESSION_LIFETIME),
        };
        let requested = self.store.request_validation_session(session).await?;
        if requested.send {
            if let Err(error) = limit(&address) {
                self.store.delete_validation_session(&requested.sid).await?;
                return Err(error);
            }
            let mail = self.validation_mail(purpose, &address, &requested.sid, &request, &token);
            if let Err(error) = mailer.send(mail).await {
                // Forgotten, so that the client's retry (with the same attempt) mails again.
                self.store.delete_validation_session(&requested.sid).await?;
                return Err(error);
            }
        }
        Ok(requested.sid)
    }

    /// Refuses an address that is taken (registration, adding) or unknown (password reset).
    async fn check_purpose(&self, purpose: Purpose, address: &str) -> Result<()> {
        let owner = self.store.threepid_user(EMAIL, address).await?;
        match (purpose, owner) {
            (Purpose::PasswordReset, None) => Err(Error::client(
                StatusCode::BAD_REQUEST,
                ErrorKind::ThreepidNotFound,
                "No account has this e-mail address",
            )),
            (Purpose::Registration | Purpose::AddToAccount, Some(_)) => Err(threepid_in_use()),
            _ => Ok(()),
        }
    }

    fn validation_mail(
        &self,
        purpose: Purpose,
        address: &str,
        sid: &str,
        request: &EmailTokenRequest<'_>,
        token: &str,
    ) -> Mail {
        let base = self.base_url.read().unwrap_or_else(|e| e.into_inner()).clone();
        let link = format!(
            "{base}{VALIDATE_PATH}?sid={sid}&client_secret={}&token={token}",
            percent_encoding::utf8_percent_encode(request.client_secret, QUERY_VALUE)
        );
        let server = &self.server_name;
        let (subject, why) = match purpose {
            Purpose::Registration => {
                (format!("Confirm your e-mail address on {server}"), "to create an account")
            }
            Purpose::AddToAccount => {
                (format!("Confirm your e-mail address on {server}"), "to add it to your account")
            }
            Purpose::PasswordReset => {
                (format!("Reset your password on {server}"), "to reset your password")
            }
        };
        let minutes = self.token_lifetime.as_secs().div_ceil(60);
        let body = format!(
            "Someone, hopefully you, asked {server} to confirm this e-mail address ({address}) \
             {why}.\r\n\r\nOpen this link to confirm it:\r\n\r\n{link}\r\n\r\nor enter this \
             code where you are asked for it: {token}\r\n\r\nThe link works for {minutes} \
             minutes. If you did not ask for this, ignore this mail: nothing changes.\r\n"
        );
        Mail { to: address.to_owned(), subject, body }
    }

    /// Validates a session with the token of its mail.
    pub async fn submit_token(&self, sid: &str, client_secret: &str, token: &str) -> Result<()> {
        let (secret, token) = (hash_token(client_secret), hash_token(token));
        match self.store.validate_session_token(sid, &secret, &token, now_millis()).await? {
            TokenCheck::Validated => Ok(()),
            TokenCheck::UnknownSession => Err(auth_failed("Unknown validation session")),
            TokenCheck::WrongToken => Err(auth_failed("This is not the session's token")),
            TokenCheck::Expired => {
                Err(auth_failed("The token has expired; ask for a new mail and use its link"))
            }
        }
    }

    /// The identifier of a validated session whose client secret matches.
    pub async fn validated(&self, sid: &str, client_secret: &str) -> Result<Validated> {
        let session = self.store.validation_session(sid).await?;
        let session = session
            .filter(|s| s.client_secret_hash == hash_token(client_secret))
            .ok_or_else(|| auth_failed("Unknown validation session"))?;
        let validated_ts = session
            .validated_ts
            .ok_or_else(|| auth_failed("The e-mail address has not been validated yet"))?;
        Ok(Validated {
            sid: session.sid,
            medium: session.medium,
            address: session.address,
            validated_ts,
        })
    }

    /// Adds a validated identifier to an account and uses its session up.
    pub async fn add(&self, user_id: &UserId, validated: Validated) -> Result<()> {
        let record = ThreepidRecord {
            user_id: user_id.to_owned(),
            medium: validated.medium,
            address: validated.address,
            validated_ts: validated.validated_ts,
            added_ts: now_millis(),
        };
        if !self.store.add_threepid(record).await? {
            return Err(threepid_in_use());
        }
        self.store.delete_validation_session(&validated.sid).await?;
        Ok(())
    }

    /// Uses up a session (after a password reset).
    pub async fn use_up(&self, validated: &Validated) -> Result<()> {
        Ok(self.store.delete_validation_session(&validated.sid).await?)
    }

    /// An account's identifiers.
    pub async fn list(&self, user_id: &UserId) -> Result<Vec<ThreepidRecord>> {
        Ok(self.store.threepids(user_id).await?)
    }

    /// The account an identifier is on (an e-mail address in any case).
    pub async fn user_of(&self, medium: &str, address: &str) -> Result<Option<OwnedUserId>> {
        let address =
            if medium == EMAIL { address.to_ascii_lowercase() } else { address.to_owned() };
        Ok(self.store.threepid_user(medium, &address).await?)
    }

    /// Removes an identifier from an account, unbinding it from identity servers first (the one
    /// given, or else those it was bound on here); whether every unbind succeeded.
    pub async fn delete(
        &self,
        user_id: &UserId,
        threepid: (&str, &str),
        id_server: Option<&str>,
    ) -> Result<bool> {
        let (medium, address) = (threepid.0, canonical_address(threepid.0, threepid.1));
        let owner = self.store.threepid_user(medium, &address).await?;
        if owner.as_deref() != Some(user_id) {
            return Err(Error::not_found("This identifier is not on your account"));
        }
        let unbound = self.unbind(user_id, (medium, &address), id_server).await?;
        self.store.delete_threepid(user_id, medium, &address).await?;
        Ok(unbound)
    }

    /// Before a deactivation: unbinds each of the account's identifiers from the identity server
    /// given, or else from those it was bound on here; whether there was one to ask and every
    /// unbind succeeded. The store removes the identifiers with the account.
    pub async fn unbind_all(&self, user_id: &UserId, id_server: Option<&str>) -> Result<bool> {
        let mut all = None;
        for threepid in self.store.threepids(user_id).await? {
            let medium = threepid.medium.as_str();
            let asked = id_server.is_some()
                || !self.store.threepid_binds(user_id, medium, &threepid.address).await?.is_empty();
            if asked {
                let unbound = self.unbind(user_id, (medium, &threepid.address), id_server).await?;
                all = Some(all.unwrap_or(true) && unbound);
            }
        }
        Ok(all.unwrap_or(false))
    }

    /// Binds an identifier the identity server validated (its own session) to the account, and
    /// remembers where, for a later unbind.
    pub async fn bind(
        &self,
        user_id: &UserId,
        id_server: &str,
        id_access_token: &str,
        creds: (&str, &str),
    ) -> Result<()> {
        let bound = self.identity.bind(id_server, id_access_token, creds, user_id).await?;
        let bind = ThreepidBind {
            user_id: user_id.to_owned(),
            medium: bound.medium,
            address: canonical_address(EMAIL, &bound.address),
            id_server: id_server.to_owned(),
        };
        Ok(self.store.add_threepid_bind(bind).await?)
    }

    /// Unbinds an identifier from the identity server given, or else from those it was bound on
    /// here; `false` when there is none to ask or one refused (the spec's `no-support`).
    pub async fn unbind(
        &self,
        user_id: &UserId,
        threepid: (&str, &str),
        id_server: Option<&str>,
    ) -> Result<bool> {
        let (medium, address) = (threepid.0, canonical_address(threepid.0, threepid.1));
        let servers = match id_server {
            Some(server) => vec![server.to_owned()],
            None => self.store.threepid_binds(user_id, medium, &address).await?,
        };
        if servers.is_empty() {
            return Ok(false);
        }
        let mut all = true;
        for server in servers {
            if self.identity.unbind(&server, user_id, (medium, &address)).await {
                let bind = ThreepidBind {
                    user_id: user_id.to_owned(),
                    medium: medium.to_owned(),
                    address: address.clone(),
                    id_server: server,
                };
                self.store.delete_threepid_bind(bind).await?;
            } else {
                all = false;
            }
        }
        Ok(all)
    }
}

/// Characters escaped in a query value of the link (the client secret's grammar needs none, but
/// the link must stay a link whatever it holds).
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'=');

/// The form an e-mail address is kept in: trimmed and in lower case, as Synapse keeps them, so
/// that `Alice@Example.org` and `alice@example.org` are one address. `M_INVALID_PARAM` unless it
/// is one ASCII address (`local@domain`, no display name) of at most 254 bytes.
pub fn canonical_email(email: &str) -> Result<String> {
    let invalid = || Error::invalid_param("The e-mail address is not valid");
    if !email.is_ascii() {
        // Mail to them needs SMTPUTF8, which servers need not offer, and their lower case is
        // not one address in every language: refused for good rather than failing at sending.
        return Err(Error::invalid_param("E-mail addresses outside ASCII are not supported"));
    }
    let email = email.trim().to_ascii_lowercase();
    if email.is_empty() || email.len() > MAX_EMAIL_LENGTH || email.chars().any(char::is_control) {
        return Err(invalid());
    }
    let parsed: lettre::Address = email.parse().map_err(|_| invalid())?;
    if !parsed.domain().contains('.') && parsed.domain() != "localhost" {
        return Err(invalid());
    }
    Ok(email)
}

/// An address in the form it is kept in (e-mail: lower case).
fn canonical_address(medium: &str, address: &str) -> String {
    if medium == EMAIL { address.trim().to_ascii_lowercase() } else { address.to_owned() }
}

/// 400 `M_THREEPID_MEDIUM_NOT_SUPPORTED`: no mail without `[email]`, never SMS.
pub fn email_not_supported() -> Error {
    Error::client(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidMediumNotSupported,
        "This server sends no e-mail: e-mail addresses cannot be validated",
    )
}

/// 400 `M_THREEPID_MEDIUM_NOT_SUPPORTED` for phone numbers.
pub fn msisdn_not_supported() -> Error {
    Error::client(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidMediumNotSupported,
        "This server sends no SMS: phone numbers cannot be validated",
    )
}

/// 400 `M_THREEPID_IN_USE`.
pub fn threepid_in_use() -> Error {
    Error::client(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidInUse,
        "This e-mail address is already on an account",
    )
}

/// 400 `M_THREEPID_AUTH_FAILED`: a session that is unknown, not validated or of another secret.
fn auth_failed(message: &str) -> Error {
    Error::client(StatusCode::BAD_REQUEST, ErrorKind::ThreepidAuthFailed, message)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_kept_in_lower_case_and_checked() {
        assert_eq!(canonical_email(" Alice@Example.ORG ").unwrap(), "alice@example.org");
        for bad in
            ["", "alice", "@example.org", "alice@", "a b@example.org", "alice@nodot", "a\0@x.org"]
        {
            assert!(canonical_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(canonical_email(&long).is_err());
    }
}
