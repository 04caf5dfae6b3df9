//! The entry point for an event built by another server: the checks the spec performs on receipt
//! of a PDU (<https://spec.matrix.org/v1.19/server-server-api/#checks-performed-on-receipt-of-a-pdu>),
//! then the same state placement and append as a local event.
//!
//! In order: the PDU's format, its event ID (from its reference hash since room version 3), its
//! content hash and signatures against keys the caller supplies, that its prev and auth events
//! are known, the authorization rules against its auth events, then against the state before it
//! (resolved when it has several prev events), then against the current state. An event that
//! fails any check is refused with an error that says which and nothing is stored; an event
//! already stored is accepted again without effect.
//!
//! This module never fetches anything: missing events and server keys are federation's to fetch
//! before calling it.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
    signatures::{PublicKeyMap, Verified, reference_hash, verify_event},
    state_res,
};
use serde_json::value::RawValue;

use super::{
    builder::{append, rules_for},
    pdu::Pdu,
    state,
};
use crate::{
    Error, Result,
    store::{AppendedEvent, RoomTxn, StateMap},
};

/// What became of an ingested event.
#[derive(Clone, Debug)]
pub enum Ingested {
    /// It was checked and appended.
    Appended(AppendedEvent),
    /// It was stored already; nothing changed.
    AlreadyKnown(OwnedEventId),
}

