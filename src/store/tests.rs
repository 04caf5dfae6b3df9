//! The storage suite both backends pass: it speaks only the storage API, and runs on the
//! backend `HEARTH_TEST_BACKEND` names (see [`super::testing`]).
//!
//! Room events are appended with hand-made PDUs here: what matters is what the store keeps and
//! returns. The event graph itself is tested through the builder in `rooms`.

use std::sync::Arc;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::value::to_raw_value;

use super::{
    CurrentStateChange, Direction, NewEvent, NewNotification, NewReceipt, NewSession,
    NewStateGroup, NewUser, NotificationCount, NotificationsQuery, PusherCleanup, PusherRecord,
    RoomEventsQuery, RoomTxn, StateEntry, StateGroupDelta, Store, TransactionKey,
    testing::TestDatabase,
};

fn user(name: &str) -> OwnedUserId {
    OwnedUserId::try_from(format!("@{name}:localhost")).unwrap()
}

fn room(name: &str) -> OwnedRoomId {
    OwnedRoomId::try_from(format!("!{name}:localhost")).unwrap()
}

fn event_id(n: usize) -> OwnedEventId {
    OwnedEventId::try_from(format!("$event{n}")).unwrap()
}

/// A state or message event whose PDU is only a marker: the store does not read PDUs. Its state
/// fields are filled in by [`place_linear`] when it is appended.
fn new_event(n: usize, room_id: &OwnedRoomId, state: Option<(&str, &str)>) -> NewEvent {
    NewEvent {
        event_id: event_id(n),
        room_id: room_id.clone(),
        event_type: state.map_or("m.room.message", |(kind, _)| kind).to_owned(),
        state_key: state.map(|(_, key)| key.to_owned()),
        sender: user("alice"),
        origin_server_ts: 1_000 + n as i64,
        depth: n as i64,
        prev_events: if n > 0 { vec![event_id(n - 1)] } else { Vec::new() },
        pdu: format!("{{\"n\":{n}}}"),
        transaction: None,
        replaces_state: None,
        state_group: NewStateGroup::Existing(0),
        current_state: Vec::new(),
    }
}

/// Gives an event the state of a linear room, as the rooms module does: a message stays in its
/// prev event's group, a state event gets a one-entry delta on it (a snapshot for the first) and
/// becomes the current state of its key.
fn place_linear(txn: &dyn RoomTxn, event: &mut NewEvent) -> super::StoreResult<()> {
    let prev_group = match event.prev_events.first() {
        Some(prev) => txn.event_state_group(prev)?,
        None => None,
    };
    let Some(state_key) = event.state_key.clone() else {
        event.state_group = NewStateGroup::Existing(prev_group.unwrap_or(0));
        return Ok(());
    };
    let chain_length = match prev_group {
        Some(group) => txn.state_group_delta(group)?.map_or(0, |d| d.chain_length + 1),
        None => 0,
    };
    event.replaces_state =
        txn.current_state_event(&event.room_id, &event.event_type, &state_key)?.map(|e| e.event_id);
    let entry = StateEntry {
        event_type: event.event_type.clone(),
        state_key: state_key.clone(),
        event_id: Some(event.event_id.clone()),
    };
    event.state_group = match prev_group {
        Some(group) if chain_length >= super::MAX_STATE_CHAIN => {
            let mut state = super::state_of_group(txn, group)?;
            state.insert((entry.event_type, entry.state_key), event.event_id.clone());
            let entries = state
                .into_iter()
                .map(|((event_type, state_key), id)| StateEntry {
                    event_type,
                    state_key,
                    event_id: Some(id),
                })
                .collect();
            NewStateGroup::New(StateGroupDelta { parent: None, chain_length: 0, entries })
        }
        _ => NewStateGroup::New(StateGroupDelta {
            parent: prev_group,
            chain_length,
            entries: vec![entry],
        }),
    };
    let membership = (event.event_type == "m.room.member").then(|| "join".to_owned());
    event.current_state = vec![CurrentStateChange {
        event_type: event.event_type.clone(),
        state_key,
        event_id: Some(event.event_id.clone()),
        membership,
    }];
    Ok(())
}

