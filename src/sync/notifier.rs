//! Wakes long-polling `/sync` requests when something for their user happens.
//!
//! A background task follows the bus: each room event wakes the room's joined local users and,
//! for a membership event, its target; a change of who is typing and a new read receipt wake the
//! room's joined users; account data and a new notification (its counts) wake their owner; a
//! to-device message wakes its recipient, and a change of a user's devices or keys, or of their
//! presence, wakes them and everyone sharing a room with them. The joined members of a
//! room are cached, loaded from the store the first time a room is seen and kept current from the
//! membership events that pass by.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use tokio::sync::watch;

use crate::{
    bus::{Bus, Message},
    keys::{DEVICE_LIST_SUBJECT, KeyOutput, TO_DEVICE_SUBJECT},
    presence::{PRESENCE_SUBJECT, PresenceOutput},
    push::{NOTIFICATION_SUBJECT, NotificationOutput},
    rooms::{
        ROOM_EVENT_SUBJECT, RoomEventOutput,
        receipts::{RECEIPT_SUBJECT, ReceiptOutput},
        typing::{TYPING_SUBJECT, TypingOutput},
    },
    store::Store,
    users::{USER_DATA_SUBJECT, UserDataOutput},
};

/// The wake-up service. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

#[allow(clippy::disallowed_types)] // in-memory indexes, never serialized
struct Inner {
    /// One channel per user that has synced since start: the latest position that concerns them.
    users: Mutex<BTreeMap<OwnedUserId, watch::Sender<i64>>>,
    /// Joined local members per room, for rooms seen since start.
    rooms: Mutex<BTreeMap<OwnedRoomId, BTreeSet<OwnedUserId>>>,
    store: Store,
}

