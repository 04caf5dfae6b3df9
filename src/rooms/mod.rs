//! The event graph: creating rooms, sending events, membership changes, and reading events with
//! history visibility applied.
//!
//! Every new local event goes through [`builder::build_and_append`] inside a store room job, every
//! event built elsewhere through [`ingest::ingest_pdu`] (which federation will call), both placing
//! the event in the room's state with [`state`] (state groups, state resolution where the graph
//! forks); every appended event is then published on the bus subject [`ROOM_EVENT_SUBJECT`] for
//! the components that follow rooms (sync now, federation later). This module never speaks HTTP.

pub mod builder;
pub mod create;
pub mod directory;
pub mod format;
pub mod hierarchy;
pub mod ingest;
pub mod mutual;
pub mod pdu;
pub mod power;
pub mod receipts;
pub mod relations;
pub mod reports;
pub mod state;
pub mod typing;
pub mod upgrade;
pub mod visibility;

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::room::power_levels::RoomPowerLevels,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as JsonValue, json};

use self::{builder::ProtoEvent, visibility::HistoryView};
use crate::{
    Error, Result,
    bus::Bus,
    federation::ServerKeys,
    store::{AppendedEvent, EventRecord, Store, TransactionKey},
};

/// The bus subject every appended room event is published on.
pub const ROOM_EVENT_SUBJECT: &str = "roomserver.output.event";

/// What is published on [`ROOM_EVENT_SUBJECT`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomEventOutput {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub stream_position: i64,
    pub event_type: String,
    pub state_key: Option<String>,
    pub membership: Option<String>,
}

/// The room service.
#[derive(Clone)]
pub struct Rooms {
    store: Store,
    bus: Bus,
    keys: ServerKeys,
    /// The stream position of the latest event published on [`ROOM_EVENT_SUBJECT`].
    published: Arc<AtomicI64>,
}

/// A membership change asked for by a user.
#[derive(Clone, Debug)]
pub struct MembershipChange {
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub target: OwnedUserId,
    pub membership: &'static str,
    pub reason: Option<String>,
    /// For invites: the `is_direct` flag.
    pub is_direct: bool,
}

impl Rooms {
    pub fn new(store: Store, bus: Bus, keys: ServerKeys) -> Self {
        Self { store, bus, keys, published: Arc::default() }
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.keys.server_name
    }

    /// Sends an event (message-like or state); a repeated client transaction returns the event
    /// it produced the first time.
    pub async fn send(&self, proto: ProtoEvent) -> Result<OwnedEventId> {
        if let Some(txn) = &proto.transaction
            && let Some(event_id) = self.store.transaction_event(txn).await?
        {
            return Ok(event_id);
        }
        let keys = self.keys.clone();
        let appended = self
            .store
            .write_rooms(Box::new(move |txn| {
                if let Some(key) = &proto.transaction
                    && let Some(event_id) = txn.transaction_event(key)?
                {
                    return Ok(vec![already_sent(event_id, proto.room_id)]);
                }
                builder::build_and_append(txn, &keys, proto).map(|event| vec![event])
            }))
            .await?;
        self.publish(&appended).await;
        appended
            .into_iter()
            .next()
            .map(|e| e.event_id)
            .ok_or_else(|| anyhow::anyhow!("no event").into())
    }

    /// Checks and appends an event built by another server, with the keys of the servers whose
    /// signatures it needs; publishes it if it is new. See [`ingest::ingest_pdu`].
    pub async fn ingest(
        &self,
        room_id: &RoomId,
        pdu: Box<serde_json::value::RawValue>,
        keys: ruma::signatures::PublicKeyMap,
    ) -> Result<ingest::Ingested> {
        let room = room_id.to_owned();
        let appended = self
            .store
            .write_rooms(Box::new(move |txn| match ingest::ingest_pdu(txn, &keys, &room, &pdu)? {
                ingest::Ingested::Appended(event) => Ok(vec![event]),
                ingest::Ingested::AlreadyKnown(event_id) => Ok(vec![already_sent(event_id, room)]),
            }))
            .await?;
        self.publish(&appended).await;
        let event = appended.into_iter().next().ok_or_else(|| anyhow::anyhow!("no event"))?;
        Ok(if event.stream_position == ALREADY_SENT {
            ingest::Ingested::AlreadyKnown(event.event_id)
        } else {
            ingest::Ingested::Appended(event)
        })
    }

