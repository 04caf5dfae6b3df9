//! Presence (client-server API, "Presence"): whether each user is online, unavailable (idle) or
//! offline, with an optional status message, kept in memory only.
//!
//! A user's presence changes when they set it (`PUT /presence/{userId}/status`), when a sync
//! brings them online or marks them idle (`set_presence`), when they stay inactive for
//! `[presence] idle_after_seconds` (online becomes unavailable) and when they stop syncing for
//! `[presence] offline_after_seconds` (they become offline). Every change takes the next serial
//! of a counter and is published on [`PRESENCE_SUBJECT`], an ephemeral subject, so that the sync
//! notifier wakes the long-polls of everyone sharing a room with the user; `/sync` sends the
//! users whose serial is after its token's presence part.
//!
//! Syncs cost nothing here beyond a lock: a sync that changes nothing publishes nothing and
//! writes nothing, and finding the users who changed after a serial reads only those changes (an
//! ordered index by serial). Only the timer that finds idle and gone users visits every user with
//! a presence, a few times per timeout, never per sync.
//!
//! The counter starts at the process's start time in milliseconds, as typing's does: a token of
//! an earlier process (or one without a presence part) gets everyone's presence anew.
//!
//! With `[presence] enabled = false` nothing is kept or published: everyone reads as offline.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use ruma::{OwnedUserId, UserId, presence::PresenceState};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{bus::Bus, config::PresenceConfig};

/// The bus subject a change of a user's presence is published on.
pub const PRESENCE_SUBJECT: &str = "presence.output.user";

/// The longest status message kept, in bytes.
pub const MAX_STATUS_BYTES: usize = 1024;

/// What is published on [`PRESENCE_SUBJECT`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PresenceOutput {
    pub user_id: OwnedUserId,
    pub serial: u64,
}

/// A user's presence as others read it.
#[derive(Clone, Debug, PartialEq)]
pub struct PresenceView {
    pub user_id: OwnedUserId,
    pub presence: PresenceState,
    pub status_msg: Option<String>,
    /// How long ago the user was last active; `None` for a user never seen.
    pub last_active_ago: Option<Duration>,
    pub currently_active: bool,
}

/// The presence service. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// The first serial of this process: older ones are an earlier process's.
    start_serial: u64,
    bus: Bus,
    enabled: bool,
    idle_after: Duration,
    offline_after: Duration,
}

struct State {
    /// The serial of the latest change of anyone.
    serial: u64,
    users: BTreeMap<OwnedUserId, UserPresence>,
    /// Each user's latest change, by its serial.
    changes: BTreeMap<u64, OwnedUserId>,
}

struct UserPresence {
    presence: PresenceState,
    status_msg: Option<String>,
    last_active: Instant,
    /// Syncs in progress that keep the user connected (not those with `set_presence=offline`).
    syncing: u32,
    /// When the user last finished such a sync or set their presence.
    last_seen: Instant,
    serial: u64,
}

/// Keeps a user connected while their sync is in progress; the end of the sync is when they
/// were last seen.
#[must_use = "the user counts as syncing while this lives"]
pub struct Syncing {
    inner: Option<(Arc<Inner>, OwnedUserId)>,
}

impl Drop for Syncing {
    fn drop(&mut self) {
        let Some((inner, user_id)) = self.inner.take() else { return };
        let mut state = inner.lock();
        if let Some(user) = state.users.get_mut(&user_id) {
            user.syncing = user.syncing.saturating_sub(1);
            user.last_seen = Instant::now();
        }
    }
}

