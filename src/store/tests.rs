//! The storage suite both backends pass: it speaks only the storage API, and runs on the
//! backend `HEARTH_TEST_BACKEND` names (see [`super::testing`]).
//!
//! Room events are appended with hand-made PDUs here: what matters is what the store keeps and
//! returns. The event graph itself is tested through the builder in `rooms`.

use std::sync::Arc;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::value::to_raw_value;

use super::{
    BackupDeletion, BackupKeysChange, BackupKeysChange::Done, BackupKeysScope, CurrentStateChange,
    Direction, NewBackupKey, NewEvent, NewNotification, NewReceipt, NewSession, NewStateGroup,
    NewUser, NotificationCount, NotificationsQuery, PusherCleanup, PusherRecord, ReportTarget,
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
        relation: None,
        search: None,
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
        relates_to: None,
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
        expires_ts: None,
        refresh_token_hash: None,
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
async fn restrictions_last_requests_and_custom_profile_fields_are_kept_until_deactivation() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let alice = user("alice");
    let new_user =
        NewUser { user_id: alice.clone(), password_hash: None, is_admin: false, created_ts: 1 };
    store.create_user(new_user).await.unwrap();
    let session = NewSession {
        user_id: alice.clone(),
        device_id: "D".into(),
        display_name: None,
        token_hash: "t".into(),
        created_ts: 2,
        expires_ts: None,
        refresh_token_hash: None,
    };
    store.create_session(session).await.unwrap();
    let fresh = store.session_by_token("t").await.unwrap().unwrap();
    assert_eq!(fresh.restrictions, super::AccountRestrictions::default());

    store.set_locked(&alice, true).await.unwrap();
    store.set_suspended(&alice, true).await.unwrap();
    store.set_locked(&alice, false).await.unwrap();
    let record = store.user(&alice).await.unwrap().unwrap();
    assert!(!record.locked && record.suspended);
    let restricted = store.session_by_token("t").await.unwrap().unwrap().restrictions;
    assert_eq!(restricted, super::AccountRestrictions { locked: false, suspended: true });

    let seen =
        super::DeviceSeen { ip: "10.0.0.2".into(), user_agent: Some("curl/8".into()), ts: 7 };
    store.touch_device(&alice, "D", seen).await.unwrap();
    let device = store.device(&alice, "D").await.unwrap().unwrap();
    assert_eq!(device.last_seen_ip.as_deref(), Some("10.0.0.2"));
    assert_eq!(device.last_seen_user_agent.as_deref(), Some("curl/8"));
    assert_eq!(device.last_seen_ts, Some(7));

    store.set_profile_field(&alice, "org.example.b", "[1,2]").await.unwrap();
    store.set_profile_field(&alice, "m.tz", r#""Europe/Paris""#).await.unwrap();
    store.set_profile_field(&alice, "org.example.b", "null").await.unwrap();
    store.delete_profile_field(&alice, "org.example.absent").await.unwrap();
    let fields = store.profile_fields(&alice).await.unwrap();
    let expected = [("m.tz", r#""Europe/Paris""#), ("org.example.b", "null")];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    assert_eq!(fields, expected, "in name order, the later value kept");
    store.delete_profile_field(&alice, "m.tz").await.unwrap();
    assert_eq!(store.profile_fields(&alice).await.unwrap().len(), 1);

    store.deactivate_user(&alice).await.unwrap();
    assert!(store.profile_fields(&alice).await.unwrap().is_empty());
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

/// A message of `sender` relating to event `parent` by `rel_type`.
fn relating(n: usize, r: &OwnedRoomId, sender: &str, rel_type: &str, parent: usize) -> NewEvent {
    let mut event = new_event(n, r, None);
    event.sender = user(sender);
    event.relation =
        Some(super::NewRelation { relates_to: event_id(parent), rel_type: rel_type.into() });
    event
}

fn relations_query(
    r: &OwnedRoomId,
    parent: usize,
    rel_type: Option<&str>,
    depth: u32,
) -> RoomEventsQuery {
    RoomEventsQuery {
        room_id: r.clone(),
        from: 0,
        to: None,
        direction: Direction::Forward,
        limit: 100,
        types: None,
        not_types: Vec::new(),
        senders: None,
        not_senders: Vec::new(),
        relates_to: Some(super::RelationFilter {
            event_id: event_id(parent),
            rel_type: rel_type.map(str::to_owned),
            depth,
        }),
    }
}

fn ids(events: &[super::EventRecord]) -> Vec<OwnedEventId> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

#[tokio::test]
async fn relations_are_listed_by_parent_type_and_depth_and_summarised_for_bundling() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    let events = vec![
        new_event(0, &r, None),
        relating(1, &r, "bob", "m.thread", 0),
        relating(2, &r, "carol", "m.thread", 0),
        relating(3, &r, "alice", "m.replace", 0),
        relating(4, &r, "bob", "m.replace", 0), // not the sender's: never bundled
        relating(5, &r, "bob", "m.annotation", 1),
        relating(6, &r, "alice", "m.reference", 0),
        new_event(7, &r, None),
        relating(8, &r, "bob", "m.thread", 7),
    ];
    let positions = append(&store, &r, events).await;

    let all = store.room_events(relations_query(&r, 0, None, 1)).await.unwrap();
    assert_eq!(ids(&all), [1, 2, 3, 4, 6].map(event_id));
    let threads = store.room_events(relations_query(&r, 0, Some("m.thread"), 1)).await.unwrap();
    assert_eq!(ids(&threads), [1, 2].map(event_id));
    let deep = store.room_events(relations_query(&r, 0, None, 3)).await.unwrap();
    assert_eq!(ids(&deep), [1, 2, 3, 4, 5, 6].map(event_id), "the reaction to a reply");

    let summaries =
        store.relation_summaries(&[0, 1, 7].map(event_id), &user("carol")).await.unwrap();
    assert_eq!(summaries.len(), 2, "event 1 has only an annotation, which is not bundled");
    let first = &summaries[&event_id(0)];
    let thread = first.thread.as_ref().unwrap();
    assert_eq!((thread.count, thread.participated), (2, true));
    assert_eq!(thread.latest_event.event_id, event_id(2));
    assert_eq!(ids(&first.replacements), [event_id(3)]);
    assert_eq!(first.references, [event_id(6)]);
    let second = summaries[&event_id(7)].thread.as_ref().unwrap();
    assert!(!second.participated, "carol neither sent the root nor replied");

    // Latest activity first; `before` pages; `participant` narrows.
    let query = |participant: Option<&str>, before| super::ThreadsQuery {
        room_id: r.clone(),
        participant: participant.map(user),
        before,
        limit: 10,
    };
    let roots: Vec<_> = store.thread_roots(query(None, None)).await.unwrap();
    let found: Vec<_> = roots.iter().map(|t| (t.root.clone(), t.latest_position)).collect();
    assert_eq!(found, [(event_id(7), positions[8]), (event_id(0), positions[2])]);
    let older = store.thread_roots(query(None, Some(positions[8]))).await.unwrap();
    assert_eq!(older.len(), 1);
    let carol = store.thread_roots(query(Some("carol"), None)).await.unwrap();
    assert_eq!(carol.iter().map(|t| t.root.clone()).collect::<Vec<_>>(), [event_id(0)]);
    let alice = store.thread_roots(query(Some("alice"), None)).await.unwrap();
    assert_eq!(alice.len(), 2, "alice sent both roots");

    // A redacted event no longer relates.
    let job = |txn: &dyn RoomTxn| {
        txn.redact_event(&event_id(2), "{}", &event_id(9))?;
        Ok(Vec::new())
    };
    store.write_rooms(Box::new(job)).await.unwrap();
    let threads = store.room_events(relations_query(&r, 0, Some("m.thread"), 1)).await.unwrap();
    assert_eq!(ids(&threads), [event_id(1)]);
    let summaries = store.relation_summaries(&[event_id(0)], &user("carol")).await.unwrap();
    assert!(!summaries[&event_id(0)].thread.as_ref().unwrap().participated);
}

#[tokio::test]
async fn events_are_found_by_timestamp_nearest_first_in_either_direction() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let r = room("r");
    // new_event gives event n the time 1_000 + n; two events share a time here.
    let mut events: Vec<NewEvent> = (0..4).map(|n| new_event(n, &r, None)).collect();
    events[2].origin_server_ts = events[1].origin_server_ts;
    append(&store, &r, events).await;
    let near = |ts, direction, offset| super::TimestampQuery {
        room_id: r.clone(),
        ts,
        direction,
        offset,
        limit: 2,
    };
    let found = |events: Vec<super::EventRecord>| ids(&events);
    let forward = store.events_by_timestamp(near(1_001, Direction::Forward, 0)).await.unwrap();
    assert_eq!(found(forward), [event_id(1), event_id(2)], "the same time in stream order");
    let backward = store.events_by_timestamp(near(1_001, Direction::Backward, 0)).await.unwrap();
    assert_eq!(found(backward), [event_id(2), event_id(1)]);
    let skipped = store.events_by_timestamp(near(1_001, Direction::Forward, 2)).await.unwrap();
    assert_eq!(found(skipped), [event_id(3)]);
    let none = store.events_by_timestamp(near(5_000, Direction::Forward, 0)).await.unwrap();
    assert!(none.is_empty());
    assert!(store.events_by_timestamp(near(1_001, Direction::Forward, 0)).await.is_ok());
    let other = super::TimestampQuery { room_id: room("other"), ..near(0, Direction::Forward, 0) };
    assert!(store.events_by_timestamp(other).await.unwrap().is_empty());
}

async fn add_user(store: &Store, name: &str, displayname: Option<&str>) {
    let new = NewUser { user_id: user(name), password_hash: None, is_admin: false, created_ts: 1 };
    assert!(store.create_user(new).await.unwrap());
    store.set_displayname(&user(name), displayname).await.unwrap();
}

fn backup_key(room_id: &str, session: &str, rank: (bool, i64, i64), data: &str) -> NewBackupKey {
    let (is_verified, first_message_index, forwarded_count) = rank;
    NewBackupKey {
        room_id: room(room_id),
        session_id: session.to_owned(),
        is_verified,
        first_message_index,
        forwarded_count,
        key_data: format!("{{\"d\":\"{data}\"}}"),
    }
}

#[tokio::test]
async fn backup_versions_are_numbered_once_and_deleted_with_their_keys() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    add_user(&store, "alice", None).await;
    add_user(&store, "bob", None).await;
    let alice = user("alice");
    assert_eq!(store.backup_version(&alice, None).await.unwrap(), None, "no backup yet");
    assert_eq!(store.create_backup_version(&alice, "m.a", "{\"k\":1}").await.unwrap(), 1);
    assert_eq!(store.create_backup_version(&alice, "m.a", "{\"k\":2}").await.unwrap(), 2);
    assert_eq!(store.create_backup_version(&user("bob"), "m.a", "{}").await.unwrap(), 1);

    let latest = store.backup_version(&alice, None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.auth_data.as_str()), (2, "{\"k\":2}"));
    assert_eq!(latest.counts.count, 0);
    assert!(store.update_backup_version(&alice, 1, "{\"k\":3}").await.unwrap());
    assert!(!store.update_backup_version(&alice, 9, "{}").await.unwrap(), "an unknown version");
    let first = store.backup_version(&alice, Some(1)).await.unwrap().unwrap();
    assert_eq!((first.algorithm.as_str(), first.auth_data.as_str()), ("m.a", "{\"k\":3}"));

    let keys = vec![backup_key("r", "s", (false, 0, 0), "x")];
    assert!(matches!(store.put_backup_keys(&alice, 2, keys).await.unwrap(), Done(_)));
    assert_eq!(store.delete_backup_version(&alice, 2).await.unwrap(), BackupDeletion::Deleted);
    assert_eq!(
        store.delete_backup_version(&alice, 2).await.unwrap(),
        BackupDeletion::AlreadyDeleted
    );
    assert_eq!(store.delete_backup_version(&alice, 7).await.unwrap(), BackupDeletion::Unknown);
    assert_eq!(store.backup_version(&alice, Some(2)).await.unwrap(), None);
    assert_eq!(store.backup_keys(&alice, 2, BackupKeysScope::All).await.unwrap(), None);
    assert_eq!(store.backup_version(&alice, None).await.unwrap().unwrap().version, 1);
    assert!(!store.update_backup_version(&alice, 2, "{}").await.unwrap(), "a deleted version");
    // A deleted number is never handed out again, also across a restart.
    drop(store);
    let store = db.open().await;
    assert_eq!(store.create_backup_version(&alice, "m.a", "{}").await.unwrap(), 3);
    let fresh = store.backup_keys(&alice, 3, BackupKeysScope::All).await.unwrap();
    assert_eq!(fresh, Some(Vec::new()), "the deleted version's keys are gone");
}

