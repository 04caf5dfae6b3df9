//! Read receipts: the latest event each user has read in a room, per receipt type and thread,
//! and the `m.receipt` ephemeral event that shows them in `/sync`.
//!
//! A receipt is stored at a new position of the global stream, so that a sync token covers it,
//! and the change is published on [`RECEIPT_SUBJECT`] to wake the room's members. A receipt only
//! moves forward: one for an event before the user's current receipt changes nothing. Private
//! receipts (`m.read.private`) are shown to their own user only.

use std::collections::BTreeMap;

use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as JsonValue, json};

use super::Rooms;
use crate::{
    Error, Result,
    store::{NewReceipt, ReceiptRecord},
};

/// The bus subject a changed receipt is published on.
pub const RECEIPT_SUBJECT: &str = "receipts.output.room";

/// The public receipt type.
pub const READ: &str = "m.read";
/// The receipt type only its own user sees.
pub const READ_PRIVATE: &str = "m.read.private";

/// What is published on [`RECEIPT_SUBJECT`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceiptOutput {
    pub room_id: OwnedRoomId,
    pub stream_position: i64,
    /// For a private receipt, the only user who sees it (and whose syncs need waking).
    pub private_to: Option<ruma::OwnedUserId>,
}

/// A receipt a user sends.
pub struct Receipt<'a> {
    pub room_id: &'a RoomId,
    pub user_id: &'a UserId,
    /// [`READ`] or [`READ_PRIVATE`].
    pub receipt_type: &'static str,
    pub event_id: &'a EventId,
    /// `None` unthreaded, `main`, or a thread root's event ID.
    pub thread_id: Option<String>,
}

impl Rooms {
    /// Records a receipt of a joined user for an event of the room.
    pub async fn set_receipt(&self, receipt: Receipt<'_>) -> Result<()> {
        self.require_joined(receipt.room_id, receipt.user_id).await?;
        let event = self.event_in_room(receipt.room_id, receipt.event_id).await?;
        let new = NewReceipt {
            room_id: receipt.room_id.to_owned(),
            user_id: receipt.user_id.to_owned(),
            receipt_type: receipt.receipt_type.to_owned(),
            thread_id: receipt.thread_id,
            event_id: event.event_id,
            event_position: event.stream_position,
            ts: crate::users::now_millis(),
        };
        let Some(stream_position) = self.store.set_receipt(new).await? else { return Ok(()) };
        let private_to = (receipt.receipt_type == READ_PRIVATE).then(|| receipt.user_id.to_owned());
        let output =
            ReceiptOutput { room_id: receipt.room_id.to_owned(), stream_position, private_to };
        if let Err(error) = self.bus.publish(RECEIPT_SUBJECT, &output).await {
            // Stored already: the next sync of each member shows it anyway.
            tracing::warn!(error = format!("{error:#}"), "cannot publish a receipt");
        }
        Ok(())
    }

    /// The event, which must belong to the room: `M_NOT_FOUND` otherwise.
    pub async fn event_in_room(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<crate::store::EventRecord> {
        self.store
            .event(event_id)
            .await?
            .filter(|event| event.room_id == room_id)
            .ok_or_else(|| Error::not_found("No such event in this room"))
    }
}

/// The content of an `m.receipt` event for `receipts` of one room as `viewer` may see them, or
/// `None` when none is left to show.
pub fn receipt_content(receipts: &[&ReceiptRecord], viewer: &UserId) -> Option<JsonValue> {
    // event ID → receipt type → user ID → receipt
    let mut content: BTreeMap<&str, BTreeMap<&str, Map<String, JsonValue>>> = BTreeMap::new();
    for receipt in receipts {
        if receipt.receipt_type == READ_PRIVATE && receipt.user_id != viewer {
            continue;
        }
        let mut shown = json!({ "ts": receipt.ts });
        if let Some(thread_id) = &receipt.thread_id {
            shown["thread_id"] = json!(thread_id);
        }
        content
            .entry(receipt.event_id.as_str())
            .or_default()
            .entry(receipt.receipt_type.as_str())
            .or_default()
            .insert(receipt.user_id.to_string(), shown);
    }
    (!content.is_empty()).then(|| json!(content))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(user: &str, receipt_type: &str, event: &str, thread: Option<&str>) -> ReceiptRecord {
        ReceiptRecord {
            room_id: "!r:localhost".try_into().unwrap(),
            user_id: format!("@{user}:localhost").try_into().unwrap(),
            receipt_type: receipt_type.into(),
            thread_id: thread.map(str::to_owned),
            event_id: format!("${event}").try_into().unwrap(),
            ts: 7,
            stream_position: 1,
        }
    }

    #[test]
    fn private_receipts_show_only_to_their_user_and_threads_are_kept() {
        let receipts = [
            receipt("alice", READ, "one", None),
            receipt("bob", READ_PRIVATE, "one", None),
            receipt("bob", READ, "two", Some("main")),
        ];
        let refs: Vec<&ReceiptRecord> = receipts.iter().collect();
        let alice: &UserId = "@alice:localhost".try_into().unwrap();
        let bob: &UserId = "@bob:localhost".try_into().unwrap();
        assert_eq!(
            receipt_content(&refs, alice).unwrap(),
            json!({
                "$one": { "m.read": { "@alice:localhost": { "ts": 7 } } },
                "$two": { "m.read": { "@bob:localhost": { "ts": 7, "thread_id": "main" } } },
            })
        );
        let for_bob = receipt_content(&refs, bob).unwrap();
        assert_eq!(for_bob["$one"]["m.read.private"], json!({ "@bob:localhost": { "ts": 7 } }));
        assert_eq!(receipt_content(&refs[1..2], alice), None, "nothing left to show");
    }
}
