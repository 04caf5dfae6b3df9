//! The room state at every event, and state resolution where the event graph forks.
//!
//! The state after an event is its state before with its own key set, if it is a state event
//! (<https://spec.matrix.org/v1.19/rooms/v2/#state-resolution>). The state before an event is the
//! state after its single prev event, or, with several prev events, ruma's `state_res::resolve`
//! over the states after each of them. The room's current state follows the same rule over the
//! forward extremities: the state after the only one, or the resolution of the states after all.
//!
//! This module decides what to store (the event's state group, the changes of the current state);
//! the store only writes it. It never authorizes events: the builder and the ingestion path do,
//! against the states computed here.

use std::{cell::RefCell, collections::BTreeMap};

use ruma::{
    EventId, OwnedEventId, RoomId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res::{self, utils::event_id_set::EventIdSet},
};
use serde_json::Value as JsonValue;

use super::pdu::Pdu;
use crate::{
    Error, Result,
    store::{
        CurrentStateChange, MAX_STATE_CHAIN, NewStateGroup, RoomTxn, StateEntry, StateGroupDelta,
        StateMap, state_of_group,
    },
};

/// Where a new event's state goes: what the store needs besides the event itself.
#[derive(Debug)]
pub(crate) struct Placement {
    /// For a state event: the event of its key in the state before it.
    pub replaces_state: Option<OwnedEventId>,
    pub state_group: NewStateGroup,
    pub current_state: Vec<CurrentStateChange>,
}

/// The state before an event, and the stored group the state after it is kept against.
#[derive(Debug)]
pub(crate) struct StateBefore {
    pub state: StateMap,
    /// The group a new group becomes a delta on (the first prev event's), and its state.
    base_group: Option<(i64, StateMap)>,
}

/// The key of a state event, `None` for a message.
fn state_key_of(pdu: &Pdu) -> Option<(String, String)> {
    pdu.state_key.as_ref().map(|key| (pdu.kind.to_string(), key.clone()))
}

/// The state after an event, from its stored state group.
pub(crate) fn state_after_event(txn: &dyn RoomTxn, event_id: &EventId) -> Result<StateMap> {
    let group = txn
        .event_state_group(event_id)?
        .ok_or_else(|| anyhow::anyhow!("the event {event_id} has no state group"))?;
    Ok(state_of_group(txn, group)?)
}

/// The state before an event with these prev events (none only for a create event).
pub(crate) fn state_before(
    txn: &dyn RoomTxn,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    prev_events: &[OwnedEventId],
) -> Result<StateBefore> {
    let Some(first) = prev_events.first() else {
        return Ok(StateBefore { state: StateMap::new(), base_group: None });
    };
    let mut states = Vec::with_capacity(prev_events.len());
    let mut base_group = None;
    for prev in prev_events {
        let group = txn
            .event_state_group(prev)?
            .ok_or_else(|| anyhow::anyhow!("the prev event {prev} has no state group"))?;
        let state = state_of_group(txn, group)?;
        if prev == first {
            base_group = Some((group, state.clone()));
        }
        states.push(state);
    }
    let state = if states.len() == 1 {
        states.pop().unwrap_or_default()
    } else {
        resolve(txn, rules, room_id, &states)?
    };
    Ok(StateBefore { state, base_group })
}

/// Places an event whose state before was computed in full: its group (a delta on the first prev
/// event's group, or that group itself if nothing changed) and the new current state of the room,
/// given the forward extremities it will have once the event is appended.
pub(crate) fn place_event(
    txn: &dyn RoomTxn,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    pdu: &Pdu,
    before: &StateBefore,
) -> Result<Placement> {
    let mut after = before.state.clone();
    let key = state_key_of(pdu);
    let replaces_state = key.as_ref().and_then(|key| before.state.get(key).cloned());
    if let Some(key) = key {
        after.insert(key, pdu.event_id.clone());
    }
    let state_group = match &before.base_group {
        None => NewStateGroup::New(snapshot(&after)),
        Some((group, base)) => group_for(txn, *group, base, &after)?,
    };

    let mut extremities: Vec<OwnedEventId> = txn
        .forward_extremities(room_id)?
        .into_iter()
        .map(|e| e.event_id)
        .filter(|id| !pdu.prev_events.contains(id))
        .collect();
    let new_current = if extremities.is_empty() {
        after.clone()
    } else {
        extremities.sort();
        let mut states = vec![after.clone()];
        for extremity in &extremities {
            states.push(state_after_event(txn, extremity)?);
        }
        resolve_with(txn, rules, room_id, &states, Some(pdu))?
    };
    let old_current = txn.current_state_map(room_id)?;
    let current_state = current_state_changes(txn, rules, pdu, &old_current, &new_current)?;
    Ok(Placement { replaces_state, state_group, current_state })
}

