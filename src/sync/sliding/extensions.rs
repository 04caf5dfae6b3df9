//! Sliding sync extensions (MSC4186 with MSC3884, MSC3885, MSC3959, MSC3960 and MSC3961):
//! to-device messages, end-to-end encryption counts and device lists, account data, read
//! receipts and typing. Each is on when the request says `enabled: true`; those that concern
//! rooms apply to the rooms its `lists` and `rooms` name (every list and every subscription when
//! left out). They reuse what `/sync` v3 is built on: [`crate::keys`] for the first two, the
//! store's account data and receipts, and [`crate::rooms::typing`].

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    OwnedRoomId,
    api::client::sync::sync_events::{
        DeviceLists,
        v5::{
            request::{self, ExtensionRoomConfig},
            response,
        },
    },
};

use super::{connection::Snapshot, lists::Selection, room::Asker};
use crate::{
    Result,
    push::rules::PUSH_RULES,
    rooms::receipts::receipt_content,
    services::Services,
    store::ReceiptRecord,
    sync::{parse_token, token, v3::raw},
};

/// The rooms an extension applies to: those its lists selected and the subscriptions it names.
pub fn relevant_rooms(
    lists: Option<&[String]>,
    rooms: Option<&[ExtensionRoomConfig]>,
    selection: &Selection,
) -> BTreeSet<OwnedRoomId> {
    let mut relevant = BTreeSet::new();
    for (name, room_ids) in &selection.list_rooms {
        if lists.is_none_or(|lists| lists.iter().any(|l| l == "*" || l == name)) {
            relevant.extend(room_ids.iter().cloned());
        }
    }
    for room_id in &selection.subscribed {
        let named = |config: &ExtensionRoomConfig| match config {
            ExtensionRoomConfig::Room(named) => named == room_id,
            _ => true,
        };
        if rooms.is_none_or(|rooms| rooms.iter().any(named)) {
            relevant.insert(room_id.clone());
        }
    }
    relevant
}

/// The device's to-device messages after those the `since` token acknowledges (which are then
/// deleted, as `/sync` does).
///
/// FIXME: the request's `limit` is not applied; an answer holds at most the 100 messages a
/// `/sync` holds, and the rest page through `next_batch`.
pub async fn to_device(
    services: &Services,
    asker: Asker<'_>,
    config: &request::ToDevice,
) -> Result<Option<response::ToDevice>> {
    if config.enabled != Some(true) {
        return Ok(None);
    }
    let since = config.since.as_deref().map(parse_token).transpose()?;
    let batch = services
        .e2ee
        .to_device_for_sync(asker.user_id, asker.device_id, since, asker.current)
        .await?;
    let mut to_device = response::ToDevice::default();
    to_device.next_batch = token(batch.next_position);
    to_device.events = batch.events;
    Ok(Some(to_device))
}

/// The device's one-time and fallback key counts, and, after the first answer, whose device
/// lists changed.
pub async fn e2ee(
    services: &Services,
    asker: Asker<'_>,
    config: &request::E2EE,
    previous: Option<&Snapshot>,
) -> Result<response::E2EE> {
    let mut e2ee = response::E2EE::default();
    if config.enabled != Some(true) {
        return Ok(e2ee);
    }
    let keys = &services.e2ee;
    let (user_id, device_id) = (asker.user_id, asker.device_id);
    if let Some(previous) = previous {
        let updates = keys.device_list_updates(user_id, previous.position, asker.current).await?;
        let mut lists = DeviceLists::new();
        lists.changed = updates.changed;
        lists.left = updates.left;
        e2ee.device_lists = lists;
    }
    e2ee.device_one_time_keys_count = keys.one_time_key_counts(user_id, device_id).await?;
    e2ee.device_unused_fallback_key_types =
        Some(keys.unused_fallback_key_types(user_id, device_id).await?);
    Ok(e2ee)
}

