//! `createRoom`: the initial events of a new room, in the order the spec lists, committed together.
//!
//! See <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3createroom>.

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId};
use serde_json::{Map, Value as JsonValue, json};

use super::{
    Rooms,
    builder::{self, ProtoEvent},
};
use crate::{
    Error, Result,
    federation::ServerKeys,
    store::{AppendedEvent, RoomTxn},
};

/// The room versions `createRoom` accepts.
pub const CREATABLE_VERSIONS: [&str; 3] = ["10", "11", "12"];

/// The room version used when the client names none.
pub const DEFAULT_VERSION: &str = "12";

/// A preset: a set of initial state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// Everything `createRoom` was asked for, already validated.
#[derive(Clone, Debug)]
pub struct CreateRoomSpec {
    pub creator: OwnedUserId,
    pub version: RoomVersionId,
    pub preset: Preset,
    pub creation_content: Map<String, JsonValue>,
    /// (type, state key, content)
    pub initial_state: Vec<(String, String, JsonValue)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias: Option<OwnedRoomAliasId>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub power_level_override: Option<Map<String, JsonValue>>,
    /// Listed in the public room directory.
    pub publish: bool,
}

impl Rooms {
    /// Creates a room with its initial state; returns its ID.
    pub async fn create_room(&self, spec: CreateRoomSpec) -> Result<OwnedRoomId> {
        if let Some(alias) = &spec.alias
            && self.store().alias(alias).await?.is_some()
        {
            return Err(Error::client(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::RoomInUse,
                "The room alias is taken",
            ));
        }
        let creator_profile = self.store().user(&spec.creator).await?;
        let keys = self.keys().clone();
        let job_spec = spec.clone();
        let appended = self
            .store()
            .write_rooms(Box::new(move |txn| {
                let profile = creator_profile.map(|u| (u.displayname, u.avatar_url));
                create_in(txn, &keys, &job_spec, profile.unwrap_or_default())
            }))
            .await?;
        self.publish(&appended).await;
        let room_id = appended
            .first()
            .map(|e| e.room_id.clone())
            .ok_or_else(|| anyhow::anyhow!("no create event"))?;

        if let Some(alias) = &spec.alias
            && !self.store().create_alias(alias, &room_id, &spec.creator).await?
        {
            tracing::warn!(%alias, "alias taken while its room was created");
        }
        if spec.publish {
            self.store().set_published(&room_id, true).await?;
        }
        tracing::info!(%room_id, version = %spec.version, "room created");
        Ok(room_id)
    }
}

fn create_in(
    txn: &dyn RoomTxn,
    keys: &ServerKeys,
    spec: &CreateRoomSpec,
    (displayname, avatar_url): (Option<String>, Option<String>),
) -> Result<Vec<AppendedEvent>> {
    let rules = builder::rules_for(&spec.version)?;
    let mut create_content = spec.creation_content.clone();
    create_content.insert("room_version".into(), spec.version.as_str().into());
    if !rules.authorization.use_room_create_sender {
        create_content.insert("creator".into(), spec.creator.as_str().into());
    }
    let local_room_id = (!rules.authorization.room_create_event_id_as_room_id)
        .then(|| RoomId::new_v1(&keys.server_name));
    let (room_id, create) = builder::create_room(
        txn,
        keys,
        &spec.version,
        &spec.creator,
        local_room_id,
        JsonValue::Object(create_content),
    )?;

    let mut appended = vec![create];
    let mut send = |event_type: &str, state_key: &str, content: JsonValue| -> Result<()> {
        let proto = ProtoEvent {
            room_id: room_id.clone(),
            sender: spec.creator.clone(),
            event_type: event_type.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
            transaction: None,
        };
        appended.push(builder::build_and_append(txn, keys, proto)?);
        Ok(())
    };

    let mut member = json!({ "membership": "join" });
    if let Some(name) = displayname {
        member["displayname"] = name.into();
    }
    if let Some(url) = avatar_url {
        member["avatar_url"] = url.into();
    }
    send("m.room.member", spec.creator.as_str(), member)?;
    let privileged_creators = rules.authorization.explicitly_privilege_room_creators;
    send("m.room.power_levels", "", power_levels(spec, privileged_creators))?;
    if let Some(alias) = &spec.alias {
        send("m.room.canonical_alias", "", json!({ "alias": alias }))?;
    }
    for (event_type, state_key, content) in preset_state(spec) {
        send(event_type, state_key, content)?;
    }
    for (event_type, state_key, content) in &spec.initial_state {
        send(event_type, state_key, content.clone())?;
    }
    if let Some(name) = &spec.name {
        send("m.room.name", "", json!({ "name": name }))?;
    }
    if let Some(topic) = &spec.topic {
        send("m.room.topic", "", topic_content(topic))?;
    }
    for invitee in &spec.invite {
        let mut content = json!({ "membership": "invite" });
        if spec.is_direct {
            content["is_direct"] = true.into();
        }
        send("m.room.member", invitee.as_str(), content)?;
    }
    Ok(appended)
}

/// The default power levels of a new room, with the client's override on top.
fn power_levels(spec: &CreateRoomSpec, privileged_creators: bool) -> JsonValue {
    let mut users = Map::new();
    if !privileged_creators {
        users.insert(spec.creator.to_string(), 100.into());
    }
    if spec.preset == Preset::TrustedPrivateChat {
        for invitee in &spec.invite {
            users.insert(invitee.to_string(), 100.into());
        }
    }
    let invite_level = if spec.preset == Preset::PublicChat { 50 } else { 0 };
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": invite_level,
        "historical": 100,
    });
    if let (Some(overrides), Some(object)) = (&spec.power_level_override, content.as_object_mut()) {
        for (key, value) in overrides {
            object.insert(key.clone(), value.clone());
        }
    }
    content
}

/// The state a preset sets: join rules, history visibility, guest access.
fn preset_state(spec: &CreateRoomSpec) -> Vec<(&'static str, &'static str, JsonValue)> {
    let join_rule = if spec.preset == Preset::PublicChat { "public" } else { "invite" };
    let mut state = vec![
        ("m.room.join_rules", "", json!({ "join_rule": join_rule })),
        ("m.room.history_visibility", "", json!({ "history_visibility": "shared" })),
    ];
    if spec.preset != Preset::PublicChat {
        state.push(("m.room.guest_access", "", json!({ "guest_access": "can_join" })));
    }
    // initial_state overrides what the preset would set.
    state.retain(|(event_type, _, _)| {
        !spec.initial_state.iter().any(|(t, k, _)| t == event_type && k.is_empty())
    });
    state
}

/// `m.room.topic` content with the plain-text topic and its `m.topic` form (spec v1.15+).
fn topic_content(topic: &str) -> JsonValue {
    json!({
        "topic": topic,
        "m.topic": { "m.text": [{ "body": topic, "mimetype": "text/plain" }] },
    })
}
