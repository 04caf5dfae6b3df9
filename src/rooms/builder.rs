//! The one path every new local event takes: build the PDU (prev events, auth events, depth),
//! hash and sign it, authorize it against its auth events and the state before it, and append it
//! to the room with its place in the room's state (`super::state`).
//!
//! It runs inside a store room job, so it sees the room exactly as the writer does and two events
//! of the same room can never be built on the same parent state.
//!
//! The PDU's shape follows the room version's rules, for every version ruma knows (1 to 12), so
//! that rooms joined over federation later take the same path: in versions 1 and 2 an event has a
//! random `$opaque:server` ID, carried in the PDU, and references other events as
//! `[event ID, {"sha256": reference hash}]` pairs; from version 3 the ID is the reference hash and
//! references are bare IDs. `createRoom` itself only offers versions 10 to 12.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
    signatures::{hash_and_sign_event, reference_hash},
    state_res,
};
use serde_json::Value as JsonValue;

use super::{
    pdu::{Pdu, to_canonical_object},
    state,
};
use crate::{
    Error, Result,
    federation::ServerKeys,
    store::{AppendedEvent, EventRecord, NewEvent, RoomTxn, TransactionKey},
};

/// How many forward extremities a new event references at most.
const MAX_PREV_EVENTS: usize = 20;

/// A new event as a client or an operation asks for it, before it is a PDU.
#[derive(Clone, Debug)]
pub struct ProtoEvent {
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub event_type: String,
    pub state_key: Option<String>,
    pub content: JsonValue,
    /// For `m.room.redaction`: the event it redacts.
    pub redacts: Option<OwnedEventId>,
    pub transaction: Option<TransactionKey>,
}

