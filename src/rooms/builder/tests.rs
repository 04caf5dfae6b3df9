//! Tests of the builder against a real SQLite store: every room version ruma knows gets a small
//! room built through the same path as local events, and its stored PDUs are checked with ruma's
//! own format, hash and signature checks.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use ruma::{
    RoomId,
    serde::Base64,
    signatures::{PublicKeyMap, Verified, verify_event},
};
use serde_json::json;

use super::*;
use crate::store::{Store, testing::TestDatabase};

/// Two create events alike in every byte (one user, one millisecond, one content) would
/// name the same version 12 room: the second must get a room ID of its own.
#[tokio::test]
async fn identical_create_events_get_distinct_room_ids() {
    let (_db, store, keys) = setup().await;
    let version = RoomVersionId::V12;
    let rules = rules_for(&version).unwrap();
    let proto = ProtoEvent {
        room_id: "!placeholder:x".try_into().unwrap(),
        sender: alice(),
        event_type: TimelineEventType::RoomCreate.to_string(),
        state_key: Some(String::new()),
        content: json!({ "room_version": "12" }),
        redacts: None,
        transaction: None,
    };
    let mut object = base_object(&proto, &rules, 1).unwrap();
    object.remove("room_id");
    object.insert("prev_events".into(), CanonicalJsonValue::Array(Vec::new()));
    object.insert("auth_events".into(), CanonicalJsonValue::Array(Vec::new()));

    let room_ids = Arc::new(Mutex::new(Vec::new()));
    let found = room_ids.clone();
    let job = move |txn: &dyn RoomTxn| {
        for _ in 0..2 {
            let (_, _, room_id) = unique_create_event(txn, object.clone(), &keys, &rules, None)?;
            txn.create_room(&room_id, &version, 0)?;
            found.lock().unwrap().push(room_id);
        }
        Ok(Vec::new())
    };
    store.write_rooms(Box::new(job)).await.unwrap();
    let room_ids = room_ids.lock().unwrap();
    assert_eq!(room_ids.len(), 2);
    assert_ne!(room_ids[0], room_ids[1]);
}

macro_rules! room_version_tests {
    ($($name:ident: $version:ident,)*) => {$(
        #[tokio::test]
        async fn $name() {
            check_small_room(RoomVersionId::$version).await;
        }
    )*};
}

room_version_tests! {
    version_1_room_holds_valid_pdus_and_applies_its_redaction: V1,
    version_2_room_holds_valid_pdus_and_applies_its_redaction: V2,
    version_3_room_holds_valid_pdus_and_applies_its_redaction: V3,
    version_4_room_holds_valid_pdus_and_applies_its_redaction: V4,
    version_5_room_holds_valid_pdus_and_applies_its_redaction: V5,
    version_6_room_holds_valid_pdus_and_applies_its_redaction: V6,
    version_7_room_holds_valid_pdus_and_applies_its_redaction: V7,
    version_8_room_holds_valid_pdus_and_applies_its_redaction: V8,
    version_9_room_holds_valid_pdus_and_applies_its_redaction: V9,
    version_10_room_holds_valid_pdus_and_applies_its_redaction: V10,
    version_11_room_holds_valid_pdus_and_applies_its_redaction: V11,
    version_12_room_holds_valid_pdus_and_applies_its_redaction: V12,
}

