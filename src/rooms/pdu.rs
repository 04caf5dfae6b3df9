//! A parsed PDU, as ruma's authorization rules and state resolution consume it, and its
//! conversion to the client format.
//!
//! Parsing follows the room version's rules: where `redacts` is read from, and whether the PDU
//! carries its own `event_id`. It never checks hashes or signatures; that is the builder's and
//! the ingestion path's (`super::ingest`) job.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UserId, events::TimelineEventType, room_version_rules::RoomVersionRules,
};
use serde::Deserialize;
use serde_json::{Value as JsonValue, value::RawValue};

use crate::store::EventRecord;

/// A PDU with the fields the authorization rules read.
#[derive(Clone, Debug)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    /// For `m.room.redaction`: the event it redacts, from the top-level key before room version
    /// 11 and from `content` since.
    pub redacts: Option<OwnedEventId>,
    pub depth: i64,
}

#[derive(Deserialize)]
struct WirePdu {
    /// Only in room versions 1 and 2, whose event IDs are not derived from the event.
    event_id: Option<OwnedEventId>,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<EventReference>,
    #[serde(default)]
    auth_events: Vec<EventReference>,
    redacts: Option<OwnedEventId>,
    #[serde(default)]
    depth: i64,
}

/// An entry of `prev_events`/`auth_events`: an event ID (room version 3 and later) or an
/// `[event ID, hashes]` pair (versions 1 and 2).
#[derive(Deserialize)]
#[serde(untagged)]
enum EventReference {
    Id(OwnedEventId),
    Pair(OwnedEventId, serde::de::IgnoredAny),
}

impl EventReference {
    fn into_id(self) -> OwnedEventId {
        match self {
            Self::Id(id) | Self::Pair(id, _) => id,
        }
    }
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a PDU's JSON under its room version's rules. `event_id` is known separately: from
    /// room version 3 it is the reference hash and not in the PDU; in versions 1 and 2 the PDU's
    /// own `event_id` must be the same.
    pub fn parse(
        event_id: OwnedEventId,
        json: &str,
        rules: &RoomVersionRules,
    ) -> anyhow::Result<Self> {
        let wire: WirePdu = serde_json::from_str(json)?;
        if rules.event_format.require_event_id && wire.event_id.as_ref() != Some(&event_id) {
            anyhow::bail!("the PDU of {event_id} names another event ID: {:?}", wire.event_id);
        }
        let redacts = redacts(&wire, rules);
        Ok(Self {
            event_id,
            room_id: wire.room_id,
            sender: wire.sender,
            origin_server_ts: wire.origin_server_ts,
            kind: wire.kind,
            content: wire.content,
            state_key: wire.state_key,
            prev_events: wire.prev_events.into_iter().map(EventReference::into_id).collect(),
            auth_events: wire.auth_events.into_iter().map(EventReference::into_id).collect(),
            redacts,
            depth: wire.depth,
        })
    }

    /// Parses a stored event of a room with the given rules.
    pub fn from_record(record: &EventRecord, rules: &RoomVersionRules) -> anyhow::Result<Self> {
        Self::parse(record.event_id.clone(), &record.pdu, rules)
    }
}

/// The event a redaction redacts. Room version 11 moved the key into `content`; a key in the
/// other place means nothing (<https://spec.matrix.org/v1.19/rooms/v11/>, MSC2174).
fn redacts(wire: &WirePdu, rules: &RoomVersionRules) -> Option<OwnedEventId> {
    if wire.kind != TimelineEventType::RoomRedaction {
        return None;
    }
    if !rules.redaction.content_field_redacts {
        return wire.redacts.clone();
    }
    serde_json::from_str::<RedactsInContent>(wire.content.get()).ok().and_then(|c| c.redacts)
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        // Only accepted events are stored.
        false
    }
}

/// The PDU keys a client never sees.
const FEDERATION_ONLY_KEYS: [&str; 7] =
    ["auth_events", "prev_events", "depth", "hashes", "signatures", "origin", "prev_state"];

/// What the client format adds in `unsigned`, known only at serving time.
#[derive(Default)]
pub struct Unsigned {
    pub transaction_id: Option<String>,
    pub prev_content: Option<JsonValue>,
    pub prev_sender: Option<String>,
    pub replaces_state: Option<String>,
    pub redacted_because: Option<JsonValue>,
    /// The bundled aggregations (`m.relations`): threads, edits, references.
    pub relations: Option<JsonValue>,
}