/// Builds, authorizes and appends a local event.
///
/// On a room with one forward extremity (always, until federation forks a room) the state before
/// the event is the room's current state, read key by key. With several, the event references
/// them all and its state before is their resolution, as for an event received from elsewhere.
pub fn build_and_append(
    txn: &dyn RoomTxn,
    keys: &ServerKeys,
    proto: ProtoEvent,
) -> Result<AppendedEvent> {
    let version =
        txn.room_version(&proto.room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let rules = rules_for(&version)?;

    let prev = newest_extremities(txn.forward_extremities(&proto.room_id)?);
    let prev_ids: Vec<OwnedEventId> = prev.iter().map(|e| e.event_id.clone()).collect();
    let before = match prev_ids.as_slice() {
        [_] => StateSource::Current,
        _ => StateSource::Map(state::state_before(txn, &rules, &proto.room_id, &prev_ids)?),
    };
    let depth = prev.iter().map(|e| e.depth).max().unwrap_or(0) + 1;
    let auth_events = select_auth_events(txn, &proto, &rules, &before)?;

    let mut object = base_object(&proto, &rules, depth)?;
    object.insert("prev_events".into(), event_references(&prev, &rules)?);
    object.insert("auth_events".into(), event_references(&auth_events, &rules)?);
    let (event_id, pdu_json) = finish(object, keys, &rules)?;

    let pdu = Pdu::parse(event_id, &pdu_json, &rules)?;
    authorize(txn, &rules, &pdu, &auth_events, &before)?;
    super::relations::check_local_relation(txn, &pdu)?;
    if let Some(redacts) = &pdu.redacts {
        apply_redaction(txn, &rules, &pdu, redacts)?;
    }
    let placement = match (&before, prev.as_slice()) {
        (StateSource::Current, [only]) => {
            let prev_group = txn.event_state_group(&only.event_id)?.ok_or_else(|| {
                anyhow::anyhow!("the prev event {} has no state group", only.event_id)
            })?;
            state::place_linear(txn, &proto.room_id, &pdu, prev_group)?
        }
        (StateSource::Map(before), _) => {
            state::place_event(txn, &rules, &proto.room_id, &pdu, before)?
        }
        (StateSource::Current, _) => return Err(anyhow::anyhow!("a room without events").into()),
    };
    append(txn, pdu, pdu_json, prev_ids, proto.transaction, placement)
}

/// Where the state before a new local event is read from.
enum StateSource {
    /// The room's current state (the room has one forward extremity, the event's prev event).
    Current,
    /// A state computed in full: the resolution of the states after several prev events.
    Map(state::StateBefore),
}

impl StateSource {
    fn get(
        &self,
        txn: &dyn RoomTxn,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<EventRecord>> {
        match self {
            Self::Current => Ok(txn.current_state_event(room_id, event_type, state_key)?),
            Self::Map(before) => {
                let key = (event_type.to_owned(), state_key.to_owned());
                match before.state.get(&key) {
                    Some(id) => Ok(txn.event(id)?),
                    None => Ok(None),
                }
            }
        }
    }
}

/// Builds and appends the `m.room.create` event of a new room, creating the room itself.
///
/// For versions whose room ID is the create event's reference hash (12 and later), the room ID
/// comes out of the event; otherwise `room_id` is used.
pub fn create_room(
    txn: &dyn RoomTxn,
    keys: &ServerKeys,
    version: &RoomVersionId,
    sender: &UserId,
    room_id: Option<OwnedRoomId>,
    content: JsonValue,
) -> Result<(OwnedRoomId, AppendedEvent)> {
    let rules = rules_for(version)?;
    let proto = ProtoEvent {
        room_id: room_id.clone().unwrap_or_else(|| "!placeholder:x".try_into().unwrap()),
        sender: sender.to_owned(),
        event_type: TimelineEventType::RoomCreate.to_string(),
        state_key: Some(String::new()),
        content,
        redacts: None,
        transaction: None,
    };
    let mut object = base_object(&proto, &rules, 1)?;
    if rules.authorization.room_create_event_id_as_room_id {
        object.remove("room_id");
    }
    object.insert("prev_events".into(), CanonicalJsonValue::Array(Vec::new()));
    object.insert("auth_events".into(), CanonicalJsonValue::Array(Vec::new()));
    let (event_id, pdu_json, room_id) = unique_create_event(txn, object, keys, &rules, room_id)?;
    let mut pdu = Pdu::parse(event_id, &pdu_json, &rules)?;
    // A version 12 create event carries no room ID; it is known here only once checked.
    state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |_: &EventId| {
        None::<Pdu>
    })
    .map_err(|reason| Error::forbidden(format!("The room cannot be created: {reason}")))?;
    pdu.room_id = Some(room_id.clone());

    txn.create_room(&room_id, version, pdu.origin_server_ts.get().into())?;
    let before = state::state_before(txn, &rules, &room_id, &[])?;
    let placement = state::place_event(txn, &rules, &room_id, &pdu, &before)?;
    let appended = append(txn, pdu, pdu_json, Vec::new(), None, placement)?;
    Ok((room_id, appended))
}

/// Hashes and signs a create event and derives the room ID. Where the room ID is the create
/// event's reference hash, two rooms created by one user in the same millisecond with the same
/// content would get the same ID: the later one's `origin_server_ts` moves on a millisecond
/// until its ID is new. Create events are built one at a time on the writer, so this settles it.
fn unique_create_event(
    txn: &dyn RoomTxn,
    mut object: CanonicalJsonObject,
    keys: &ServerKeys,
    rules: &RoomVersionRules,
    room_id: Option<OwnedRoomId>,
) -> Result<(OwnedEventId, String, OwnedRoomId)> {
    const MAX_ATTEMPTS: usize = 1000;
    for _ in 0..MAX_ATTEMPTS {
        let (event_id, pdu_json) = finish(object.clone(), keys, rules)?;
        let room_id = match &room_id {
            Some(room_id) if !rules.authorization.room_create_event_id_as_room_id => {
                return Ok((event_id, pdu_json, room_id.clone()));
            }
            _ => OwnedRoomId::try_from(format!("!{}", &event_id.as_str()[1..]))
                .map_err(|e| anyhow::anyhow!("derived room ID is invalid: {e}"))?,
        };
        if txn.room_version(&room_id)?.is_none() {
            return Ok((event_id, pdu_json, room_id));
        }
        let Some(CanonicalJsonValue::Integer(ts)) = object.get("origin_server_ts") else {
            break;
        };
        let next = *ts + ruma::Int::from(1u8);
        object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(next));
    }
    Err(anyhow::anyhow!("no unused room ID after {MAX_ATTEMPTS} create events").into())
}

/// The rules of a room version Hearth knows.
pub fn rules_for(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version.rules().ok_or_else(|| {
        Error::client(
            http::StatusCode::BAD_REQUEST,
            ruma::api::error::ErrorKind::UnsupportedRoomVersion,
            format!("Room version {version} is not supported"),
        )
    })
}

fn newest_extremities(mut extremities: Vec<EventRecord>) -> Vec<EventRecord> {
    // The store returns them oldest first; keep the newest if there are too many.
    let excess = extremities.len().saturating_sub(MAX_PREV_EVENTS);
    extremities.drain(..excess);
    extremities
}

/// The auth events of a new event: the events of the state before it that its type requires.
fn select_auth_events(
    txn: &dyn RoomTxn,
    proto: &ProtoEvent,
    rules: &RoomVersionRules,
    before: &StateSource,
) -> Result<Vec<EventRecord>> {
    let content = serde_json::value::to_raw_value(&proto.content)
        .map_err(|e| Error::bad_json(format!("Invalid content: {e}")))?;
    let types = state_res::auth_types_for_event(
        &TimelineEventType::from(proto.event_type.as_str()),
        &proto.sender,
        proto.state_key.as_deref(),
        &content,
        &rules.authorization,
    )
    .map_err(|reason| Error::bad_json(format!("Invalid event: {reason}")))?;

    let mut events = Vec::with_capacity(types.len());
    for (event_type, state_key) in types {
        if let Some(event) = before.get(txn, &proto.room_id, &event_type.to_string(), &state_key)? {
            events.push(event);
        }
    }
    Ok(events)
}

