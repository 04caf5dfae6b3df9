//! Typing notifications: who is typing in which room, kept in memory only.
//!
//! A user types in a room until they say they stopped or their timeout runs out. Every change of
//! a room's set of typing users takes the next serial of a counter and is published on
//! [`TYPING_SUBJECT`], an ephemeral subject (delivered to live subscribers, kept nowhere), so that
//! `/sync` wakes the room's members and sends the room's new `m.typing` event to each sync whose
//! token is older than that serial.
//!
//! A user who leaves the room (or is kicked or banned) stops typing there at once: the service
//! follows the room events on the bus, so every way out of a room counts.
//!
//! The counter starts at the process's start time in milliseconds: serials keep growing across
//! restarts. A sync token from an earlier process gets every room's typing users anew (an empty
//! list too), since what it was told before the restart may no longer be true.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use tokio::{sync::Notify, time::Instant};

use super::{ROOM_EVENT_SUBJECT, RoomEventOutput};
use crate::bus::{Bus, Subscription};

/// The bus subject a change of a room's typing users is published on.
pub const TYPING_SUBJECT: &str = "typing.output.room";

/// The longest a user counts as typing without saying so again.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// What is published on [`TYPING_SUBJECT`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TypingOutput {
    pub room_id: OwnedRoomId,
    pub serial: u64,
}

/// The typing service. Cheap to clone.
#[derive(Clone)]
pub struct Typing {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// The first serial of this process: older ones are an earlier process's.
    start_serial: u64,
    bus: Bus,
    /// Wakes the expiry task when a new deadline may be the earliest.
    deadlines: Arc<Notify>,
}

struct State {
    /// The serial of the latest change in any room.
    serial: u64,
    rooms: BTreeMap<OwnedRoomId, RoomTyping>,
}

/// A room's typing users and the serial of its latest change. A room stays after its last
/// typer stopped: a sync older than that change must still learn that nobody types.
#[derive(Default)]
struct RoomTyping {
    serial: u64,
    until: BTreeMap<OwnedUserId, Instant>,
}

impl Typing {
    /// Starts the service and its expiry task. Needs a Tokio runtime.
    pub fn start(bus: Bus) -> Self {
        let start_serial = u64::try_from(crate::users::now_millis()).unwrap_or(0);
        let deadlines = Arc::new(Notify::new());
        let state = State { serial: start_serial, rooms: BTreeMap::new() };
        let room_events = bus.subscribe(ROOM_EVENT_SUBJECT);
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            start_serial,
            bus,
            deadlines: deadlines.clone(),
        });
        tokio::spawn(expire_forever(Arc::downgrade(&inner), deadlines));
        tokio::spawn(stop_on_leave(Arc::downgrade(&inner), room_events));
        Self { inner }
    }

    /// `user_id` types in `room_id` for `timeout` (at most [`MAX_TIMEOUT`]), or stopped typing
    /// (`None`). The caller has checked that the user is in the room.
    pub async fn set(&self, room_id: &RoomId, user_id: &UserId, timeout: Option<Duration>) {
        let changed = {
            let mut state = self.inner.lock();
            let room = state.rooms.entry(room_id.to_owned()).or_default();
            let was_typing = room.until.contains_key(user_id);
            match timeout {
                Some(timeout) => {
                    let until = Instant::now() + timeout.min(MAX_TIMEOUT);
                    room.until.insert(user_id.to_owned(), until);
                    self.inner.deadlines.notify_one();
                }
                None => {
                    room.until.remove(user_id);
                }
            }
            let changed = was_typing != timeout.is_some();
            changed.then(|| state.next_change(room_id))
        };
        if let Some(output) = changed {
            self.inner.publish(output).await;
        }
    }

    /// The serial of the latest change: a sync that has seen it is up to date.
    pub fn serial(&self) -> u64 {
        self.inner.lock().serial
    }

    /// The room's typing users, if they changed after serial `since`; with `since` `None` (an
    /// initial sync), if anyone types.
    pub fn changed_since(&self, room_id: &RoomId, since: Option<u64>) -> Option<Vec<OwnedUserId>> {
        let stale = since.is_some_and(|since| since < self.inner.start_serial);
        let state = self.inner.lock();
        let Some(room) = state.rooms.get(room_id) else { return stale.then(Vec::new) };
        let changed = match since {
            Some(since) => stale || room.serial > since,
            None => !room.until.is_empty(),
        };
        changed.then(|| room.until.keys().cloned().collect())
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn publish(&self, output: TypingOutput) {
        // An ephemeral subject is never persisted, so publishing cannot fail on storage.
        if let Err(error) = self.bus.publish(TYPING_SUBJECT, &output).await {
            tracing::warn!(error = format!("{error:#}"), "cannot publish a typing change");
        }
    }

    /// Removes the typers whose time ran out; returns the changes to publish and the next
    /// deadline.
    fn expire(&self, now: Instant) -> (Vec<TypingOutput>, Option<Instant>) {
        let mut state = self.lock();
        let mut expired = Vec::new();
        for (room_id, room) in &mut state.rooms {
            let before = room.until.len();
            room.until.retain(|_, until| *until > now);
            if room.until.len() != before {
                expired.push(room_id.clone());
            }
        }
        let changes = expired.iter().map(|room_id| state.next_change(room_id)).collect();
        let next = state.rooms.values().flat_map(|room| room.until.values()).min().copied();
        (changes, next)
    }
}

