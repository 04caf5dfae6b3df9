//! Accounts, devices, access tokens and passwords.
//!
//! Access tokens are random strings handed to the client once; only their SHA-256 is stored.
//! Resolving a token is on every authenticated request's path, so resolved sessions (with the
//! account's lock and suspension) are cached in memory and the cache is cleared of every token
//! this process revokes and of every session of an account whose restrictions change (this
//! process is the only writer of the database). An access token issued with a refresh token
//! expires (its expiry is checked on every use, cached or not); refresh, login and OpenID tokens
//! are in [`tokens`].

pub mod activity;
pub mod directory;
pub mod ignored;
pub mod moderation;
pub mod password;
pub mod profile;
pub mod tags;
pub mod tokens;
pub mod uiaa;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::{Rng as _, distributions::Alphanumeric};
use ruma::{OwnedServerName, OwnedUserId, UserId};
use sha2::{Digest as _, Sha256};

use crate::{
    Error, Result,
    bus::Bus,
    store::{DeviceRecord, NewSession, NewUser, PusherCleanup, Session, Store, UserRecord},
};

/// The bus subject on which a user's own data changes (account data).
pub const USER_DATA_SUBJECT: &str = "userapi.output.data";

/// What is published on [`USER_DATA_SUBJECT`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct UserDataOutput {
    pub user_id: OwnedUserId,
    pub stream_position: i64,
}

/// The longest user ID the spec allows, in bytes.
const MAX_USER_ID_LENGTH: usize = 255;

/// The longest device ID and device display name accepted, in bytes.
const MAX_DEVICE_FIELD_LENGTH: usize = 255;

/// Checks the device ID and display name a client asks for at login or registration: not empty
/// (the ID), at most 255 bytes, and without a NUL character, which PostgreSQL's text cannot hold
/// (no device ID the spec allows has one). Registration checks before the account exists, so a
/// bad device never leaves an account without a session.
pub fn check_new_device(device_id: Option<&str>, display_name: Option<&str>) -> Result<()> {
    if let Some(id) = device_id
        && (id.is_empty() || id.len() > MAX_DEVICE_FIELD_LENGTH || id.contains('\0'))
    {
        return Err(Error::invalid_param("Invalid device ID"));
    }
    if let Some(name) = display_name {
        if name.len() > MAX_DEVICE_FIELD_LENGTH {
            return Err(Error::invalid_param("The device name is longer than 255 bytes"));
        }
        if name.contains('\0') {
            return Err(Error::invalid_param("The device name contains a NUL character"));
        }
    }
    Ok(())
}

/// A password change as `POST /account/password` asks for it.
pub struct PasswordChange<'a> {
    pub new_password: String,
    /// The device whose access token made the request: it stays logged in, and keeps its
    /// pushers. `None` for a password reset by e-mail, made without an access token.
    pub device_id: Option<&'a str>,
    /// Whether every other device is logged out.
    pub logout_devices: bool,
}

/// The account service.
#[derive(Clone)]
pub struct Users {
    store: Store,
    /// Absent for offline commands (`hearth user add`), which wake nobody.
    bus: Option<Bus>,
    server_name: OwnedServerName,
    /// Token hash → session, for tokens seen since start. Entries are removed on revocation
    /// and when their account's restrictions change.
    sessions: Arc<Mutex<SessionCache>>,
    /// Serializes the changes of account data that read what is stored first (room tags, the
    /// fully read marker), so that two at once cannot undo each other.
    account_data_lock: Arc<tokio::sync::Mutex<()>>,
    /// Serializes the changes of a profile's custom fields, whose total size is checked against
    /// what is stored.
    profile_lock: Arc<tokio::sync::Mutex<()>>,
    /// How long an access token issued with a refresh token works (`[auth]` of the config).
    access_token_lifetime: Duration,
}

/// Resolved sessions, and a count of the removals from them.
///
/// A token is resolved from the database outside the lock, so a removal can happen between that
/// read and the insertion of what it read. The insertion is skipped when any removal happened
/// meanwhile (the count moved), so a revoked token or an old lock never comes back into the cache.
#[derive(Default)]
struct SessionCache {
    sessions: BTreeMap<String, Session>,
    removals: u64,
}

/// A new login's credentials, returned to the client once.
#[derive(Clone, Debug)]
pub struct IssuedSession {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub access_token: String,
    /// Given when the client asked for one; the access token then expires.
    pub refresh_token: Option<String>,
    /// How long the access token works; `None`: until logout.
    pub expires_in: Option<Duration>,
}

