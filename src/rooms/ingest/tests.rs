//! Events from a synthetic remote server, `remote.test`, with its own ed25519 key, in a room
//! created here through the builder: a remote user joins with a signed join event, then the room
//! forks and the forks are resolved. Runs on the backend `HEARTH_TEST_BACKEND` names.

use std::sync::{Arc, Mutex};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId,
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, hash_and_sign_event, reference_hash},
};
use serde_json::{Value as JsonValue, json, value::RawValue};

use super::*;
use crate::{
    federation::ServerKeys,
    rooms::builder::{ProtoEvent, build_and_append, create_room},
    store::{StateEntry, Store, testing::TestDatabase},
};

const REMOTE: &str = "remote.test";

/// A room on the test backend, created by `@alice:localhost`, that `remote.test` may join.
struct Fixture {
    _db: TestDatabase,
    store: Store,
    keys: ServerKeys,
    remote: Arc<Ed25519KeyPair>,
    room_id: OwnedRoomId,
    rules: RoomVersionRules,
    /// The join of `@bob:remote.test` (power 50), the base of every fork below.
    bob_join: OwnedEventId,
}

fn alice() -> OwnedUserId {
    "@alice:localhost".try_into().unwrap()
}

fn bob() -> OwnedUserId {
    "@bob:remote.test".try_into().unwrap()
}

fn carol() -> OwnedUserId {
    "@carol:remote.test".try_into().unwrap()
}

fn remote_key_pair() -> Ed25519KeyPair {
    Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "1".into()).unwrap()
}

fn key_map(key_pair: &Ed25519KeyPair) -> PublicKeyMap {
    let key = Base64::new(key_pair.public_key().to_vec());
    PublicKeyMap::from([(REMOTE.to_owned(), [("ed25519:1".to_owned(), key)].into())])
}

/// Runs `f` in a room job and hands back what it returned; a refusal is the job's error.
async fn in_job<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&dyn RoomTxn) -> Result<T> + Send + 'static,
) -> Result<T> {
    let slot = Arc::new(Mutex::new(None));
    let found = slot.clone();
    store
        .write_rooms(Box::new(move |txn| {
            *found.lock().unwrap() = Some(f(txn)?);
            Ok(Vec::new())
        }))
        .await?;
    let value = slot.lock().unwrap().take();
    Ok(value.expect("the job ran"))
}

impl Fixture {
    /// Creates the room (public, bob at power 50 and carol at 100 in advance) and lets bob join
    /// through a signed join event from `remote.test`.
    async fn new(version: RoomVersionId) -> Self {
        let db = TestDatabase::new().await;
        let store = db.open().await;
        let name = crate::config::parse_server_name("localhost").unwrap();
        let keys = ServerKeys::load_or_generate(db.dir(), name).unwrap();
        let rules = version.rules().unwrap();
        let job_keys = keys.clone();
        let room_id =
            in_job(&store, move |txn| create_test_room(txn, &job_keys, &version)).await.unwrap();
        let mut fixture = Self {
            _db: db,
            store,
            keys,
            remote: Arc::new(remote_key_pair()),
            room_id,
            rules,
            bob_join: "$placeholder".try_into().unwrap(),
        };
        let (join, pdu) = fixture.join(&bob()).await;
        fixture.ingest(pdu).await.expect("bob's join is accepted");
        fixture.bob_join = join;
        fixture
    }

    /// A signed join of a `remote.test` user on the current state.
    async fn join(&self, user: &OwnedUserId) -> (OwnedEventId, Box<RawValue>) {
        let prev = self.extremities().await;
        let content = json!({ "membership": "join" });
        self.remote_event(user, "m.room.member", Some(user.as_str()), content, &prev, 0).await
    }

    /// A local event built and appended by the builder.
    async fn local(
        &self,
        sender: OwnedUserId,
        event_type: &str,
        state_key: Option<&str>,
        content: JsonValue,
    ) -> Result<OwnedEventId> {
        let proto = ProtoEvent {
            room_id: self.room_id.clone(),
            sender,
            event_type: event_type.to_owned(),
            state_key: state_key.map(ToOwned::to_owned),
            content,
            redacts: None,
            transaction: None,
        };
        let keys = self.keys.clone();
        in_job(&self.store, move |txn| Ok(build_and_append(txn, &keys, proto)?.event_id)).await
    }