impl Notifier {
    /// Starts following the bus. Needs a Tokio runtime.
    pub fn start(bus: &Bus, store: Store) -> Self {
        let inner = Inner { users: Mutex::default(), rooms: Mutex::default(), store };
        let notifier = Self { inner: Arc::new(inner) };
        let mut room_events = bus.subscribe(ROOM_EVENT_SUBJECT);
        let mut user_data = bus.subscribe(USER_DATA_SUBJECT);
        let mut typing = bus.subscribe(TYPING_SUBJECT);
        let mut receipts = bus.subscribe(RECEIPT_SUBJECT);
        let mut to_device = bus.subscribe(TO_DEVICE_SUBJECT);
        let mut device_lists = bus.subscribe(DEVICE_LIST_SUBJECT);
        let mut notifications = bus.subscribe(NOTIFICATION_SUBJECT);
        let mut presence = bus.subscribe(PRESENCE_SUBJECT);
        let task = notifier.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(message) = room_events.next() => task.on_room_event(message).await,
                    Some(message) = user_data.next() => task.on_user_data(message),
                    Some(message) = typing.next() => task.on_typing(message).await,
                    Some(message) = receipts.next() => task.on_receipt(message).await,
                    Some(message) = to_device.next() => task.on_to_device(message),
                    Some(message) = device_lists.next() => task.on_device_list(message).await,
                    Some(message) = notifications.next() => task.on_notification(message),
                    Some(message) = presence.next() => task.on_presence(message).await,
                    else => break,
                }
            }
        });
        notifier
    }

    /// A receiver that changes whenever something for `user_id` happens.
    pub fn watch(&self, user_id: &UserId) -> watch::Receiver<i64> {
        let mut users = self.inner.users.lock().unwrap_or_else(|e| e.into_inner());
        users.entry(user_id.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    async fn on_room_event(&self, message: Message) {
        let Ok(event) = message.decode::<RoomEventOutput>() else {
            tracing::warn!(subject = %message.subject, "undecodable room event on the bus");
            return;
        };
        let members = match self.joined_members(&event).await {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(%error, room_id = %event.room_id, "cannot load room members");
                return;
            }
        };
        for user_id in &members {
            self.wake(user_id, event.stream_position);
        }
        if let Some(target) = event.state_key.as_deref().filter(|_| event.membership.is_some())
            && let Ok(target) = <&UserId>::try_from(target)
        {
            self.wake(target, event.stream_position);
        }
    }

    async fn on_typing(&self, message: Message) {
        let Ok(output) = message.decode::<TypingOutput>() else { return };
        match self.members_of(&output.room_id).await {
            Ok(members) => {
                for user_id in &members {
                    self.nudge(user_id);
                }
            }
            Err(error) => {
                tracing::warn!(%error, room_id = %output.room_id, "cannot load room members");
            }
        }
    }

    async fn on_receipt(&self, message: Message) {
        let Ok(output) = message.decode::<ReceiptOutput>() else { return };
        if let Some(user_id) = &output.private_to {
            self.wake(user_id, output.stream_position);
            return;
        }
        match self.members_of(&output.room_id).await {
            Ok(members) => members.iter().for_each(|m| self.wake(m, output.stream_position)),
            Err(error) => {
                tracing::warn!(%error, room_id = %output.room_id, "cannot load room members");
            }
        }
    }

    /// The room's joined members, for other components (`/sync`'s presence): from the cache, or
    /// from the store without filling the cache, which only the notifier's own task fills, in
    /// the order of the room events it applies.
    pub async fn members_for_reading(
        &self,
        room_id: &ruma::RoomId,
    ) -> anyhow::Result<BTreeSet<OwnedUserId>> {
        if let Some(members) = self.rooms().get(room_id) {
            return Ok(members.clone());
        }
        Ok(self.inner.store.members_with(room_id, "join").await?.into_iter().collect())
    }

    /// The room's joined members, from the cache or, the first time, from the store.
    async fn members_of(&self, room_id: &ruma::RoomId) -> anyhow::Result<BTreeSet<OwnedUserId>> {
        if let Some(members) = self.rooms().get(room_id) {
            return Ok(members.clone());
        }
        let members: BTreeSet<OwnedUserId> =
            self.inner.store.members_with(room_id, "join").await?.into_iter().collect();
        self.rooms().insert(room_id.to_owned(), members.clone());
        Ok(members)
    }

    fn on_to_device(&self, message: Message) {
        if let Ok(output) = message.decode::<KeyOutput>() {
            self.wake(&output.user_id, output.stream_position);
        }
    }

    /// Wakes the user whose devices or keys changed and everyone sharing a room with them.
    async fn on_device_list(&self, message: Message) {
        let Ok(output) = message.decode::<KeyOutput>() else { return };
        self.wake(&output.user_id, output.stream_position);
        let memberships = match self.inner.store.memberships_of(&output.user_id).await {
            Ok(memberships) => memberships,
            Err(error) => {
                tracing::warn!(%error, user_id = %output.user_id, "cannot load the user's rooms");
                return;
            }
        };
        for membership in memberships.iter().filter(|m| m.membership == "join") {
            match self.members_of(&membership.room_id).await {
                Ok(members) => members.iter().for_each(|m| self.wake(m, output.stream_position)),
                Err(error) => {
                    tracing::warn!(%error, room_id = %membership.room_id, "cannot load members");
                }
            }
        }
    }

    /// Wakes the user whose presence changed and everyone sharing a room with them (presence has
    /// no stream position).
    async fn on_presence(&self, message: Message) {
        let Ok(output) = message.decode::<PresenceOutput>() else { return };
        self.nudge(&output.user_id);
        let memberships = match self.inner.store.memberships_of(&output.user_id).await {
            Ok(memberships) => memberships,
            Err(error) => {
                tracing::warn!(%error, user_id = %output.user_id, "cannot load the user's rooms");
                return;
            }
        };
        for membership in memberships.iter().filter(|m| m.membership == "join") {
            match self.members_of(&membership.room_id).await {
                Ok(members) => members.iter().for_each(|m| self.nudge(m)),
                Err(error) => {
                    tracing::warn!(%error, room_id = %membership.room_id, "cannot load members");
                }
            }
        }
    }

    fn on_notification(&self, message: Message) {
        if let Ok(output) = message.decode::<NotificationOutput>() {
            self.wake(&output.user_id, output.notified_position);
        }
    }

    fn on_user_data(&self, message: Message) {
        if let Ok(output) = message.decode::<UserDataOutput>() {
            self.wake(&output.user_id, output.stream_position);
        }
    }

    /// The room's joined members after `event`, keeping the cache current.
    async fn joined_members(&self, event: &RoomEventOutput) -> anyhow::Result<Vec<OwnedUserId>> {
        let mut members = self.members_of(&event.room_id).await?;
        if let (Some(membership), Some(target)) = (&event.membership, &event.state_key)
            && let Ok(target) = OwnedUserId::try_from(target.as_str())
        {
            if membership == "join" {
                members.insert(target);
            } else {
                members.remove(&target);
            }
        }
        let list = members.iter().cloned().collect();
        self.rooms().insert(event.room_id.clone(), members);
        Ok(list)
    }

    fn wake(&self, user_id: &UserId, position: i64) {
        let users = self.inner.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = users.get(user_id) {
            sender.send_replace(position);
        }
    }

    /// Wakes the user's syncs without a new stream position (typing has none).
    fn nudge(&self, user_id: &UserId) {
        let users = self.inner.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = users.get(user_id) {
            sender.send_modify(|_| ());
        }
    }

    #[allow(clippy::disallowed_types)]
    fn rooms(&self) -> std::sync::MutexGuard<'_, BTreeMap<OwnedRoomId, BTreeSet<OwnedUserId>>> {
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}
