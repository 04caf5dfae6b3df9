//! The running server's components, wired together once at start.
//!
//! `Services` is built by `server::open_services` and shared (in an `Arc`) with every request
//! handler. Each field is owned here for the life of the process; background tasks spawned at
//! start (the sync notifier) end when the runtime shuts down.

use std::sync::Arc;

use crate::{
    api::ratelimit::RateLimiter,
    bus::Bus,
    config::Config,
    federation::ServerKeys,
    rooms::Rooms,
    store::Store,
    sync::Notifier,
    users::{Users, uiaa::Uiaa},
};

/// Every component of a running server.
pub struct Services {
    pub config: Config,
    pub keys: ServerKeys,
    pub store: Store,
    pub bus: Bus,
    pub users: Users,
    pub rooms: Rooms,
    /// Wakes long-polling `/sync` requests.
    pub notifier: Notifier,
    /// Limits login and registration attempts per client address.
    pub login_limiter: RateLimiter,
    /// User-interactive authentication sessions in progress.
    pub uiaa: Uiaa,
}

impl Services {
    /// Wires the components and starts their background tasks. Needs a Tokio runtime.
    pub fn start(config: Config, keys: ServerKeys, store: Store) -> Arc<Self> {
        let bus = Bus::new(store.clone());
        let users = Users::new(store.clone(), config.server_name.clone(), Some(bus.clone()));
        let rooms = Rooms::new(store.clone(), bus.clone(), keys.clone());
        let notifier = Notifier::start(&bus, store.clone());
        let login_limiter = RateLimiter::per_minute(config.limits.login_attempts_per_minute);
        let uiaa = Uiaa::default();
        Arc::new(Self { config, keys, store, bus, users, rooms, notifier, login_limiter, uiaa })
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.config.server_name
    }
}