/// Creates a room and appends `events` to it in one job.
async fn append(store: &Store, room_id: &OwnedRoomId, events: Vec<NewEvent>) -> Vec<i64> {
    let room_id = room_id.clone();
    let positions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let found = positions.clone();
    let job = move |txn: &dyn RoomTxn| {
        if txn.room_version(&room_id)?.is_none() {
            txn.create_room(&room_id, &RoomVersionId::V12, 0)?;
        }
        for mut event in events {
            place_linear(txn, &mut event)?;
            found.lock().unwrap().push(txn.append_event(event)?);
        }
        Ok(Vec::new())
    };
    store.write_rooms(Box::new(job)).await.unwrap();
    positions.lock().unwrap().clone()
}

#[tokio::test]
async fn concurrent_writes_all_commit_with_distinct_positions() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.bus_append("s", "s.x", &n.to_string()).await })
        })
        .collect();
    let mut sequences = Vec::new();
    for task in tasks {
        sequences.push(task.await.unwrap().unwrap());
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=200).collect::<Vec<i64>>());
    assert_eq!(store.bus_read("s", 190, 100).await.unwrap().len(), 10);
}

#[tokio::test]
async fn a_refused_room_job_keeps_nothing_and_spares_the_others() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let refused = Box::new(|txn: &dyn RoomTxn| {
        txn.create_room(&room("refused"), &RoomVersionId::V12, 0)?;
        Err(crate::Error::forbidden("no"))
    });
    let kept = Box::new(|txn: &dyn RoomTxn| {
        txn.create_room(&room("kept"), &RoomVersionId::V12, 0)?;
        Ok(Vec::new())
    });
    let (refused, kept) = tokio::join!(store.write_rooms(refused), store.write_rooms(kept));
    assert!(matches!(refused, Err(crate::Error::Client { .. })), "{refused:?}");
    assert!(kept.is_ok());
    assert_eq!(store.room_version(&room("refused")).await.unwrap(), None);
    assert_eq!(store.room_version(&room("kept")).await.unwrap(), Some(RoomVersionId::V12));
}

#[tokio::test]
async fn a_panicking_room_job_is_an_error_and_the_writer_survives() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let result = store.write_rooms(Box::new(|_: &dyn RoomTxn| panic!("boom"))).await;
    assert!(matches!(result, Err(crate::Error::Internal(_))));
    assert_eq!(append(&store, &room("r"), vec![new_event(0, &room("r"), None)]).await, vec![1]);
}