/// The PDU keys every event has, before references, hashes and signatures.
fn base_object(
    proto: &ProtoEvent,
    rules: &RoomVersionRules,
    depth: i64,
) -> Result<CanonicalJsonObject> {
    let mut content = to_canonical_object(proto.content.clone())?;
    let mut object = CanonicalJsonObject::new();
    object.insert("room_id".into(), proto.room_id.as_str().into());
    object.insert("sender".into(), proto.sender.as_str().into());
    object.insert("type".into(), proto.event_type.as_str().into());
    object.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ruma::Int::try_from(now()).unwrap_or_default()),
    );
    object
        .insert("depth".into(), CanonicalJsonValue::Integer(depth.try_into().unwrap_or_default()));
    if let Some(state_key) = &proto.state_key {
        object.insert("state_key".into(), state_key.as_str().into());
    }
    if let Some(redacts) = &proto.redacts {
        // Room version 11 moved `redacts` into the content; older versions keep it top-level.
        if rules.redaction.content_field_redacts {
            content.insert("redacts".into(), redacts.as_str().into());
        } else {
            object.insert("redacts".into(), redacts.as_str().into());
        }
    }
    object.insert("content".into(), CanonicalJsonValue::Object(content));
    Ok(object)
}

/// The `prev_events` or `auth_events` of a new PDU, in the room version's reference format.
fn event_references(
    events: &[EventRecord],
    rules: &RoomVersionRules,
) -> Result<CanonicalJsonValue> {
    let references = events.iter().map(|event| event_reference(event, rules));
    Ok(CanonicalJsonValue::Array(references.collect::<Result<_>>()?))
}

/// One reference: the event ID, paired in versions 1 and 2 with the event's reference hash,
/// computed from its stored PDU (redacting it first changes nothing, as the hash covers only the
/// redacted form).
fn event_reference(event: &EventRecord, rules: &RoomVersionRules) -> Result<CanonicalJsonValue> {
    let id = CanonicalJsonValue::String(event.event_id.to_string());
    if rules.events_reference_format != EventsReferenceFormatVersion::V1 {
        return Ok(id);
    }
    let stored: CanonicalJsonObject = serde_json::from_str(&event.pdu)
        .map_err(|e| anyhow::anyhow!("stored PDU of {} is invalid: {e}", event.event_id))?;
    let hash = reference_hash(&stored, rules)
        .map_err(|e| anyhow::anyhow!("cannot hash the stored PDU of {}: {e}", event.event_id))?;
    let hashes = CanonicalJsonObject::from([("sha256".to_owned(), hash.into())]);
    Ok(CanonicalJsonValue::Array(vec![id, CanonicalJsonValue::Object(hashes)]))
}

/// Hashes and signs the PDU and gives it its event ID; returns the ID and the PDU's JSON.
///
/// A version 1 or 2 event ID is chosen here and goes into the PDU before it is hashed and signed,
/// as the hashes, signatures and `check_pdu_format` all expect it there; later versions derive
/// the ID from the signed event and leave it out.
fn finish(
    mut object: CanonicalJsonObject,
    keys: &ServerKeys,
    rules: &RoomVersionRules,
) -> Result<(OwnedEventId, String)> {
    let chosen_id = (rules.event_id_format == EventIdFormatVersion::V1)
        .then(|| EventId::new_v1(&keys.server_name));
    if let Some(event_id) = &chosen_id {
        object.insert("event_id".into(), event_id.as_str().into());
    }
    hash_and_sign_event(
        keys.server_name.as_str(),
        keys.key_pair.as_ref(),
        &mut object,
        &rules.redaction,
    )
    .map_err(pdu_error)?;
    let event_id = match chosen_id {
        Some(event_id) => event_id,
        None => reference_event_id(&object, rules)?,
    };
    state_res::check_pdu_format(&object, &rules.event_format)
        .map_err(|reason| Error::bad_json(format!("Invalid event: {reason}")))?;
    let json = serde_json::to_string(&object).map_err(|e| anyhow::anyhow!(e))?;
    Ok((event_id, json))
}