impl State {
    /// Takes the next serial for a change of `room_id`.
    fn next_change(&mut self, room_id: &RoomId) -> TypingOutput {
        self.serial += 1;
        let serial = self.serial;
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.serial = serial;
        }
        TypingOutput { room_id: room_id.to_owned(), serial }
    }
}

/// Ends the typing of users who leave a room, until the service is gone.
async fn stop_on_leave(inner: Weak<Inner>, mut room_events: Subscription) {
    while let Some(message) = room_events.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let Ok(event) = message.decode::<RoomEventOutput>() else { continue };
        let left = event.membership.as_deref().is_some_and(|m| m != "join");
        let user = event.state_key.as_deref().and_then(|key| UserId::parse(key).ok());
        if let (true, Some(user_id)) = (left, user) {
            Typing { inner }.set(&event.room_id, &user_id, None).await;
        }
    }
}

/// Ends typing whose time ran out, as it runs out, until the service is gone.
async fn expire_forever(inner: Weak<Inner>, deadlines: Arc<Notify>) {
    loop {
        let Some(strong) = inner.upgrade() else { return };
        let (changes, next) = strong.expire(Instant::now());
        for change in changes {
            strong.publish(change).await;
        }
        drop(strong);
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = deadlines.notified() => {}
                }
            }
            None => deadlines.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDatabase;

    fn ids() -> (OwnedRoomId, OwnedUserId, OwnedUserId) {
        (
            "!room:localhost".try_into().unwrap(),
            "@alice:localhost".try_into().unwrap(),
            "@bob:localhost".try_into().unwrap(),
        )
    }

    #[tokio::test]
    async fn typing_starts_stops_and_each_change_takes_a_new_serial() {
        let database = TestDatabase::new().await;
        let bus = Bus::new(database.open().await);
        let mut published = bus.subscribe(TYPING_SUBJECT);
        let typing = Typing::start(bus);
        let (room, alice, bob) = ids();
        let start = typing.serial();
        assert_eq!(typing.changed_since(&room, None), None, "nobody types yet");

        typing.set(&room, &alice, Some(Duration::from_secs(30))).await;
        let first = published.next().await.unwrap().decode::<TypingOutput>().unwrap();
        assert_eq!((first.room_id.as_str(), first.serial), (room.as_str(), start + 1));
        assert_eq!(typing.changed_since(&room, Some(start)), Some(vec![alice.clone()]));
        assert_eq!(typing.changed_since(&room, Some(start + 1)), None, "seen already");

        // Typing again only extends the time: nothing changes for the others.
        typing.set(&room, &alice, Some(Duration::from_secs(30))).await;
        assert_eq!(typing.serial(), start + 1);
        typing.set(&room, &bob, Some(Duration::from_secs(30))).await;
        assert_eq!(typing.changed_since(&room, None), Some(vec![alice.clone(), bob.clone()]));
        typing.set(&room, &alice, None).await;
        typing.set(&room, &bob, None).await;
        assert_eq!(typing.serial(), start + 4);
        assert_eq!(typing.changed_since(&room, Some(start + 3)), Some(Vec::new()));
        assert_eq!(typing.changed_since(&room, None), None);
    }

    #[tokio::test]
    async fn typing_ends_when_its_timeout_runs_out() {
        let database = TestDatabase::new().await;
        let typing = Typing::start(Bus::new(database.open().await));
        let (room, alice, bob) = ids();
        typing.set(&room, &alice, Some(Duration::from_millis(200))).await;
        typing.set(&room, &bob, Some(Duration::from_secs(600))).await;
        let serial = typing.serial();
        // Bob's 600 s are cut to the longest timeout allowed.
        let bob_until = typing.inner.lock().rooms[&room].until[&bob];
        assert!(bob_until <= Instant::now() + MAX_TIMEOUT, "capped");

        let mut waited = Duration::ZERO;
        while typing.changed_since(&room, Some(serial)).is_none() && waited < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
        }
        assert_eq!(typing.changed_since(&room, Some(serial)), Some(vec![bob.clone()]));
        assert!(waited >= Duration::from_millis(150), "not before its time: {waited:?}");
    }
}
