//! The state of sliding sync connections, kept in memory per (user, device, `conn_id`).
//!
//! Each answer of a connection gets a new `pos` and a [`Snapshot`] of what the client was sent up
//! to it: the stream position and typing serial, and per room the stream position its timeline
//! was sent to and the required state it holds. A request names the `pos` it builds on, so a
//! client that lost an answer and asks again with the same `pos` gets it again; a request with
//! `pos` acknowledges that answer, and the snapshots before it are dropped. A request without
//! `pos` starts the connection afresh. Nothing here survives a restart: a `pos` the server does
//! not know is answered with `M_UNKNOWN_POS`, and the client starts over, as MSC4186 expects.
//!
//! Connections idle for [`IDLE_EXPIRY`] are dropped, and a device keeps at most
//! [`MAX_CONNECTIONS_PER_DEVICE`] of them, so a client cannot grow the map without bound.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::StatusCode;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, api::error::ErrorKind};

use crate::{Error, Result};

/// How long an unused connection is kept.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(30 * 60);

/// The most connections one device keeps; the least recently used goes first.
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 8;

/// The most answers of one connection that are kept while not acknowledged.
const MAX_SNAPSHOTS: usize = 8;

/// What a connection's client was sent, as of one `pos`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Everything up to this stream position was considered.
    pub position: i64,
    /// The typing serial read before the answer was computed.
    pub typing: u64,
    /// The rooms the client was sent, by room ID.
    pub rooms: BTreeMap<OwnedRoomId, SentRoom>,
    /// The count of each list, by list name.
    pub list_counts: BTreeMap<String, u64>,
}

/// What the client holds of one room.
#[derive(Clone, Debug, Default)]
pub struct SentRoom {
    /// The room's events up to this stream position were sent (or there were none to send).
    pub position: i64,
    /// The membership the user had when the room was last sent.
    pub membership: String,
    /// The largest `timeline_limit` the room was sent with.
    pub timeline_limit: usize,
    /// The required state sent: (type, state key) → event ID.
    pub state: BTreeMap<(String, String), OwnedEventId>,
}

/// Identifies a connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnectionKey {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub conn_id: String,
}

struct Connection {
    snapshots: BTreeMap<u64, Arc<Snapshot>>,
    last_used: Instant,
}

/// Every open connection. Cheap to clone.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Mutex<Open>>,
}

struct Open {
    connections: BTreeMap<ConnectionKey, Connection>,
    /// The next `pos` handed out, to any connection: a `pos` is never used twice, so that one of
    /// a connection that was started afresh (or of an earlier process, the counter starting at a
    /// random number) is never taken for one of the new connection.
    next_pos: u64,
}

impl Default for Connections {
    fn default() -> Self {
        let next_pos = u64::from(rand::random::<u32>());
        Self { inner: Arc::new(Mutex::new(Open { connections: BTreeMap::new(), next_pos })) }
    }
}

/// The error MSC4186 names for a `pos` the server does not know (any more).
pub fn unknown_pos() -> Error {
    Error::client(StatusCode::BAD_REQUEST, ErrorKind::UnknownPos, "Unknown or expired pos")
}

impl Connections {
    /// The snapshot a request builds on: `None` for a request without `pos`, which starts the
    /// connection afresh (dropping what it had).
    pub fn begin(&self, key: &ConnectionKey, pos: Option<&str>) -> Result<Option<Arc<Snapshot>>> {
        let mut open = self.lock();
        let connections = &mut open.connections;
        expire(connections, Instant::now());
        let Some(pos) = pos else {
            connections.remove(key);
            return Ok(None);
        };
        let number = pos.parse::<u64>().map_err(|_| unknown_pos())?;
        let connection = connections.get_mut(key).ok_or_else(unknown_pos)?;
        let snapshot = connection.snapshots.get(&number).cloned().ok_or_else(unknown_pos)?;
        connection.last_used = Instant::now();
        // The client has this answer: the ones before it are of no more use.
        connection.snapshots.retain(|&kept, _| kept >= number);
        Ok(Some(snapshot))
    }

