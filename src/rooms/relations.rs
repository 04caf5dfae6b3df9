//! Relations between events (spec: "Forming relationships between events"): what an event's
//! `m.relates_to` says, the checks a new local relation must pass, and the aggregations a server
//! bundles into `unsigned.m.relations` (threads, edits, references).
//!
//! Every appended event's relation is recorded by the store with the event
//! ([`relation_of`] fills `NewEvent::relation`), local or remote alike. Only local events are
//! refused for a bad relation; an event built elsewhere that relates badly is kept, and simply does
//! not aggregate. Annotations (reactions) are recorded and listed by `/relations` but, as the spec
//! says since v1.7, not bundled.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, UserId};
use serde_json::{Value as JsonValue, json};

use super::pdu::{Pdu, Unsigned, client_event};
use crate::{
    Error, Result,
    store::{EventRecord, NewRelation, RelationSummary, RoomTxn, Store},
};

pub const THREAD: &str = "m.thread";

/// What an event's content relates to: `m.relates_to` with both a `rel_type` and a valid
/// `event_id`. A bare reply (`m.in_reply_to` only) is not a relation the server tracks.
pub fn relation_of(pdu: &Pdu) -> Option<NewRelation> {
    relation_in(pdu.content.get())
}

/// [`relation_of`] for content given as JSON text.
pub fn relation_in(content: &str) -> Option<NewRelation> {
    #[derive(serde::Deserialize)]
    struct Content {
        #[serde(rename = "m.relates_to")]
        relates_to: Option<RelatesTo>,
    }
    #[derive(serde::Deserialize)]
    struct RelatesTo {
        rel_type: Option<String>,
        event_id: Option<OwnedEventId>,
    }
    let relates_to = serde_json::from_str::<Content>(content).ok()?.relates_to?;
    Some(NewRelation { relates_to: relates_to.event_id?, rel_type: relates_to.rel_type? })
}

/// The checks a local event's relation must pass before it is sent: it relates to a known event
/// of the same room, and a thread never starts from an event that relates to another one (an
/// edit, a reaction or a reply inside a thread), so threads never nest.
pub fn check_local_relation(txn: &dyn RoomTxn, pdu: &Pdu) -> Result<()> {
    let Some(relation) = relation_of(pdu) else {
        return Ok(());
    };
    let Some(parent) = txn.event(&relation.relates_to)? else {
        return Err(Error::bad_request("The event this relates to is unknown"));
    };
    if pdu.room_id.as_deref() != Some(&*parent.room_id) {
        return Err(Error::bad_request("Relations must be to an event of the same room"));
    }
    if relation.rel_type == THREAD && parent_relation(&parent).is_some() {
        return Err(Error::bad_request("A thread cannot start from an event with a relation"));
    }
    Ok(())
}

/// Whether an edit can replace its event: it carries the new content (`m.new_content`), or it is
/// encrypted and only its receivers can tell.
fn is_replacement(edit: &EventRecord) -> bool {
    if edit.event_type == "m.room.encrypted" {
        return true;
    }
    let pdu = serde_json::from_str::<JsonValue>(&edit.pdu).unwrap_or_default();
    pdu["content"]["m.new_content"].is_object()
}

/// The relation a stored event's content holds.
fn parent_relation(record: &EventRecord) -> Option<NewRelation> {
    let content = serde_json::from_str::<JsonValue>(&record.pdu).ok()?.get("content")?.to_string();
    relation_in(&content)
}

/// The bundled aggregations of `records` for `user_id`: event ID → `m.relations` object, for
/// the events that have any.
pub async fn bundled_relations(
    store: &Store,
    user_id: &UserId,
    records: &[EventRecord],
    now: i64,
) -> Result<BTreeMap<OwnedEventId, JsonValue>> {
    let ids: Vec<OwnedEventId> = records.iter().map(|r| r.event_id.clone()).collect();
    let summaries = store.relation_summaries(&ids, user_id).await?;
    let redacted: Vec<&OwnedEventId> =
        records.iter().filter(|r| r.redacted_by.is_some()).map(|r| &r.event_id).collect();
    Ok(summaries
        .into_iter()
        .filter_map(|(id, summary)| {
            let bundle = bundle(summary, redacted.contains(&&id), now)?;
            Some((id, bundle))
        })
        .collect())
}

/// One event's `m.relations`: the thread summary, the latest edit (none for a redacted event)
/// and the references.
fn bundle(summary: RelationSummary, redacted: bool, now: i64) -> Option<JsonValue> {
    let mut relations = serde_json::Map::new();
    if let Some(thread) = summary.thread {
        let latest = client_event(&thread.latest_event, Unsigned::default(), now);
        relations.insert(
            THREAD.into(),
            json!({
                "latest_event": latest,
                "count": thread.count,
                "current_user_participated": thread.participated,
            }),
        );
    }
    // The spec's "most recent" replacement: the greatest origin_server_ts, then event ID.
    let latest_edit =
        summary.replacements.iter().filter(|edit| is_replacement(edit)).max_by(|a, b| {
            (a.origin_server_ts, &a.event_id).cmp(&(b.origin_server_ts, &b.event_id))
        });
    if let Some(edit) = latest_edit.filter(|_| !redacted) {
        relations.insert("m.replace".into(), client_event(edit, Unsigned::default(), now));
    }
    if !summary.references.is_empty() {
        let chunk: Vec<JsonValue> =
            summary.references.iter().map(|id| json!({ "event_id": id })).collect();
        relations.insert("m.reference".into(), json!({ "chunk": chunk }));
    }
    (!relations.is_empty()).then_some(JsonValue::Object(relations))
}