#[tokio::test]
async fn state_follows_the_newest_event_per_key_and_keeps_its_history() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    let events = vec![
        new_event(0, &r, Some(("m.room.create", ""))),
        new_event(1, &r, Some(("m.room.member", "@alice:localhost"))),
        new_event(2, &r, Some(("m.room.name", ""))),
        new_event(3, &r, None),
        new_event(4, &r, Some(("m.room.name", ""))),
    ];
    let positions = append(&store, &r, events).await;
    assert_eq!(positions, vec![1, 2, 3, 4, 5]);

    let name = store.current_state_event(&r, "m.room.name", "").await.unwrap().unwrap();
    assert_eq!(
        (name.event_id.clone(), name.replaces_state.clone()),
        (event_id(4), Some(event_id(2)))
    );
    let ids = |events: Vec<super::EventRecord>| -> Vec<OwnedEventId> {
        events.into_iter().map(|e| e.event_id).collect()
    };
    let now = store.current_state(&r).await.unwrap();
    assert_eq!(ids(now), vec![event_id(0), event_id(1), event_id(4)]);
    let before = store.state_at(&r, 3).await.unwrap();
    assert_eq!(ids(before), vec![event_id(0), event_id(1), event_id(2)]);
    let changed = store.state_changes(&r, 2, 5).await.unwrap();
    assert_eq!(ids(changed), vec![event_id(4)], "the newest value of a key changed twice");
    let history = store.state_key_history(&r, "m.room.name", "").await.unwrap();
    assert_eq!(ids(history), vec![event_id(2), event_id(4)]);

    let alice = store.membership(&r, &user("alice"), None).await.unwrap().unwrap();
    assert_eq!((alice.membership.as_str(), alice.stream_position), ("join", 2));
    assert!(store.membership(&r, &user("alice"), Some(1)).await.unwrap().is_none());
    assert_eq!(store.members_with(&r, "join").await.unwrap(), vec![user("alice")]);
    assert_eq!(store.memberships_of(&user("alice")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn room_events_page_both_ways_with_filters() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    let mut events: Vec<NewEvent> = (0..6).map(|n| new_event(n, &r, None)).collect();
    events[2].event_type = "m.reaction".to_owned();
    events[4].event_type = "m.room_x".to_owned();
    append(&store, &r, events).await;
    let query = |direction, from, types: Option<Vec<&str>>, not_types: Vec<&str>| RoomEventsQuery {
        room_id: r.clone(),
        from,
        to: None,
        direction,
        limit: 10,
        types: types.map(|t| t.into_iter().map(str::to_owned).collect()),
        not_types: not_types.into_iter().map(str::to_owned).collect(),
        senders: None,
        not_senders: Vec::new(),
    };
    let positions = |events: Vec<super::EventRecord>| -> Vec<i64> {
        events.into_iter().map(|e| e.stream_position).collect()
    };
    let cases = [
        (query(Direction::Forward, 0, None, vec![]), vec![1, 2, 3, 4, 5, 6], "all, oldest first"),
        (query(Direction::Backward, 5, None, vec![]), vec![4, 3, 2, 1], "before 5, newest first"),
        (query(Direction::Forward, 0, Some(vec!["m.room.*"]), vec![]), vec![1, 2, 4, 6], "glob"),
        (query(Direction::Forward, 0, Some(vec!["m.room_x"]), vec![]), vec![5], "_ is literal"),
        (query(Direction::Forward, 0, None, vec!["m.reaction"]), vec![1, 2, 4, 5, 6], "not"),
    ];
    for (query, expected, why) in cases {
        assert_eq!(positions(store.room_events(query).await.unwrap()), expected, "{why}");
    }
}

#[tokio::test]
async fn long_id_lists_never_reach_a_parameter_limit() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    append(&store, &r, (0..3).map(|n| new_event(n, &r, None)).collect()).await;
    let mut ids: Vec<OwnedEventId> = (0..40_000).map(|n| event_id(n + 10)).collect();
    ids.push(event_id(1));
    let found = store.events(&ids).await.unwrap();
    assert_eq!(found.len(), 1);
    let mut rooms: Vec<OwnedRoomId> = (0..40_000).map(|n| room(&format!("x{n}"))).collect();
    rooms.push(r.clone());
    assert_eq!(store.rooms_changed(&rooms, 0, 3).await.unwrap(), vec![r]);
    let txns = store.transaction_ids(&user("alice"), "D", &ids).await.unwrap();
    assert!(txns.is_empty());
}

#[tokio::test]
async fn transactions_are_scoped_to_device_and_endpoint() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    let key = |device: &str, scope: &str| TransactionKey {
        user_id: user("alice"),
        device_id: device.to_owned(),
        scope: scope.to_owned(),
        txn_id: "t1".to_owned(),
    };
    let mut event = new_event(0, &r, None);
    event.transaction = Some(key("D", "send"));
    append(&store, &r, vec![event]).await;
    assert_eq!(store.transaction_event(&key("D", "send")).await.unwrap(), Some(event_id(0)));
    assert_eq!(store.transaction_event(&key("E", "send")).await.unwrap(), None);
    assert_eq!(store.transaction_event(&key("D", "redact")).await.unwrap(), None);
    let ids = store.transaction_ids(&user("alice"), "D", &[event_id(0)]).await.unwrap();
    assert_eq!(ids.get(&event_id(0)).map(String::as_str), Some("t1"));
}