/// Places a local event on a room that has one forward extremity, its only prev event: the state
/// before it is the current state, and the state after it a one-entry delta on the prev event's
/// group (a message stays in that group). Reads nothing for a message.
pub(crate) fn place_linear(
    txn: &dyn RoomTxn,
    room_id: &RoomId,
    pdu: &Pdu,
    prev_group: i64,
) -> Result<Placement> {
    let Some((event_type, state_key)) = state_key_of(pdu) else {
        return Ok(Placement {
            replaces_state: None,
            state_group: NewStateGroup::Existing(prev_group),
            current_state: Vec::new(),
        });
    };
    let replaces_state =
        txn.current_state_event(room_id, &event_type, &state_key)?.map(|e| e.event_id);
    let parent = txn
        .state_group_delta(prev_group)?
        .ok_or_else(|| anyhow::anyhow!("state group {prev_group} is missing"))?;
    let entry = StateEntry {
        event_type: event_type.clone(),
        state_key: state_key.clone(),
        event_id: Some(pdu.event_id.clone()),
    };
    let state_group = if parent.chain_length + 1 >= MAX_STATE_CHAIN {
        let mut after = state_of_group(txn, prev_group)?;
        after.insert((event_type.clone(), state_key.clone()), pdu.event_id.clone());
        NewStateGroup::New(snapshot(&after))
    } else {
        NewStateGroup::New(StateGroupDelta {
            parent: Some(prev_group),
            chain_length: parent.chain_length + 1,
            entries: vec![entry],
        })
    };
    let change = CurrentStateChange {
        membership: membership_of(pdu),
        event_type,
        state_key,
        event_id: Some(pdu.event_id.clone()),
    };
    Ok(Placement { replaces_state, state_group, current_state: vec![change] })
}

/// The group for the state `after`, stored against the group `base` with state `base_state`.
fn group_for(
    txn: &dyn RoomTxn,
    base: i64,
    base_state: &StateMap,
    after: &StateMap,
) -> Result<NewStateGroup> {
    let entries = diff(base_state, after);
    if entries.is_empty() {
        return Ok(NewStateGroup::Existing(base));
    }
    let parent = txn
        .state_group_delta(base)?
        .ok_or_else(|| anyhow::anyhow!("state group {base} is missing"))?;
    if parent.chain_length + 1 >= MAX_STATE_CHAIN || entries.len() > after.len() / 2 {
        return Ok(NewStateGroup::New(snapshot(after)));
    }
    Ok(NewStateGroup::New(StateGroupDelta {
        parent: Some(base),
        chain_length: parent.chain_length + 1,
        entries,
    }))
}

fn snapshot(state: &StateMap) -> StateGroupDelta {
    let entries = state
        .iter()
        .map(|((event_type, state_key), event_id)| StateEntry {
            event_type: event_type.clone(),
            state_key: state_key.clone(),
            event_id: Some(event_id.clone()),
        })
        .collect();
    StateGroupDelta { parent: None, chain_length: 0, entries }
}

/// The entries that turn `from` into `to`, in key order.
fn diff(from: &StateMap, to: &StateMap) -> Vec<StateEntry> {
    let changed = to.iter().filter(|(key, id)| from.get(*key) != Some(*id));
    let mut entries: Vec<StateEntry> = changed
        .map(|((event_type, state_key), id)| StateEntry {
            event_type: event_type.clone(),
            state_key: state_key.clone(),
            event_id: Some(id.clone()),
        })
        .collect();
    let removed = from.keys().filter(|key| !to.contains_key(*key));
    entries.extend(removed.map(|(event_type, state_key)| StateEntry {
        event_type: event_type.clone(),
        state_key: state_key.clone(),
        event_id: None,
    }));
    entries.sort_by(|a, b| (&a.event_type, &a.state_key).cmp(&(&b.event_type, &b.state_key)));
    entries
}