    /// A PDU from `remote.test` on `prev`, signed with its key; its auth events are chosen from
    /// the state before it, as the remote server would. `ts_offset` moves its timestamp.
    async fn remote_event(
        &self,
        sender: &OwnedUserId,
        event_type: &str,
        state_key: Option<&str>,
        content: JsonValue,
        prev: &[OwnedEventId],
        ts_offset: i64,
    ) -> (OwnedEventId, Box<RawValue>) {
        let before = self.state_before(prev).await;
        let mut object = CanonicalJsonObject::new();
        let auth = self.auth_events(&before, sender, event_type, state_key, &content);
        let mut depth = 0;
        for id in prev {
            depth = depth.max(self.store.event(id).await.unwrap().unwrap().depth);
        }
        let value = json!({
            "room_id": self.room_id,
            "sender": sender,
            "type": event_type,
            "content": content,
            "origin_server_ts": now_ms() + ts_offset,
            "depth": depth + 1,
            "prev_events": self.references(prev).await,
            "auth_events": self.references(&auth).await,
        });
        let CanonicalJsonValue::Object(fields) = CanonicalJsonValue::try_from(value).unwrap()
        else {
            unreachable!("an object")
        };
        object.extend(fields);
        if let Some(state_key) = state_key {
            object.insert("state_key".into(), state_key.into());
        }
        if self.rules.event_id_format == EventIdFormatVersion::V1 {
            let event_id = ruma::EventId::new_v1(REMOTE.try_into().unwrap());
            object.insert("event_id".into(), event_id.as_str().into());
        }
        hash_and_sign_event(REMOTE, &*self.remote, &mut object, &self.rules.redaction).unwrap();
        let event_id = self.event_id(&object);
        let json = serde_json::to_string(&object).unwrap();
        (event_id, RawValue::from_string(json).unwrap())
    }

    /// References in the room version's format: `[ID, {"sha256": reference hash}]` pairs in
    /// versions 1 and 2, bare IDs later.
    async fn references(&self, ids: &[OwnedEventId]) -> JsonValue {
        if self.rules.event_id_format != EventIdFormatVersion::V1 {
            return json!(ids);
        }
        let mut pairs = Vec::new();
        for id in ids {
            let record = self.store.event(id).await.unwrap().unwrap();
            let stored: CanonicalJsonObject = serde_json::from_str(&record.pdu).unwrap();
            let hash = reference_hash(&stored, &self.rules).unwrap();
            pairs.push(json!([id, { "sha256": hash }]));
        }
        JsonValue::Array(pairs)
    }

    fn event_id(&self, object: &CanonicalJsonObject) -> OwnedEventId {
        if let Some(CanonicalJsonValue::String(id)) = object.get("event_id") {
            return id.as_str().try_into().unwrap();
        }
        let hash = reference_hash(object, &self.rules).unwrap();
        ruma::EventId::new_v2_or_v3(&hash).unwrap()
    }

    fn auth_events(
        &self,
        before: &StateMap,
        sender: &OwnedUserId,
        event_type: &str,
        state_key: Option<&str>,
        content: &JsonValue,
    ) -> Vec<OwnedEventId> {
        let content = serde_json::value::to_raw_value(content).unwrap();
        let types = state_res::auth_types_for_event(
            &event_type.into(),
            sender,
            state_key,
            &content,
            &self.rules.authorization,
        )
        .unwrap();
        types
            .into_iter()
            .filter_map(|(kind, key)| before.get(&(kind.to_string(), key)).cloned())
            .collect()
    }

    async fn ingest(&self, pdu: Box<RawValue>) -> Result<Ingested> {
        let (keys, room_id) = (key_map(&self.remote), self.room_id.clone());
        in_job(&self.store, move |txn| ingest_pdu(txn, &keys, &room_id, &pdu)).await
    }

