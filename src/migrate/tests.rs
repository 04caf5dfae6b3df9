//! The move's engine against a real SQLite file and a real PostgreSQL server (the one
//! `HEARTH_TEST_POSTGRES_URL` names; without it these tests say so and pass, and the
//! PostgreSQL run of `scripts/test-all` runs them).

use std::{path::Path, sync::Arc, time::Duration};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};

use super::*;
use crate::store::{
    NewBackupKey, NewEvent, NewRelation, NewReport, NewSearchText, NewSession, NewStateGroup,
    NewUser, ReportTarget, RoomTxn, StateEntry, StateGroupDelta, Store, testing,
    transfer::{retire, sqlite::SqliteSource},
};

/// A fresh, empty PostgreSQL database, or `None` (and a note) when there is no server to use.
pub(super) async fn target_database() -> Option<String> {
    if std::env::var("HEARTH_TEST_POSTGRES_URL").is_err() {
        eprintln!("skipped: the move needs PostgreSQL (HEARTH_TEST_POSTGRES_URL is not set)");
        return None;
    }
    Some(testing::create_postgres_database().await)
}

/// A SQLite data directory with a config file, an account, a session, account data and a room
/// of `messages` events.
pub(super) async fn source(dir: &Path, messages: usize) -> Store {
    let settings = config::FirstRunSettings {
        server_name: config::parse_server_name("localhost").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        registration: config::RegistrationMode::Closed,
    };
    std::fs::write(dir.join(config::CONFIG_FILE), config::template(&settings)).unwrap();
    let store = store::open_sqlite(&dir.join("hearth.db")).unwrap();
    let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();
    let user =
        NewUser { user_id: alice.clone(), password_hash: None, is_admin: true, created_ts: 1 };
    store.create_user(user).await.unwrap();
    let session = NewSession {
        user_id: alice.clone(),
        device_id: "PHONE".into(),
        display_name: Some("phone".into()),
        token_hash: "hash".into(),
        created_ts: 2,
        expires_ts: Some(i64::MAX),
        refresh_token_hash: Some("refresh-hash".into()),
    };
    store.create_session(session).await.unwrap();
    let content = serde_json::value::to_raw_value(&serde_json::json!({"theme": "dark"})).unwrap();
    store.set_account_data(&alice, None, "m.theme", &content).await.unwrap();
    // The columns and table of V10: a suspension, a device's user agent, a custom profile field.
    store.set_suspended(&alice, true).await.unwrap();
    let seen =
        store::DeviceSeen { ip: "10.0.0.2".into(), user_agent: Some("Element".into()), ts: 3 };
    store.touch_device(&alice, "PHONE", seen).await.unwrap();
    store.set_profile_field(&alice, "m.tz", r#""Europe/Paris""#).await.unwrap();
    add_other_tokens(&store, &alice).await;
    add_encryption_keys(&store, &alice).await;
    append_messages(&store, 0, messages).await;
    backup_and_report(&store, &alice).await;
    store
}

/// A login token and an OpenID token, so that the move copies and proves their tables too (the
/// session above has a refresh token).
async fn add_other_tokens(store: &Store, alice: &OwnedUserId) {
    let token = |hash: &str| store::NewExpiringToken {
        token_hash: hash.into(),
        user_id: alice.clone(),
        expires_ts: i64::MAX,
        now: 3,
    };
    store.create_login_token(token("login-hash")).await.unwrap();
    store.create_openid_token(token("openid-hash")).await.unwrap();
}

/// A key backup version with a key (a table whose foreign key has two columns) and a report.
async fn backup_and_report(store: &Store, alice: &OwnedUserId) {
    let version = store.create_backup_version(alice, "m.megolm_backup.v1", "{}").await.unwrap();
    let key = NewBackupKey {
        room_id: room(),
        session_id: "session".into(),
        is_verified: true,
        first_message_index: 0,
        forwarded_count: 0,
        key_data: "{}".into(),
    };
    store.put_backup_keys(alice, version, vec![key]).await.unwrap();
    let target = ReportTarget::User(alice.clone());
    let report = NewReport { reporter: alice.clone(), target, reason: None, received_ts: 3 };
    store.add_report(report).await.unwrap();
}

/// A row in each table of end-to-end encryption, so that the move copies and proves them too.
async fn add_encryption_keys(store: &Store, alice: &OwnedUserId) {
    store.set_device_keys(alice, "PHONE", r#"{"keys":{}}"#).await.unwrap();
    let key = |key_id: &str| store::OneTimeKeyRecord {
        algorithm: "signed_curve25519".into(),
        key_id: key_id.into(),
        key_json: r#"{"key":"k"}"#.into(),
    };
    store.add_one_time_keys(alice, "PHONE", vec![key("signed_curve25519:a")]).await.unwrap();
    store.set_fallback_keys(alice, "PHONE", vec![key("signed_curve25519:f")]).await.unwrap();
    let master = [("master".to_owned(), r#"{"keys":{}}"#.to_owned())].into();
    store.set_cross_signing_keys(alice, master).await.unwrap();
    let signature = store::KeySignature {
        target_user_id: alice.clone(),
        target_key_id: "PHONE".into(),
        signer_user_id: alice.clone(),
        signer_key_id: "ed25519:ssk".into(),
        signature: "sig".into(),
    };
    store.add_key_signatures(vec![signature], vec![alice.clone()]).await.unwrap();
    let txn = store::ToDeviceTxn {
        sender: alice.clone(),
        sender_device: "PHONE".into(),
        txn_id: "t".into(),
    };
    let message = store::NewToDevice {
        user_id: alice.clone(),
        device_id: "*".into(),
        event_type: "m.test".into(),
        content: "{}".into(),
    };
    store.send_to_device(txn, vec![message]).await.unwrap();
    store.set_dehydrated_device(alice, "PARKED", None, "{}").await.unwrap();
}

pub(super) fn room() -> OwnedRoomId {
    "!family:localhost".try_into().unwrap()
}

/// Appends messages `from..from + count` to the room (creating it first).
pub(super) async fn append_messages(store: &Store, from: usize, count: usize) {
    let job = move |txn: &dyn RoomTxn| {
        if txn.room_version(&room())?.is_none() {
            txn.create_room(&room(), &RoomVersionId::V12, 0)?;
        }
        for n in from..from + count {
            // The first message opens a state group holding a topic, so that the state tables
            // are copied too; the later ones share it.
            let first = OwnedEventId::try_from("$m0").unwrap();
            let state_group = match txn.event_state_group(&first)? {
                Some(group) => NewStateGroup::Existing(group),
                None => NewStateGroup::New(StateGroupDelta {
                    parent: None,
                    chain_length: 0,
                    entries: vec![StateEntry {
                        event_type: "m.room.topic".into(),
                        state_key: String::new(),
                        event_id: Some("$topic".try_into().unwrap()),
                    }],
                }),
            };
            let event = NewEvent {
                event_id: OwnedEventId::try_from(format!("$m{n}")).unwrap(),
                room_id: room(),
                event_type: "m.room.message".into(),
                state_key: None,
                sender: "@alice:localhost".try_into().unwrap(),
                origin_server_ts: n as i64,
                depth: n as i64,
                prev_events: Vec::new(),
                pdu: format!("{{\"body\":\"message {n}\"}}"),
                transaction: None,
                replaces_state: None,
                // Every tenth message is a thread reply, so that relations are copied too.
                relation: (n % 10 == 9).then(|| NewRelation {
                    relates_to: OwnedEventId::try_from(format!("$m{}", n - 9)).unwrap(),
                    rel_type: "m.thread".into(),
                }),
                // Every message is searchable, so that the search index moves too.
                search: Some(NewSearchText {
                    key: "content.body".into(),
                    text: format!("message {n}"),
                }),
                state_group,
                current_state: Vec::new(),
            };
            txn.append_event(event)?;
        }
        Ok(Vec::new())
    };
    store.write_rooms(Box::new(job)).await.unwrap();
}

/// What a search of the room's messages for `term` finds: how many, and the first page's events.
pub(super) async fn search(store: &Store, term: &str) -> (u64, Vec<String>) {
    let query = crate::store::SearchQuery {
        terms: vec![term.to_owned()],
        keys: vec!["content.body".into()],
        room_ids: vec![room()],
        senders: None,
        not_senders: Vec::new(),
        order: crate::store::SearchOrder::Rank { offset: 0 },
        limit: 10,
    };
    let page = store.search_events(query).await.unwrap();
    (page.count, page.hits.into_iter().map(|hit| hit.event_id.to_string()).collect())
}

pub(super) fn request(dir: &Path, url: &str, store: Option<Arc<SwitchableStore>>) -> MoveRequest {
    MoveRequest {
        sqlite_path: dir.join("hearth.db"),
        config_path: dir.join(config::CONFIG_FILE),
        target_url: url.to_owned(),
        store,
        direction: Direction::ToPostgres,
    }
}

/// Every table's digest in SQLite and in PostgreSQL, which must be equal.
async fn assert_same_data(dir: &Path, url: &str) {
    let source = SqliteSource::new(&dir.join("hearth.db"));
    let snapshot = source.snapshot().await.unwrap();
    let target = PostgresTarget::connect(url).await.unwrap();
    for table in source.tables().await.unwrap() {
        let (expected, found) =
            (snapshot.digest(&table).await.unwrap(), target.digest(&table).await.unwrap());
        assert_eq!(expected, found, "table {}", table.name);
    }
}

pub(super) fn config_backend(dir: &Path) -> DatabaseBackend {
    config::Config::load(&dir.join(config::CONFIG_FILE)).unwrap().database.backend
}

#[tokio::test]
async fn every_table_and_column_of_the_schema_is_moved() {
    let Some(url) = target_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    drop(source(dir.path(), 3).await);
    let tables = SqliteSource::new(&dir.path().join("hearth.db")).tables().await.unwrap();
    let mut target = PostgresTarget::connect(&url).await.unwrap();
    target.prepare(&tables).await.unwrap();

    // The move copies exactly the columns it read from SQLite's schema; PostgreSQL's copy of
    // the schema (made by the same migrations) must have the same tables and columns, in the
    // same order, with the matching types.
    let from_sqlite: Vec<(String, String, String)> = tables
        .iter()
        .flat_map(|table| {
            table.columns.iter().map(|column| {
                let pg_type = match column.column_type {
                    crate::store::transfer::ColumnType::Integer => "integer",
                    crate::store::transfer::ColumnType::BigInt => "bigint",
                    crate::store::transfer::ColumnType::Text => "text",
                };
                (table.name.clone(), column.name.clone(), pg_type.to_owned())
            })
        })
        .collect();
    let mut from_sqlite = from_sqlite;
    from_sqlite.sort();
    let mut in_postgres: Vec<_> = target
        .columns()
        .await
        .unwrap()
        .into_iter()
        .filter(|(table, _, _)| crate::store::transfer::is_data_table(table))
        .collect();
    in_postgres.sort();
    assert_eq!(from_sqlite, in_postgres);
    assert!(tables.iter().any(|t| t.name == "events") && tables.len() >= 15, "{tables:?}");
}

#[tokio::test]
async fn a_stopped_server_moves_and_the_copy_is_proven() {
    let Some(url) = target_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    drop(source(dir.path(), 25_000).await);
    run_to_end(request(dir.path(), &url, None), |_| {}).await.unwrap();

    assert_eq!(config_backend(dir.path()), DatabaseBackend::Postgres);
    assert_same_data(dir.path(), &url).await;
    let moved = store::open_postgres(&url).await.unwrap();
    let events = moved.room_events(crate::store::RoomEventsQuery {
        room_id: room(),
        from: 0,
        to: None,
        direction: crate::store::Direction::Forward,
        limit: 30_000,
        types: None,
        not_types: Vec::new(),
        senders: None,
        not_senders: Vec::new(),
        relates_to: None,
    });
    assert_eq!(events.await.unwrap().len(), 25_000);
    assert_eq!(moved.session_by_token("hash").await.unwrap().unwrap().device_id, "PHONE");
    // The search index came with its table: PostgreSQL's GIN index serves the copied rows.
    assert_eq!(search(&moved, "message").await.0, 25_000);
    assert_eq!(search(&moved, "24999").await, (1, vec!["$m24999".to_owned()]));
    // The move's own bookkeeping is gone from both sides.
    let sqlite = rusqlite::Connection::open(dir.path().join("hearth.db")).unwrap();
    let leftovers: i64 = sqlite
        .query_row("SELECT count(*) FROM sqlite_master WHERE name LIKE 'hearth_move_%'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(leftovers, 0);
    let target = PostgresTarget::connect(&url).await.unwrap();
    assert_eq!(
        target.preflight().await.unwrap().state,
        TargetState::Occupied(pg_tables(&target).await)
    );
}

async fn pg_tables(target: &PostgresTarget) -> Vec<String> {
    let mut tables: Vec<String> =
        target.columns().await.unwrap().into_iter().map(|(table, _, _)| table).collect();
    tables.dedup();
    tables
}

#[tokio::test]
async fn a_database_holding_other_tables_is_refused_and_left_alone() {
    let Some(url) = target_database().await else { return };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE invoices (id INTEGER); INSERT INTO invoices VALUES (7)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    drop(source(dir.path(), 10).await);

    let error = run_to_end(request(dir.path(), &url, None), |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("invoices"), "{error:#}");
    let error = check_target(&url).await.unwrap_err();
    assert!(error.to_string().contains("not empty"), "{error:#}");
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);
    let rows = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "nothing was created beside the foreign table");
}

#[tokio::test]
async fn an_unreachable_or_wrong_target_is_explained() {
    let cases = [
        ("postgresql://nobody@127.0.0.1:1/none", "cannot connect"),
        ("not a url at all ::", "not valid"),
        ("postgresql://nobody@127.0.0.1:1/none?sslmode=require", "TLS"),
    ];
    for (url, expected) in cases {
        let error = check_target(url).await.unwrap_err();
        assert!(format!("{error:#}").contains(expected), "{url}: {error:#}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_move_resumes_and_keeps_what_it_copied() {
    let Some(url) = target_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = source(dir.path(), 60_000).await;

    // The move dies in the middle of copying `events` (as with `kill -9`: its task simply
    // stops), after every table before it is complete.
    let handle = start(request(dir.path(), &url, None));
    let mut progress = handle.subscribe();
    progress
        .wait_for(|p| p.table.as_deref() == Some("events") && p.rows_done > 20_000)
        .await
        .unwrap();
    handle.abort_for_test();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite, "still on SQLite");

    // The server goes on writing meanwhile: the change log catches it.
    append_messages(&store, 60_000, 500).await;
    let alice: OwnedUserId = "@alice:localhost".try_into().unwrap();
    store.set_displayname(&alice, Some("Alice")).await.unwrap();
    drop(store);

    let last = std::sync::Mutex::new(Progress::default());
    run_to_end(request(dir.path(), &url, None), |p| *last.lock().unwrap() = p.clone())
        .await
        .unwrap();
    let last = last.into_inner().unwrap();
    assert!(last.tables_kept > 0, "the tables copied before were kept: {last:?}");
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Postgres);
    assert_same_data(dir.path(), &url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serving_store_moves_while_it_is_written_and_switches() {
    let Some(url) = target_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let switchable = Arc::new(SwitchableStore::new(source(dir.path(), 20_000).await));
    let serving: Store = switchable.clone();

    let handle = start(request(dir.path(), &url, Some(switchable.clone())));
    let writer = {
        let serving = serving.clone();
        tokio::spawn(async move {
            let mut n = 20_000;
            while n < 21_000 {
                append_messages(&serving, n, 10).await;
                n += 10;
            }
        })
    };
    let mut progress = handle.subscribe();
    let done = progress.wait_for(|p| matches!(p.phase, Phase::Done | Phase::Failed)).await;
    let done = done.unwrap().clone();
    assert_eq!(done.phase, Phase::Done, "{:?}", done.error);
    writer.await.unwrap();

    // Every write went somewhere, and the store in use is PostgreSQL with all of them.
    let moved = store::open_postgres(&url).await.unwrap();
    let count = |store: Store| async move { store.current_position().await.unwrap() };
    assert_eq!(count(serving.clone()).await, count(moved.clone()).await);
    assert!(count(moved).await >= 21_000);
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Postgres);
}

#[tokio::test]
async fn a_cancelled_move_leaves_sqlite_serving_and_no_change_log() {
    let Some(url) = target_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    drop(source(dir.path(), 40_000).await);
    let handle = start(request(dir.path(), &url, None));
    let mut progress = handle.subscribe();
    progress.wait_for(|p| p.phase == Phase::Copying).await.unwrap();
    handle.cancel();
    let end = progress.wait_for(|p| matches!(p.phase, Phase::Cancelled | Phase::Done)).await;
    assert_eq!(end.unwrap().phase, Phase::Cancelled);
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);
    let sqlite = rusqlite::Connection::open(dir.path().join("hearth.db")).unwrap();
    let triggers: i64 = sqlite
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'hearth_move_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 0);
    // Run again, it starts over and finishes.
    run_to_end(request(dir.path(), &url, None), |_| {}).await.unwrap();
    assert_same_data(dir.path(), &url).await;
}

/// The indexes and constraints of Hearth's tables in a PostgreSQL database, as SQL.
async fn schema_objects(url: &str) -> Vec<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT tablename || ': ' || indexdef FROM pg_indexes
             WHERE schemaname = 'public' AND tablename NOT LIKE 'refinery%'
             UNION ALL
             SELECT conrelid::regclass::text || ': ' || conname || ' ' || pg_get_constraintdef(oid)
             FROM pg_constraint
             WHERE connamespace = 'public'::regnamespace
               AND conrelid::regclass::text NOT LIKE 'refinery%'
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test]
async fn a_moved_database_has_every_index_and_constraint_of_a_fresh_one() {
    let Some(url) = target_database().await else { return };
    let fresh = testing::create_postgres_database().await;
    drop(store::open_postgres(&fresh).await.unwrap());
    let expected = schema_objects(&fresh).await;
    assert!(expected.iter().any(|o| o.contains("events_by_room")), "{expected:#?}");
    assert!(expected.iter().any(|o| o.contains("FOREIGN KEY")), "{expected:#?}");

    let dir = tempfile::tempdir().unwrap();
    drop(source(dir.path(), 1_000).await);
    run_to_end(request(dir.path(), &url, None), |_| {}).await.unwrap();
    assert_eq!(schema_objects(&url).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_move_interrupted_while_indexing_resumes_and_builds_everything() {
    let Some(url) = target_database().await else { return };
    let fresh = testing::create_postgres_database().await;
    drop(store::open_postgres(&fresh).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    drop(source(dir.path(), 30_000).await);

    let handle = start(request(dir.path(), &url, None));
    let mut progress = handle.subscribe();
    progress.wait_for(|p| p.phase == Phase::Indexing).await.unwrap();
    handle.abort_for_test();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);

    run_to_end(request(dir.path(), &url, None), |_| {}).await.unwrap();
    assert_eq!(schema_objects(&url).await, schema_objects(&fresh).await);
    assert_same_data(dir.path(), &url).await;
}

#[tokio::test]
async fn two_moves_into_one_database_cannot_run_at_once() {
    let Some(url) = target_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    drop(source(dir.path(), 10).await);
    // Another move (here: its connection alone) holds the target.
    let other = PostgresTarget::connect(&url).await.unwrap();
    other.claim().await.unwrap();

    let error = run_to_end(request(dir.path(), &url, None), |_| {}).await.unwrap_err();
    assert!(error.to_string().contains("another move"), "{error:#}");
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);
    drop(other);
    run_to_end(request(dir.path(), &url, None), |_| {}).await.unwrap();
    assert_same_data(dir.path(), &url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_added_while_the_move_switches_lands_where_the_data_went() {
    let Some(url) = target_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    drop(source(dir.path(), 10).await);
    let sqlite_path = dir.path().join("hearth.db");
    let tables = SqliteSource::new(&sqlite_path).tables().await.unwrap();

    // The switch retires hearth.db before its last snapshot; `hearth user add`, which read
    // hearth.toml when it still named SQLite, meets the retirement and waits.
    retire::retire_sqlite(&sqlite_path, &tables).await.unwrap();
    let data_dir = dir.path().to_owned();
    let adding = tokio::spawn(async move {
        crate::server::add_user(&data_dir, "carol", "secret".into(), false).await
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!adding.is_finished(), "the account waits for the switch");

    // The switch ends, naming PostgreSQL; the account goes there.
    run_to_end(request(dir.path(), &url, None), |_| {}).await.unwrap();
    adding.await.unwrap().unwrap();
    let carol: OwnedUserId = "@carol:localhost".try_into().unwrap();
    let moved = store::open_postgres(&url).await.unwrap();
    assert!(moved.user(&carol).await.unwrap().is_some(), "carol is in PostgreSQL");
    // hearth.db refuses writes for good: a write there would be lost.
    let old = store::open_sqlite(&sqlite_path).unwrap();
    let refused = old.create_user(NewUser {
        user_id: "@dave:localhost".try_into().unwrap(),
        password_hash: None,
        is_admin: false,
        created_ts: 1,
    });
    let error = refused.await.unwrap_err();
    assert!(retire::is_retired(&error), "{error:#}");
    assert!(old.user(&carol).await.unwrap().is_none());
}

#[tokio::test]
async fn a_server_started_on_a_retired_database_its_configuration_names_lifts_the_retirement() {
    let dir = tempfile::tempdir().unwrap();
    drop(source(dir.path(), 3).await);
    let sqlite_path = dir.path().join("hearth.db");
    let tables = SqliteSource::new(&sqlite_path).tables().await.unwrap();
    // A crash between the retirement and the switch of hearth.toml leaves it so.
    retire::retire_sqlite(&sqlite_path, &tables).await.unwrap();
    let config = config::Config::load(&dir.path().join(config::CONFIG_FILE)).unwrap();
    let services = crate::server::open_services(dir.path(), config).await.unwrap();
    let user = NewUser {
        user_id: "@erin:localhost".try_into().unwrap(),
        password_hash: None,
        is_admin: false,
        created_ts: 1,
    };
    assert!(services.store.create_user(user).await.unwrap());
}

#[tokio::test]
async fn an_empty_server_moves_and_back() {
    let Some(url) = target_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let settings = config::FirstRunSettings {
        server_name: config::parse_server_name("localhost").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        registration: config::RegistrationMode::Closed,
    };
    std::fs::write(dir.path().join(config::CONFIG_FILE), config::template(&settings)).unwrap();
    // A first run's database: the schema and nothing else.
    drop(store::open_sqlite(&dir.path().join("hearth.db")).unwrap());
    run_to_end(request(dir.path(), &url, None), |_| {}).await.unwrap();
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Postgres);
    assert_same_data(dir.path(), &url).await;
    let moved = store::open_postgres(&url).await.unwrap();
    assert_eq!(moved.count_users().await.unwrap(), 0);
    drop(moved);

    let back = MoveRequest { direction: Direction::ToSqlite, ..request(dir.path(), &url, None) };
    run_to_end(back, |_| {}).await.unwrap();
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);
    assert_eq!(
        store::open_sqlite(&dir.path().join("hearth.db")).unwrap().count_users().await.unwrap(),
        0
    );
}