    /// Changes a membership: join, invite, leave, kick (leave of another), ban, unban.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<OwnedEventId> {
        let mut content = json!({ "membership": change.membership });
        if matches!(change.membership, "join" | "invite")
            && let Some(profile) = self.store.user(&change.target).await?
        {
            if let Some(name) = profile.displayname {
                content["displayname"] = name.into();
            }
            if let Some(url) = profile.avatar_url {
                content["avatar_url"] = url.into();
            }
        }
        if let Some(reason) = &change.reason {
            content["reason"] = reason.as_str().into();
        }
        if change.is_direct {
            content["is_direct"] = true.into();
        }
        if change.membership == "join"
            && change.sender == change.target
            && let Some(authoriser) = self.restricted_join_authoriser(&change).await?
        {
            content["join_authorised_via_users_server"] = authoriser.as_str().into();
        }
        self.send(ProtoEvent {
            room_id: change.room_id,
            sender: change.sender,
            event_type: "m.room.member".into(),
            state_key: Some(change.target.to_string()),
            content,
            redacts: None,
            transaction: None,
        })
        .await
    }

    /// For a join to a `restricted` or `knock_restricted` room by a user who is neither joined
    /// nor invited but is joined to a room the join rule allows: a joined local user who may
    /// invite, to name in `join_authorised_via_users_server` as the auth rules require. `None`
    /// when the join needs none or none can be given (the auth rules then refuse the join).
    async fn restricted_join_authoriser(
        &self,
        change: &MembershipChange,
    ) -> Result<Option<ruma::OwnedUserId>> {
        let room_id = &change.room_id;
        let Some(rules) = self.store.current_state_event(room_id, "m.room.join_rules", "").await?
        else {
            return Ok(None);
        };
        let Some(content) = power::content_of::<JsonValue>(&rules.pdu) else { return Ok(None) };
        if !matches!(content["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
            return Ok(None);
        }
        let current = self.store.membership(room_id, &change.target, None).await?;
        if current.is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite")) {
            return Ok(None);
        }
        let allowed_rooms = content["allow"].as_array().into_iter().flatten().filter_map(|entry| {
            (entry["type"] == "m.room_membership").then(|| entry["room_id"].as_str()).flatten()
        });
        let mut allowed = false;
        for allowed_room in allowed_rooms {
            let Ok(allowed_room) = ruma::RoomId::parse(allowed_room) else { continue };
            let membership = self.store.membership(&allowed_room, &change.target, None).await?;
            if membership.is_some_and(|m| m.membership == "join") {
                allowed = true;
                break;
            }
        }
        if !allowed {
            return Ok(None);
        }
        let power = self.power_levels(room_id).await?;
        let members = self.store.members_with(room_id, "join").await?;
        Ok(members
            .into_iter()
            .filter(|member| member.server_name() == self.server_name())
            .find(|member| power.user_can_invite(member)))
    }

    /// Whether the room exists on this server.
    pub async fn exists(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.store.room_version(room_id).await?.is_some())
    }

    /// The user's view of a room's history; `M_NOT_FOUND`-free: an unknown room is simply empty.
    pub async fn history_view(&self, room_id: &RoomId, user_id: &UserId) -> Result<HistoryView> {
        HistoryView::load(&self.store, room_id, user_id).await
    }

    /// Refuses with 403 unless the user may read the room's current state.
    pub async fn require_readable(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<HistoryView> {
        let view = self.history_view(room_id, user_id).await?;
        if !view.can_read_current() {
            return Err(Error::forbidden("You are not a member of this room"));
        }
        Ok(view)
    }

    /// Refuses with 403 unless the user is joined to the room.
    pub async fn require_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        let membership = self.store.membership(room_id, user_id, None).await?;
        if membership.is_none_or(|m| m.membership != "join") {
            return Err(Error::forbidden("You are not joined to this room"));
        }
        Ok(())
    }

    /// The room's current power levels; `M_NOT_FOUND` if the room is unknown.
    pub async fn power_levels(&self, room_id: &RoomId) -> Result<RoomPowerLevels> {
        let version = self
            .store
            .room_version(room_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = builder::rules_for(&version)?;
        let create = self.store.current_state_event(room_id, "m.room.create", "").await?;
        let power_levels =
            self.store.current_state_event(room_id, "m.room.power_levels", "").await?;
        Ok(power::from_state(create.as_ref(), power_levels.as_ref(), &rules))
    }

    /// An event, if the user may see it.
    pub async fn visible_event(
        &self,
        user_id: &UserId,
        event_id: &ruma::EventId,
    ) -> Result<EventRecord> {
        let event =
            self.store.event(event_id).await?.ok_or_else(|| Error::not_found("Event not found"))?;
        let view = self.history_view(&event.room_id, user_id).await?;
        if !view.allows(&event) {
            return Err(Error::not_found("Event not found"));
        }
        Ok(event)
    }

    /// Publishes appended events for the rest of the server. A failure is logged, not returned:
    /// the events are committed, and readers catch up from the store.
    pub async fn publish(&self, appended: &[AppendedEvent]) {
        for event in appended.iter().filter(|e| e.stream_position != ALREADY_SENT) {
            let output = RoomEventOutput {
                room_id: event.room_id.clone(),
                event_id: event.event_id.clone(),
                stream_position: event.stream_position,
                event_type: event.event_type.clone(),
                state_key: event.state_key.clone(),
                membership: event.membership.clone(),
            };
            self.published.fetch_max(event.stream_position, Ordering::SeqCst);
            if let Err(error) = self.bus.publish(ROOM_EVENT_SUBJECT, &output).await {
                tracing::warn!(%error, "cannot publish a room event");
            }
        }
    }

    /// The stream position of the latest room event published since start (0 before the
    /// first): what the bus's followers, such as push evaluation, are to catch up with.
    pub fn published_position(&self) -> i64 {
        self.published.load(Ordering::SeqCst)
    }

    pub fn keys(&self) -> &ServerKeys {
        &self.keys
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The event of a transaction sent before: returned again, never published again.
fn already_sent(event_id: OwnedEventId, room_id: OwnedRoomId) -> AppendedEvent {
    AppendedEvent {
        event_id,
        room_id,
        stream_position: ALREADY_SENT,
        state_key: None,
        event_type: String::new(),
        membership: None,
    }
}

/// The stream position marking an event appended by an earlier request.
const ALREADY_SENT: i64 = 0;

/// A client transaction key for one endpoint: `scope` is the endpoint's name and its path
/// arguments (the spec scopes transaction IDs to a device and an endpoint, so the same ID used
/// to send to another room, or to redact, is a new request).
pub fn transaction_key(
    user_id: &UserId,
    device_id: &str,
    scope: &[&str],
    txn_id: &str,
) -> TransactionKey {
    TransactionKey {
        user_id: user_id.to_owned(),
        device_id: device_id.to_owned(),
        // A JSON list keeps the parts apart whatever characters they hold.
        scope: serde_json::Value::from(scope).to_string(),
        txn_id: txn_id.to_owned(),
    }
}

/// The content of a JSON value as an object, for handlers that take raw content.
pub fn object_content(value: JsonValue) -> Result<JsonValue> {
    if value.is_object() {
        Ok(value)
    } else {
        Err(Error::bad_json("Content must be a JSON object"))
    }
}

/// A profile field to change.
#[derive(Clone, Debug)]
pub enum ProfileChange {
    DisplayName(Option<String>),
    AvatarUrl(Option<String>),
}

impl Rooms {
    /// Leaves (or rejects the invites of) every room the user is in; used on deactivation.
    pub async fn leave_all_rooms(&self, user_id: &UserId) -> Result<()> {
        for membership in self.store.memberships_of(user_id).await? {
            if matches!(membership.membership.as_str(), "join" | "invite" | "knock") {
                let change = MembershipChange {
                    room_id: membership.room_id.clone(),
                    sender: user_id.to_owned(),
                    target: user_id.to_owned(),
                    membership: "leave",
                    reason: None,
                    is_direct: false,
                };
                if let Err(error) = self.change_membership(change).await {
                    tracing::warn!(%error, room_id = %membership.room_id, "cannot leave a room");
                }
            }
        }
        Ok(())
    }

    /// Changes a profile field and repeats it in the user's membership in every joined room.
    pub async fn update_profile(&self, user_id: &UserId, change: ProfileChange) -> Result<()> {
        match &change {
            ProfileChange::DisplayName(name) => {
                self.store.set_displayname(user_id, name.as_deref()).await?
            }
            ProfileChange::AvatarUrl(url) => {
                self.store.set_avatar_url(user_id, url.as_deref()).await?
            }
        }
        for membership in self.store.memberships_of(user_id).await? {
            if membership.membership != "join" {
                continue;
            }
            let change = MembershipChange {
                room_id: membership.room_id.clone(),
                sender: user_id.to_owned(),
                target: user_id.to_owned(),
                membership: "join",
                reason: None,
                is_direct: false,
            };
            if let Err(error) = self.change_membership(change).await {
                tracing::warn!(%error, room_id = %membership.room_id, "cannot update a membership profile");
            }
        }
        Ok(())
    }
}