    /// Keeps the snapshot of a new answer; returns its `pos`.
    pub fn commit(&self, key: &ConnectionKey, snapshot: Snapshot) -> String {
        let mut open = self.lock();
        let now = Instant::now();
        let pos = open.next_pos;
        open.next_pos += 1;
        let connections = &mut open.connections;
        limit_per_device(connections, key);
        let connection = connections
            .entry(key.clone())
            .or_insert_with(|| Connection { snapshots: BTreeMap::new(), last_used: now });
        connection.last_used = now;
        connection.snapshots.insert(pos, Arc::new(snapshot));
        while connection.snapshots.len() > MAX_SNAPSHOTS {
            connection.snapshots.pop_first();
        }
        pos.to_string()
    }

    /// How many connections are open (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().connections.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn expire(connections: &mut BTreeMap<ConnectionKey, Connection>, now: Instant) {
    connections.retain(|_, c| now.duration_since(c.last_used) < IDLE_EXPIRY);
}

/// Makes room for `key` among its device's connections, dropping the least recently used.
fn limit_per_device(connections: &mut BTreeMap<ConnectionKey, Connection>, key: &ConnectionKey) {
    if connections.contains_key(key) {
        return;
    }
    let same_device = |k: &ConnectionKey| k.user_id == key.user_id && k.device_id == key.device_id;
    loop {
        let of_device: Vec<(&ConnectionKey, Instant)> = connections
            .iter()
            .filter(|(k, _)| same_device(k))
            .map(|(k, c)| (k, c.last_used))
            .collect();
        if of_device.len() < MAX_CONNECTIONS_PER_DEVICE {
            return;
        }
        let Some(oldest) =
            of_device.iter().min_by_key(|(_, used)| *used).map(|(k, _)| (*k).clone())
        else {
            return;
        };
        connections.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(conn_id: &str) -> ConnectionKey {
        ConnectionKey {
            user_id: "@alice:localhost".try_into().unwrap(),
            device_id: "DEVICE".into(),
            conn_id: conn_id.into(),
        }
    }

    fn at(position: i64) -> Snapshot {
        Snapshot { position, ..Snapshot::default() }
    }

    #[test]
    fn a_pos_can_be_used_again_until_a_later_one_is() {
        let connections = Connections::default();
        let main = key("main");
        assert!(connections.begin(&main, None).unwrap().is_none());
        let first = connections.commit(&main, at(5));
        assert_eq!(connections.begin(&main, Some(&first)).unwrap().unwrap().position, 5);
        let second = connections.commit(&main, at(7));
        // The answer to `first` was lost: the client asks again with it.
        assert_eq!(connections.begin(&main, Some(&first)).unwrap().unwrap().position, 5);
        let third = connections.commit(&main, at(8));
        assert_ne!(second, third);
        assert_eq!(connections.begin(&main, Some(&third)).unwrap().unwrap().position, 8);
        assert!(connections.begin(&main, Some(&first)).is_err(), "acknowledged by a later pos");
    }

    #[test]
    fn unknown_pos_and_other_connections_are_refused() {
        let connections = Connections::default();
        let pos = connections.commit(&key("a"), at(1));
        for (conn, pos) in [("a", "99"), ("a", "x"), ("a", ""), ("b", pos.as_str())] {
            let error = connections.begin(&key(conn), Some(pos)).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{conn} {pos}");
        }
        connections.begin(&key("a"), None).unwrap();
        assert!(connections.begin(&key("a"), Some(&pos)).is_err(), "started afresh");
    }

    #[test]
    fn a_device_keeps_a_bounded_number_of_connections() {
        let connections = Connections::default();
        for n in 0..MAX_CONNECTIONS_PER_DEVICE + 3 {
            connections.commit(&key(&n.to_string()), at(1));
        }
        assert_eq!(connections.len(), MAX_CONNECTIONS_PER_DEVICE);
    }
}