/// Builds the small room and checks every stored PDU: its format, hashes and signature, its
/// event ID, its references, and the redaction of the message.
async fn check_small_room(version: RoomVersionId) {
    let (_db, store, keys) = setup().await;
    let rules = rules_for(&version).unwrap();
    let job_keys = keys.clone();
    let job_version = version.clone();
    let job = move |txn: &dyn RoomTxn| build_small_room(txn, &job_keys, &job_version);
    let appended = store.write_rooms(Box::new(job)).await.unwrap();
    let ids: Vec<OwnedEventId> = appended.into_iter().map(|e| e.event_id).collect();
    let records = store.events(&ids).await.unwrap();
    assert_eq!(records.len(), 6, "{version}: every event is stored");
    let (message, redaction) = (&records[4], &records[5]);

    for (index, record) in records.iter().enumerate() {
        let object = canonical(record);
        let what = format!("{version}, event {index} ({})", record.event_type);
        state_res::check_pdu_format(&object, &rules.event_format)
            .unwrap_or_else(|e| panic!("{what}: check_pdu_format refused it: {e}"));
        let verified = verify_event(&public_keys(&keys), &object, &rules)
            .unwrap_or_else(|e| panic!("{what}: the signature does not verify: {e}"));
        // A redacted event keeps its signature but no longer matches its content hash.
        let expected = if index == 4 { Verified::Signatures } else { Verified::All };
        assert_eq!(verified, expected, "{what}: hash check");
        assert_event_id(record, &object, &rules, &keys, &what);
        let previous = index.checked_sub(1).map(|p| records[p].event_id.clone());
        assert_references(&store, &object, &rules, previous, &what).await;
    }
    assert_redacted(message, redaction, &rules, &version);
}

/// Create, the creator's join, power levels, join rules, a message and its redaction, appended
/// in one writer job through `create_room` and `build_and_append`.
fn build_small_room(
    txn: &dyn RoomTxn,
    keys: &ServerKeys,
    version: &RoomVersionId,
) -> Result<Vec<AppendedEvent>> {
    let rules = rules_for(version)?;
    let creator = alice();
    let mut create_content = json!({ "room_version": version.as_str() });
    if !rules.authorization.use_room_create_sender {
        create_content["creator"] = creator.as_str().into();
    }
    let local_room_id = (!rules.authorization.room_create_event_id_as_room_id)
        .then(|| RoomId::new_v1(&keys.server_name));
    let (room_id, create) =
        create_room(txn, keys, version, &creator, local_room_id, create_content)?;

    let mut users = serde_json::Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(creator.to_string(), 100.into());
    }
    let steps = [
        ("m.room.member", Some(creator.as_str()), json!({ "membership": "join" }), None),
        ("m.room.power_levels", Some(""), json!({ "users": users, "redact": 50 }), None),
        ("m.room.join_rules", Some(""), json!({ "join_rule": "public" }), None),
        ("m.room.message", None, json!({ "msgtype": "m.text", "body": "oops" }), None),
    ];
    let mut appended = vec![create];
    for (event_type, state_key, content, redacts) in steps {
        let proto = proto_event(&room_id, event_type, state_key, content, redacts);
        appended.push(build_and_append(txn, keys, proto)?);
    }
    let message = appended.last().map(|e| e.event_id.clone());
    let proto = proto_event(&room_id, "m.room.redaction", None, json!({ "reason": "x" }), message);
    appended.push(build_and_append(txn, keys, proto)?);
    Ok(appended)
}

/// Versions 1 and 2: a `$opaque:server` ID that the PDU carries. Later: `$` and the reference
/// hash, absent from the PDU.
fn assert_event_id(
    record: &EventRecord,
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
    keys: &ServerKeys,
    what: &str,
) {
    if rules.event_id_format == EventIdFormatVersion::V1 {
        let in_pdu = object.get("event_id").and_then(|v| v.as_str());
        assert_eq!(in_pdu, Some(record.event_id.as_str()), "{what}: event_id in the PDU");
        assert_eq!(record.event_id.server_name(), Some(keys.server_name.as_ref()), "{what}");
    } else {
        assert!(!object.contains_key("event_id"), "{what}: no event_id in the PDU");
        let hash = reference_hash(object, rules).unwrap();
        assert_eq!(record.event_id.as_str(), format!("${hash}"), "{what}: ID is the hash");
    }
}

/// Every reference has the version's format (with the referenced event's reference hash in
/// versions 1 and 2), and `prev_events` names the event built just before.
async fn assert_references(
    store: &Store,
    object: &CanonicalJsonObject,
    rules: &RoomVersionRules,
    previous: Option<OwnedEventId>,
    what: &str,
) {
    let mut prev_ids = Vec::new();
    for key in ["prev_events", "auth_events"] {
        let Some(CanonicalJsonValue::Array(references)) = object.get(key) else {
            panic!("{what}: no {key} array");
        };
        for reference in references {
            let id = referenced_id(store, reference, rules, &format!("{what}, {key}")).await;
            if key == "prev_events" {
                prev_ids.push(id);
            }
        }
    }
    assert_eq!(prev_ids, Vec::from_iter(previous), "{what}: prev_events");
}