    async fn state_before(&self, prev: &[OwnedEventId]) -> StateMap {
        let (rules, room_id, prev) = (self.rules.clone(), self.room_id.clone(), prev.to_vec());
        in_job(&self.store, move |txn| Ok(state::state_before(txn, &rules, &room_id, &prev)?.state))
            .await
            .unwrap()
    }

    async fn state_after(&self, event_id: &OwnedEventId) -> StateMap {
        let event_id = event_id.clone();
        in_job(&self.store, move |txn| state::state_after_event(txn, &event_id)).await.unwrap()
    }

    async fn current(&self) -> StateMap {
        let room_id = self.room_id.clone();
        in_job(&self.store, move |txn| Ok(txn.current_state_map(&room_id)?)).await.unwrap()
    }

    async fn extremities(&self) -> Vec<OwnedEventId> {
        let room_id = self.room_id.clone();
        let found = in_job(&self.store, move |txn| Ok(txn.forward_extremities(&room_id)?));
        let mut ids: Vec<OwnedEventId> =
            found.await.unwrap().into_iter().map(|e| e.event_id).collect();
        ids.sort();
        ids
    }

    async fn current_event(&self, event_type: &str, state_key: &str) -> Option<OwnedEventId> {
        let found = self.store.current_state_event(&self.room_id, event_type, state_key).await;
        found.unwrap().map(|e| e.event_id)
    }
}

/// Create, alice's join, power levels (bob 50, carol 100), public join rules.
fn create_test_room(
    txn: &dyn RoomTxn,
    keys: &ServerKeys,
    version: &RoomVersionId,
) -> Result<OwnedRoomId> {
    let rules = rules_for(version)?;
    let mut create_content = json!({ "room_version": version.as_str() });
    if !rules.authorization.use_room_create_sender {
        create_content["creator"] = alice().as_str().into();
    }
    let local_room_id = (!rules.authorization.room_create_event_id_as_room_id)
        .then(|| RoomId::new_v1(&keys.server_name));
    let (room_id, _) = create_room(txn, keys, version, &alice(), local_room_id, create_content)?;
    let mut users = serde_json::Map::new();
    if !rules.authorization.explicitly_privilege_room_creators {
        users.insert(alice().to_string(), 100.into());
    }
    users.insert(bob().to_string(), 50.into());
    users.insert(carol().to_string(), 100.into());
    let steps = [
        ("m.room.member", alice().to_string(), json!({ "membership": "join" })),
        ("m.room.power_levels", String::new(), json!({ "users": users })),
        ("m.room.join_rules", String::new(), json!({ "join_rule": "public" })),
    ];
    for (event_type, state_key, content) in steps {
        let proto = ProtoEvent {
            room_id: room_id.clone(),
            sender: alice(),
            event_type: event_type.to_owned(),
            state_key: Some(state_key),
            content,
            redacts: None,
            transaction: None,
        };
        build_and_append(txn, keys, proto)?;
    }
    Ok(room_id)
}

fn now_ms() -> i64 {
    i64::from(ruma::MilliSecondsSinceUnixEpoch::now().get())
}

fn topic(body: &str) -> JsonValue {
    json!({ "topic": body })
}

fn message(body: &str) -> JsonValue {
    json!({ "msgtype": "m.text", "body": body })
}

fn key(event_type: &str, state_key: &str) -> (String, String) {
    (event_type.to_owned(), state_key.to_owned())
}

fn client_message(result: &Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Client { message, .. }) => message.clone(),
        other => panic!("expected a client error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_remote_user_joins_through_a_signed_join_event() {
    let room = Fixture::new(RoomVersionId::V12).await;
    let membership = room.store.membership(&room.room_id, &bob(), None).await.unwrap().unwrap();
    assert_eq!((membership.membership.as_str(), &membership.event_id), ("join", &room.bob_join));
    assert_eq!(room.extremities().await, vec![room.bob_join.clone()]);
    let after = room.state_after(&room.bob_join).await;
    assert_eq!(after.get(&key("m.room.member", bob().as_str())), Some(&room.bob_join));
    assert_eq!(after, room.current().await, "a linear room's current state is its last event's");
}

