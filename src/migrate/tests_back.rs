//! The move back from PostgreSQL to SQLite, against a real PostgreSQL server (the one
//! `HEARTH_TEST_POSTGRES_URL` names; without it these tests say so and pass). Each starts where
//! a family would: data moved to PostgreSQL with the earlier move, `hearth.db` left behind.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ruma::OwnedUserId;

use super::{
    tests::{append_messages, config_backend, request, room, source, target_database},
    *,
};
use crate::store::{
    RoomEventsQuery, Store,
    transfer::{
        postgres_source::PostgresSource,
        sqlite::SqliteSource,
        sqlite_target::{SqliteTarget, moving_path},
    },
};

fn back_request(dir: &Path, url: &str, store: Option<Arc<SwitchableStore>>) -> MoveRequest {
    MoveRequest { direction: Direction::ToSqlite, ..request(dir, url, store) }
}

/// A data directory whose data moved to PostgreSQL (its `hearth.db` stays behind), with a room
/// of `messages` messages; or `None` without a PostgreSQL server.
async fn on_postgres(dir: &Path, messages: usize) -> Option<String> {
    let url = target_database().await?;
    drop(source(dir, messages).await);
    run_to_end(request(dir, &url, None), |_| {}).await.unwrap();
    assert_eq!(config_backend(dir), DatabaseBackend::Postgres);
    Some(url)
}

fn alice() -> OwnedUserId {
    "@alice:localhost".try_into().unwrap()
}

/// Every table of `hearth.db` and of PostgreSQL has the same rows, and they have the same tables.
async fn assert_same_data(dir: &Path, url: &str) {
    let sqlite = SqliteSource::new(&dir.join("hearth.db"));
    let postgres = PostgresSource::new(url);
    let tables = postgres.tables().await.unwrap();
    assert_eq!(sqlite.tables().await.unwrap(), tables, "the same schema");
    let (expected, found) = (postgres.snapshot().await.unwrap(), sqlite.snapshot().await.unwrap());
    for table in &tables {
        let (expected, found) = tokio::join!(expected.digest(table), found.digest(table));
        assert_eq!(expected.unwrap(), found.unwrap(), "table {}", table.name);
    }
}

/// The file's bytes, or `None` when there is no such file.
fn bytes(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// The database files the old `hearth.db` was renamed to.
fn aside_files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("hearth.db.before-")
                && !["-wal", "-shm", "-journal"].iter().any(|s| name.ends_with(s))
        })
        .collect();
    found.sort();
    found
}

/// The move's own tables, triggers and functions left in PostgreSQL.
async fn postgres_leftovers(url: &str) -> Vec<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT relname::text FROM pg_class WHERE relname LIKE 'hearth_move%'
             UNION ALL SELECT tgname::text FROM pg_trigger WHERE tgname LIKE 'hearth_move%'
             UNION ALL SELECT proname::text FROM pg_proc WHERE proname LIKE 'hearth_move%'",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

fn sqlite_leftovers(path: &Path) -> i64 {
    let sqlite = rusqlite::Connection::open(path).unwrap();
    sqlite
        .query_row("SELECT count(*) FROM sqlite_master WHERE name LIKE 'hearth_move_%'", [], |r| {
            r.get(0)
        })
        .unwrap()
}