/// The ID a reference names, after checking its shape and, for a pair, its hash.
async fn referenced_id(
    store: &Store,
    reference: &CanonicalJsonValue,
    rules: &RoomVersionRules,
    what: &str,
) -> OwnedEventId {
    if rules.events_reference_format != EventsReferenceFormatVersion::V1 {
        let Some(id) = reference.as_str() else { panic!("{what}: {reference:?} is not an ID") };
        return id.try_into().unwrap();
    }
    let CanonicalJsonValue::Array(pair) = reference else {
        panic!("{what}: {reference:?} is not an [ID, hashes] pair");
    };
    let [CanonicalJsonValue::String(id), CanonicalJsonValue::Object(hashes)] = pair.as_slice()
    else {
        panic!("{what}: {reference:?} is not an [ID, hashes] pair");
    };
    let id = OwnedEventId::try_from(id.as_str()).unwrap();
    let referenced = store.event(&id).await.unwrap().expect("the referenced event is stored");
    let expected = reference_hash(&canonical(&referenced), rules).unwrap();
    let sha256 = hashes.get("sha256").and_then(|v| v.as_str());
    assert_eq!(sha256, Some(expected.as_str()), "{what}: hash of {id}");
    assert_eq!(hashes.len(), 1, "{what}: only a sha256 hash");
    id
}

/// The message lost its content, and the redaction names it where its version says.
fn assert_redacted(
    message: &EventRecord,
    redaction: &EventRecord,
    rules: &RoomVersionRules,
    version: &RoomVersionId,
) {
    assert_eq!(redaction.event_type, "m.room.redaction");
    assert_eq!(message.redacted_by.as_ref(), Some(&redaction.event_id), "{version}: redacted_by");
    let content = canonical(message).get("content").cloned();
    assert_eq!(content, Some(CanonicalJsonValue::Object(Default::default())), "{version}");

    let object = canonical(redaction);
    let top_level = object.get("redacts").and_then(|v| v.as_str());
    let in_content = object
        .get("content")
        .and_then(|c| c.as_object())
        .and_then(|c| c.get("redacts"))
        .and_then(|v| v.as_str());
    let target = Some(message.event_id.as_str());
    let expected =
        if rules.redaction.content_field_redacts { (None, target) } else { (target, None) };
    assert_eq!((top_level, in_content), expected, "{version}: where `redacts` is");
    let parsed = Pdu::from_record(redaction, rules).unwrap();
    assert_eq!(parsed.redacts.as_ref(), Some(&message.event_id), "{version}: parsed redacts");
}

/// A store on the backend under test, and a signing key beside it.
async fn setup() -> (TestDatabase, Store, ServerKeys) {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let name = crate::config::parse_server_name("localhost").unwrap();
    let keys = ServerKeys::load_or_generate(db.dir(), name).unwrap();
    (db, store, keys)
}

fn public_keys(keys: &ServerKeys) -> PublicKeyMap {
    let key = Base64::new(keys.key_pair.public_key().to_vec());
    let set = BTreeMap::from([(keys.key_id(), key)]);
    BTreeMap::from([(keys.server_name.to_string(), set)])
}

fn proto_event(
    room_id: &OwnedRoomId,
    event_type: &str,
    state_key: Option<&str>,
    content: JsonValue,
    redacts: Option<OwnedEventId>,
) -> ProtoEvent {
    ProtoEvent {
        room_id: room_id.clone(),
        sender: alice(),
        event_type: event_type.to_owned(),
        state_key: state_key.map(ToOwned::to_owned),
        content,
        redacts,
        transaction: None,
    }
}

fn canonical(record: &EventRecord) -> CanonicalJsonObject {
    serde_json::from_str(&record.pdu).unwrap()
}

fn alice() -> OwnedUserId {
    "@alice:localhost".try_into().unwrap()
}