/// Two remote topics on the same parent: resolution orders two non-power events of one mainline
/// position by timestamp, so the later one wins, whichever arrived first.
async fn concurrent_topics_resolve_to_the_later_one(version: RoomVersionId, later_first: bool) {
    let room = Fixture::new(version.clone()).await;
    let (carol_join, pdu) = room.join(&carol()).await;
    room.ingest(pdu).await.unwrap();
    let base = vec![carol_join];
    let (early, early_pdu) =
        room.remote_event(&bob(), "m.room.topic", Some(""), topic("early"), &base, 1_000).await;
    let (late, late_pdu) =
        room.remote_event(&carol(), "m.room.topic", Some(""), topic("late"), &base, 2_000).await;
    let order = if later_first { [late_pdu, early_pdu] } else { [early_pdu, late_pdu] };
    for pdu in order {
        assert!(matches!(room.ingest(pdu).await.unwrap(), Ingested::Appended(_)));
    }

    let mut both = vec![early.clone(), late.clone()];
    both.sort();
    assert_eq!(room.extremities().await, both, "{version}: the room forked");
    let current = room.current().await;
    assert_eq!(current.get(&key("m.room.topic", "")), Some(&late), "{version}: later topic wins");
    let states = vec![room.state_after(&early).await, room.state_after(&late).await];
    let (rules, room_id) = (room.rules.clone(), room.room_id.clone());
    let resolved = in_job(&room.store, move |txn| state::resolve(txn, &rules, &room_id, &states));
    assert_eq!(current, resolved.await.unwrap(), "{version}: current state is the resolution");
    assert_eq!(room.current_event("m.room.topic", "").await, Some(late.clone()));
    let history = room.store.state_key_history(&room.room_id, "m.room.topic", "").await.unwrap();
    assert_eq!(history.last().map(|e| &e.event_id), Some(&late), "{version}: sync sees it");
}

#[tokio::test]
async fn concurrent_topics_resolve_the_same_whichever_arrives_first_in_version_12() {
    concurrent_topics_resolve_to_the_later_one(RoomVersionId::V12, false).await;
    concurrent_topics_resolve_to_the_later_one(RoomVersionId::V12, true).await;
}

#[tokio::test]
async fn concurrent_topics_resolve_the_same_whichever_arrives_first_in_version_10() {
    concurrent_topics_resolve_to_the_later_one(RoomVersionId::V10, false).await;
    concurrent_topics_resolve_to_the_later_one(RoomVersionId::V10, true).await;
}

#[tokio::test]
async fn a_local_event_after_a_fork_references_both_extremities_and_has_the_resolved_state() {
    let room = Fixture::new(RoomVersionId::V12).await;
    let base = vec![room.bob_join.clone()];
    let local = room.local(alice(), "m.room.topic", Some(""), topic("local")).await.unwrap();
    let (remote, pdu) =
        room.remote_event(&bob(), "m.room.name", Some(""), json!({"name": "R"}), &base, 0).await;
    room.ingest(pdu).await.unwrap();
    let resolved = room.current().await;
    assert_eq!(resolved.get(&key("m.room.topic", "")), Some(&local));
    assert_eq!(resolved.get(&key("m.room.name", "")), Some(&remote), "no conflict: both kept");

    let merge = room.local(alice(), "m.room.message", None, message("hello")).await.unwrap();
    let record = room.store.event(&merge).await.unwrap().unwrap();
    let pdu = Pdu::from_record(&record, &room.rules).unwrap();
    let mut prev = pdu.prev_events.clone();
    prev.sort();
    let mut expected = vec![local, remote];
    expected.sort();
    assert_eq!(prev, expected, "the new event references both extremities");
    assert_eq!(room.extremities().await, vec![merge.clone()], "and is the only one left");
    assert_eq!(room.state_after(&merge).await, resolved, "its state is the resolved one");
    assert_eq!(room.current().await, resolved);

    let topic_after = room.local(alice(), "m.room.topic", Some(""), topic("again")).await.unwrap();
    assert_eq!(room.current_event("m.room.topic", "").await, Some(topic_after));
}