#[tokio::test]
async fn accounts_sessions_and_account_data_survive_a_restart() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let alice = user("alice");
    let new_user = NewUser {
        user_id: alice.clone(),
        password_hash: Some("hash".into()),
        is_admin: true,
        created_ts: 1,
    };
    assert!(store.create_user(new_user.clone()).await.unwrap());
    assert!(!store.create_user(new_user).await.unwrap(), "a taken user ID");
    let session = NewSession {
        user_id: alice.clone(),
        device_id: "D".into(),
        display_name: Some("phone".into()),
        token_hash: "t".into(),
        created_ts: 2,
    };
    store.create_session(session).await.unwrap();
    let content = to_raw_value(&serde_json::json!({"a": 1})).unwrap();
    let first = store.set_account_data(&alice, None, "m.x", &content).await.unwrap();
    let second = store.set_account_data(&alice, Some(&room("r")), "m.y", &content).await.unwrap();
    assert!(second > first);
    store.bus_ack("s", "c", 5).await.unwrap();
    store.bus_ack("s", "c", 3).await.unwrap();
    drop(store);

    let store = db.open().await;
    let record = store.user(&alice).await.unwrap().unwrap();
    assert!(record.is_admin && !record.deactivated);
    let session = store.session_by_token("t").await.unwrap().unwrap();
    assert_eq!(session.device_id, "D");
    assert_eq!(
        store.device(&alice, "D").await.unwrap().unwrap().display_name.as_deref(),
        Some("phone")
    );
    assert_eq!(store.account_data_since(&alice, first).await.unwrap().len(), 1);
    assert_eq!(store.account_data_since(&alice, 0).await.unwrap().len(), 2);
    assert_eq!(store.bus_acked("s", "c").await.unwrap(), 5, "an acknowledgement never goes back");
    assert!(store.current_position().await.unwrap() >= second);
}

#[tokio::test]
async fn receipts_move_forward_only_and_are_read_by_stream_range() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    let positions = append(&store, &r, (0..3).map(|n| new_event(n, &r, None)).collect()).await;
    let receipt = |n: usize, thread: Option<&str>| super::NewReceipt {
        room_id: r.clone(),
        user_id: user("bob"),
        receipt_type: "m.read".into(),
        thread_id: thread.map(str::to_owned),
        event_id: event_id(n),
        event_position: positions[n],
        ts: 5_000 + n as i64,
    };
    let first = store.set_receipt(receipt(1, None)).await.unwrap().expect("a new receipt");
    assert!(first > positions[2], "a receipt takes a position of its own");
    assert_eq!(store.set_receipt(receipt(0, None)).await.unwrap(), None, "an older event");
    assert_eq!(store.set_receipt(receipt(1, None)).await.unwrap(), None, "the same event");
    // Each thread has its receipt of its own.
    let threaded = store.set_receipt(receipt(0, Some("main"))).await.unwrap().unwrap();
    let second = store.set_receipt(receipt(2, None)).await.unwrap().unwrap();

    let all = store.receipts(std::slice::from_ref(&r), 0, second).await.unwrap();
    let found: Vec<_> =
        all.iter().map(|r| (r.event_id.clone(), r.thread_id.clone(), r.stream_position)).collect();
    assert_eq!(found, [(event_id(0), Some("main".into()), threaded), (event_id(2), None, second)]);
    assert_eq!(all[1].ts, 5_002);
    let newer = store.receipts(std::slice::from_ref(&r), threaded, second).await.unwrap();
    assert_eq!(newer.len(), 1);
    assert!(store.receipts(&[room("other")], 0, second).await.unwrap().is_empty());
    // Many rooms at once stay below the parameter limit.
    let mut rooms: Vec<OwnedRoomId> = (0..2_000).map(|n| room(&format!("x{n}"))).collect();
    rooms.push(r.clone());
    assert_eq!(store.receipts(&rooms, 0, second).await.unwrap().len(), 2);

    // Kept across a restart.
    drop(store);
    let store = db.open().await;
    assert_eq!(store.receipts(&[r], 0, second).await.unwrap(), all);
}

/// Runs a read-only job against the writer's view and returns what it found.
async fn in_job<T: Send + 'static>(
    store: &Store,
    read: impl FnOnce(&dyn RoomTxn) -> super::StoreResult<T> + Send + 'static,
) -> T {
    let found = Arc::new(std::sync::Mutex::new(None));
    let slot = found.clone();
    let job = move |txn: &dyn RoomTxn| {
        *slot.lock().unwrap() = Some(read(txn)?);
        Ok(Vec::new())
    };
    store.write_rooms(Box::new(job)).await.unwrap();
    let value = found.lock().unwrap().take();
    value.unwrap()
}