impl Users {
    pub fn new(store: Store, server_name: OwnedServerName, bus: Option<Bus>) -> Self {
        Self {
            store,
            bus,
            server_name,
            sessions: Arc::default(),
            account_data_lock: Arc::default(),
            profile_lock: Arc::default(),
            access_token_lifetime: crate::config::AuthConfig::default().access_token_lifetime(),
        }
    }

    /// Sets how long access tokens issued with a refresh token work.
    pub fn with_access_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_token_lifetime = lifetime;
        self
    }

    /// Holds back the other changes of account data that read what is stored first, until the
    /// guard goes.
    pub async fn lock_account_data(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.account_data_lock.lock().await
    }

    /// Stores account data (`room_id` `None`: global) and wakes the user's syncs.
    pub async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&ruma::RoomId>,
        data_type: &str,
        content: &serde_json::value::RawValue,
    ) -> Result<()> {
        let stream_position =
            self.store.set_account_data(user_id, room_id, data_type, content).await?;
        if let Some(bus) = &self.bus {
            let output = UserDataOutput { user_id: user_id.to_owned(), stream_position };
            if let Err(error) = bus.publish(USER_DATA_SUBJECT, &output).await {
                tracing::warn!(%error, "cannot publish an account data change");
            }
        }
        Ok(())
    }

    pub async fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&ruma::RoomId>,
        data_type: &str,
    ) -> Result<Box<serde_json::value::RawValue>> {
        self.store
            .account_data(user_id, room_id, data_type)
            .await?
            .ok_or_else(|| Error::not_found("No account data of this type"))
    }

    /// Stores a filter definition (as JSON) and returns its ID, unique per user.
    pub async fn create_filter(&self, user_id: &UserId, filter_json: &str) -> Result<i64> {
        Ok(self.store.create_filter(user_id, filter_json).await?)
    }

    /// A filter stored by [`Self::create_filter`], as JSON.
    pub async fn filter(&self, user_id: &UserId, filter_id: i64) -> Result<Option<String>> {
        Ok(self.store.filter(user_id, filter_id).await?)
    }

    /// Whether the user is a server admin.
    pub async fn is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.get(user_id).await?.is_some_and(|user| user.is_admin && !user.deactivated))
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    /// Checks a requested localpart against the spec's grammar for new user IDs.
    pub fn user_id_for_localpart(&self, localpart: &str) -> Result<OwnedUserId> {
        let invalid = |why: &str| {
            Error::client(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::InvalidUsername,
                why,
            )
        };
        if localpart.is_empty() || localpart.starts_with('@') || localpart.contains(':') {
            return Err(invalid("The user name must be a bare localpart"));
        }
        let user_id = UserId::parse_with_server_name(localpart, &self.server_name)
            .map_err(|_| invalid("The user name has invalid characters"))?;
        if user_id.validate_strict().is_err() {
            return Err(invalid("User names may only contain a-z, 0-9, and . _ = - / +"));
        }
        if user_id.as_str().len() > MAX_USER_ID_LENGTH {
            return Err(invalid("The user name is too long"));
        }
        Ok(user_id)
    }

    /// Parses a login identifier (localpart or full user ID) of a local user.
    pub fn local_user_id(&self, identifier: &str) -> Result<OwnedUserId> {
        let user_id = UserId::parse_with_server_name(identifier.to_lowercase(), &self.server_name)
            .map_err(|_| Error::invalid_param("Invalid user identifier"))?;
        if user_id.server_name() != self.server_name {
            return Err(Error::forbidden("Not a user of this server"));
        }
        Ok(user_id)
    }

    /// Creates an account; `M_USER_IN_USE` if the name is taken.
    pub async fn create(
        &self,
        user_id: &UserId,
        password: Option<String>,
        admin: bool,
    ) -> Result<()> {
        let password_hash = match password {
            Some(password) => Some(password::hash(password).await?),
            None => None,
        };
        let user = NewUser {
            user_id: user_id.to_owned(),
            password_hash,
            is_admin: admin,
            created_ts: now_millis(),
        };
        if !self.store.create_user(user).await? {
            return Err(Error::client(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UserInUse,
                "This user name is taken",
            ));
        }
        tracing::info!(%user_id, admin, "account created");
        Ok(())
    }

    /// Creates an account with a random localpart (registration without a user name).
    pub async fn create_random(&self, password: Option<String>) -> Result<OwnedUserId> {
        loop {
            let user_id = UserId::new(&self.server_name);
            match self.create(&user_id, password.clone(), false).await {
                Err(Error::Client { kind: ruma::api::error::ErrorKind::UserInUse, .. }) => continue,
                other => return other.map(|()| user_id),
            }
        }
    }

    pub async fn is_taken(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.store.user(user_id).await?.is_some())
    }

    pub async fn get(&self, user_id: &UserId) -> Result<Option<UserRecord>> {
        Ok(self.store.user(user_id).await?)
    }

    /// Checks a password; the same `M_FORBIDDEN` for unknown users and wrong passwords.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<UserRecord> {
        let refused = || Error::forbidden("Invalid user name or password");
        let user = self.store.user(user_id).await?.ok_or_else(refused)?;
        if user.deactivated {
            return Err(Error::client(
                http::StatusCode::FORBIDDEN,
                ruma::api::error::ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        let stored = user.password_hash.clone().ok_or_else(refused)?;
        if !password::verify(password.to_owned(), stored).await? {
            return Err(refused());
        }
        // Only after the password: the lock is no one else's business. A locked account cannot
        // log in, or it would get tokens that every request refuses.
        if user.locked {
            return Err(Error::user_locked());
        }
        Ok(user)
    }

    /// Logs a user in on a device (a new one unless `device_id` is given); `M_INVALID_PARAM`
    /// unless [`check_new_device`] accepts the client's device ID and name. With `refreshable`
    /// (the client sent `refresh_token: true`) the session gets a refresh token and its access
    /// token expires.
    pub async fn issue_session(
        &self,
        user_id: &UserId,
        device: NewDevice,
        refreshable: bool,
    ) -> Result<IssuedSession> {
        check_new_device(device.device_id.as_deref(), device.display_name.as_deref())?;
        let device_id = device.device_id.unwrap_or_else(|| random_string(10).to_uppercase());
        let access_token = new_access_token();
        let refresh_token = refreshable.then(tokens::new_refresh_token);
        let created_ts = now_millis();
        let expires_in = refreshable.then_some(self.access_token_lifetime);
        let session = NewSession {
            user_id: user_id.to_owned(),
            device_id: device_id.clone(),
            display_name: device.display_name,
            token_hash: hash_token(&access_token),
            created_ts,
            expires_ts: expires_in.map(|lifetime| created_ts + millis(lifetime)),
            refresh_token_hash: refresh_token.as_deref().map(hash_token),
        };
        self.store.create_session(session).await?;
        // A reused device ID lost its older tokens: forget them.
        self.forget_sessions_of_device(user_id, &device_id);
        let user_id = user_id.to_owned();
        Ok(IssuedSession { user_id, device_id, access_token, refresh_token, expires_in })
    }

    /// Resolves an access token; `M_UNKNOWN_TOKEN` if it is not valid, with `soft_logout` if it
    /// expired (the client may refresh it).
    pub async fn authenticate(&self, access_token: &str) -> Result<Session> {
        let token_hash = hash_token(access_token);
        let removals = {
            let cache = self.cache();
            if let Some(session) = cache.sessions.get(&token_hash).cloned() {
                drop(cache);
                return self.unexpired(&token_hash, session);
            }
            cache.removals
        };
        let session = self
            .store
            .session_by_token(&token_hash)
            .await?
            .ok_or_else(|| Error::unknown_token("Unknown access token"))?;
        let session = self.unexpired(&token_hash, session)?;
        let session = self.first_use(&token_hash, session).await?;
        let mut cache = self.cache();
        if cache.removals == removals {
            cache.sessions.insert(token_hash, session.clone());
        }
        Ok(session)
    }

    /// The session, unless its access token expired: then a soft logout, and the token leaves
    /// the cache.
    fn unexpired(&self, token_hash: &str, session: Session) -> Result<Session> {
        if session.expires_ts.is_some_and(|expires_ts| expires_ts <= now_millis()) {
            self.forget_tokens(&[token_hash.to_owned()]);
            return Err(Error::soft_logout("The access token has expired; refresh it"));
        }
        Ok(session)
    }

    /// The first use of an access token from a refresh revokes the refresh token it replaced
    /// (the spec's "Refreshing access tokens"). The store checks that the token still exists,
    /// so one revoked meanwhile (a logout, another refresh) is not cached as valid.
    async fn first_use(&self, token_hash: &str, mut session: Session) -> Result<Session> {
        if !session.first_use_revokes {
            return Ok(session);
        }
        let revoked = self
            .store
            .first_use_of_access_token(token_hash)
            .await?
            .ok_or_else(|| Error::unknown_token("Unknown access token"))?;
        self.forget_tokens(&revoked);
        session.first_use_revokes = false;
        Ok(session)
    }

    /// Logs out one device: deletes it and its tokens (and, with it, its encryption keys and
    /// to-device inbox), a change of the user's device list.
    pub async fn delete_devices(&self, user_id: &UserId, device_ids: &[String]) -> Result<()> {
        let revoked = self.store.delete_devices(user_id, device_ids).await?;
        self.forget_tokens(&revoked);
        self.store.delete_pushers(user_id, PusherCleanup::DevicesGone).await?;
        self.device_list_changed(user_id).await
    }

    /// Logs out every device of a user except `keep`.
    pub async fn delete_all_devices(&self, user_id: &UserId, keep: Option<&str>) -> Result<()> {
        let revoked = self.store.delete_all_devices(user_id, keep).await?;
        self.forget_tokens(&revoked);
        self.store.delete_pushers(user_id, PusherCleanup::DevicesGone).await?;
        self.device_list_changed(user_id).await
    }

    /// Records that the user's devices changed and tells whoever shares a room with them (the
    /// bus subject of [`crate::keys`]).
    async fn device_list_changed(&self, user_id: &UserId) -> Result<()> {
        let stream_position = self.store.mark_device_list_changed(user_id).await?;
        if let Some(bus) = &self.bus {
            let output = crate::keys::KeyOutput { user_id: user_id.to_owned(), stream_position };
            if let Err(error) = bus.publish(crate::keys::DEVICE_LIST_SUBJECT, &output).await {
                tracing::warn!(%error, "cannot publish a device list change");
            }
        }
        Ok(())
    }

    /// Sets a new password; optionally logs out every other device. The pushers set with other
    /// devices' access tokens go either way, as the spec's password change asks.
    pub async fn change_password(
        &self,
        user_id: &UserId,
        change: PasswordChange<'_>,
    ) -> Result<()> {
        let hash = password::hash(change.new_password).await?;
        self.store.set_password_hash(user_id, &hash).await?;
        if change.logout_devices {
            self.delete_all_devices(user_id, change.device_id).await?;
        }
        // No device has the empty ID: after a reset, no pusher is kept.
        let cleanup = PusherCleanup::AllBut(change.device_id.unwrap_or_default().to_owned());
        self.store.delete_pushers(user_id, cleanup).await?;
        Ok(())
    }

    /// Deactivates an account: no more logins, every device logged out.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let revoked = self.store.delete_all_devices(user_id, None).await?;
        self.forget_tokens(&revoked);
        self.store.delete_pushers(user_id, PusherCleanup::DevicesGone).await?;
        self.store.deactivate_user(user_id).await?;
        self.device_list_changed(user_id).await?;
        tracing::info!(%user_id, "account deactivated");
        Ok(())
    }

    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<DeviceRecord>> {
        Ok(self.store.devices(user_id).await?)
    }

    pub async fn device(&self, user_id: &UserId, device_id: &str) -> Result<DeviceRecord> {
        self.store
            .device(user_id, device_id)
            .await?
            .ok_or_else(|| Error::not_found("No such device"))
    }

    pub async fn rename_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<()> {
        if !self.store.set_device_display_name(user_id, device_id, name).await? {
            return Err(Error::not_found("No such device"));
        }
        Ok(())
    }

    fn forget_tokens(&self, token_hashes: &[String]) {
        let mut cache = self.cache();
        cache.removals += 1;
        for hash in token_hashes {
            cache.sessions.remove(hash);
        }
    }

    fn forget_sessions_of_device(&self, user_id: &UserId, device_id: &str) {
        let mut cache = self.cache();
        cache.removals += 1;
        cache.sessions.retain(|_, s| !(s.user_id == user_id && s.device_id == device_id));
    }

    /// Forgets every session of an account, so that the next request reads its restrictions.
    fn forget_sessions_of_user(&self, user_id: &UserId) {
        let mut cache = self.cache();
        cache.removals += 1;
        cache.sessions.retain(|_, s| s.user_id != user_id);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SessionCache> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The device a login or registration asks for.
#[derive(Clone, Debug, Default)]
pub struct NewDevice {
    /// `None`: a new device with a random ID.
    pub device_id: Option<String>,
    /// For a new device, or to rename a reused one.
    pub display_name: Option<String>,
}

/// A new random access token.
fn new_access_token() -> String {
    format!("hth_{}", random_string(40))
}

/// A duration in milliseconds, as timestamps count them.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The stored form of an access token (and of refresh, login and OpenID tokens).
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A random alphanumeric string from the OS-seeded thread RNG.
pub fn random_string(length: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(length).map(char::from).collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    ruma::MilliSecondsSinceUnixEpoch::now().get().into()
}