/// The admin bans bob here; bob's state event on the parent of the ban arrives afterwards: it
/// passes against the state before it but not against the current state, so it is refused (the
/// spec's soft fail) and the ban holds.
#[tokio::test]
async fn a_local_ban_holds_against_a_concurrent_state_event_of_the_banned_user() {
    let room = Fixture::new(RoomVersionId::V12).await;
    let base = vec![room.bob_join.clone()];
    let ban = json!({ "membership": "ban" });
    let ban_id = room.local(alice(), "m.room.member", Some(bob().as_str()), ban).await.unwrap();
    let (late, pdu) =
        room.remote_event(&bob(), "m.room.name", Some(""), json!({"name": "mine"}), &base, 0).await;
    let refused = room.ingest(pdu).await;
    assert!(client_message(&refused).contains("current state (soft fail)"), "{refused:?}");
    assert!(room.store.event(&late).await.unwrap().is_none(), "nothing stored");
    assert_eq!(room.current_event("m.room.member", bob().as_str()).await, Some(ban_id));
    assert_eq!(room.current_event("m.room.name", "").await, None);
}

/// A remote admin (carol) bans bob while bob, on the same parent, sets the room name and that
/// arrives first. Resolution applies the ban (a power event) first; bob's name then fails its auth
/// check and leaves the current state. Bob's next event on his own branch is refused.
#[tokio::test]
async fn a_remote_ban_wins_resolution_over_the_banned_users_concurrent_state_event() {
    let room = Fixture::new(RoomVersionId::V12).await;
    let (carol_join, pdu) = room.join(&carol()).await;
    room.ingest(pdu).await.unwrap();
    let base = vec![carol_join];
    let (name, name_pdu) =
        room.remote_event(&bob(), "m.room.name", Some(""), json!({"name": "mine"}), &base, 0).await;
    let ban = json!({ "membership": "ban" });
    let (ban_id, ban_pdu) =
        room.remote_event(&carol(), "m.room.member", Some(bob().as_str()), ban, &base, 0).await;
    room.ingest(name_pdu).await.unwrap();
    assert_eq!(room.current_event("m.room.name", "").await, Some(name.clone()));
    room.ingest(ban_pdu).await.unwrap();

    assert_eq!(room.current_event("m.room.member", bob().as_str()).await, Some(ban_id.clone()));
    assert_eq!(room.current_event("m.room.name", "").await, None, "bob's name is resolved away");
    let bob_now = room.store.membership(&room.room_id, &bob(), None).await.unwrap().unwrap();
    assert_eq!(bob_now.membership, "ban");
    let members = room.store.members_with(&room.room_id, "join").await.unwrap();
    assert_eq!(members, vec![alice(), carol()]);

    // Carol goes on from bob's branch, whose state has bob joined and his name: the resolution
    // with the ban's branch still drops both.
    let (carol_topic, pdu) = room
        .remote_event(
            &carol(),
            "m.room.topic",
            Some(""),
            topic("c"),
            std::slice::from_ref(&name),
            0,
        )
        .await;
    room.ingest(pdu).await.unwrap();
    assert_eq!(room.current_event("m.room.topic", "").await, Some(carol_topic));
    assert_eq!(room.current_event("m.room.member", bob().as_str()).await, Some(ban_id.clone()));
    assert_eq!(room.current_event("m.room.name", "").await, None);

    let (later, pdu) =
        room.remote_event(&bob(), "m.room.topic", Some(""), topic("still here"), &[name], 0).await;
    let refused = room.ingest(pdu).await;
    assert!(client_message(&refused).contains("soft fail"), "{refused:?}");
    assert!(room.store.event(&later).await.unwrap().is_none());
    assert_eq!(room.current_event("m.room.member", bob().as_str()).await, Some(ban_id));
}