#[tokio::test]
async fn a_backed_up_key_is_replaced_only_by_a_better_one() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    add_user(&store, "alice", None).await;
    let alice = user("alice");
    store.create_backup_version(&alice, "m.a", "{}").await.unwrap();
    let put = |rank, data: &'static str| {
        let store = store.clone();
        async move {
            let keys = vec![backup_key("r", "s", rank, data)];
            match store.put_backup_keys(&user("alice"), 1, keys).await.unwrap() {
                Done(counts) => counts,
                other => panic!("{other:?}"),
            }
        }
    };
    let stored = |store: Store| async move {
        let keys = store.backup_keys(&user("alice"), 1, BackupKeysScope::All).await.unwrap();
        keys.unwrap()[0].key_data.clone()
    };
    let start = put((false, 5, 5), "first").await;
    assert_eq!(start.count, 1);
    // (rank, whether it replaces the stored key, why)
    let cases = [
        ((false, 5, 5), false, "a tie keeps the stored key"),
        ((false, 6, 0), false, "a higher first message index loses"),
        ((false, 5, 6), false, "a higher forwarded count loses"),
        ((false, 5, 4), true, "a lower forwarded count wins"),
        ((false, 4, 9), true, "a lower first message index wins over any forwarded count"),
        ((true, 9, 9), true, "a verified key wins over an unverified one"),
        ((false, 0, 0), false, "an unverified key never replaces a verified one"),
        ((true, 8, 9), true, "between verified keys the lower index wins"),
    ];
    let mut etag = start.etag;
    for (n, (rank, replaces, why)) in cases.into_iter().enumerate() {
        let data: &'static str = Box::leak(format!("case{n}").into_boxed_str());
        let counts = put(rank, data).await;
        assert_eq!(counts.count, 1, "{why}");
        assert_eq!(counts.etag != etag, replaces, "the etag changes exactly then: {why}");
        assert_eq!(
            stored(store.clone()).await == format!("{{\"d\":\"{data}\"}}"),
            replaces,
            "{why}"
        );
        etag = counts.etag;
    }
}

