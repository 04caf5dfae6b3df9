//! Room upgrades: a replacement room in a new room version, with the state that carries over, the
//! old room's aliases and directory listing, and a tombstone that points from the old room to it.
//!
//! Follows the spec's "Room Upgrades" module (client-server API, "Server behaviour"): the user
//! needs the power to send `m.room.tombstone` in the old room; the new room's `m.room.create`
//! names its `predecessor`; the state a client would miss is copied; local aliases and the
//! published flag move; the tombstone is sent; and the old room is restricted so that only
//! moderators may speak or invite there. Every event of both rooms is built in one room job, so
//! an upgrade that fails leaves no half-made room behind. Memberships other than bans are not
//! copied: members follow the tombstone themselves.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, events::StateEventType};
use serde_json::{Map, Value as JsonValue, json};

use super::{
    Rooms,
    builder::{self, ProtoEvent},
    create::CREATABLE_VERSIONS,
    power::content_of,
};
use crate::{
    Error, Result,
    federation::ServerKeys,
    store::{AppendedEvent, RoomTxn},
};

/// The state events copied as they are (empty state key), after the power levels, in this order.
const COPIED_STATE: [&str; 9] = [
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.canonical_alias",
];

/// State event types copied with every state key (spaces' links).
const COPIED_KEYED_STATE: [&str; 2] = ["m.space.child", "m.space.parent"];

/// Create content fields that carry over to the new room.
const COPIED_CREATE_FIELDS: [&str; 2] = ["type", "m.federate"];

/// What a user asked an upgrade for.
#[derive(Clone, Debug)]
pub struct UpgradeRequest {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub new_version: RoomVersionId,
    /// Creators besides the user, for versions that have additional creators.
    pub additional_creators: Vec<OwnedUserId>,
}

/// The user performing an upgrade and their membership profile.
struct Upgrader {
    user_id: OwnedUserId,
    displayname: Option<String>,
    avatar_url: Option<String>,
}

impl Rooms {
    /// Upgrades a room; returns the replacement room's ID.
    pub async fn upgrade_room(&self, request: UpgradeRequest) -> Result<OwnedRoomId> {
        check_version(&request.new_version)?;
        self.require_joined(&request.room_id, &request.user_id).await?;
        let power = self.power_levels(&request.room_id).await?;
        if !power.user_can_send_state(&request.user_id, StateEventType::RoomTombstone) {
            return Err(Error::forbidden("You may not upgrade this room"));
        }
        let profile = self.store().user(&request.user_id).await?;
        let upgrader = Upgrader {
            user_id: request.user_id.clone(),
            displayname: profile.as_ref().and_then(|p| p.displayname.clone()),
            avatar_url: profile.and_then(|p| p.avatar_url),
        };
        let keys = self.keys().clone();
        let job_request = request.clone();
        let appended = self
            .store()
            .write_rooms(Box::new(move |txn| upgrade_in(txn, &keys, &job_request, &upgrader)))
            .await?;
        self.publish(&appended).await;
        let new_room = appended
            .first()
            .map(|e| e.room_id.clone())
            .ok_or_else(|| anyhow::anyhow!("no create event"))?;
        self.move_directory_entries(&request.room_id, &new_room).await?;
        tracing::info!(old = %request.room_id, new = %new_room, version = %request.new_version, "room upgraded");
        Ok(new_room)
    }

    /// Points the old room's local aliases at the new room and moves its directory listing.
    async fn move_directory_entries(&self, old: &RoomId, new: &RoomId) -> Result<()> {
        let store = self.store();
        for alias in store.room_aliases(old).await? {
            let Some(record) = store.alias(&alias).await? else { continue };
            store.delete_alias(&alias).await?;
            if !store.create_alias(&alias, new, &record.creator).await? {
                tracing::warn!(%alias, "alias taken while its room was upgraded");
            }
        }
        if store.is_published(old).await? {
            store.set_published(new, true).await?;
            store.set_published(old, false).await?;
        }
        Ok(())
    }
}

/// Refuses a version `createRoom` would refuse.
fn check_version(version: &RoomVersionId) -> Result<()> {
    if CREATABLE_VERSIONS.contains(&version.as_str()) {
        return Ok(());
    }
    Err(Error::client(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::UnsupportedRoomVersion,
        format!("Rooms cannot be upgraded to version {version} here; use 10, 11 or 12"),
    ))
}