/// The changes from the current state `old` to `new`, with the membership of member events.
fn current_state_changes(
    txn: &dyn RoomTxn,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    old: &StateMap,
    new: &StateMap,
) -> Result<Vec<CurrentStateChange>> {
    let mut changes = Vec::new();
    for entry in diff(old, new) {
        let membership = match &entry.event_id {
            Some(id) if entry.event_type == TimelineEventType::RoomMember.to_string() => {
                if *id == pdu.event_id {
                    membership_of(pdu)
                } else {
                    let record = txn
                        .event(id)?
                        .ok_or_else(|| anyhow::anyhow!("state event {id} is not stored"))?;
                    membership_of(&Pdu::from_record(&record, rules)?)
                }
            }
            _ => None,
        };
        changes.push(CurrentStateChange {
            event_type: entry.event_type,
            state_key: entry.state_key,
            event_id: entry.event_id,
            membership,
        });
    }
    Ok(changes)
}

/// The membership an `m.room.member` event sets.
pub(crate) fn membership_of(pdu: &Pdu) -> Option<String> {
    if pdu.kind != TimelineEventType::RoomMember {
        return None;
    }
    serde_json::from_str::<JsonValue>(pdu.content.get())
        .ok()?
        .get("membership")?
        .as_str()
        .map(ToOwned::to_owned)
}

/// Resolves several states of a room with ruma's state resolution (version 2, with the room
/// version's tweaks). Every event the states name must be stored.
pub(crate) fn resolve(
    txn: &dyn RoomTxn,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    states: &[StateMap],
) -> Result<StateMap> {
    resolve_with(txn, rules, room_id, states, None)
}

/// [`resolve`], where `pending` is an event not stored yet that the states may name.
fn resolve_with(
    txn: &dyn RoomTxn,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    states: &[StateMap],
    pending: Option<&Pdu>,
) -> Result<StateMap> {
    let Some(v2_rules) = rules.state_res.v2_rules() else {
        // FIXME: room versions 1 use the first state resolution algorithm, which ruma does not
        // implement; a fork in such a room cannot be resolved, so events that fork it are refused.
        return Err(Error::bad_request(format!(
            "Cannot resolve a fork of {room_id}: its room version uses state resolution v1, \
             which Hearth does not support"
        )));
    };
    let events = EventCache::new(txn, rules, pending);
    let auth_chains =
        states.iter().map(|state| events.auth_chain(state.values())).collect::<Result<Vec<_>>>()?;
    let ruma_states: Vec<RumaStateMap> = states.iter().map(to_ruma).collect();
    let resolved = state_res::resolve(
        &rules.authorization,
        v2_rules,
        ruma_states.iter(),
        auth_chains,
        |id| events.get(id),
        |conflicted| events.conflicted_state_subgraph(conflicted),
    )
    .map_err(|error| anyhow::anyhow!("state resolution of {room_id} failed: {error}"))?;
    Ok(resolved
        .into_iter()
        .map(|((event_type, state_key), id)| ((event_type.to_string(), state_key), id))
        .collect())
}

/// ruma's state map, a `HashMap`; it exists only at the call into ruma.
#[allow(clippy::disallowed_types)]
type RumaStateMap = state_res::StateMap<OwnedEventId>;

fn to_ruma(state: &StateMap) -> RumaStateMap {
    state
        .iter()
        .map(|((event_type, state_key), id)| {
            ((StateEventType::from(event_type.as_str()), state_key.clone()), id.clone())
        })
        .collect()
}

/// The stored events one resolution reads, each parsed once.
struct EventCache<'a> {
    txn: &'a dyn RoomTxn,
    rules: &'a RoomVersionRules,
    pending: Option<&'a Pdu>,
    parsed: RefCell<BTreeMap<OwnedEventId, Option<Pdu>>>,
}