impl Presence {
    /// Starts the service and, when enabled, its timer. Needs a Tokio runtime.
    pub fn start(bus: Bus, config: &PresenceConfig) -> Self {
        let start_serial = u64::try_from(crate::users::now_millis()).unwrap_or(0);
        let state =
            State { serial: start_serial, users: BTreeMap::new(), changes: BTreeMap::new() };
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            start_serial,
            bus,
            enabled: config.enabled,
            idle_after: Duration::from_secs(config.idle_after_seconds),
            offline_after: Duration::from_secs(config.offline_after_seconds),
        });
        if config.enabled {
            tokio::spawn(time_out_forever(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Whether presence is tracked at all.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The serial of the latest change: a sync that has seen it is up to date.
    pub fn serial(&self) -> u64 {
        self.inner.lock().serial
    }

    /// The user sets their presence (and status message, `None` clearing it). Setting it counts
    /// as activity, and as being seen.
    pub async fn set(&self, user_id: &UserId, presence: PresenceState, status_msg: Option<String>) {
        if !self.inner.enabled {
            return;
        }
        let change = {
            let mut state = self.inner.lock();
            let now = Instant::now();
            let user = state.entry(user_id, now);
            let changed = user.presence != presence || user.status_msg != status_msg;
            user.presence = presence;
            user.status_msg = status_msg;
            user.last_active = now;
            user.last_seen = now;
            changed.then(|| state.next_change(user_id))
        };
        self.inner.publish(change).await;
    }

    /// A sync of the user begins, with its `set_presence`: `online` brings an offline user
    /// online (an idle one stays unavailable until they are active), `unavailable` marks them
    /// idle, `offline` leaves their presence alone and does not keep them connected.
    pub async fn sync_started(&self, user_id: &UserId, set_presence: &PresenceState) -> Syncing {
        if !self.inner.enabled || *set_presence == PresenceState::Offline {
            return Syncing { inner: None };
        }
        let change = {
            let mut state = self.inner.lock();
            let now = Instant::now();
            let user = state.entry(user_id, now);
            user.syncing += 1;
            user.last_seen = now;
            let next = match (&user.presence, set_presence) {
                (PresenceState::Offline, PresenceState::Online) => Some(PresenceState::Online),
                (PresenceState::Unavailable, PresenceState::Unavailable) => None,
                (_, PresenceState::Unavailable) => Some(PresenceState::Unavailable),
                _ => None,
            };
            if let Some(presence) = &next {
                if *presence == PresenceState::Online {
                    user.last_active = now;
                }
                user.presence = presence.clone();
            }
            next.map(|_| state.next_change(user_id))
        };
        self.inner.publish(change).await;
        Syncing { inner: Some((self.inner.clone(), user_id.to_owned())) }
    }

    /// The user did something (sent an event): they are active, and online again if idle.
    pub async fn active(&self, user_id: &UserId) {
        if !self.inner.enabled {
            return;
        }
        let change = {
            let mut state = self.inner.lock();
            let now = Instant::now();
            let user = state.entry(user_id, now);
            user.last_active = now;
            let idle = user.presence == PresenceState::Unavailable;
            if idle {
                user.presence = PresenceState::Online;
            }
            idle.then(|| state.next_change(user_id))
        };
        self.inner.publish(change).await;
    }

    /// A user's presence; offline for a user never seen (or with presence disabled).
    pub fn get(&self, user_id: &UserId) -> PresenceView {
        let state = self.inner.lock();
        match state.users.get(user_id) {
            Some(user) => user.view(user_id),
            None => offline(user_id),
        }
    }

    /// The presence of the users that changed after serial `since`; with `since` `None` (an
    /// initial sync, or a token without a presence part) or from an earlier process, of
    /// everyone with a presence.
    pub fn changed_since(&self, since: Option<u64>) -> Vec<PresenceView> {
        if !self.inner.enabled {
            return Vec::new();
        }
        let state = self.inner.lock();
        let since = since.filter(|since| *since >= self.inner.start_serial);
        let view = |user_id: &OwnedUserId| state.users.get(user_id).map(|u| u.view(user_id));
        match since {
            Some(since) => {
                state.changes.range(since + 1..).filter_map(|(_, id)| view(id)).collect()
            }
            None => state.users.keys().filter_map(view).collect(),
        }
    }
}

fn offline(user_id: &UserId) -> PresenceView {
    PresenceView {
        user_id: user_id.to_owned(),
        presence: PresenceState::Offline,
        status_msg: None,
        last_active_ago: None,
        currently_active: false,
    }
}

impl UserPresence {
    fn view(&self, user_id: &UserId) -> PresenceView {
        PresenceView {
            user_id: user_id.to_owned(),
            presence: self.presence.clone(),
            status_msg: self.status_msg.clone(),
            last_active_ago: Some(self.last_active.elapsed()),
            currently_active: self.presence == PresenceState::Online,
        }
    }
}

impl State {
    /// The user's entry, created offline.
    fn entry(&mut self, user_id: &UserId, now: Instant) -> &mut UserPresence {
        self.users.entry(user_id.to_owned()).or_insert_with(|| UserPresence {
            presence: PresenceState::Offline,
            status_msg: None,
            last_active: now,
            syncing: 0,
            last_seen: now,
            serial: 0,
        })
    }

    /// Takes the next serial for a change of `user_id`.
    fn next_change(&mut self, user_id: &UserId) -> PresenceOutput {
        self.serial += 1;
        let serial = self.serial;
        if let Some(user) = self.users.get_mut(user_id) {
            self.changes.remove(&user.serial);
            user.serial = serial;
        }
        self.changes.insert(serial, user_id.to_owned());
        PresenceOutput { user_id: user_id.to_owned(), serial }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn publish(&self, change: Option<PresenceOutput>) {
        let Some(output) = change else { return };
        // An ephemeral subject is never persisted, so publishing cannot fail on storage.
        if let Err(error) = self.bus.publish(PRESENCE_SUBJECT, &output).await {
            tracing::warn!(error = format!("{error:#}"), "cannot publish a presence change");
        }
    }

    /// Marks idle users unavailable and gone ones offline; returns the changes to publish.
    fn time_out(&self, now: Instant) -> Vec<PresenceOutput> {
        let mut state = self.lock();
        let mut changed = Vec::new();
        for (user_id, user) in &mut state.users {
            let next = match user.presence {
                PresenceState::Offline => None,
                _ if user.syncing == 0 && now >= user.last_seen + self.offline_after => {
                    Some(PresenceState::Offline)
                }
                PresenceState::Online if now >= user.last_active + self.idle_after => {
                    Some(PresenceState::Unavailable)
                }
                _ => None,
            };
            if let Some(presence) = next {
                user.presence = presence;
                changed.push(user_id.clone());
            }
        }
        changed.iter().map(|user_id| state.next_change(user_id)).collect()
    }

    /// How often the timer looks: a quarter of the shorter timeout, between 250 ms and 5 s.
    fn tick(&self) -> Duration {
        (self.idle_after.min(self.offline_after) / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(5))
    }
}

/// Times out idle and gone users, until the service is gone.
async fn time_out_forever(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let tick = strong.tick();
        for change in strong.time_out(Instant::now()) {
            strong.publish(Some(change)).await;
        }
        drop(strong);
        tokio::time::sleep(tick).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDatabase;

    fn config(idle: u64, offline: u64) -> PresenceConfig {
        PresenceConfig { enabled: true, idle_after_seconds: idle, offline_after_seconds: offline }
    }

    fn alice() -> OwnedUserId {
        "@alice:localhost".try_into().unwrap()
    }

    #[tokio::test]
    async fn a_sync_brings_a_user_online_and_each_change_takes_a_new_serial() {
        let database = TestDatabase::new().await;
        let bus = Bus::new(database.open().await);
        let mut published = bus.subscribe(PRESENCE_SUBJECT);
        let presence = Presence::start(bus, &config(300, 30));
        let start = presence.serial();
        assert_eq!(presence.get(&alice()).presence, PresenceState::Offline);
        assert!(presence.changed_since(Some(start)).is_empty());

        let syncing = presence.sync_started(&alice(), &PresenceState::Online).await;
        let change = published.next().await.unwrap().decode::<PresenceOutput>().unwrap();
        assert_eq!((change.user_id, change.serial), (alice(), start + 1));
        let seen = presence.changed_since(Some(start));
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].presence, PresenceState::Online);
        assert!(seen[0].currently_active);
        assert!(presence.changed_since(Some(start + 1)).is_empty(), "seen already");

        // Another sync changes nothing; setting a status does.
        drop(presence.sync_started(&alice(), &PresenceState::Online).await);
        assert_eq!(presence.serial(), start + 1);
        presence.set(&alice(), PresenceState::Online, Some("baking".into())).await;
        assert_eq!(presence.serial(), start + 2);
        assert_eq!(presence.changed_since(Some(start)).len(), 1, "one entry per user");
        assert_eq!(presence.get(&alice()).status_msg.as_deref(), Some("baking"));
        assert_eq!(presence.changed_since(Some(0)).len(), 1, "an earlier process's token");
        drop(syncing);
    }

    #[tokio::test]
    async fn idle_users_become_unavailable_and_gone_ones_offline() {
        let database = TestDatabase::new().await;
        let presence = Presence::start(Bus::new(database.open().await), &config(2, 1));
        let at = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
        let syncing = presence.sync_started(&alice(), &PresenceState::Online).await;
        at(1000).await;
        assert_eq!(presence.get(&alice()).presence, PresenceState::Online, "a sync keeps it");
        at(1500).await;
        assert_eq!(presence.get(&alice()).presence, PresenceState::Unavailable, "idle");
        presence.active(&alice()).await;
        assert_eq!(presence.get(&alice()).presence, PresenceState::Online, "active again");
        drop(syncing);
        at(500).await;
        assert_eq!(presence.get(&alice()).presence, PresenceState::Online);
        at(1000).await;
        assert_eq!(presence.get(&alice()).presence, PresenceState::Offline, "stopped syncing");
    }

    #[tokio::test]
    async fn disabled_presence_keeps_nothing() {
        let database = TestDatabase::new().await;
        let off = PresenceConfig { enabled: false, ..config(300, 30) };
        let presence = Presence::start(Bus::new(database.open().await), &off);
        let _syncing = presence.sync_started(&alice(), &PresenceState::Online).await;
        presence.set(&alice(), PresenceState::Online, Some("here".into())).await;
        assert_eq!(presence.get(&alice()).presence, PresenceState::Offline);
        assert!(presence.changed_since(None).is_empty());
    }
}