#[tokio::test]
async fn backup_keys_go_only_into_the_latest_version_and_are_read_and_deleted_by_scope() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    add_user(&store, "alice", None).await;
    let alice = user("alice");
    let none = store.put_backup_keys(&alice, 1, Vec::new()).await.unwrap();
    assert_eq!(none, BackupKeysChange::NoSuchVersion, "no backup at all");
    store.create_backup_version(&alice, "m.a", "{}").await.unwrap();
    store.create_backup_version(&alice, "m.a", "{}").await.unwrap();
    let old = store.put_backup_keys(&alice, 1, Vec::new()).await.unwrap();
    assert_eq!(old, BackupKeysChange::NotLatest { latest: 2 });

    let keys = vec![
        backup_key("a", "s1", (false, 0, 0), "a1"),
        backup_key("a", "s2", (false, 0, 0), "a2"),
        backup_key("b", "s1", (false, 0, 0), "b1"),
    ];
    let Done(counts) = store.put_backup_keys(&alice, 2, keys).await.unwrap() else { panic!() };
    assert_eq!(counts.count, 3);
    let read = |scope| {
        let store = store.clone();
        async move {
            let keys = store.backup_keys(&user("alice"), 2, scope).await.unwrap().unwrap();
            keys.into_iter().map(|k| format!("{} {}", k.room_id, k.session_id)).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        read(BackupKeysScope::All).await,
        ["!a:localhost s1", "!a:localhost s2", "!b:localhost s1"]
    );
    assert_eq!(read(BackupKeysScope::Room(room("b"))).await, ["!b:localhost s1"]);
    let one = BackupKeysScope::Session(room("a"), "s2".into());
    assert_eq!(read(one.clone()).await, ["!a:localhost s2"]);
    assert!(store.backup_keys(&alice, 1, BackupKeysScope::All).await.unwrap().unwrap().is_empty());

    let Done(after) = store.delete_backup_keys(&alice, 2, one).await.unwrap() else { panic!() };
    assert_eq!(after.count, 2);
    assert_ne!(after.etag, counts.etag);
    let missing = BackupKeysScope::Session(room("a"), "nothing".into());
    let Done(same) = store.delete_backup_keys(&alice, 2, missing).await.unwrap() else { panic!() };
    assert_eq!(same, after, "deleting nothing changes nothing");
    let Done(room_gone) =
        store.delete_backup_keys(&alice, 2, BackupKeysScope::Room(room("a"))).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(room_gone.count, 1);
    let Done(empty) = store.delete_backup_keys(&alice, 2, BackupKeysScope::All).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(empty.count, 0);
    assert_eq!(store.backup_version(&alice, Some(2)).await.unwrap().unwrap().counts, empty);
    let gone = store.delete_backup_keys(&alice, 5, BackupKeysScope::All).await.unwrap();
    assert_eq!(gone, BackupKeysChange::NoSuchVersion);
}

#[tokio::test]
async fn the_user_directory_finds_users_who_share_a_room_or_are_in_a_published_one() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    for (name, displayname) in [
        ("alice", None),
        ("bob", Some("Robert the Builder")),
        ("carol", Some("Carol 100%")),
        ("dave", Some("Bob's friend")),
        ("erin", Some("bobby")),
        ("frank", None),
    ] {
        add_user(&store, name, displayname).await;
    }
    let member = |n: usize, room_id: &OwnedRoomId, name: &str| {
        let key: &'static str = Box::leak(format!("@{name}:localhost").into_boxed_str());
        new_event(n, room_id, Some(("m.room.member", key)))
    };
    // Alice shares a room with Bob and Carol; Dave is in a published room; Erin is in a room
    // nobody else is in, and Frank in none.
    let shared = room("shared");
    append(
        &store,
        &shared,
        vec![member(0, &shared, "alice"), member(1, &shared, "bob"), member(2, &shared, "carol")],
    )
    .await;
    let public = room("public");
    append(&store, &public, vec![member(3, &public, "dave")]).await;
    store.set_published(&public, true).await.unwrap();
    let private = room("private");
    append(&store, &private, vec![member(4, &private, "erin")]).await;
    // The server name never matches.
    let search = |term: &str, limit: usize| {
        let store = store.clone();
        let query = super::UserDirectoryQuery { searcher: user("alice"), term: term.into(), limit };
        async move {
            let found = store.search_user_directory(query).await.unwrap();
            found.into_iter().map(|u| u.user_id.localpart().to_owned()).collect::<Vec<_>>()
        }
    };
    assert_eq!(search("BOB", 10).await, ["bob", "dave"], "localpart or display name, any case");
    assert_eq!(search("builder", 10).await, ["bob"]);
    assert_eq!(search("localhost", 10).await, Vec::<String>::new(), "the server name is no match");
    assert_eq!(search("100%", 10).await, ["carol"], "% is literal");
    assert_eq!(search("1_0", 10).await, Vec::<String>::new(), "_ is literal");
    assert_eq!(search("", 10).await, ["alice", "bob", "carol", "dave"]);
    assert_eq!(search("", 2).await, ["alice", "bob"]);
    let bob = store.search_user_directory(super::UserDirectoryQuery {
        searcher: user("alice"),
        term: "rob".into(),
        limit: 1,
    });
    let bob = bob.await.unwrap().remove(0);
    assert_eq!(bob.displayname.as_deref(), Some("Robert the Builder"));
    store.deactivate_user(&user("bob")).await.unwrap();
    assert_eq!(search("", 10).await, ["alice", "carol", "dave"], "deactivated users are left out");
}

#[tokio::test]
async fn reports_are_kept_in_order_with_their_targets() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    add_user(&store, "alice", None).await;
    let report = |target, reason: Option<&str>| super::NewReport {
        reporter: user("alice"),
        target,
        reason: reason.map(str::to_owned),
        received_ts: 9,
    };
    let targets = [
        report(ReportTarget::Event(room("r"), event_id(1)), Some("spam")),
        report(ReportTarget::Room(room("r")), Some("")),
        report(ReportTarget::User(user("bob")), None),
    ];
    let mut ids = Vec::new();
    for target in targets.clone() {
        ids.push(store.add_report(target).await.unwrap());
    }
    assert_eq!(ids, [1, 2, 3]);
    drop(store);
    let store = db.open().await;
    let all = store.reports(0, 10).await.unwrap();
    assert_eq!(all.iter().map(|r| r.report.clone()).collect::<Vec<_>>(), targets);
    let later = store.reports(1, 1).await.unwrap();
    assert_eq!(later.iter().map(|r| r.report_id).collect::<Vec<_>>(), [2]);
}