fn state_map(entries: &[(&str, &str, usize)]) -> super::StateMap {
    entries
        .iter()
        .map(|(kind, key, n)| (((*kind).to_owned(), (*key).to_owned()), event_id(*n)))
        .collect()
}

#[tokio::test]
async fn state_groups_hold_the_state_after_every_event() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    let events = vec![
        new_event(0, &r, Some(("m.room.create", ""))),
        new_event(1, &r, Some(("m.room.member", "@alice:localhost"))),
        new_event(2, &r, None),
        new_event(3, &r, Some(("m.room.name", ""))),
        new_event(4, &r, None),
        new_event(5, &r, Some(("m.room.name", ""))),
    ];
    let positions = append(&store, &r, events).await;

    let groups = in_job(&store, |txn| {
        (0..6).map(|n| txn.event_state_group(&event_id(n))).collect::<super::StoreResult<Vec<_>>>()
    })
    .await;
    let expected = [0, 1, 1, 3, 3, 5].map(|n| Some(positions[n]));
    assert_eq!(groups, expected, "a message shares its prev event's group, a state event has one");
    let states = in_job(&store, move |txn| {
        groups.iter().map(|g| super::state_of_group(txn, g.unwrap())).collect::<Result<Vec<_>, _>>()
    })
    .await;
    let base = [("m.room.create", "", 0), ("m.room.member", "@alice:localhost", 1)];
    assert_eq!(states[2], state_map(&base));
    assert_eq!(states[4], state_map(&[base[0], base[1], ("m.room.name", "", 3)]));
    assert_eq!(states[5], state_map(&[base[0], base[1], ("m.room.name", "", 5)]));
    let unknown = in_job(&store, |txn| txn.event_state_group(&event_id(99))).await;
    assert_eq!(unknown, None);
}

#[tokio::test]
async fn a_snapshot_ends_every_chain_of_deltas_and_a_removal_is_kept() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    let mut events = vec![new_event(0, &r, Some(("m.room.create", "")))];
    events.extend((1..80).map(|n| new_event(n, &r, Some(("m.room.topic", "")))));
    append(&store, &r, events).await;
    let state = in_job(&store, |txn| {
        let group = txn.event_state_group(&event_id(79))?.unwrap();
        super::state_of_group(txn, group)
    })
    .await;
    assert_eq!(state, state_map(&[("m.room.create", "", 0), ("m.room.topic", "", 79)]));

    // A group that drops a key, as state resolution may, on top of that chain.
    let mut removal = new_event(80, &r, None);
    let job = move |txn: &dyn RoomTxn| {
        let parent = txn.event_state_group(&event_id(79))?.unwrap();
        removal.state_group = NewStateGroup::New(StateGroupDelta {
            parent: Some(parent),
            chain_length: 1,
            entries: vec![StateEntry {
                event_type: "m.room.topic".into(),
                state_key: String::new(),
                event_id: None,
            }],
        });
        txn.append_event(removal)?;
        Ok(Vec::new())
    };
    store.write_rooms(Box::new(job)).await.unwrap();
    let state = in_job(&store, |txn| {
        let group = txn.event_state_group(&event_id(80))?.unwrap();
        super::state_of_group(txn, group)
    })
    .await;
    assert_eq!(state, state_map(&[("m.room.create", "", 0)]));
}