async fn event_count(store: &Store) -> usize {
    let query = RoomEventsQuery {
        room_id: room(),
        from: 0,
        to: None,
        direction: crate::store::Direction::Forward,
        limit: 100_000,
        types: None,
        not_types: Vec::new(),
        senders: None,
        not_senders: Vec::new(),
        relates_to: None,
    };
    store.room_events(query).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_round_trip_to_postgres_and_back_keeps_every_table_and_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = on_postgres(dir.path(), 5_000).await else { return };
    let live = dir.path().join("hearth.db");
    let stale = (bytes(&live).unwrap(), bytes(&companion(&live, "-wal")));

    // The family goes on using the server on PostgreSQL before moving back.
    let on_postgres = store::open_postgres(&url).await.unwrap();
    append_messages(&on_postgres, 5_000, 300).await;
    on_postgres.set_displayname(&alice(), Some("Alice on PostgreSQL")).await.unwrap();
    drop(on_postgres);

    let back = back_request(dir.path(), &url, None);
    let last = std::sync::Mutex::new(Progress::default());
    run_to_end(back, |p| *last.lock().unwrap() = p.clone()).await.unwrap();
    assert_eq!(last.into_inner().unwrap().to, Direction::ToSqlite);

    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);
    assert_same_data(dir.path(), &url).await;
    let moved = store::open_sqlite(&live).unwrap();
    assert_eq!(event_count(&moved).await, 5_300);
    // SQLite's FTS5 index was filled by its triggers from the copied rows, those written on
    // PostgreSQL included.
    assert_eq!(super::tests::search(&moved, "message").await.0, 5_300);
    assert_eq!(super::tests::search(&moved, "5299").await, (1, vec!["$m5299".to_owned()]));
    let user = moved.user(&alice()).await.unwrap().unwrap();
    assert_eq!(user.displayname.as_deref(), Some("Alice on PostgreSQL"));
    assert_eq!(moved.session_by_token("hash").await.unwrap().unwrap().device_id, "PHONE");
    drop(moved);

    // The old file was renamed aside as it was, with its write-ahead log; nothing else is left.
    let aside = aside_files(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(bytes(&aside[0]).unwrap(), stale.0, "the old hearth.db is unchanged");
    assert_eq!(bytes(&companion(&aside[0], "-wal")), stale.1, "and so is its log");
    assert!(!moving_path(&live).exists());
    assert!(!companion(&live, ".installing").exists());
    assert_eq!(sqlite_leftovers(&live), 0);
    assert_eq!(postgres_leftovers(&url).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_move_back_killed_mid_copy_resumes_and_keeps_what_it_copied() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = on_postgres(dir.path(), 60_000).await else { return };
    let live = dir.path().join("hearth.db");
    let stale = bytes(&live).unwrap();

    let handle = start(back_request(dir.path(), &url, None));
    let mut progress = handle.subscribe();
    progress
        .wait_for(|p| p.table.as_deref() == Some("events") && p.rows_done > 20_000)
        .await
        .unwrap();
    handle.abort_for_test();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Postgres, "still on PostgreSQL");
    assert_eq!(bytes(&live).unwrap(), stale, "the old hearth.db was not touched");
    assert!(moving_path(&live).exists());

    // The server goes on writing to PostgreSQL meanwhile: the change log there catches it.
    let on_postgres = store::open_postgres(&url).await.unwrap();
    append_messages(&on_postgres, 60_000, 500).await;
    on_postgres.set_displayname(&alice(), Some("Alice")).await.unwrap();
    drop(on_postgres);

    let last = std::sync::Mutex::new(Progress::default());
    run_to_end(back_request(dir.path(), &url, None), |p| *last.lock().unwrap() = p.clone())
        .await
        .unwrap();
    let last = last.into_inner().unwrap();
    assert!(last.tables_kept > 0, "the tables copied before were kept: {last:?}");
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);
    assert_same_data(dir.path(), &url).await;
    let aside = aside_files(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(bytes(&aside[0]).unwrap(), stale);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_copy_was_put_in_place_is_finished_by_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = on_postgres(dir.path(), 100).await else { return };
    let live = dir.path().join("hearth.db");
    let stale = bytes(&live).unwrap();

    // A run that died right after renaming its copy to hearth.db, before the configuration
    // named SQLite: the copy is in place, the old file aside, the marker says whose it is.
    let tables = PostgresSource::new(&url).tables().await.unwrap();
    let mut target = SqliteTarget::open(&live).await.unwrap();
    target.prepare(&tables).await.unwrap();
    target.set_epoch("an epoch of a log that is gone").await.unwrap();
    target.install(&live, std::time::SystemTime::now()).await.unwrap();
    drop(target);
    assert!(companion(&live, ".installing").exists());
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Postgres);

    let on_postgres = store::open_postgres(&url).await.unwrap();
    append_messages(&on_postgres, 100, 10).await;
    drop(on_postgres);

    run_to_end(back_request(dir.path(), &url, None), |_| {}).await.unwrap();
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);
    assert_same_data(dir.path(), &url).await;
    let aside = aside_files(dir.path());
    assert_eq!(aside.len(), 1, "the old file went aside once: {aside:?}");
    assert_eq!(bytes(&aside[0]).unwrap(), stale);
    assert!(!companion(&live, ".installing").exists());
    assert_eq!(event_count(&store::open_sqlite(&live).unwrap()).await, 110);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_marker_went_keeps_that_copy_aside_and_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = on_postgres(dir.path(), 100).await else { return };
    let live = dir.path().join("hearth.db");
    let stale = bytes(&live).unwrap();

    // A run that died after its copy was final but before the configuration named SQLite: the
    // copy is in place without its marker, so the next run cannot tell it from an old copy.
    let tables = PostgresSource::new(&url).tables().await.unwrap();
    let mut target = SqliteTarget::open(&live).await.unwrap();
    target.prepare(&tables).await.unwrap();
    target.install(&live, std::time::SystemTime::now()).await.unwrap();
    drop(target);
    crate::store::transfer::sqlite_target::installed(&live).await.unwrap();
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Postgres);

    run_to_end(back_request(dir.path(), &url, None), |_| {}).await.unwrap();
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);
    assert_same_data(dir.path(), &url).await;
    // Both files are kept aside, the old hearth.db byte for byte.
    let aside = aside_files(dir.path());
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert!(aside.iter().any(|path| bytes(path).unwrap() == stale), "{aside:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serving_postgres_store_moves_back_while_it_is_written_and_switches() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = on_postgres(dir.path(), 20_000).await else { return };
    let switchable = Arc::new(SwitchableStore::new(store::open_postgres(&url).await.unwrap()));
    let serving: Store = switchable.clone();

    let handle = start(back_request(dir.path(), &url, Some(switchable.clone())));
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

    // Every write went somewhere, and the store in use is the new hearth.db with all of them.
    let moved = store::open_sqlite(&dir.path().join("hearth.db")).unwrap();
    assert_eq!(event_count(&serving).await, 21_000);
    assert_eq!(event_count(&moved).await, 21_000);
    assert_eq!(serving.current_position().await.unwrap(), moved.current_position().await.unwrap());
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Sqlite);
    assert_eq!(postgres_leftovers(&url).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_move_back_leaves_postgres_serving_and_no_change_log() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = on_postgres(dir.path(), 40_000).await else { return };
    let handle = start(back_request(dir.path(), &url, None));
    let mut progress = handle.subscribe();
    progress.wait_for(|p| p.phase == Phase::Copying).await.unwrap();
    handle.cancel();
    let end = progress.wait_for(|p| matches!(p.phase, Phase::Cancelled | Phase::Done)).await;
    assert_eq!(end.unwrap().phase, Phase::Cancelled);
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Postgres);
    assert_eq!(postgres_leftovers(&url).await, Vec::<String>::new());

    run_to_end(back_request(dir.path(), &url, None), |_| {}).await.unwrap();
    assert_same_data(dir.path(), &url).await;
}