/// Checks an event of `room_id` built elsewhere and appends it with its state. `keys` holds the
/// public keys of the servers whose signatures the event needs (its sender's server, and more for
/// some joins); a missing key fails the signature check.
pub fn ingest_pdu(
    txn: &dyn RoomTxn,
    keys: &PublicKeyMap,
    room_id: &RoomId,
    pdu_json: &RawValue,
) -> Result<Ingested> {
    let version = txn.room_version(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    let rules = rules_for(&version)?;
    let object: CanonicalJsonObject = serde_json::from_str(pdu_json.get())
        .map_err(|e| Error::bad_json(format!("The PDU is not canonical JSON: {e}")))?;
    state_res::check_pdu_format(&object, &rules.event_format)
        .map_err(|reason| Error::bad_json(format!("Invalid PDU: {reason}")))?;
    let event_id = event_id_of(&object, &rules)?;
    if txn.event(&event_id)?.is_some() {
        return Ok(Ingested::AlreadyKnown(event_id));
    }
    verify(keys, &object, &rules, &event_id)?;

    let json = serde_json::to_string(&object).map_err(|e| anyhow::anyhow!(e))?;
    let pdu = Pdu::parse(event_id, &json, &rules)
        .map_err(|e| Error::bad_json(format!("Invalid PDU: {e}")))?;
    check_room(&pdu, room_id)?;
    require_known(txn, room_id, "prev", &pdu.prev_events)?;
    require_known(txn, room_id, "auth", &pdu.auth_events)?;
    authorize_by_auth_events(txn, &rules, &pdu)?;

    let before = state::state_before(txn, &rules, room_id, &pdu.prev_events)?;
    authorize_against(txn, &rules, &pdu, &before.state, "the state before it")?;
    let current = txn.current_state_map(room_id)?;
    if current != before.state {
        // FIXME: the spec soft-fails such an event: stored, but neither a forward extremity nor
        // part of the current state, and not sent to clients. Without a place to keep soft-failed
        // events it is refused for now, so events that reference it cannot be ingested either.
        authorize_against(txn, &rules, &pdu, &current, "the room's current state (soft fail)")?;
    }
    // FIXME: a redaction from another server is stored but not yet applied to its target.
    let placement = state::place_event(txn, &rules, room_id, &pdu, &before)?;
    let prev_events = pdu.prev_events.clone();
    Ok(Ingested::Appended(append(txn, pdu, json, prev_events, None, placement)?))
}

/// Versions 1 and 2 carry their event ID; later versions derive it from the reference hash.
fn event_id_of(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId> {
    if rules.event_id_format == EventIdFormatVersion::V1 {
        let Some(CanonicalJsonValue::String(id)) = object.get("event_id") else {
            return Err(Error::bad_json("Invalid PDU: no event_id"));
        };
        return OwnedEventId::try_from(id.as_str())
            .map_err(|e| Error::bad_json(format!("Invalid PDU: bad event_id: {e}")));
    }
    let hash = reference_hash(object, rules).map_err(|e| {
        Error::bad_json(format!("Invalid PDU: cannot compute its reference hash: {e}"))
    })?;
    Ok(EventId::new_v2_or_v3(&hash).map_err(|e| anyhow::anyhow!("derived event ID: {e}"))?)
}

/// The signatures must verify with the supplied keys, and the content hash must match: an event
/// whose content was changed (or redacted) on the way is refused, not stored redacted.
fn verify(
    keys: &PublicKeyMap,
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
    event_id: &EventId,
) -> Result<()> {
    match verify_event(keys, object, rules) {
        Ok(Verified::All) => Ok(()),
        Ok(Verified::Signatures) => Err(Error::forbidden(format!(
            "The content hash of {event_id} does not match its content"
        ))),
        Err(error) => {
            Err(Error::forbidden(format!("The signatures of {event_id} do not verify: {error}")))
        }
    }
}

fn check_room(pdu: &Pdu, room_id: &RoomId) -> Result<()> {
    if pdu.kind == TimelineEventType::RoomCreate {
        return Err(Error::bad_request("A create event cannot be added to an existing room"));
    }
    if pdu.room_id.as_deref() != Some(room_id) {
        return Err(Error::bad_request(format!(
            "The event {} belongs to another room than {room_id}",
            pdu.event_id
        )));
    }
    Ok(())
}

/// Every referenced event must be stored, in this room. Fetching the missing ones (with
/// `/get_missing_events` or `/event_auth`) is the federation sender's job, before it calls again.
fn require_known(
    txn: &dyn RoomTxn,
    room_id: &RoomId,
    which: &str,
    ids: &[OwnedEventId],
) -> Result<()> {
    let mut missing = Vec::new();
    for id in ids {
        match txn.event(id)? {
            Some(record) if record.room_id == room_id => {}
            Some(_) => {
                return Err(Error::bad_request(format!(
                    "The {which} event {id} is in another room"
                )));
            }
            None => missing.push(id.as_str()),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::not_found(format!(
        "Unknown {which} events {}: they must be fetched from the sending server first",
        missing.join(", ")
    )))
}

/// The authorization rules against the event's own auth events.
fn authorize_by_auth_events(txn: &dyn RoomTxn, rules: &RoomVersionRules, pdu: &Pdu) -> Result<()> {
    let mut auth_ids = pdu.auth_events.clone();
    // From version 12 the create event is found by the ID the room ID names, not in auth_events.
    if rules.authorization.room_create_event_id_as_room_id
        && let Some(room_id) = &pdu.room_id
        && let Ok(create_id) = OwnedEventId::try_from(format!("${}", &room_id.as_str()[1..]))
    {
        auth_ids.push(create_id);
    }
    let mut auth = Vec::with_capacity(auth_ids.len());
    for id in &auth_ids {
        if let Some(record) = txn.event(id)? {
            auth.push(Pdu::from_record(&record, rules)?);
        }
    }
    let fetch_event = |id: &EventId| {
        auth.iter().find(|e| e.event_id == id).cloned().or_else(|| {
            txn.event(id).ok().flatten().and_then(|record| Pdu::from_record(&record, rules).ok())
        })
    };
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event).map_err(
        |reason| Error::forbidden(format!("{} is not authorized: {reason}", pdu.event_id)),
    )?;
    let fetch_state = |event_type: &StateEventType, state_key: &str| {
        auth.iter()
            .find(|e| {
                e.kind.to_string() == event_type.to_string()
                    && e.state_key.as_deref() == Some(state_key)
            })
            .cloned()
    };
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state).map_err(
        |reason| {
            Error::forbidden(format!(
                "{} is not authorized by its auth events: {reason}",
                pdu.event_id
            ))
        },
    )
}

/// The state-dependent authorization rules against a whole state.
fn authorize_against(
    txn: &dyn RoomTxn,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    state: &StateMap,
    what: &str,
) -> Result<()> {
    let fetch_state = |event_type: &StateEventType, state_key: &str| {
        let id = state.get(&(event_type.to_string(), state_key.to_owned()))?;
        let record = txn.event(id).ok().flatten()?;
        Pdu::from_record(&record, rules).ok()
    };
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state).map_err(
        |reason| {
            Error::forbidden(format!("{} is not authorized by {what}: {reason}", pdu.event_id))
        },
    )
}

#[cfg(test)]
mod tests;