/// After a fork, state resolution may set a key back to an older event or drop it: the current
/// state, its history by stream position and the memberships follow what the event said.
#[tokio::test]
async fn current_state_changes_of_a_resolution_reach_current_state_and_history() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    let events = vec![
        new_event(0, &r, Some(("m.room.create", ""))),
        new_event(1, &r, Some(("m.room.member", "@alice:localhost"))),
        new_event(2, &r, Some(("m.room.topic", ""))),
        new_event(3, &r, Some(("m.room.member", "@bob:localhost"))),
        new_event(4, &r, Some(("m.room.topic", ""))),
    ];
    append(&store, &r, events).await;
    let change =
        |kind: &str, key: &str, n: Option<usize>, membership: Option<&str>| CurrentStateChange {
            event_type: kind.into(),
            state_key: key.into(),
            event_id: n.map(event_id),
            membership: membership.map(Into::into),
        };
    let mut merge = new_event(5, &r, None);
    merge.current_state = vec![
        change("m.room.member", "@bob:localhost", None, None),
        change("m.room.topic", "", Some(2), None),
    ];
    let positions = append(&store, &r, vec![merge]).await;

    let ids = |events: Vec<super::EventRecord>| -> Vec<OwnedEventId> {
        events.into_iter().map(|e| e.event_id).collect()
    };
    assert_eq!(
        ids(store.current_state(&r).await.unwrap()),
        vec![event_id(0), event_id(1), event_id(2)]
    );
    let before = store.state_at(&r, positions[0] - 1).await.unwrap();
    assert_eq!(ids(before), vec![event_id(0), event_id(1), event_id(3), event_id(4)]);
    let after = store.state_at(&r, positions[0]).await.unwrap();
    assert_eq!(ids(after), vec![event_id(0), event_id(1), event_id(2)]);
    let changed = store.state_changes(&r, positions[0] - 1, positions[0]).await.unwrap();
    assert_eq!(ids(changed), vec![event_id(2)], "the topic went back; bob's key is gone");
    assert!(store.membership(&r, &user("bob"), None).await.unwrap().is_none());
    assert_eq!(store.members_with(&r, "join").await.unwrap(), vec![user("alice")]);
    let topics = store.state_key_history(&r, "m.room.topic", "").await.unwrap();
    assert_eq!(ids(topics), vec![event_id(2), event_id(4), event_id(2)]);
}

/// A database written before state groups existed gets them from the V3 migration: a room's
/// state after every event, with snapshots that bound the chains.
#[tokio::test]
async fn the_state_group_migration_gives_earlier_rooms_the_state_after_every_event() {
    let db = TestDatabase::new().await;
    let mut sql = String::from(
        "INSERT INTO rooms (room_id, room_version, created_ts) VALUES ('!r:localhost', '10', 0);\n",
    );
    // 0: create, 1: alice joins, then 70 events: a topic every third, messages between.
    let mut kinds = vec![("m.room.create", Some("")), ("m.room.member", Some("@alice:localhost"))];
    kinds.extend(
        (2..72).map(
            |n| if n % 3 == 0 { ("m.room.topic", Some("")) } else { ("m.room.message", None) },
        ),
    );
    for (n, (kind, key)) in kinds.iter().enumerate() {
        let position = n + 1;
        let key_sql = key.map_or("NULL".to_owned(), |k| format!("'{k}'"));
        sql.push_str(&format!(
            "INSERT INTO events (stream_position, event_id, room_id, event_type, state_key, sender,
                                 depth, origin_server_ts, pdu)
             VALUES ({position}, '$event{n}', '!r:localhost', '{kind}', {key_sql},
                     '@alice:localhost', {position}, {position}, '{{}}');\n"
        ));
        if let Some(key) = key {
            sql.push_str(&format!(
                "INSERT INTO state_history (room_id, event_type, state_key, event_id, stream_position)
                 VALUES ('!r:localhost', '{kind}', '{key}', '$event{n}', {position});\n"
            ));
        }
    }
    sql.push_str(&format!("UPDATE stream_counter SET position = {};\n", kinds.len()));
    db.seed_at_v1(&sql).await;
    let store = db.open().await;

    let states = in_job(&store, |txn| {
        (0..72)
            .map(|n| {
                let group = txn.event_state_group(&event_id(n))?.expect("every event has a group");
                super::state_of_group(txn, group)
            })
            .collect::<super::StoreResult<Vec<_>>>()
    })
    .await;
    let mut topic = None;
    for (n, state) in states.iter().enumerate() {
        if kinds[n].0 == "m.room.topic" {
            topic = Some(n);
        }
        let mut expected = vec![("m.room.create", "", 0)];
        if n >= 1 {
            expected.push(("m.room.member", "@alice:localhost", 1));
        }
        expected.extend(topic.map(|t| ("m.room.topic", "", t)));
        assert_eq!(state, &state_map(&expected), "the state after event {n}");
    }
    // New events continue the chains the migration left.
    let r = room("r");
    append(&store, &r, vec![new_event(72, &r, Some(("m.room.topic", "")))]).await;
    let state = in_job(&store, |txn| {
        super::state_of_group(txn, txn.event_state_group(&event_id(72))?.unwrap())
    })
    .await;
    let expected = [
        ("m.room.create", "", 0),
        ("m.room.member", "@alice:localhost", 1),
        ("m.room.topic", "", 72),
    ];
    assert_eq!(state, state_map(&expected));
}