#[tokio::test]
async fn a_remote_event_with_two_prev_events_is_placed_on_their_resolution() {
    let room = Fixture::new(RoomVersionId::V12).await;
    let base = vec![room.bob_join.clone()];
    let local = room.local(alice(), "m.room.topic", Some(""), topic("local")).await.unwrap();
    let (name, pdu) =
        room.remote_event(&bob(), "m.room.name", Some(""), json!({"name": "R"}), &base, 0).await;
    room.ingest(pdu).await.unwrap();
    let resolved = room.current().await;

    let prev = vec![local, name];
    let (merge, pdu) =
        room.remote_event(&bob(), "m.room.message", None, message("merged"), &prev, 0).await;
    assert!(matches!(room.ingest(pdu).await.unwrap(), Ingested::Appended(_)));
    assert_eq!(room.extremities().await, vec![merge.clone()]);
    assert_eq!(room.state_after(&merge).await, resolved);
    assert_eq!(room.current().await, resolved);
}

#[tokio::test]
async fn bad_pdus_are_refused_with_a_clear_error_and_nothing_is_stored() {
    let room = Fixture::new(RoomVersionId::V12).await;
    let base = vec![room.bob_join.clone()];
    let ok = |body: &str| message(body);

    let (wrong_key, pdu) = {
        let other = Fixture::new(RoomVersionId::V12).await;
        // Signed by a key remote.test does not have: the same event under another fixture's key.
        let mut object: CanonicalJsonObject = {
            let (_, pdu) =
                room.remote_event(&bob(), "m.room.message", None, ok("a"), &base, 0).await;
            serde_json::from_str(pdu.get()).unwrap()
        };
        object.remove("signatures");
        object.remove("hashes");
        hash_and_sign_event(REMOTE, &*other.remote, &mut object, &room.rules.redaction).unwrap();
        (room.event_id(&object), RawValue::from_string(serde_json::to_string(&object).unwrap()))
    };
    let (bad_hash, bad_hash_pdu) = {
        let (_, pdu) = room.remote_event(&bob(), "m.room.message", None, ok("b"), &base, 0).await;
        let mut object: CanonicalJsonObject = serde_json::from_str(pdu.get()).unwrap();
        let content = json!({"msgtype": "m.text", "body": "changed on the way"});
        object.insert("content".into(), CanonicalJsonValue::try_from(content).unwrap());
        (room.event_id(&object), RawValue::from_string(serde_json::to_string(&object).unwrap()))
    };
    let unknown: OwnedEventId = "$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".try_into().unwrap();
    let (orphan, orphan_pdu) = {
        let (_, pdu) = room.remote_event(&bob(), "m.room.message", None, ok("c"), &base, 0).await;
        let mut object: CanonicalJsonObject = serde_json::from_str(pdu.get()).unwrap();
        object
            .insert("prev_events".into(), vec![CanonicalJsonValue::from(unknown.as_str())].into());
        object.remove("signatures");
        object.remove("hashes");
        hash_and_sign_event(REMOTE, &*room.remote, &mut object, &room.rules.redaction).unwrap();
        (room.event_id(&object), RawValue::from_string(serde_json::to_string(&object).unwrap()))
    };
    // Bob (power 50) may not change the power levels (100 needed).
    let (unauthorized, unauthorized_pdu) = room
        .remote_event(&bob(), "m.room.power_levels", Some(""), json!({"users": {}}), &base, 0)
        .await;
    let dave: OwnedUserId = "@dave:remote.test".try_into().unwrap();
    let (stranger, stranger_pdu) =
        room.remote_event(&dave, "m.room.message", None, ok("not joined"), &base, 0).await;

    let cases = [
        (wrong_key, pdu.unwrap(), "signatures", "signed with a key remote.test does not hold"),
        (bad_hash, bad_hash_pdu.unwrap(), "content hash", "content changed after signing"),
        (orphan, orphan_pdu.unwrap(), "Unknown prev events", "its prev event was never seen"),
        (unauthorized, unauthorized_pdu, "not authorized", "bob lacks the power for this"),
        (stranger, stranger_pdu, "not authorized", "dave never joined"),
    ];
    let position = room.store.current_position().await.unwrap();
    for (event_id, pdu, expected, reason) in cases {
        let refused = room.ingest(pdu).await;
        let message = client_message(&refused);
        assert!(message.contains(expected), "{reason}: {message}");
        assert!(room.store.event(&event_id).await.unwrap().is_none(), "{reason}: not stored");
    }
    assert_eq!(room.store.current_position().await.unwrap(), position, "nothing was appended");
    assert_eq!(room.extremities().await, base);
}

