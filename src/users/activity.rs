//! When, from where and with which client each device was last used: the `last_seen_ts` and
//! `last_seen_ip` that the devices API reports, and the user agent `/admin/whois` adds.
//!
//! Every authenticated request notes its device here. Authentication must stay a cache lookup,
//! so a device is written at most once per [`WRITE_INTERVAL`], or sooner when its address or
//! user agent changes, and the write happens in the background: a request never waits for it,
//! and a failed write only leaves the time a little older.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UserId};

use super::now_millis;
use crate::store::{DeviceSeen, Store};

/// How often a device in steady use is written.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(60);

/// The longest user agent kept, in bytes; a longer one is cut at a character boundary.
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// The last write per device.
#[derive(Clone)]
pub struct DeviceActivity {
    store: Store,
    written: Arc<Mutex<BTreeMap<(OwnedUserId, String), Written>>>,
}

#[derive(Clone)]
struct Written {
    ip: IpAddr,
    user_agent: Option<String>,
    at: Instant,
}

impl DeviceActivity {
    pub fn new(store: Store) -> Self {
        Self { store, written: Arc::default() }
    }

    /// Notes that `device_id` of `user_id` made a request from `ip`, with the `User-Agent`
    /// header `user_agent` if it sent one, just now. Needs a Tokio runtime.
    pub fn note(&self, user_id: &UserId, device_id: &str, ip: IpAddr, user_agent: Option<&str>) {
        let user_agent = user_agent.map(shortened);
        if !self.due(user_id, device_id, ip, user_agent.as_deref(), Instant::now()) {
            return;
        }
        let (store, user_id, device_id) =
            (self.store.clone(), user_id.to_owned(), device_id.to_owned());
        tokio::spawn(async move {
            let seen = DeviceSeen { ip: ip.to_string(), user_agent, ts: now_millis() };
            let written = store.touch_device(&user_id, &device_id, seen);
            if let Err(error) = written.await {
                tracing::debug!(%user_id, device_id, error = format!("{error:#}"), "cannot note device activity");
            }
        });
    }

    /// Whether the device is due for a write, and if so, counts it as written at `now`.
    fn due(
        &self,
        user_id: &UserId,
        device_id: &str,
        ip: IpAddr,
        user_agent: Option<&str>,
        now: Instant,
    ) -> bool {
        let Ok(mut written) = self.written.lock() else { return false };
        let key = (user_id.to_owned(), device_id.to_owned());
        if let Some(last) = written.get(&key)
            && last.ip == ip
            && last.user_agent.as_deref() == user_agent
            && now.duration_since(last.at) < WRITE_INTERVAL
        {
            return false;
        }
        written.insert(key, Written { ip, user_agent: user_agent.map(str::to_owned), at: now });
        true
    }
}

/// A user agent cut to [`MAX_USER_AGENT_BYTES`], without NUL characters (which PostgreSQL's text
/// cannot hold; HTTP forbids them in headers anyway).
fn shortened(user_agent: &str) -> String {
    let mut end = user_agent.len().min(MAX_USER_AGENT_BYTES);
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    user_agent[..end].replace('\0', "")
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
        let app = Some("Element/1.0");
        assert!(activity.due(&alice, "PHONE", home, app, start));
        assert!(!activity.due(&alice, "PHONE", home, app, start + Duration::from_secs(59)));
        assert!(activity.due(&alice, "LAPTOP", home, app, start), "each device on its own");
        assert!(
            activity.due(&alice, "PHONE", away, app, start + Duration::from_secs(1)),
            "a new address"
        );
        assert!(
            activity.due(
                &alice,
                "PHONE",
                away,
                Some("Element/1.1"),
                start + Duration::from_secs(2)
            ),
            "a new user agent"
        );
        assert!(activity.due(&alice, "PHONE", away, None, start + Duration::from_secs(3)));
        assert!(!activity.due(&alice, "PHONE", away, None, start + Duration::from_secs(4)));
        assert!(activity.due(&alice, "PHONE", away, None, start + Duration::from_secs(64)));
    }

    #[test]
    fn long_user_agents_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_USER_AGENT_BYTES);
        let cut = shortened(&long);
        assert!(cut.len() <= MAX_USER_AGENT_BYTES && cut.chars().all(|c| c == 'é'), "{cut}");
        assert_eq!(shortened("curl/8.0"), "curl/8.0");
    }
}