fn media_content(sha: char) -> super::MediaContent {
    super::MediaContent {
        content_type: "image/png".into(),
        file_name: Some("cat.png".into()),
        size: 42,
        sha256: sha.to_string().repeat(64),
    }
}

#[tokio::test]
async fn uploaded_media_and_thumbnails_are_recorded_and_kept() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let media = super::NewMedia {
        media_id: "direct".into(),
        uploader: user("alice"),
        ts: 1_000,
        content: media_content('a'),
    };
    store.insert_media(media.clone()).await.unwrap();
    let record = store.media("direct").await.unwrap().expect("stored");
    assert_eq!(
        (record.uploader, record.created_ts, record.expires_ts),
        (user("alice"), 1_000, None)
    );
    let uploaded = record.content.expect("has content");
    assert_eq!((uploaded.uploaded_ts, uploaded.content), (1_000, media_content('a')));
    assert!(store.media("other").await.unwrap().is_none());
    // A direct upload is no reservation: it cannot be filled again.
    assert!(!store.fill_reserved_media(super::NewMedia { ts: 2_000, ..media }).await.unwrap());

    let key = super::ThumbnailKey {
        media_id: "direct".into(),
        width: 32,
        height: 32,
        method: "crop".into(),
    };
    assert!(store.thumbnail(&key).await.unwrap().is_none());
    let thumbnail = super::ThumbnailRecord {
        key: key.clone(),
        content_type: "image/png".into(),
        size: 7,
        sha256: "b".repeat(64),
    };
    store.insert_thumbnail(thumbnail.clone()).await.unwrap();
    let again = super::ThumbnailRecord { sha256: "c".repeat(64), ..thumbnail.clone() };
    store.insert_thumbnail(again).await.unwrap();
    assert_eq!(store.thumbnail(&key).await.unwrap(), Some(thumbnail.clone()), "the first is kept");
    let scale = super::ThumbnailKey { method: "scale".into(), ..key.clone() };
    assert!(store.thumbnail(&scale).await.unwrap().is_none());

    drop(store);
    let store = db.open().await;
    assert!(store.media("direct").await.unwrap().unwrap().content.is_some());
    assert_eq!(store.thumbnail(&key).await.unwrap(), Some(thumbnail));
}

#[tokio::test]
async fn reserved_media_ids_are_capped_expire_and_are_filled_once_by_their_uploader() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let reserve = |id: &str, who: &str, now: i64| super::MediaReservation {
        media_id: id.into(),
        uploader: user(who),
        created_ts: now,
        expires_ts: now + 100,
    };
    assert!(store.reserve_media(reserve("r1", "alice", 1_000), 2).await.unwrap());
    assert!(store.reserve_media(reserve("r2", "alice", 1_010), 2).await.unwrap());
    assert!(!store.reserve_media(reserve("r3", "alice", 1_020), 2).await.unwrap(), "at the cap");
    assert!(store.reserve_media(reserve("b1", "bob", 1_020), 2).await.unwrap(), "a cap per user");
    let pending = store.media("r1").await.unwrap().unwrap();
    assert_eq!((pending.expires_ts, pending.content), (Some(1_100), None));
    assert!(store.media("r3").await.unwrap().is_none());

    let fill = |id: &str, who: &str, ts: i64| super::NewMedia {
        media_id: id.into(),
        uploader: user(who),
        ts,
        content: media_content('d'),
    };
    assert!(!store.fill_reserved_media(fill("r1", "bob", 1_050)).await.unwrap(), "not bob's");
    assert!(store.fill_reserved_media(fill("r1", "alice", 1_050)).await.unwrap());
    assert!(!store.fill_reserved_media(fill("r1", "alice", 1_060)).await.unwrap(), "only once");
    let filled = store.media("r1").await.unwrap().unwrap().content.unwrap();
    assert_eq!((filled.uploaded_ts, filled.content), (1_050, media_content('d')));
    assert!(!store.fill_reserved_media(fill("r2", "alice", 1_110)).await.unwrap(), "expired");

    // Once r2 has expired, it is removed and frees its place; a filled one does not count.
    assert!(store.reserve_media(reserve("r4", "alice", 1_200), 2).await.unwrap());
    assert!(store.media("r2").await.unwrap().is_none(), "expired reservations are removed");
    assert!(store.media("r1").await.unwrap().is_some(), "uploaded media stays");
    assert!(store.reserve_media(reserve("r5", "alice", 1_200), 2).await.unwrap());
    assert!(!store.reserve_media(reserve("r6", "alice", 1_200), 2).await.unwrap());
}

/// A user with the given devices (token `t-<device>`), for the key tests.
async fn user_with_devices(store: &Store, name: &str, devices: &[&str]) -> OwnedUserId {
    let user_id = user(name);
    let new_user =
        NewUser { user_id: user_id.clone(), password_hash: None, is_admin: false, created_ts: 1 };
    store.create_user(new_user).await.unwrap();
    for device in devices {
        let session = NewSession {
            user_id: user_id.clone(),
            device_id: (*device).into(),
            display_name: Some(format!("{device} name")),
            token_hash: format!("t-{name}-{device}"),
            created_ts: 2,
            expires_ts: None,
            refresh_token_hash: None,
        };
        store.create_session(session).await.unwrap();
    }
    user_id
}

fn otk(key_id: &str, json: &str) -> super::OneTimeKeyRecord {
    super::OneTimeKeyRecord {
        algorithm: key_id.split(':').next().unwrap().into(),
        key_id: key_id.into(),
        key_json: json.into(),
    }
}