/// A notification of `user` for the `n`-th event appended (at `positions[n]`).
fn notification(
    user: &str,
    r: &OwnedRoomId,
    positions: &[i64],
    n: usize,
    thread: &str,
) -> NewNotification {
    NewNotification {
        user_id: self::user(user),
        room_id: r.clone(),
        event_id: event_id(n),
        stream_position: positions[n],
        thread_id: thread.to_owned(),
        highlight: n % 2 == 1,
        actions: r#"["notify"]"#.to_owned(),
        ts: 9_000 + n as i64,
    }
}

fn count(r: &OwnedRoomId, thread: &str, notifications: u64, highlights: u64) -> NotificationCount {
    NotificationCount { room_id: r.clone(), thread_id: thread.into(), notifications, highlights }
}

#[tokio::test]
async fn notifications_count_after_the_receipts_of_their_thread_and_page_newest_first() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    let positions = append(&store, &r, (0..6).map(|n| new_event(n, &r, None)).collect()).await;
    // Events 1, 2 and 5 in the main timeline, 3 and 4 in the thread of event 2.
    let threads = [(1, "main"), (2, "main"), (3, "$event2"), (4, "$event2"), (5, "main")];
    let batch: Vec<_> =
        threads.iter().map(|(n, thread)| notification("bob", &r, &positions, *n, thread)).collect();
    let notified = store.add_notifications(batch.clone()).await.unwrap();
    assert!(notified > positions[5], "the counts change at a position of their own");
    assert_eq!(store.add_notifications(batch[..1].to_vec()).await.unwrap(), notified + 1);
    let bob = user("bob");
    let counts = store.notification_counts(&bob, std::slice::from_ref(&r)).await.unwrap();
    assert_eq!(counts, [count(&r, "$event2", 2, 1), count(&r, "main", 3, 2)]);
    assert!(
        store
            .notification_counts(&user("carol"), std::slice::from_ref(&r))
            .await
            .unwrap()
            .is_empty()
    );

    let new_rooms = |after| {
        let (store, bob, r) = (store.clone(), bob.clone(), r.clone());
        async move {
            store
                .rooms_with_new_notifications(&bob, &[r, room("x")], after, notified + 1)
                .await
                .unwrap()
        }
    };
    assert_eq!(new_rooms(positions[5]).await, std::slice::from_ref(&r));
    assert!(new_rooms(notified + 1).await.is_empty());

    let read = |n: usize, thread: Option<&str>, receipt_type: &str| NewReceipt {
        room_id: r.clone(),
        user_id: bob.clone(),
        receipt_type: receipt_type.into(),
        thread_id: thread.map(str::to_owned),
        event_id: event_id(n),
        event_position: positions[n],
        ts: 1,
    };
    // A threaded receipt reads its thread only; an unthreaded (here private) one reads all.
    store.set_receipt(read(3, Some("$event2"), "m.read")).await.unwrap();
    let counts = store.notification_counts(&bob, std::slice::from_ref(&r)).await.unwrap();
    assert_eq!(counts, [count(&r, "$event2", 1, 0), count(&r, "main", 3, 2)]);
    store.set_receipt(read(2, None, "m.read.private")).await.unwrap();
    let counts = store.notification_counts(&bob, std::slice::from_ref(&r)).await.unwrap();
    assert_eq!(counts, [count(&r, "$event2", 1, 0), count(&r, "main", 1, 1)]);

    let page = |before, limit, only_highlight| {
        let store = store.clone();
        let query = NotificationsQuery { user_id: user("bob"), before, limit, only_highlight };
        async move {
            let records = store.notifications(query).await.unwrap();
            records.iter().map(|r| (r.notification.event_id.clone(), r.read)).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, 2, false).await, [(event_id(5), false), (event_id(4), false)]);
    assert_eq!(
        page(Some(positions[4]), 10, false).await,
        [(event_id(3), true), (event_id(2), true), (event_id(1), true)]
    );
    assert_eq!(
        page(None, 10, true).await,
        [(event_id(5), false), (event_id(3), true), (event_id(1), true)]
    );
    let first = store
        .notifications(NotificationsQuery {
            user_id: bob.clone(),
            before: None,
            limit: 1,
            only_highlight: false,
        })
        .await
        .unwrap();
    assert_eq!(first[0].notification, batch[4], "kept as written");

    // Kept across a restart.
    drop(store);
    let store = db.open().await;
    assert_eq!(store.notification_counts(&bob, std::slice::from_ref(&r)).await.unwrap().len(), 2);

    // What came before the user's current membership event (a join) is not unread.
    let join = new_event(6, &r, Some(("m.room.member", bob.as_str())));
    append(&store, &r, vec![join]).await;
    assert!(store.notification_counts(&bob, &[r]).await.unwrap().is_empty());
}