#[tokio::test]
async fn an_event_received_twice_is_stored_once() {
    let room = Fixture::new(RoomVersionId::V12).await;
    let base = vec![room.bob_join.clone()];
    let (event_id, pdu) =
        room.remote_event(&bob(), "m.room.topic", Some(""), topic("once"), &base, 0).await;
    let copy = RawValue::from_string(pdu.get().to_owned()).unwrap();
    assert!(matches!(room.ingest(pdu).await.unwrap(), Ingested::Appended(_)));
    let position = room.store.current_position().await.unwrap();
    let again = room.ingest(copy).await.unwrap();
    assert!(matches!(&again, Ingested::AlreadyKnown(id) if *id == event_id), "{again:?}");
    assert_eq!(room.store.current_position().await.unwrap(), position);
    assert_eq!(room.extremities().await, vec![event_id]);
}

/// The fast path of a local send: a message stays in its prev event's state group, a state event
/// adds one group holding one entry on top of it.
#[tokio::test]
async fn a_local_message_adds_no_state_group_and_a_state_event_one_entry() {
    let room = Fixture::new(RoomVersionId::V12).await;
    let group_of = |event_id: OwnedEventId| {
        let store = room.store.clone();
        async move {
            in_job(&store, move |txn| Ok(txn.event_state_group(&event_id)?.unwrap())).await.unwrap()
        }
    };
    let join_group = group_of(room.bob_join.clone()).await;
    let message = room.local(alice(), "m.room.message", None, message("hi")).await.unwrap();
    assert_eq!(group_of(message).await, join_group);

    let topic = room.local(alice(), "m.room.topic", Some(""), topic("t")).await.unwrap();
    let topic_group = group_of(topic.clone()).await;
    let position = room.store.event(&topic).await.unwrap().unwrap().stream_position;
    assert_eq!(topic_group, position, "a new group is numbered with its event's position");
    let (delta, parent) = in_job(&room.store, move |txn| {
        Ok((txn.state_group_delta(topic_group)?.unwrap(), txn.state_group_delta(join_group)?))
    })
    .await
    .unwrap();
    assert_eq!(delta.parent, Some(join_group));
    assert_eq!(delta.chain_length, parent.unwrap().chain_length + 1);
    let entry = StateEntry {
        event_type: "m.room.topic".into(),
        state_key: String::new(),
        event_id: Some(topic),
    };
    assert_eq!(delta.entries, vec![entry]);
}

/// Room version 1 resolves forks with the first state resolution algorithm, which ruma does not
/// implement: its events are ingested while the room stays linear, and one that forks it is
/// refused with that reason.
#[tokio::test]
async fn a_fork_of_a_version_1_room_is_refused_for_want_of_state_resolution_v1() {
    let room = Fixture::new(RoomVersionId::V1).await;
    assert_eq!(room.extremities().await, vec![room.bob_join.clone()], "bob joined a v1 room");
    let base = vec![room.bob_join.clone()];
    room.local(alice(), "m.room.topic", Some(""), topic("local")).await.unwrap();
    let (fork, pdu) =
        room.remote_event(&bob(), "m.room.name", Some(""), json!({"name": "R"}), &base, 0).await;
    let refused = room.ingest(pdu).await;
    assert!(client_message(&refused).contains("state resolution v1"), "{refused:?}");
    assert!(room.store.event(&fork).await.unwrap().is_none());
}