/// Builds the new room and its state, then tombstones and restricts the old one.
fn upgrade_in(
    txn: &dyn RoomTxn,
    keys: &ServerKeys,
    request: &UpgradeRequest,
    upgrader: &Upgrader,
) -> Result<Vec<AppendedEvent>> {
    let old = &request.room_id;
    let old_version = txn.room_version(old)?.ok_or_else(|| Error::forbidden("Unknown room"))?;
    refuse_replaced(txn, old)?;
    let old_rules = builder::rules_for(&old_version)?;
    let rules = builder::rules_for(&request.new_version)?;
    let privileged_creators = rules.authorization.explicitly_privilege_room_creators;
    let creators = new_creators(request, rules.authorization.additional_room_creators);

    let create_content = new_create_content(txn, request, &rules)?;
    let local_room_id = (!rules.authorization.room_create_event_id_as_room_id)
        .then(|| RoomId::new_v1(&keys.server_name));
    let (new_room, create) = builder::create_room(
        txn,
        keys,
        &request.new_version,
        &upgrader.user_id,
        local_room_id,
        create_content,
    )?;
    let mut appended = vec![create];
    let mut send = |room_id: &RoomId, event_type: &str, state_key: &str, content: JsonValue| {
        let proto = ProtoEvent {
            room_id: room_id.to_owned(),
            sender: upgrader.user_id.clone(),
            event_type: event_type.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
            transaction: None,
        };
        builder::build_and_append(txn, keys, proto).map(|event| appended.push(event))
    };

    send(&new_room, "m.room.member", upgrader.user_id.as_str(), member_content(upgrader))?;
    let old_power = state_content(txn, old, "m.room.power_levels", "")?;
    let old_level = super::power::load(txn, old, &old_rules)?.for_user(&upgrader.user_id);
    let final_power = old_power.map(|content| {
        new_power_levels(content, &creators, privileged_creators, &upgrader.user_id, old_level)
    });
    let temporary = final_power.as_ref().and_then(|power| {
        (!privileged_creators).then(|| raised_for_upgrade(power, &upgrader.user_id)).flatten()
    });
    if let Some(power) = temporary.as_ref().or(final_power.as_ref()) {
        send(&new_room, "m.room.power_levels", "", power.clone())?;
    }
    for event_type in COPIED_STATE {
        if let Some(content) = state_content(txn, old, event_type, "")? {
            send(&new_room, event_type, "", content)?;
        }
    }
    for (event_type, state_key, content) in keyed_state(txn, old)? {
        send(&new_room, &event_type, &state_key, content)?;
    }
    if let (Some(_), Some(power)) = (&temporary, &final_power) {
        send(&new_room, "m.room.power_levels", "", power.clone())?;
    }

    let tombstone = json!({ "body": "This room has been replaced", "replacement_room": new_room });
    send(old, "m.room.tombstone", "", tombstone)?;
    restrict_old_room(txn, old, &mut send)?;
    // The created room's events first: the caller reads the new room's ID from the first.
    Ok(appended)
}

/// The new room's creators: the upgrader and, where the version has them, the additional ones.
fn new_creators(request: &UpgradeRequest, additional_allowed: bool) -> Vec<OwnedUserId> {
    let mut creators = vec![request.user_id.clone()];
    if additional_allowed {
        let additional = request.additional_creators.iter();
        creators.extend(additional.filter(|u| **u != request.user_id).cloned());
    }
    creators.sort();
    creators.dedup();
    creators
}