fn pusher_record(user: &str, pushkey: &str, device: &str) -> PusherRecord {
    PusherRecord {
        user_id: self::user(user),
        app_id: "org.example".into(),
        pushkey: pushkey.into(),
        kind: "http".into(),
        app_display_name: "app".into(),
        device_display_name: "phone".into(),
        profile_tag: None,
        lang: "en".into(),
        data: r#"{"url":"https://p.example/_matrix/push/v1/notify"}"#.into(),
        device_id: device.into(),
        created_ts: 3,
    }
}

#[tokio::test]
async fn pushers_are_replaced_taken_over_and_deleted_with_their_devices() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    for (name, devices) in [("alice", ["A1", "A2"]), ("bob", ["B1", "B2"])] {
        let new_user =
            NewUser { user_id: user(name), password_hash: None, is_admin: false, created_ts: 1 };
        store.create_user(new_user).await.unwrap();
        for device in devices {
            let session = NewSession {
                user_id: user(name),
                device_id: device.into(),
                display_name: None,
                token_hash: format!("token-{device}"),
                created_ts: 2,
            };
            store.create_session(session).await.unwrap();
        }
    }
    let (alice, bob) = (user("alice"), user("bob"));
    let keys = |user: OwnedUserId| {
        let store = store.clone();
        async move {
            store.pushers(&user).await.unwrap().into_iter().map(|p| p.pushkey).collect::<Vec<_>>()
        }
    };
    store.set_pusher(pusher_record("alice", "k1", "A1"), false).await.unwrap();
    let mut tagged = pusher_record("alice", "k1", "A1");
    tagged.profile_tag = Some("tag".into());
    tagged.lang = "de".into();
    store.set_pusher(tagged.clone(), false).await.unwrap();
    store.set_pusher(pusher_record("alice", "k2", "A2"), false).await.unwrap();
    assert_eq!(store.pushers(&alice).await.unwrap()[0], tagged, "replaced, tag kept");
    // Bob takes k2 over; with append he shares k1.
    store.set_pusher(pusher_record("bob", "k2", "B1"), false).await.unwrap();
    store.set_pusher(pusher_record("bob", "k1", "B1"), true).await.unwrap();
    assert_eq!(keys(alice.clone()).await, ["k1"]);
    assert_eq!(keys(bob.clone()).await, ["k1", "k2"]);

    assert!(store.delete_pusher(&bob, "org.example", "k1").await.unwrap());
    assert!(!store.delete_pusher(&bob, "org.example", "k1").await.unwrap(), "gone already");
    store.set_pusher(pusher_record("alice", "k3", "A2"), false).await.unwrap();
    store.delete_devices(&alice, &["A2".into()]).await.unwrap();
    assert_eq!(store.delete_pushers(&alice, PusherCleanup::DevicesGone).await.unwrap(), 1);
    assert_eq!(keys(alice.clone()).await, ["k1"]);
    store.set_pusher(pusher_record("bob", "k4", "B2"), false).await.unwrap();
    assert_eq!(store.delete_pushers(&bob, PusherCleanup::AllBut("B2".into())).await.unwrap(), 1);
    assert_eq!(keys(bob).await, ["k4"]);

    drop(store);
    let store = db.open().await;
    assert_eq!(store.pushers(&alice).await.unwrap(), [tagged]);
}