#[tokio::test]
async fn a_move_back_refuses_a_stray_file_where_its_copy_goes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = on_postgres(dir.path(), 10).await else { return };
    let stray = rusqlite::Connection::open(moving_path(&dir.path().join("hearth.db"))).unwrap();
    stray.execute_batch("CREATE TABLE recipes (id INTEGER PRIMARY KEY)").unwrap();
    drop(stray);

    let error = check_move_back(&back_request(dir.path(), &url, None)).await.unwrap_err();
    assert!(format!("{error:#}").contains("recipes"), "{error:#}");
    let error = run_to_end(back_request(dir.path(), &url, None), |_| {}).await.unwrap_err();
    assert!(format!("{error:#}").contains("not an unfinished move"), "{error:#}");
    assert_eq!(config_backend(dir.path()), DatabaseBackend::Postgres);
    assert_eq!(postgres_leftovers(&url).await, Vec::<String>::new(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn change_log_ids_become_visible_in_commit_order() {
    let Some(url) = target_database().await else { return };
    drop(store::open_postgres(&url).await.unwrap());
    let source = PostgresSource::new(&url);
    let tables = source.tables().await.unwrap();
    source.start_change_log(&tables).await.unwrap();
    let connect = || async {
        let (client, connection) =
            tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    let insert = "INSERT INTO users (user_id, created_ts) VALUES ($1, 0)";

    // The first writer logs a change and has not committed yet.
    let first = connect().await;
    first.batch_execute("BEGIN").await.unwrap();
    first.execute(insert, &[&"@first:localhost"]).await.unwrap();
    // A second writer cannot take a log id before the first commits: it waits for the lock.
    let second = connect().await;
    let waiting = tokio::spawn(async move {
        second.execute(insert, &[&"@second:localhost"]).await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second writer waits for the first to commit");
    assert_eq!(source.snapshot().await.unwrap().log_position().await.unwrap(), 0);

    first.batch_execute("COMMIT").await.unwrap();
    waiting.await.unwrap();
    let snapshot = source.snapshot().await.unwrap();
    let changes = snapshot.changes(0, snapshot.log_position().await.unwrap(), 10).await.unwrap();
    let keys: Vec<_> = changes.iter().map(|c| c.key.clone()).collect();
    let user = |name: &str| vec![crate::store::transfer::Value::Text(name.to_owned())];
    assert_eq!(keys, [user("@first:localhost"), user("@second:localhost")]);
    // An open snapshot holds the log table; its end lets the log go.
    drop(snapshot);
    source.stop_change_log().await.unwrap();
}