/// The new `m.room.create` content: the version, the predecessor, what carries over, and (by
/// version) the creator or the additional creators.
fn new_create_content(
    txn: &dyn RoomTxn,
    request: &UpgradeRequest,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<JsonValue> {
    let old = &request.room_id;
    let old_create = state_content(txn, old, "m.room.create", "")?.unwrap_or_default();
    let mut content = Map::new();
    for field in COPIED_CREATE_FIELDS {
        if let Some(value) = old_create.get(field) {
            content.insert(field.to_owned(), value.clone());
        }
    }
    content.insert("room_version".into(), request.new_version.as_str().into());
    let mut predecessor = json!({ "room_id": old });
    // From version 12 the predecessor is named by its room ID alone (MSC4291).
    if !rules.authorization.room_create_event_id_as_room_id
        && let Some(last) = txn.forward_extremities(old)?.last()
    {
        predecessor["event_id"] = last.event_id.as_str().into();
    }
    content.insert("predecessor".into(), predecessor);
    if !rules.authorization.use_room_create_sender {
        content.insert("creator".into(), request.user_id.as_str().into());
    }
    let additional: std::collections::BTreeSet<&OwnedUserId> =
        request.additional_creators.iter().filter(|u| **u != request.user_id).collect();
    if rules.authorization.additional_room_creators && !additional.is_empty() {
        content.insert("additional_creators".into(), json!(additional));
    }
    Ok(JsonValue::Object(content))
}

fn member_content(upgrader: &Upgrader) -> JsonValue {
    let mut member = json!({ "membership": "join" });
    if let Some(name) = &upgrader.displayname {
        member["displayname"] = name.as_str().into();
    }
    if let Some(url) = &upgrader.avatar_url {
        member["avatar_url"] = url.as_str().into();
    }
    member
}

/// The old room's power levels for the new room. Where creators are privileged they may not be
/// listed in `users` (room version 12's auth rules refuse that); elsewhere the upgrader keeps the
/// level they had (100 for a privileged creator of the old room).
fn new_power_levels(
    mut content: JsonValue,
    creators: &[OwnedUserId],
    privileged_creators: bool,
    upgrader: &OwnedUserId,
    old_level: ruma::events::room::power_levels::UserPowerLevel,
) -> JsonValue {
    use ruma::events::room::power_levels::UserPowerLevel;
    if !content["users"].is_object() {
        content["users"] = json!({});
    }
    let Some(users) = content["users"].as_object_mut() else { return content };
    if privileged_creators {
        for creator in creators {
            users.remove(creator.as_str());
        }
    } else {
        let level = match old_level {
            UserPowerLevel::Int(level) => i64::from(level),
            _ => 100,
        };
        let listed = users.get(upgrader.as_str()).and_then(JsonValue::as_i64);
        if listed.is_none_or(|listed| listed < level) {
            users.insert(upgrader.to_string(), level.into());
        }
    }
    content
}

/// The power levels with the upgrader raised to the highest level the copied state may need,
/// if they are below it: sent first, so that every copied event is allowed, and replaced by the
/// real levels at the end (as Synapse does).
fn raised_for_upgrade(power: &JsonValue, upgrader: &OwnedUserId) -> Option<JsonValue> {
    let level = |value: &JsonValue| value.as_i64();
    let mut needed = ["state_default", "ban"].iter().filter_map(|k| level(&power[*k])).max();
    if let Some(events) = power["events"].as_object() {
        needed = needed.max(events.values().filter_map(level).max());
    }
    let needed = needed.unwrap_or(50).max(100);
    let current = level(&power["users"][upgrader.as_str()]).unwrap_or(0);
    if current >= needed {
        return None;
    }
    let mut raised = power.clone();
    raised["users"][upgrader.as_str()] = needed.into();
    Some(raised)
}

/// Refuses to upgrade a room that has a tombstone: its members follow the replacement, which is
/// the room to upgrade. Checked inside the room job, so that of two upgrades at once the second
/// sees the first one's tombstone and only one replacement room is made.
fn refuse_replaced(txn: &dyn RoomTxn, room_id: &RoomId) -> Result<()> {
    let state = txn.current_state_map(room_id)?;
    if state.contains_key(&("m.room.tombstone".to_owned(), String::new())) {
        return Err(Error::client(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::BadState,
            "This room was upgraded already: upgrade its replacement instead",
        ));
    }
    Ok(())
}

/// The keyed state that carries over: space links, and bans.
fn keyed_state(txn: &dyn RoomTxn, room_id: &RoomId) -> Result<Vec<(String, String, JsonValue)>> {
    let mut copied = Vec::new();
    for ((event_type, state_key), event_id) in txn.current_state_map(room_id)? {
        let keyed = COPIED_KEYED_STATE.contains(&event_type.as_str());
        if !keyed && event_type != "m.room.member" {
            continue;
        }
        let Some(event) = txn.event(&event_id)? else { continue };
        let Some(content) = content_of::<JsonValue>(&event.pdu) else { continue };
        if keyed && content.as_object().is_some_and(|c| !c.is_empty()) {
            copied.push((event_type, state_key, content));
        } else if !keyed && content["membership"] == "ban" {
            let mut ban = json!({ "membership": "ban" });
            if let Some(reason) = content.get("reason") {
                ban["reason"] = reason.clone();
            }
            copied.push((event_type, state_key, ban));
        }
    }
    Ok(copied)
}

/// Raises `events_default` and `invite` in the old room so that only moderators speak or invite
/// there, and empties its canonical alias (its aliases moved). Either is skipped when the
/// upgrader lacks the power for it: the tombstone is what matters.
fn restrict_old_room(
    txn: &dyn RoomTxn,
    old: &RoomId,
    send: &mut impl FnMut(&RoomId, &str, &str, JsonValue) -> Result<()>,
) -> Result<()> {
    if state_content(txn, old, "m.room.canonical_alias", "")?.is_some_and(|c| c != json!({})) {
        allowed_or_skipped(send(old, "m.room.canonical_alias", "", json!({})))?;
    }
    let Some(mut power) = state_content(txn, old, "m.room.power_levels", "")? else {
        return Ok(());
    };
    let users_default = power["users_default"].as_i64().unwrap_or(0);
    let restricted = 50.max(users_default + 1);
    power["events_default"] = restricted.into();
    power["invite"] = restricted.into();
    allowed_or_skipped(send(old, "m.room.power_levels", "", power))
}

/// A refused event (the auth rules said no) is skipped; any other failure stops the job.
fn allowed_or_skipped(result: Result<()>) -> Result<()> {
    match result {
        Err(Error::Client { status, .. }) if status == http::StatusCode::FORBIDDEN => Ok(()),
        other => other,
    }
}

/// The content of a current state event, if the room has it.
fn state_content(
    txn: &dyn RoomTxn,
    room_id: &RoomId,
    event_type: &str,
    state_key: &str,
) -> Result<Option<JsonValue>> {
    let event = txn.current_state_event(room_id, event_type, state_key)?;
    Ok(event.and_then(|event| content_of::<JsonValue>(&event.pdu)))
}