#[tokio::test]
async fn device_keys_are_kept_per_device_and_go_with_the_device() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let alice = user_with_devices(&store, "alice", &["A", "B"]).await;
    let first = store.set_device_keys(&alice, "A", r#"{"v":1}"#).await.unwrap();
    let second = store.set_device_keys(&alice, "B", r#"{"v":2}"#).await.unwrap();
    assert!(second > first, "each upload is a device-list change at a new position");
    let replaced = store.set_device_keys(&alice, "A", r#"{"v":3}"#).await.unwrap();
    let keys = store.device_keys(&alice).await.unwrap();
    let shown: Vec<_> = keys
        .iter()
        .map(|k| (k.device_id.as_str(), k.key_json.as_str(), k.display_name.clone()))
        .collect();
    assert_eq!(
        shown,
        [("A", r#"{"v":3}"#, Some("A name".into())), ("B", r#"{"v":2}"#, Some("B name".into()))]
    );
    assert_eq!(store.device_list_changes(first).await.unwrap(), [(alice.clone(), replaced)]);
    assert!(store.device_list_changes(replaced).await.unwrap().is_empty());

    // Deleting a device deletes its keys, one-time keys and inbox.
    store.add_one_time_keys(&alice, "B", vec![otk("signed_curve25519:k", "{}")]).await.unwrap();
    store.delete_devices(&alice, &["B".into()]).await.unwrap();
    let keys = store.device_keys(&alice).await.unwrap();
    assert_eq!(keys.iter().map(|k| k.device_id.as_str()).collect::<Vec<_>>(), ["A"]);
    assert!(store.one_time_key_counts(&alice, "B").await.unwrap().is_empty());
    let marked = store.mark_device_list_changed(&alice).await.unwrap();
    assert_eq!(store.device_list_changes(replaced).await.unwrap(), [(alice.clone(), marked)]);

    drop(store);
    let store = db.open().await;
    assert_eq!(store.device_keys(&alice).await.unwrap().len(), 1, "kept across a restart");
}

#[tokio::test]
async fn one_time_keys_are_claimed_once_then_the_fallback_key_stays() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let bob = user_with_devices(&store, "bob", &["B"]).await;
    let keys = vec![
        otk("signed_curve25519:b", r#"{"k":"b"}"#),
        otk("signed_curve25519:a", r#"{"k":"a"}"#),
    ];
    assert!(store.add_one_time_keys(&bob, "B", keys.clone()).await.unwrap().is_empty());
    assert!(store.add_one_time_keys(&bob, "B", keys).await.unwrap().is_empty(), "the same again");
    let conflict =
        vec![otk("signed_curve25519:a", r#"{"k":"other"}"#), otk("signed_curve25519:c", "{}")];
    assert_eq!(
        store.add_one_time_keys(&bob, "B", conflict).await.unwrap(),
        ["signed_curve25519:a"]
    );
    let counts = store.one_time_key_counts(&bob, "B").await.unwrap();
    assert_eq!(
        counts,
        [("signed_curve25519".to_owned(), 2)].into(),
        "nothing of a conflict is kept"
    );

    let fallback = vec![otk("signed_curve25519:f", r#"{"k":"f"}"#)];
    store.set_fallback_keys(&bob, "B", fallback.clone()).await.unwrap();
    assert_eq!(store.unused_fallback_key_types(&bob, "B").await.unwrap(), ["signed_curve25519"]);
    let claim = || store.claim_key(&bob, "B", "signed_curve25519");
    assert_eq!(claim().await.unwrap().unwrap().key_id, "signed_curve25519:a");
    assert_eq!(claim().await.unwrap().unwrap().key_id, "signed_curve25519:b");
    let fell_back = claim().await.unwrap().unwrap();
    assert_eq!(
        (fell_back.key_id.as_str(), fell_back.key_json.as_str()),
        ("signed_curve25519:f", r#"{"k":"f"}"#)
    );
    assert_eq!(claim().await.unwrap().unwrap().key_id, "signed_curve25519:f", "used, still given");
    assert!(store.unused_fallback_key_types(&bob, "B").await.unwrap().is_empty());
    // The same fallback key again stays used; a new one is unused.
    store.set_fallback_keys(&bob, "B", fallback).await.unwrap();
    assert!(store.unused_fallback_key_types(&bob, "B").await.unwrap().is_empty());
    store.set_fallback_keys(&bob, "B", vec![otk("signed_curve25519:g", "{}")]).await.unwrap();
    assert_eq!(store.unused_fallback_key_types(&bob, "B").await.unwrap(), ["signed_curve25519"]);
    assert_eq!(store.claim_key(&bob, "B", "curve25519").await.unwrap(), None);
    assert_eq!(store.claim_key(&bob, "X", "signed_curve25519").await.unwrap(), None);
}

#[tokio::test]
async fn cross_signing_keys_and_signatures_are_kept_per_user() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let carol = user_with_devices(&store, "carol", &["C"]).await;
    let dave = user("dave");
    let keys: std::collections::BTreeMap<String, String> = [
        ("master".to_owned(), "{\"m\":1}".to_owned()),
        ("self_signing".into(), "{\"s\":1}".into()),
    ]
    .into();
    let position = store.set_cross_signing_keys(&carol, keys.clone()).await.unwrap();
    assert_eq!(store.device_list_changes(position - 1).await.unwrap(), [(carol.clone(), position)]);
    assert_eq!(store.cross_signing_keys(&carol).await.unwrap(), keys);
    let replaced = [("master".to_owned(), "{\"m\":2}".to_owned())].into();
    store.set_cross_signing_keys(&carol, replaced).await.unwrap();
    assert_eq!(store.cross_signing_keys(&carol).await.unwrap()["master"], "{\"m\":2}");
    assert!(store.cross_signing_keys(&dave).await.unwrap().is_empty());

    let signature = |signer: &OwnedUserId, key: &str, value: &str| super::KeySignature {
        target_user_id: carol.clone(),
        target_key_id: "C".into(),
        signer_user_id: signer.clone(),
        signer_key_id: key.into(),
        signature: value.into(),
    };
    let first =
        vec![signature(&carol, "ed25519:ssk", "one"), signature(&dave, "ed25519:usk", "two")];
    let changed = store.add_key_signatures(first, vec![carol.clone(), dave.clone()]).await.unwrap();
    let changes = store.device_list_changes(changed - 2).await.unwrap();
    assert_eq!(changes, [(carol.clone(), changed - 1), (dave.clone(), changed)]);
    store
        .add_key_signatures(vec![signature(&carol, "ed25519:ssk", "three")], Vec::new())
        .await
        .unwrap();
    let stored = store.key_signatures(&carol).await.unwrap();
    assert_eq!(
        stored,
        [signature(&carol, "ed25519:ssk", "three"), signature(&dave, "ed25519:usk", "two")]
    );
    assert!(store.key_signatures(&dave).await.unwrap().is_empty());
}

#[tokio::test]
async fn to_device_messages_wait_in_their_inbox_until_acknowledged() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let erin = user_with_devices(&store, "erin", &["E1", "E2"]).await;
    let frank = user_with_devices(&store, "frank", &["F"]).await;
    let message = |device: &str, n: u32| super::NewToDevice {
        user_id: erin.clone(),
        device_id: device.into(),
        event_type: "m.test".into(),
        content: format!("{{\"n\":{n}}}"),
    };
    let txn = |id: &str| super::ToDeviceTxn {
        sender: frank.clone(),
        sender_device: "F".into(),
        txn_id: id.into(),
    };
    let messages = vec![message("*", 1), message("E2", 2), message("NOPE", 3)];
    let sent = store.send_to_device(txn("t1"), messages.clone()).await.unwrap().unwrap();
    let last = sent[&erin];
    assert_eq!(store.send_to_device(txn("t1"), messages).await.unwrap(), None, "a repeated txn");

    let inbox = |device: &'static str, after: i64, limit: usize| {
        let (store, erin) = (store.clone(), erin.clone());
        async move { store.to_device_messages(&erin, device, after, last, limit).await.unwrap() }
    };
    let e1 = inbox("E1", 0, 10).await;
    assert_eq!(e1.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), [r#"{"n":1}"#]);
    assert_eq!((e1[0].sender.clone(), e1[0].event_type.as_str()), (frank.clone(), "m.test"));
    let e2 = inbox("E2", 0, 10).await;
    assert_eq!(
        e2.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        [r#"{"n":1}"#, r#"{"n":2}"#]
    );
    assert_eq!(e2[1].stream_position, last);
    assert_eq!(inbox("E2", 0, 1).await, e2[..1], "paged by the limit");
    assert_eq!(inbox("E2", e2[0].stream_position, 10).await, e2[1..]);

    store.delete_to_device_messages(&erin, "E2", e2[0].stream_position).await.unwrap();
    assert_eq!(inbox("E2", 0, 10).await, e2[1..], "acknowledged ones are gone");
    assert_eq!(inbox("E1", 0, 10).await, e1, "another device's inbox stays");
    store.delete_devices(&erin, &["E1".into()]).await.unwrap();
    assert!(inbox("E1", 0, 10).await.is_empty(), "a deleted device's inbox goes with it");
}

#[tokio::test]
async fn a_dehydrated_device_is_a_device_replaced_by_the_next() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let gina = user_with_devices(&store, "gina", &["G"]).await;
    assert_eq!(store.dehydrated_device(&gina).await.unwrap(), None);
    let first =
        store.set_dehydrated_device(&gina, "D1", Some("parked"), "{\"p\":1}").await.unwrap();
    assert_eq!(first, None);
    assert_eq!(
        store.dehydrated_device(&gina).await.unwrap(),
        Some(("D1".into(), "{\"p\":1}".into()))
    );
    let device = store.device(&gina, "D1").await.unwrap().expect("a device of its own");
    assert_eq!(device.display_name.as_deref(), Some("parked"));
    store.set_device_keys(&gina, "D1", "{}").await.unwrap();

    let again = store.set_dehydrated_device(&gina, "D1", None, "{\"p\":2}").await.unwrap();
    assert_eq!(again, None, "the same device again replaces nothing");
    assert_eq!(store.device_keys(&gina).await.unwrap().len(), 1, "and keeps its keys");
    let replaced = store.set_dehydrated_device(&gina, "D2", None, "{\"p\":3}").await.unwrap();
    assert_eq!(replaced.as_deref(), Some("D1"));
    assert!(store.device(&gina, "D1").await.unwrap().is_none(), "the old one is gone");
    assert!(store.device_keys(&gina).await.unwrap().is_empty(), "with its keys");
    store.delete_devices(&gina, &["D2".into()]).await.unwrap();
    assert_eq!(store.dehydrated_device(&gina).await.unwrap(), None, "deleted with its device");
    assert!(store.device(&gina, "G").await.unwrap().is_some());
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
                expires_ts: None,
                refresh_token_hash: None,
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

/// Appends one `m.room.member` event per (user, membership), in order, to a new room.
async fn append_members(
    store: &Store,
    room_id: &OwnedRoomId,
    members: &[(&str, &str)],
    first: usize,
) {
    let room_id = room_id.clone();
    let members: Vec<(String, String)> =
        members.iter().map(|(u, m)| (user(u).to_string(), (*m).to_owned())).collect();
    let job = move |txn: &dyn RoomTxn| {
        txn.create_room(&room_id, &RoomVersionId::V12, 0)?;
        for (n, (user_id, membership)) in members.into_iter().enumerate() {
            let mut event = new_event(first + n, &room_id, Some(("m.room.member", &user_id)));
            if n == 0 {
                event.prev_events.clear();
            }
            place_linear(txn, &mut event)?;
            event.current_state[0].membership = Some(membership);
            txn.append_event(event)?;
        }
        Ok(Vec::new())
    };
    store.write_rooms(Box::new(job)).await.unwrap();
}

#[tokio::test]
async fn member_summaries_count_members_and_pick_heroes_for_many_rooms() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let (busy, deserted, empty) = (room("busy"), room("deserted"), room("empty"));
    let busy_members = [
        ("me", "join"),
        ("a", "join"),
        ("b", "invite"),
        ("c", "leave"),
        ("d", "join"),
        ("e", "ban"),
        ("f", "join"),
        ("g", "join"),
        ("h", "knock"),
        ("i", "join"),
    ];
    append_members(&store, &busy, &busy_members, 0).await;
    append_members(&store, &deserted, &[("me", "join"), ("x", "leave"), ("y", "ban")], 100).await;
    let mut rooms: Vec<OwnedRoomId> = (0..2_000).map(|n| room(&format!("none{n}"))).collect();
    rooms.extend([busy.clone(), deserted.clone(), empty.clone()]);

    let summaries = store.member_summaries(&rooms, &user("me")).await.unwrap();
    assert_eq!(summaries.len(), 2, "rooms without members are left out: {summaries:?}");
    let busy_summary = &summaries[&busy];
    assert_eq!((busy_summary.joined, busy_summary.invited), (6, 1));
    let heroes: Vec<OwnedUserId> = ["a", "b", "d", "f", "g"].iter().map(|u| user(u)).collect();
    assert_eq!(busy_summary.heroes, heroes, "joined or invited, oldest first, never me");
    let deserted_summary = &summaries[&deserted];
    assert_eq!(deserted_summary.heroes, vec![user("x"), user("y")], "left and banned otherwise");
    assert_eq!((deserted_summary.joined, deserted_summary.invited), (1, 0));
    assert!(busy_summary.changed_at > 0 && deserted_summary.changed_at > busy_summary.changed_at);
}

#[tokio::test]
async fn current_state_events_of_many_rooms_are_read_together() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let (named, plain) = (room("named"), room("plain"));
    append(&store, &named, vec![new_event(0, &named, Some(("m.room.name", "")))]).await;
    let topic = new_event(1, &plain, Some(("m.room.topic", "")));
    let topic = super::NewEvent { prev_events: Vec::new(), ..topic };
    append(&store, &plain, vec![topic]).await;
    let mut rooms: Vec<OwnedRoomId> = (0..2_000).map(|n| room(&format!("none{n}"))).collect();
    rooms.extend([named.clone(), plain.clone()]);

    let found = store.current_state_events(&rooms, &["m.room.name", "m.room.avatar"]).await;
    let found: Vec<(OwnedRoomId, String)> =
        found.unwrap().into_iter().map(|e| (e.room_id, e.event_type)).collect();
    assert_eq!(found, vec![(named, "m.room.name".to_owned())]);
}

/// A message of `sender` whose body is `text`, in the search index.
fn searchable(n: usize, r: &OwnedRoomId, sender: &str, key: &str, text: &str) -> NewEvent {
    let mut event = new_event(n, r, None);
    event.sender = user(sender);
    event.search = Some(super::NewSearchText { key: key.into(), text: text.into() });
    event
}

fn search_query(
    terms: &[&str],
    rooms: &[&OwnedRoomId],
    order: super::SearchOrder,
) -> super::SearchQuery {
    super::SearchQuery {
        terms: terms.iter().map(|t| (*t).to_owned()).collect(),
        keys: vec!["content.body".into(), "content.name".into()],
        room_ids: rooms.iter().map(|r| (*r).clone()).collect(),
        senders: None,
        not_senders: Vec::new(),
        order,
        limit: 10,
    }
}

fn hit_ids(page: &super::SearchPage) -> Vec<OwnedEventId> {
    page.hits.iter().map(|h| h.event_id.clone()).collect()
}

#[tokio::test]
async fn the_search_index_finds_words_by_prefix_in_the_rooms_keys_and_senders_asked() {
    use super::SearchOrder::{Rank, Recent};
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let (r, other) = (room("r"), room("other"));
    let events = vec![
        searchable(0, &r, "alice", "content.body", "Dinner is ready, come downstairs"),
        searchable(1, &r, "bob", "content.body", "dinner dinner dinner tonight?"),
        searchable(2, &r, "alice", "content.topic", "Family dinner plans"),
        searchable(3, &r, "bob", "content.body", "Café au lait"),
        searchable(
            5,
            &r,
            "bob",
            "content.body",
            "mail bob@mail.example or see https://x.org/garden-path v1.2.3 <b>x</b>",
        ),
        new_event(4, &r, None),
    ];
    append(&store, &r, events).await;
    append(&store, &other, vec![searchable(10, &other, "carol", "content.body", "dinner?")]).await;

    let page = store.search_events(search_query(&["dinn"], &[&r], Recent { before: None })).await;
    let page = page.unwrap();
    assert_eq!(hit_ids(&page), [event_id(1), event_id(0)], "newest first, topic key not asked");
    assert_eq!(page.count, 2);
    let ranked = store.search_events(search_query(&["dinner"], &[&r], Rank { offset: 0 })).await;
    let ranked = ranked.unwrap();
    assert_eq!(hit_ids(&ranked), [event_id(1), event_id(0)], "three times the word ranks first");
    assert!(ranked.hits[0].rank > ranked.hits[1].rank);
    let both = search_query(&["dinner"], &[&r, &other], Rank { offset: 1 });
    assert_eq!(store.search_events(both).await.unwrap().count, 3);
    let all_terms = search_query(&["dinner", "ready"], &[&r], Rank { offset: 0 });
    assert_eq!(hit_ids(&store.search_events(all_terms).await.unwrap()), [event_id(0)]);

    // Pages: after a position, past an offset.
    let next = search_query(&["dinner"], &[&r], Recent { before: Some(2) });
    assert_eq!(hit_ids(&store.search_events(next).await.unwrap()), [event_id(0)]);
    let mut senders = search_query(&["dinner"], &[&r, &other], Rank { offset: 0 });
    senders.senders = Some(vec![user("carol").to_string()]);
    assert_eq!(hit_ids(&store.search_events(senders.clone()).await.unwrap()), [event_id(10)]);
    senders.senders = None;
    senders.not_senders = vec![user("bob").to_string(), user("carol").to_string()];
    assert_eq!(hit_ids(&store.search_events(senders).await.unwrap()), [event_id(0)]);
    let mut topic = search_query(&["plans"], &[&r], Rank { offset: 0 });
    topic.keys = vec!["content.topic".into()];
    assert_eq!(hit_ids(&store.search_events(topic).await.unwrap()), [event_id(2)]);
    let accented = search_query(&["café"], &[&r], Rank { offset: 0 });
    assert_eq!(hit_ids(&store.search_events(accented).await.unwrap()), [event_id(3)]);
    let none = search_query(&["lunch"], &[&r], Rank { offset: 0 });
    assert_eq!(store.search_events(none).await.unwrap().count, 0);
    // Addresses, URLs and version numbers are words apart on both backends.
    for part in ["example", "org", "garden", "path", "2", "https", "b"] {
        let query = search_query(&[part], &[&r], Rank { offset: 0 });
        assert_eq!(hit_ids(&store.search_events(query).await.unwrap()), [event_id(5)], "{part}");
    }
    // Letters the full-text tokenizers may take for separators (combining marks, a lone vowel
    // sign) match nothing and are no error.
    for odd in ["\u{93e}", "\u{345}", "a\u{93e}b", "\u{2160}", "\u{e000}"] {
        let query = search_query(&[odd], &[&r], Rank { offset: 0 });
        assert_eq!(store.search_events(query).await.unwrap().count, 0, "{odd:?}");
    }

    // A redacted event leaves the index.
    in_job(&store, |txn| txn.redact_event(&event_id(1), "{}", &event_id(9))).await;
    let after = store.search_events(search_query(&["dinner"], &[&r], Rank { offset: 0 })).await;
    assert_eq!(hit_ids(&after.unwrap()), [event_id(0)]);
}

#[tokio::test]
async fn the_search_migration_indexes_the_events_stored_before_it() {
    let db = TestDatabase::new().await;
    let mut sql = String::from(
        "INSERT INTO rooms (room_id, room_version, created_ts) VALUES ('!r:localhost', '10', 0);\n",
    );
    // (type, state key, content, redacted): only the first three are searchable.
    let events = [
        ("m.room.message", None, r#"{"msgtype":"m.text","body":"Pancakes on Sunday"}"#, false),
        ("m.room.name", Some(""), r#"{"name":"Pancake club"}"#, false),
        ("m.room.topic", Some(""), r#"{"topic":"pancakes, always"}"#, false),
        ("m.room.message", None, r#"{"body":"pancake secret"}"#, true),
        ("m.room.encrypted", None, r#"{"ciphertext":"pancake"}"#, false),
        ("m.room.message", None, r#"{"body":42}"#, false),
        ("m.room.name", Some("x"), r#"{"name":"pancake"}"#, false),
    ];
    for (n, (kind, key, content, redacted)) in events.iter().enumerate() {
        let position = n + 1;
        let key_sql = key.map_or("NULL".to_owned(), |k| format!("'{k}'"));
        let redacted_by = if *redacted { "'$redaction'" } else { "NULL" };
        sql.push_str(&format!(
            "INSERT INTO events (stream_position, event_id, room_id, event_type, state_key, sender,
                                 depth, origin_server_ts, pdu, redacted_by)
             VALUES ({position}, '$event{n}', '!r:localhost', '{kind}', {key_sql},
                     '@alice:localhost', {position}, {position}, '{{\"content\":{content}}}',
                     {redacted_by});\n"
        ));
    }
    sql.push_str(&format!("UPDATE stream_counter SET position = {};\n", events.len()));
    db.seed_at_v1(&sql).await;
    let store = db.open().await;

    let mut query =
        search_query(&["pancake"], &[&room("r")], super::SearchOrder::Recent { before: None });
    query.keys.push("content.topic".into());
    let page = store.search_events(query).await.unwrap();
    assert_eq!(hit_ids(&page), [event_id(2), event_id(1), event_id(0)]);
}

/// A refreshable login of `user_id` on `device`: access token `a-<device>`, refresh token
/// `r-<device>`.
async fn refreshable_session(store: &Store, user_id: &OwnedUserId, device: &str) {
    let session = NewSession {
        user_id: user_id.clone(),
        device_id: device.into(),
        display_name: None,
        token_hash: format!("a-{device}"),
        created_ts: 2,
        expires_ts: Some(1_000),
        refresh_token_hash: Some(format!("r-{device}")),
    };
    store.create_session(session).await.unwrap();
}

/// Refreshes `from` into access token `a-<to>` and refresh token `r-<to>`.
async fn refresh(store: &Store, from: &str, to: &str) -> Option<super::RefreshedSession> {
    let refresh = super::RefreshSession {
        refresh_token_hash: format!("r-{from}"),
        new_refresh_token_hash: format!("r-{to}"),
        new_access_token_hash: format!("a-{to}"),
        expires_ts: 2_000,
        created_ts: 3,
    };
    store.refresh_session(refresh).await.unwrap()
}

#[tokio::test]
async fn a_refresh_token_works_until_its_successor_is_used() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let alice = user_with_devices(&store, "alice", &[]).await;
    refreshable_session(&store, &alice, "D").await;
    let session = store.session_by_token("a-D").await.unwrap().unwrap();
    assert_eq!((session.expires_ts, session.first_use_revokes), (Some(1_000), false));

    // A refresh adds a generation; the old one stays until the new one is used.
    let first = refresh(&store, "D", "1").await.unwrap();
    assert_eq!((first.user_id.clone(), first.device_id.as_str()), (alice.clone(), "D"));
    assert!(first.revoked.is_empty(), "{first:?}");
    let new = store.session_by_token("a-1").await.unwrap().unwrap();
    assert_eq!((new.device_id.as_str(), new.expires_ts), ("D", Some(2_000)));
    assert!(new.first_use_revokes);
    assert!(store.session_by_token("a-D").await.unwrap().is_some());

    // Refreshing with the old token again replaces the unused successor.
    let again = refresh(&store, "D", "2").await.unwrap();
    assert_eq!(again.revoked, ["a-1"]);
    assert!(store.session_by_token("a-1").await.unwrap().is_none());
    assert!(refresh(&store, "1", "x").await.is_none(), "the replaced successor is gone");

    // The first use of the new access token retires the old generation.
    assert_eq!(store.first_use_of_access_token("a-2").await.unwrap(), Some(vec!["a-D".into()]));
    assert!(store.session_by_token("a-D").await.unwrap().is_none());
    assert!(!store.session_by_token("a-2").await.unwrap().unwrap().first_use_revokes);
    assert!(refresh(&store, "D", "y").await.is_none(), "the old refresh token is used up");
    assert_eq!(store.first_use_of_access_token("a-2").await.unwrap(), Some(Vec::new()));
    assert_eq!(store.first_use_of_access_token("unknown").await.unwrap(), None);

    // Using the new refresh token retires its predecessor too.
    refresh(&store, "2", "3").await.unwrap();
    assert_eq!(refresh(&store, "3", "4").await.unwrap().revoked, ["a-2"]);
    assert!(refresh(&store, "2", "z").await.is_none());
}

#[tokio::test]
async fn refresh_tokens_go_with_their_device_and_a_new_login_on_it() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let alice = user_with_devices(&store, "alice", &[]).await;
    for device in ["A", "B", "C"] {
        refreshable_session(&store, &alice, device).await;
    }
    refresh(&store, "A", "A2").await.unwrap();

    assert_eq!(store.delete_devices(&alice, &["A".into()]).await.unwrap().len(), 2);
    assert!(refresh(&store, "A", "x").await.is_none(), "a deleted device's refresh token");
    assert!(refresh(&store, "A2", "x").await.is_none(), "and its successor");

    // Logging in again on B replaces its refresh token with the new login's (none here).
    let login = NewSession {
        user_id: alice.clone(),
        device_id: "B".into(),
        display_name: None,
        token_hash: "plain-B".into(),
        created_ts: 5,
        expires_ts: None,
        refresh_token_hash: None,
    };
    store.create_session(login).await.unwrap();
    assert!(refresh(&store, "B", "x").await.is_none());

    store.deactivate_user(&alice).await.unwrap();
    assert!(refresh(&store, "C", "x").await.is_none());
}

#[tokio::test]
async fn login_tokens_are_taken_once_and_openid_tokens_until_they_expire() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let alice = user_with_devices(&store, "alice", &[]).await;
    let token = |hash: &str, expires_ts: i64, now: i64| super::NewExpiringToken {
        token_hash: hash.into(),
        user_id: alice.clone(),
        expires_ts,
        now,
    };
    store.create_login_token(token("fresh", 100, 0)).await.unwrap();
    store.create_login_token(token("stale", 10, 0)).await.unwrap();
    assert_eq!(store.take_login_token("stale", 10).await.unwrap(), None, "expired");
    assert_eq!(store.take_login_token("fresh", 50).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.take_login_token("fresh", 50).await.unwrap(), None, "used");
    assert_eq!(store.take_login_token("unknown", 50).await.unwrap(), None);

    store.create_openid_token(token("id", 100, 0)).await.unwrap();
    for _ in 0..2 {
        assert_eq!(store.openid_token_user("id", 99).await.unwrap(), Some(alice.clone()));
    }
    assert_eq!(store.openid_token_user("id", 100).await.unwrap(), None, "expired");
    // A new token sweeps the expired ones away.
    store.create_openid_token(token("id2", 300, 200)).await.unwrap();
    assert_eq!(store.openid_token_user("id", 0).await.unwrap(), None);

    store.create_login_token(token("again", 1_000, 0)).await.unwrap();
    store.deactivate_user(&alice).await.unwrap();
    assert_eq!(store.take_login_token("again", 1).await.unwrap(), None);
    assert_eq!(store.openid_token_user("id2", 201).await.unwrap(), None);
}

#[tokio::test]
async fn url_previews_are_cached_replaced_and_expired() {
    let db = TestDatabase::new().await;
    let store = db.open().await;
    let preview = |url: &str, fetched_ts: i64, title: &str| super::media::UrlPreviewRecord {
        url: url.into(),
        fetched_ts,
        preview: format!("{{\"og:title\":\"{title}\"}}"),
    };
    let (a, b) = ("https://a.example/", "https://b.example/");
    assert_eq!(store.url_preview(a, 0).await.unwrap(), None);

    store.insert_url_preview(preview(a, 1_000, "first"), 0).await.unwrap();
    assert_eq!(store.url_preview(a, 1_000).await.unwrap(), Some(preview(a, 0, "first").preview));
    assert_eq!(store.url_preview(a, 1_001).await.unwrap(), None, "too old for the caller");

    store.insert_url_preview(preview(a, 2_000, "second"), 0).await.unwrap();
    assert_eq!(store.url_preview(a, 0).await.unwrap(), Some(preview(a, 0, "second").preview));

    // Writing another removes the previews fetched before the expiry given.
    store.insert_url_preview(preview(b, 5_000, "b"), 2_001).await.unwrap();
    assert_eq!(store.url_preview(a, 0).await.unwrap(), None);
    assert_eq!(store.url_preview(b, 0).await.unwrap(), Some(preview(b, 0, "b").preview));
}