impl<'a> EventCache<'a> {
    fn new(txn: &'a dyn RoomTxn, rules: &'a RoomVersionRules, pending: Option<&'a Pdu>) -> Self {
        Self { txn, rules, pending, parsed: RefCell::new(BTreeMap::new()) }
    }

    /// The event, if stored (or pending). A store failure reads as a missing event, which
    /// resolution then does not honour; it is logged.
    fn get(&self, id: &EventId) -> Option<Pdu> {
        if let Some(pending) = self.pending.filter(|p| p.event_id == id) {
            return Some(pending.clone());
        }
        if let Some(found) = self.parsed.borrow().get(id) {
            return found.clone();
        }
        let loaded = match self.txn.event(id) {
            Ok(record) => record.and_then(|record| Pdu::from_record(&record, self.rules).ok()),
            Err(error) => {
                tracing::error!(%error, event_id = %id, "cannot read an event for state resolution");
                None
            }
        };
        self.parsed.borrow_mut().insert(id.to_owned(), loaded.clone());
        loaded
    }

    /// The union of the auth chains of `events`: their auth events, recursively.
    fn auth_chain<'i>(
        &self,
        events: impl Iterator<Item = &'i OwnedEventId>,
    ) -> Result<EventIdSet<OwnedEventId>> {
        let mut chain = EventIdSet::new();
        let mut queue: Vec<OwnedEventId> = Vec::new();
        for id in events {
            queue.extend(self.auth_events_of(id)?);
        }
        while let Some(id) = queue.pop() {
            if chain.insert(id.clone()) {
                queue.extend(self.auth_events_of(&id)?);
            }
        }
        Ok(chain)
    }

    fn auth_events_of(&self, id: &EventId) -> Result<Vec<OwnedEventId>> {
        let event = self
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("event {id} of a state to resolve is not stored"))?;
        Ok(event.auth_events)
    }

    /// The conflicted state subgraph of room version 12: every event on an `auth_events` path
    /// from one conflicted state event to another (the conflicted events included).
    #[allow(clippy::disallowed_types)]
    fn conflicted_state_subgraph(
        &self,
        conflicted: &state_res::StateMap<Vec<OwnedEventId>>,
    ) -> Option<EventIdSet<OwnedEventId>> {
        let targets: EventIdSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
        // Whether an event reaches a conflicted event through auth_events (itself counts).
        let mut reaches: BTreeMap<OwnedEventId, bool> = BTreeMap::new();
        let mut subgraph = EventIdSet::new();
        for start in targets.iter() {
            self.mark_reaching(start, &targets, &mut reaches)?;
        }
        for (id, reaching) in reaches {
            if reaching {
                subgraph.insert(id);
            }
        }
        Some(subgraph)
    }

    /// Walks the auth graph below `id` (each event once, iteratively) and records for each event
    /// whether a conflicted event lies at or below it. Only events reachable from a conflicted
    /// event are visited, so every event marked is also below one: on a path between two.
    fn mark_reaching(
        &self,
        id: &OwnedEventId,
        targets: &EventIdSet<OwnedEventId>,
        reaches: &mut BTreeMap<OwnedEventId, bool>,
    ) -> Option<()> {
        if reaches.contains_key(id) {
            return Some(());
        }
        // Depth-first, post-order: an event is decided once all its auth events are.
        let mut stack: Vec<(OwnedEventId, bool)> = vec![(id.clone(), false)];
        while let Some((current, expanded)) = stack.pop() {
            let auth_events = self.get(&current).map(|e| e.auth_events).unwrap_or_default();
            if expanded {
                let below = auth_events.iter().any(|a| reaches.get(a).copied().unwrap_or(false));
                reaches.insert(current.clone(), targets.contains(&current) || below);
                continue;
            }
            if reaches.contains_key(&current) {
                continue;
            }
            stack.push((current, true));
            for auth in auth_events {
                if !reaches.contains_key(&auth) {
                    stack.push((auth, false));
                }
            }
        }
        Some(())
    }
}
