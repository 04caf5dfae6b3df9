//! When and from where each device was last used: the `last_seen_ts` and `last_seen_ip` that the
//! devices API reports.
//!
//! Every authenticated request notes its device here. Authentication must stay a cache lookup,
//! so a device is written at most once per [`WRITE_INTERVAL`], or sooner when its address
//! changes, and the write happens in the background: a request never waits for it, and a failed
//! write only leaves the time a little older.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId};

use super::now_millis;
use crate::store::Store;

/// How often a device in steady use is written.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(60);

/// The last write per device.
#[derive(Clone)]
pub struct DeviceActivity {
    store: Store,
    written: Arc<Mutex<BTreeMap<(OwnedUserId, String), Written>>>,
}

#[derive(Clone, Copy)]
struct Written {
    ip: IpAddr,
    at: Instant,
}

impl DeviceActivity {
    pub fn new(store: Store) -> Self {
        Self { store, written: Arc::default() }
    }

    /// Notes that `device_id` of `user_id` made a request from `ip` just now. Needs a Tokio
    /// runtime.
    pub fn note(&self, user_id: &UserId, device_id: &str, ip: IpAddr) {
        if !self.due(user_id, device_id, ip, Instant::now()) {
            return;
        }
        let (store, user_id, device_id) =
            (self.store.clone(), user_id.to_owned(), device_id.to_owned());
        tokio::spawn(async move {
            let ip = ip.to_string();
            let written = store.touch_device(&user_id, &device_id, &ip, now_millis());
            if let Err(error) = written.await {
                tracing::debug!(%user_id, device_id, error = format!("{error:#}"), "cannot note device activity");
            }
        });
    }

    /// Whether the device is due for a write, and if so, counts it as written at `now`.
    fn due(&self, user_id: &UserId, device_id: &str, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut written) = self.written.lock() else { return false };
        let key = (user_id.to_owned(), device_id.to_owned());
        if let Some(last) = written.get(&key)
            && last.ip == ip
            && now.duration_since(last.at) < WRITE_INTERVAL
        {
            return false;
        }
        written.insert(key, Written { ip, at: now });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_device_is_written_once_a_minute_or_when_its_address_changes() {
        let database = crate::store::testing::TestDatabase::new().await;
        let activity = DeviceActivity::new(database.open().await);
        let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();
        let (home, away): (IpAddr, IpAddr) =
            ("127.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        assert!(activity.due(&alice, "PHONE", home, start));
        assert!(!activity.due(&alice, "PHONE", home, start + Duration::from_secs(59)));
        assert!(activity.due(&alice, "LAPTOP", home, start), "each device on its own");
        assert!(
            activity.due(&alice, "PHONE", away, start + Duration::from_secs(1)),
            "a new address"
        );
        assert!(activity.due(&alice, "PHONE", away, start + Duration::from_secs(62)));
    }
}