/// Global account data that changed since the previous answer (all of it in the first, with the
/// default push rules of a user who has none stored), and the same for the relevant rooms (all of
/// a room's the first time the room is sent).
pub async fn account_data(
    services: &Services,
    asker: Asker<'_>,
    config: &request::AccountData,
    previous: Option<&Snapshot>,
    selection: &Selection,
) -> Result<response::AccountData> {
    let mut data = response::AccountData::default();
    if config.enabled != Some(true) {
        return Ok(data);
    }
    let rooms = relevant_rooms(config.lists.as_deref(), config.rooms.as_deref(), selection);
    let since = previous.map_or(0, |p| p.position);
    let all = services.store.account_data_since(asker.user_id, 0).await?;
    for record in all.iter().filter(|r| r.stream_position <= asker.current) {
        let event = serde_json::json!({ "type": record.data_type, "content": record.content });
        match &record.room_id {
            None if record.stream_position > since => data.global.push(raw(&event)?),
            None => {}
            Some(room_id) if rooms.contains(room_id) => {
                let room_since = room_since(previous, room_id);
                if record.stream_position > room_since {
                    data.rooms.entry(room_id.clone()).or_default().push(raw(&event)?);
                }
            }
            Some(_) => {}
        }
    }
    let stored_rules = all.iter().any(|r| r.room_id.is_none() && r.data_type == PUSH_RULES);
    if previous.is_none() && !stored_rules {
        // As in `/sync`: a user who never changed their push rules learns the defaults.
        let rules = services.push.rules(asker.user_id).await?;
        let content = serde_json::json!({ "global": rules });
        data.global.push(raw(&serde_json::json!({ "type": PUSH_RULES, "content": content }))?);
    }
    Ok(data)
}

/// Where a room's news starts: the position it was sent to, or 0 for a room not sent yet.
fn room_since(previous: Option<&Snapshot>, room_id: &OwnedRoomId) -> i64 {
    previous.and_then(|p| p.rooms.get(room_id)).map_or(0, |sent| sent.position)
}

/// The read receipts of the relevant rooms that changed since each was sent (all of them the
/// first time). `receipts` holds those of every selected room, read once for the answer.
pub fn receipts(
    asker: Asker<'_>,
    config: &request::Receipts,
    selection: &Selection,
    receipts: &BTreeMap<OwnedRoomId, Vec<ReceiptRecord>>,
) -> Result<response::Receipts> {
    let mut shown = response::Receipts::default();
    if config.enabled != Some(true) {
        return Ok(shown);
    }
    let relevant = relevant_rooms(config.lists.as_deref(), config.rooms.as_deref(), selection);
    for room_id in relevant.into_iter().filter(|r| selection.joined.contains(r)) {
        let Some(records) = receipts.get(&room_id) else { continue };
        let records: Vec<&ReceiptRecord> = records.iter().collect();
        if let Some(content) = receipt_content(&records, asker.user_id) {
            let event = serde_json::json!({ "type": "m.receipt", "content": content });
            shown.rooms.insert(room_id, raw(&event)?);
        }
    }
    Ok(shown)
}

/// Who types in each relevant room, where that changed since the previous answer (or, for a
/// room not sent yet, where anyone types).
pub fn typing(
    services: &Services,
    config: &request::Typing,
    previous: Option<&Snapshot>,
    selection: &Selection,
) -> Result<response::Typing> {
    let mut shown = response::Typing::default();
    if config.enabled != Some(true) {
        return Ok(shown);
    }
    let relevant = relevant_rooms(config.lists.as_deref(), config.rooms.as_deref(), selection);
    for room_id in relevant.into_iter().filter(|r| selection.joined.contains(r)) {
        let since = previous.filter(|p| p.rooms.contains_key(&room_id)).map(|p| p.typing);
        if let Some(user_ids) = services.typing.changed_since(&room_id, since) {
            let event =
                serde_json::json!({ "type": "m.typing", "content": { "user_ids": user_ids } });
            shown.rooms.insert(room_id, raw(&event)?);
        }
    }
    Ok(shown)
}