/// The event ID of versions 3 and later: `$` and the reference hash.
fn reference_event_id(
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<OwnedEventId> {
    let hash = reference_hash(object, rules).map_err(pdu_error)?;
    Ok(EventId::new_v2_or_v3(&hash)
        .map_err(|e| anyhow::anyhow!("derived event ID is invalid: {e}"))?)
}

fn pdu_error(error: ruma::signatures::JsonError) -> Error {
    match error {
        ruma::signatures::JsonError::PduTooLarge => {
            Error::too_large("The event exceeds 65536 bytes")
        }
        other => Error::bad_json(format!("The event cannot be signed: {other}")),
    }
}

/// Checks the event against its auth events and against the state before it.
fn authorize(
    txn: &dyn RoomTxn,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    auth_events: &[EventRecord],
    before: &StateSource,
) -> Result<()> {
    let auth: Vec<Pdu> = auth_events
        .iter()
        .map(|record| Pdu::from_record(record, rules))
        .collect::<anyhow::Result<_>>()?;
    // From version 12 the create event is not among the auth events: it is found by the ID that
    // the room ID names.
    let fetch_event = |id: &EventId| {
        auth.iter().find(|e| e.event_id == id).cloned().or_else(|| {
            txn.event(id).ok().flatten().and_then(|record| Pdu::from_record(&record, rules).ok())
        })
    };
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)
        .map_err(Error::forbidden)?;

    let room_id = pdu.room_id.clone().unwrap_or_else(|| room_of(auth_events));
    let fetch_state = |event_type: &StateEventType, state_key: &str| {
        before
            .get(txn, &room_id, &event_type.to_string(), state_key)
            .ok()
            .flatten()
            .and_then(|record| Pdu::from_record(&record, rules).ok())
    };
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
        .map_err(Error::forbidden)
}

fn room_of(auth_events: &[EventRecord]) -> OwnedRoomId {
    auth_events
        .first()
        .map(|e| e.room_id.clone())
        .unwrap_or_else(|| "!unknown:x".try_into().unwrap())
}

/// Applies an authorized redaction: the target's stored PDU is replaced by its redacted form.
///
/// The client-server API lets a user redact their own events and, with enough power, anyone's;
/// the authorization rules alone accept a redaction whose sender may not apply it.
fn apply_redaction(
    txn: &dyn RoomTxn,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    target_id: &EventId,
) -> Result<()> {
    let Some(target) = txn.event(target_id)? else {
        return Err(Error::not_found("The event to redact is unknown"));
    };
    if target.room_id.as_str() != pdu.room_id.as_ref().map_or("", |r| r.as_str()) {
        return Err(Error::not_found("The event to redact is not in this room"));
    }
    let room_id =
        pdu.room_id.as_deref().ok_or_else(|| Error::bad_request("Redaction without a room"))?;
    if target.sender != pdu.sender
        && !super::power::may_redact_others(txn, room_id, rules, &pdu.sender)?
    {
        return Err(Error::forbidden("You may only redact your own events"));
    }
    if target.redacted_by.is_some() {
        return Ok(());
    }
    let object: CanonicalJsonObject =
        serde_json::from_str(&target.pdu).map_err(|e| anyhow::anyhow!(e))?;
    let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
        .map_err(|e| anyhow::anyhow!("cannot redact {target_id}: {e}"))?;
    let json = serde_json::to_string(&redacted).map_err(|e| anyhow::anyhow!(e))?;
    txn.redact_event(target_id, &json, &pdu.event_id)?;
    Ok(())
}

/// Appends an authorized event with its placement in the room's state; shared with the
/// ingestion of events built elsewhere.
pub(crate) fn append(
    txn: &dyn RoomTxn,
    pdu: Pdu,
    pdu_json: String,
    prev_events: Vec<OwnedEventId>,
    transaction: Option<TransactionKey>,
    placement: state::Placement,
) -> Result<AppendedEvent> {
    let room_id = pdu.room_id.clone().ok_or_else(|| anyhow::anyhow!("event without room"))?;
    let membership = state::membership_of(&pdu);
    let event = NewEvent {
        event_id: pdu.event_id.clone(),
        room_id: room_id.clone(),
        event_type: pdu.kind.to_string(),
        state_key: pdu.state_key.clone(),
        sender: pdu.sender.clone(),
        origin_server_ts: pdu.origin_server_ts.get().into(),
        depth: pdu.depth,
        prev_events,
        pdu: pdu_json,
        transaction,
        replaces_state: placement.replaces_state,
        relation: super::relations::relation_of(&pdu),
        search: crate::search::text_of(&pdu),
        state_group: placement.state_group,
        current_state: placement.current_state,
    };
    let stream_position = txn.append_event(event)?;
    Ok(AppendedEvent {
        event_id: pdu.event_id,
        room_id,
        stream_position,
        state_key: pdu.state_key,
        event_type: pdu.kind.to_string(),
        membership,
    })
}

fn now() -> u64 {
    MilliSecondsSinceUnixEpoch::now().get().into()
}

#[cfg(test)]
mod tests;