/// Converts a stored event into the client-server API's event format.
pub fn client_event(record: &EventRecord, unsigned: Unsigned, now_ms: i64) -> JsonValue {
    let mut object: serde_json::Map<String, JsonValue> =
        serde_json::from_str(&record.pdu).unwrap_or_default();
    for key in FEDERATION_ONLY_KEYS {
        object.remove(key);
    }
    object.insert("event_id".into(), record.event_id.as_str().into());
    object.insert("room_id".into(), record.room_id.as_str().into());

    let mut extra = serde_json::Map::new();
    extra.insert("age".into(), (now_ms - record.origin_server_ts).max(0).into());
    let optional = [
        ("transaction_id", unsigned.transaction_id.map(JsonValue::from)),
        ("prev_content", unsigned.prev_content),
        ("prev_sender", unsigned.prev_sender.map(JsonValue::from)),
        ("replaces_state", unsigned.replaces_state.map(JsonValue::from)),
        ("redacted_because", unsigned.redacted_because),
        ("m.relations", unsigned.relations),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            extra.insert(key.into(), value);
        }
    }
    object.insert("unsigned".into(), JsonValue::Object(extra));
    JsonValue::Object(object)
}

/// The stripped form of a state event shown with invites.
pub fn stripped_state(record: &EventRecord) -> JsonValue {
    let object: serde_json::Map<String, JsonValue> =
        serde_json::from_str(&record.pdu).unwrap_or_default();
    let keep = ["type", "state_key", "sender", "content"];
    JsonValue::Object(object.into_iter().filter(|(key, _)| keep.contains(&key.as_str())).collect())
}

/// Converts JSON into canonical JSON, refusing floats and out-of-range integers.
pub fn to_canonical_object(value: JsonValue) -> Result<CanonicalJsonObject, crate::Error> {
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        Ok(_) => Err(crate::Error::bad_json("Event content must be a JSON object")),
        Err(error) => {
            Err(crate::Error::bad_json(format!("Event content is not canonical JSON: {error}")))
        }
    }
}

/// A sorted map from string keys, for building signed or hashed JSON.
pub type Ordered<T> = BTreeMap<String, T>;

#[cfg(test)]
mod tests {
    use ruma::room_version_rules::RoomVersionRules;
    use serde_json::json;

    use super::*;

    /// Where a test PDU carries `"redacts": "$target"`.
    #[derive(Clone, Copy)]
    enum Key {
        TopLevel,
        Content,
    }

    fn pdu_json(kind: &str, event_id: Option<&str>, key: Key) -> String {
        let mut pdu = json!({
            "room_id": "!room:x",
            "sender": "@alice:x",
            "origin_server_ts": 1,
            "type": kind,
            "content": {},
        });
        if let Some(event_id) = event_id {
            pdu["event_id"] = event_id.into();
        }
        match key {
            Key::TopLevel => pdu["redacts"] = "$target".into(),
            Key::Content => pdu["content"]["redacts"] = "$target".into(),
        }
        pdu.to_string()
    }

    fn event_id() -> OwnedEventId {
        "$event:x".try_into().unwrap()
    }

    #[test]
    fn redacts_is_read_from_where_the_room_version_puts_it() {
        let (v1, v10, v11) = (RoomVersionRules::V1, RoomVersionRules::V10, RoomVersionRules::V11);
        let cases = [
            (&v1, "m.room.redaction", Key::TopLevel, true, "v1 reads the top-level key"),
            (&v10, "m.room.redaction", Key::TopLevel, true, "v10 reads the top-level key"),
            (&v10, "m.room.redaction", Key::Content, false, "in v10 content is only content"),
            (&v11, "m.room.redaction", Key::Content, true, "v11 reads the content key"),
            (&v11, "m.room.redaction", Key::TopLevel, false, "v11 ignores the top-level key"),
            (&v11, "m.room.message", Key::Content, false, "only a redaction redacts"),
            (&v1, "m.room.message", Key::TopLevel, false, "only a redaction redacts"),
        ];
        for (rules, kind, key, redacts, reason) in cases {
            let json = pdu_json(kind, Some(event_id().as_str()), key);
            let pdu = Pdu::parse(event_id(), &json, rules).unwrap();
            let expected = redacts.then(|| OwnedEventId::try_from("$target").unwrap());
            assert_eq!(pdu.redacts, expected, "{reason}");
        }
    }

    #[test]
    fn a_version_1_pdu_must_carry_the_event_id_it_is_known_by() {
        let cases = [
            (Some("$event:x"), true, "the same ID"),
            (Some("$other:x"), false, "another ID"),
            (None, false, "no ID"),
        ];
        for (in_pdu, accepted, reason) in cases {
            let json = pdu_json("m.room.message", in_pdu, Key::Content);
            let result = Pdu::parse(event_id(), &json, &RoomVersionRules::V1);
            assert_eq!(result.is_ok(), accepted, "{reason}");
        }
        let json = pdu_json("m.room.message", None, Key::Content);
        let v3 = Pdu::parse(event_id(), &json, &RoomVersionRules::V3);
        assert!(v3.is_ok(), "from version 3 the PDU holds no event_id");
    }
}
