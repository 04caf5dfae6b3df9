//! The running server's components, wired together once at start.
//!
//! `Services` is built by `server::open_services` and shared (in an `Arc`) with every request
//! handler. Each field is owned here for the life of the process; background tasks spawned at
//! start (the sync notifier, push evaluation and delivery, the application services' senders)
//! end when the runtime shuts down.

use std::{path::Path, sync::Arc};

use crate::{
    api::ratelimit::RateLimiter,
    appservice::{Appservices, client::AppserviceClient},
    bus::Bus,
    config::Config,
    federation::ServerKeys,
    keys::Keys,
    keys::backup::KeyBackups,
    media::Media,
    presence::Presence,
    push::{Push, RetryPolicy},
    rooms::{Rooms, typing::Typing},
    store::{Store, switch::SwitchableStore},
    sync::{Notifier, SlidingSyncConnections},
    threepids::Threepids,
    users::{Users, activity::DeviceActivity, uiaa::Uiaa},
};

/// URL previews a user may ask for per minute (and at once): enough for a busy room's links.
const PREVIEWS_PER_MINUTE: u32 = 60;

/// Every component of a running server.
pub struct Services {
    pub config: Config,
    pub keys: ServerKeys,
    pub store: Store,
    pub bus: Bus,
    pub users: Users,
    /// When and from where each device was last used.
    pub device_activity: DeviceActivity,
    pub rooms: Rooms,
    /// Server-side key backups.
    pub key_backups: KeyBackups,
    /// End-to-end encryption: device keys, cross-signing, to-device messages.
    pub e2ee: Keys,
    /// Who is typing where.
    pub typing: Typing,
    /// Who is online, idle or offline (in memory only).
    pub presence: Presence,
    /// Wakes long-polling `/sync` requests.
    pub notifier: Notifier,
    /// What each sliding sync connection was sent, in memory.
    pub sliding_sync: SlidingSyncConnections,
    /// Push rules, notifications and pushers; evaluates new events and delivers to gateways.
    pub push: Push,
    /// Limits login and registration attempts per client address.
    pub login_limiter: RateLimiter,
    /// Limits password confirmations (user-interactive authentication) per account, so that a
    /// stolen access token cannot be used to guess the account's password.
    pub password_limiter: RateLimiter<ruma::OwnedUserId>,
    /// Limits URL previews per user: each may make the server fetch a page and an image.
    pub preview_limiter: RateLimiter<ruma::OwnedUserId>,
    /// Validation mails (`requestToken`) per client address.
    pub threepid_ip_limiter: RateLimiter,
    /// Validation mails per e-mail address, so that no one floods another's mailbox.
    pub threepid_address_limiter: RateLimiter<String>,
    /// User-interactive authentication sessions in progress.
    pub uiaa: Uiaa,
    /// E-mail addresses on accounts: validation mails, identity servers.
    pub threepids: Threepids,
    /// Uploads, downloads and thumbnails; the files under `<data_dir>/media`.
    pub media: Media,
    /// The registered application services (bridges), read at start.
    pub appservices: Appservices,
    /// Calls to application services: transactions, pings, queries.
    pub appservice_client: AppserviceClient,
    /// Administration: the move to PostgreSQL.
    #[cfg(feature = "postgres")]
    pub admin: crate::admin::Admin,
}

impl Services {
    /// Wires the components on the data directory's store and starts their background tasks.
    /// Needs a Tokio runtime. The store is switchable, so that a move to another backend can
    /// swap it while the server runs.
    pub fn start(
        config: Config,
        keys: ServerKeys,
        data_dir: &Path,
        store: Store,
        appservices: Appservices,
    ) -> anyhow::Result<Arc<Self>> {
        let switchable = Arc::new(SwitchableStore::new(store));
        #[cfg(feature = "postgres")]
        let admin = crate::admin::Admin::new(data_dir, switchable.clone());
        let store: Store = switchable;
        let bus = Bus::new(store.clone());
        let users = Users::new(store.clone(), config.server_name.clone(), Some(bus.clone()))
            .with_access_token_lifetime(config.auth.access_token_lifetime());
        let device_activity = DeviceActivity::new(store.clone());
        let rooms = Rooms::new(store.clone(), bus.clone(), keys.clone());
        let key_backups = KeyBackups::new(store.clone());
        let e2ee = Keys::new(store.clone(), bus.clone(), config.server_name.clone());
        let typing = Typing::start(bus.clone());
        let presence = Presence::start(bus.clone(), &config.presence);
        let notifier = Notifier::start(&bus, store.clone());
        let push =
            Push::start(store.clone(), &bus, users.clone(), rooms.clone(), RetryPolicy::default());
        let login_limiter = RateLimiter::per_minute(config.limits.login_attempts_per_minute);
        let password_limiter = RateLimiter::per_minute(config.limits.login_attempts_per_minute);
        let preview_limiter = RateLimiter::per_minute(PREVIEWS_PER_MINUTE);
        let uiaa = Uiaa::default();
        let threepids = Threepids::new(&config, store.clone(), keys.clone())?;
        let threepid_ip_limiter = RateLimiter::per_minute(config.email.token_requests_per_minute);
        let threepid_address_limiter =
            RateLimiter::per_minute(config.email.token_requests_per_minute);
        let media =
            Media::new(store.clone(), data_dir, config.media.clone(), config.server_name.clone());
        let appservice_client = AppserviceClient::default();
        crate::appservice::transactions::start(
            &appservices,
            &bus,
            store.clone(),
            appservice_client.clone(),
        );
        Ok(Arc::new(Self {
            config,
            keys,
            store,
            bus,
            users,
            device_activity,
            rooms,
            key_backups,
            e2ee,
            typing,
            presence,
            notifier,
            sliding_sync: SlidingSyncConnections::default(),
            push,
            login_limiter,
            password_limiter,
            preview_limiter,
            threepid_ip_limiter,
            threepid_address_limiter,
            uiaa,
            threepids,
            media,
            appservices,
            appservice_client,
            #[cfg(feature = "postgres")]
            admin,
        }))
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.config.server_name
    }

    /// The room a local alias points to. An alias no room has yet is asked of the application
    /// services whose alias namespaces hold it, one after the other, as the spec's
    /// [room alias queries](https://spec.matrix.org/v1.19/application-service-api/#get_matrixappv1roomsroomalias)
    /// say: a service that answers yes has created the room and the alias, which are read
    /// again. 404 `M_NOT_FOUND` when no one has it.
    pub async fn resolve_alias(
        &self,
        alias: &ruma::RoomAliasId,
    ) -> crate::Result<ruma::OwnedRoomId> {
        let not_found = match self.rooms.resolve_alias(alias).await {
            Err(error)
                if error.status() == http::StatusCode::NOT_FOUND
                    && alias.server_name() == self.server_name() =>
            {
                error
            }
            resolved => return resolved,
        };
        for service in self.appservices.iter().filter(|s| s.is_alias_interesting(alias)) {
            if self.appservice_client.query_room_alias(service, alias).await {
                return self.rooms.resolve_alias(alias).await;
            }
        }
        Err(not_found)
    }
}
