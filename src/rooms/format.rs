//! Stored events in the client-server API's formats, with the `unsigned` data that depends on
//! who is asking: the sender's transaction ID, the previous content of state, the redaction
//! that emptied an event, and the bundled relations (threads, edits, references).

use std::collections::BTreeMap;

use ruma::{OwnedEventId, UserId};
use serde_json::Value as JsonValue;

use super::{
    pdu::{Unsigned, client_event},
    relations::bundled_relations,
};
use crate::{
    Result,
    store::{EventRecord, Store},
};

/// Who is reading: their transaction IDs are echoed back on their own events.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a str,
}

/// Which client format to produce.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// With `room_id` (`/messages`, `/event`, `/context`, `/state`).
    Client,
    /// Without `room_id` (inside `/sync`'s per-room sections).
    Sync,
}

/// Converts stored events into client events, fetching what `unsigned` needs in a few batched
/// queries whatever the number of events.
pub async fn client_events(
    store: &Store,
    viewer: Viewer<'_>,
    records: &[EventRecord],
    format: Format,
) -> Result<Vec<JsonValue>> {
    let own_ids: Vec<OwnedEventId> =
        records.iter().filter(|r| r.sender == viewer.user_id).map(|r| r.event_id.clone()).collect();
    let transactions = if own_ids.is_empty() {
        BTreeMap::new()
    } else {
        store.transaction_ids(viewer.user_id, viewer.device_id, &own_ids).await?
    };
    let related_ids: Vec<OwnedEventId> = records
        .iter()
        .flat_map(|r| r.replaces_state.iter().chain(r.redacted_by.iter()))
        .cloned()
        .collect();
    let related: BTreeMap<OwnedEventId, EventRecord> = if related_ids.is_empty() {
        BTreeMap::new()
    } else {
        store.events(&related_ids).await?.into_iter().map(|e| (e.event_id.clone(), e)).collect()
    };

    let now = crate::users::now_millis();
    let mut relations = bundled_relations(store, viewer.user_id, records, now).await?;
    Ok(records
        .iter()
        .map(|record| {
            let mut unsigned = unsigned_for(record, &transactions, &related, now);
            unsigned.relations = relations.remove(&record.event_id);
            let mut event = client_event(record, unsigned, now);
            if format == Format::Sync
                && let Some(object) = event.as_object_mut()
            {
                object.remove("room_id");
            }
            event
        })
        .collect())
}

fn unsigned_for(
    record: &EventRecord,
    transactions: &BTreeMap<OwnedEventId, String>,
    related: &BTreeMap<OwnedEventId, EventRecord>,
    now: i64,
) -> Unsigned {
    let replaced = record.replaces_state.as_ref().and_then(|id| related.get(id));
    let redaction = record.redacted_by.as_ref().and_then(|id| related.get(id));
    Unsigned {
        transaction_id: transactions.get(&record.event_id).cloned(),
        prev_content: replaced.and_then(|r| content_value(&r.pdu)),
        prev_sender: replaced.map(|r| r.sender.to_string()),
        replaces_state: replaced.map(|r| r.event_id.to_string()),
        redacted_because: redaction.map(|r| client_event(r, Unsigned::default(), now)),
        relations: None,
    }
}

fn content_value(pdu: &str) -> Option<JsonValue> {
    serde_json::from_str::<JsonValue>(pdu).ok()?.get_mut("content").map(JsonValue::take)
}
