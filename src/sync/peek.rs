//! Waiting for a room's next event on behalf of someone who may not be a member: the long poll
//! of `GET /events?room_id=` (peeking). The notifier wakes only members, so a peeker follows the
//! room events on the bus itself, for as long as its request waits.

use ruma::{OwnedRoomId, RoomId};

use crate::{
    bus::{Bus, Subscription},
    rooms::{ROOM_EVENT_SUBJECT, RoomEventOutput},
};

/// A watch on one room's new events. Taken before the room is read, so that an event stored
/// between the read and the wait still wakes it.
pub struct RoomWatch {
    room_id: OwnedRoomId,
    events: Subscription,
}

impl RoomWatch {
    pub fn new(bus: &Bus, room_id: &RoomId) -> Self {
        Self { room_id: room_id.to_owned(), events: bus.subscribe(ROOM_EVENT_SUBJECT) }
    }

    /// Returns when an event of the room was stored since the watch began or last returned
    /// (never, once the bus is gone).
    pub async fn changed(&mut self) {
        while let Some(message) = self.events.next().await {
            if message.decode::<RoomEventOutput>().is_ok_and(|event| event.room_id == self.room_id)
            {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}
