//! Moving the data from SQLite to PostgreSQL and back, done while Hearth keeps serving. The move
//! to PostgreSQL:
//!
//! 1. **Check** the target before anything is written: reachable, PostgreSQL 12 or later, UTF-8,
//!    the role may create tables, and empty (or holding an unfinished move of ours).
//! 2. **Log** every change to the SQLite file from now on (triggers, in the file itself, so the
//!    log outlives a crash), then **copy** a consistent snapshot table by table, parents before
//!    children, in batches whose progress the target records in the same transaction.
//! 3. **Catch up** with what changed meanwhile, from a newer snapshot, until little is left, and
//!    **verify** every table against that snapshot by row count and digest, still online.
//! 4. **Switch**: writes pause, the last changes are copied and compared row by row, the counts of
//!    every table are compared, the configuration names PostgreSQL, and the running store
//!    switches; the held writes go to PostgreSQL. The SQLite file stays as it was.
//!
//! Until the configuration names PostgreSQL, Hearth serves from SQLite: a crash, a lost
//! connection or a cancel at any earlier point loses nothing, and running the move again resumes
//! it: tables copied completely by the same unbroken change log are kept and caught up; the rest
//! is copied again.
//!
//! The move back ([`Direction::ToSqlite`]) runs the same steps, resume rules and reports with the
//! ends swapped (`ends.rs` dispatches to each backend's side in `store::transfer`). The check:
//! PostgreSQL is reachable and holds Hearth's schema, and the data directory may take the new
//! file. The change log is a table in PostgreSQL filled by plpgsql triggers, its ids
//! commit-ordered by an advisory lock; installing and removing the triggers happens with the
//! server's writes paused for a moment. The copy pages every table by its primary key out of a
//! `REPEATABLE READ` snapshot into `hearth.db.moving`, made by the SQLite backend's migrations.
//! At the switch the new file takes the place of `hearth.db` (an earlier one, the copy the move
//! to PostgreSQL left, is renamed aside under a dated name and never written), the change log
//! leaves PostgreSQL, and only then does the configuration name SQLite. PostgreSQL keeps its data
//! as the way back. Until the configuration names SQLite, Hearth serves from PostgreSQL, and a
//! rerun resumes or finishes whatever a crash interrupted (see `store::transfer::sqlite_target`).

mod apply;
mod ends;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_back;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use self::ends::{Cursor, Snapshot, Source, Target};
use crate::{
    config::{self, DatabaseBackend, DatabaseConfig},
    store::{
        self, StoreResult,
        switch::{SwitchableStore, WritePause},
        transfer::{
            TableSchema,
            postgres::{PostgresTarget, TargetState},
            retire, sqlite_target,
        },
    },
};

/// Rows per copied batch (and per progress record).
const BATCH_ROWS: usize = 10_000;
/// Catch-up rounds before the pause, at most; fewer when little is left.
const CATCH_UP_ROUNDS: usize = 5;
/// Changes left after which catching up online is not worth another round.
const SMALL_ENOUGH: usize = 1_000;

/// What to move, and where.
#[derive(Clone)]
pub struct MoveRequest {
    /// The SQLite database file the server uses now.
    pub sqlite_path: PathBuf,
    /// The configuration file to switch once the copy is proven.
    pub config_path: PathBuf,
    /// The PostgreSQL database, as a connection URL: the target of a move to PostgreSQL, the
    /// source of a move back.
    pub target_url: String,
    /// The running server's store, whose writes pause for the switch; `None` when no server
    /// runs on the data (the command line holds the data directory's lock then).
    pub store: Option<Arc<SwitchableStore>>,
    /// Which way the data moves.
    pub direction: Direction,
}

/// Which way the data moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// From `hearth.db` to PostgreSQL.
    #[default]
    #[serde(rename = "postgres")]
    ToPostgres,
    /// Back from PostgreSQL to a new `hearth.db`; an existing one is kept aside.
    #[serde(rename = "sqlite")]
    ToSqlite,
}

impl Direction {
    /// The backend that holds the data once a move this way is done.
    pub fn backend(self) -> DatabaseBackend {
        match self {
            Direction::ToPostgres => DatabaseBackend::Postgres,
            Direction::ToSqlite => DatabaseBackend::Sqlite,
        }
    }
}

/// Where a move is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Checking,
    Copying,
    /// Building the indexes and constraints the copy set aside.
    Indexing,
    CatchingUp,
    Verifying,
    Switching,
    Done,
    Failed,
    Cancelled,
}

/// A move's progress, as the admin API and the command line show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    /// Where the data moves to.
    #[serde(default)]
    pub to: Direction,
    pub phase: Phase,
    /// The table being copied or verified.
    pub table: Option<String>,
    pub rows_done: u64,
    pub rows_total: u64,
    pub rows_per_second: u64,
    pub eta_seconds: Option<u64>,
    /// Whether this run resumed an earlier one (and how many tables it kept).
    pub tables_kept: usize,
    /// Rough size the data takes at the target, from its size at the source.
    pub estimated_bytes: u64,
    /// Why the move failed.
    pub error: Option<String>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            to: Direction::default(),
            phase: Phase::Checking,
            table: None,
            rows_done: 0,
            rows_total: 0,
            rows_per_second: 0,
            eta_seconds: None,
            tables_kept: 0,
            estimated_bytes: 0,
            error: None,
        }
    }
}

/// A move in progress: its reports and the way to cancel it.
#[derive(Clone)]
pub struct MoveHandle {
    progress: watch::Receiver<Progress>,
    cancel: Arc<AtomicBool>,
    #[cfg(test)]
    task: tokio::task::AbortHandle,
}

impl MoveHandle {
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// A receiver that sees every change of the progress.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Asks the move to stop at its next batch. A move already switching finishes.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.progress.borrow().phase, Phase::Done | Phase::Failed | Phase::Cancelled)
    }

    /// Stops the move's task where it is, as a crash of the process would.
    #[cfg(test)]
    fn abort_for_test(&self) {
        self.task.abort();
    }
}

/// Starts a move in the background; its handle reports progress and can cancel it.
pub fn start(request: MoveRequest) -> MoveHandle {
    let progress = Progress { to: request.direction, ..Progress::default() };
    let (sender, receiver) = watch::channel(progress);
    let cancel = Arc::new(AtomicBool::new(false));
    let reporter = Reporter { sender, cancel: cancel.clone(), started: Instant::now() };
    let _task = tokio::spawn(async move {
        let outcome = run(&request, &reporter).await;
        reporter.finish(outcome);
    });
    MoveHandle {
        progress: receiver,
        cancel,
        #[cfg(test)]
        task: _task.abort_handle(),
    }
}

/// Sends progress and tells the move whether it was cancelled.
struct Reporter {
    sender: watch::Sender<Progress>,
    cancel: Arc<AtomicBool>,
    started: Instant,
}

/// Why a move stopped early without failing.
#[derive(Debug, thiserror::Error)]
#[error("the move was cancelled")]
struct Cancelled;

impl Reporter {
    fn update(&self, change: impl FnOnce(&mut Progress)) {
        self.sender.send_modify(change);
    }

    fn phase(&self, phase: Phase, table: Option<&str>) {
        self.update(|p| {
            p.phase = phase;
            p.table = table.map(str::to_owned);
        });
    }

    fn rows(&self, done: u64) {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        self.update(|p| {
            p.rows_done = done;
            let rate = done as f64 / seconds;
            p.rows_per_second = rate as u64;
            p.eta_seconds =
                (rate > 0.0).then(|| (p.rows_total.saturating_sub(done) as f64 / rate) as u64);
        });
    }

    fn check_cancel(&self) -> anyhow::Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(Cancelled.into());
        }
        Ok(())
    }

    fn finish(&self, outcome: anyhow::Result<()>) {
        match outcome {
            Ok(()) => self.phase(Phase::Done, None),
            Err(error) if error.is::<Cancelled>() => self.phase(Phase::Cancelled, None),
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "the move of the data failed");
                self.update(|p| {
                    p.phase = Phase::Failed;
                    p.error = Some(format!("{error:#}"));
                });
            }
        }
    }
}

/// Runs a whole move, reporting as it goes. Also the command line's entry point.
pub async fn run_to_end(
    request: MoveRequest,
    on_progress: impl Fn(&Progress),
) -> anyhow::Result<()> {
    let handle = start(request);
    let mut progress = handle.subscribe();
    loop {
        let current = progress.borrow_and_update().clone();
        on_progress(&current);
        match current.phase {
            Phase::Done => return Ok(()),
            Phase::Failed => bail!("{}", current.error.unwrap_or_default()),
            Phase::Cancelled => bail!("the move was cancelled"),
            _ => {}
        }
        if progress.changed().await.is_err() {
            bail!("the move stopped without a report");
        }
    }
}

/// The checks of a move's first step alone: whether `url` names a database the data may move to
/// (reachable, PostgreSQL 12 or later, UTF-8, tables may be created, empty or an unfinished
/// move's). Writes nothing.
pub async fn check_target(url: &str) -> anyhow::Result<()> {
    let target = PostgresTarget::connect(url).await?;
    refuse_occupied(&target.preflight().await?.state)
}

fn refuse_occupied(state: &TargetState) -> anyhow::Result<()> {
    if let TargetState::Occupied(found) = state {
        bail!(
            "the PostgreSQL database is not empty (it has the tables {}); \
             give Hearth an empty database of its own",
            found.join(", ")
        );
    }
    Ok(())
}

/// Gives up a move that was not run to its end (it failed, or the process died on the way): the
/// source's change log goes, so that the source no longer logs every write for a move that
/// will not come back, and running the move again starts over. Harmless when there is none.
pub async fn abandon(request: &MoveRequest) -> anyhow::Result<()> {
    Source::of(request).stop_change_log(request.store.as_ref()).await?;
    tracing::info!("an unfinished move was given up: its change log is gone");
    Ok(())
}

/// The checks of a move back to SQLite alone (see [`MoveRequest`]): PostgreSQL is reachable and
/// holds Hearth's schema, and the data directory may take the new file. Writes nothing.
pub async fn check_move_back(request: &MoveRequest) -> anyhow::Result<()> {
    ends::check_to_sqlite(request).await.map(|_| ())
}

async fn run(request: &MoveRequest, reporter: &Reporter) -> anyhow::Result<()> {
    reporter.phase(Phase::Checking, None);
    let ends::Ends { source, mut target, tables, estimated_bytes } = ends::open(request).await?;
    reporter.update(|p| p.estimated_bytes = estimated_bytes);
    target.claim().await?;
    reporter.check_cancel()?;

    let store = request.store.as_ref();
    let epoch = source.start_change_log(&tables, store).await?;
    let outcome = copy_and_switch(request, reporter, &source, &mut target, &tables, &epoch).await;
    if outcome.as_ref().is_err_and(|e| e.is::<Cancelled>()) {
        // A cancelled move stops logging changes; running it again starts over.
        source.stop_change_log(store).await?;
    }
    outcome
}

async fn copy_and_switch(
    request: &MoveRequest,
    reporter: &Reporter,
    source: &Source,
    target: &mut Target,
    tables: &[TableSchema],
    epoch: &str,
) -> anyhow::Result<()> {
    let resumable = target.epoch().await.unwrap_or(None).as_deref() == Some(epoch);
    target.prepare(tables).await?;
    let kept = plan_resume(target, tables, resumable).await?;
    target.set_epoch(epoch).await?;
    reporter.update(|p| p.tables_kept = kept.len());

    // Everything from here on reads the log from its start: changes logged before a kept
    // table's copy are already in it, and re-applying a change is harmless.
    let snapshot = source.snapshot().await?;
    let mut applied = snapshot.log_position().await?;
    apply::catch_up(&snapshot, target, tables, 0, applied, Some(kept.as_slice())).await?;
    copy_tables(reporter, &snapshot, target, tables, &kept).await?;
    drop(snapshot);
    reporter.check_cancel()?;
    target.rebuild_deferred(|table| reporter.phase(Phase::Indexing, Some(table))).await?;

    reporter.phase(Phase::CatchingUp, None);
    let mut latest = source.snapshot().await?;
    for _ in 0..CATCH_UP_ROUNDS {
        reporter.check_cancel()?;
        latest = source.snapshot().await?;
        let position = latest.log_position().await?;
        let changed = apply::catch_up(&latest, target, tables, applied, position, None).await?;
        applied = position;
        if changed < SMALL_ENOUGH {
            break;
        }
    }
    verify_tables(reporter, &latest, target, tables).await?;
    drop(latest);
    reporter.check_cancel()?;
    switch(request, reporter, source, target, tables, applied).await
}

/// Decides which tables an earlier run copied completely and may keep; empties the others
/// (children first, so no foreign key stands in the way). Returns the names kept.
async fn plan_resume(
    target: &mut Target,
    tables: &[TableSchema],
    resumable: bool,
) -> anyhow::Result<Vec<String>> {
    let done: Vec<String> = match resumable {
        true => target.done_tables().await?,
        false => Vec::new(),
    };
    // A table is kept only with every table it references: a parent copied again would leave
    // its children pointing at rows that are gone. Tables come parents first.
    let mut kept: Vec<String> = Vec::new();
    for table in tables {
        let parents_kept = table.references.iter().all(|r| r == &table.name || kept.contains(r));
        if done.contains(&table.name) && parents_kept {
            kept.push(table.name.clone());
        }
    }
    for table in tables.iter().rev() {
        if !kept.contains(&table.name) && target.count(table).await? > 0 {
            target.restart_table(table).await?;
        }
    }
    Ok(kept)
}

/// Copies every table not kept from the snapshot, in batches.
async fn copy_tables(
    reporter: &Reporter,
    snapshot: &Snapshot,
    target: &mut Target,
    tables: &[TableSchema],
    kept: &[String],
) -> anyhow::Result<()> {
    let to_copy: Vec<&TableSchema> = tables.iter().filter(|t| !kept.contains(&t.name)).collect();
    let mut total = 0;
    for table in &to_copy {
        total += snapshot.count(table).await?;
    }
    reporter.update(|p| p.rows_total = total);
    let mut done = 0;
    for table in to_copy {
        reporter.phase(Phase::Copying, Some(&table.name));
        let mut batch = snapshot.rows_after(table, &Cursor::Start, BATCH_ROWS).await?;
        loop {
            reporter.check_cancel()?;
            let complete = batch.rows.len() < BATCH_ROWS;
            let (rows, after) = (batch.rows, batch.last);
            let copied_rows = rows.len() as u64;
            // The next batch is read from the source while the target takes this one: the two
            // sides work at the same time instead of waiting for each other.
            let next = async {
                match complete {
                    true => Ok(ends::Batch { rows: Vec::new(), last: after.clone() }),
                    false => snapshot.rows_after(table, &after, BATCH_ROWS).await,
                }
            };
            let (copied, next) =
                tokio::join!(target.copy_batch(table, rows, &after, complete), next);
            copied.with_context(|| format!("copying table {} failed", table.name))?;
            batch = next?;
            done += copied_rows;
            reporter.rows(done);
            if complete {
                break;
            }
        }
    }
    Ok(())
}

/// Compares every table of the target with the snapshot: row counts, then digests.
async fn verify_tables(
    reporter: &Reporter,
    snapshot: &Snapshot,
    target: &mut Target,
    tables: &[TableSchema],
) -> anyhow::Result<()> {
    for table in tables {
        reporter.phase(Phase::Verifying, Some(&table.name));
        // Both sides read and hash at the same time.
        let (expected, found) = tokio::join!(snapshot.digest(table), target.digest(table));
        let (expected, found) = (expected?, found?);
        if expected != found {
            // Copied again next time.
            target.restart_table(table).await.ok();
            bail!(
                "table {} differs after the copy ({} rows in {}, {} in {}); \
                 run the move again to copy it anew",
                table.name,
                expected.rows,
                snapshot.name(),
                found.rows,
                target.name()
            );
        }
    }
    Ok(())
}

/// Pauses writes, copies and checks the last changes, and switches the configuration and the
/// running store to the target.
async fn switch(
    request: &MoveRequest,
    reporter: &Reporter,
    source: &Source,
    target: &mut Target,
    tables: &[TableSchema],
    applied: i64,
) -> anyhow::Result<()> {
    reporter.phase(Phase::Switching, None);
    let pause = match &request.store {
        Some(store) => Some(store.pause_writes().await),
        None => None,
    };
    // From here no other process (`hearth user add`) can write into the source either.
    retire(request, source, tables).await?;
    let outcome = switch_paused(request, source, target, tables, applied, pause).await;
    if outcome.is_err()
        && let Err(error) = unretire(request, source).await
    {
        tracing::warn!(error = format!("{error:#}"), "cannot let the source take writes again");
    }
    outcome
}

async fn retire(request: &MoveRequest, source: &Source, tables: &[TableSchema]) -> StoreResult<()> {
    match source {
        Source::Sqlite(_) => retire::retire_sqlite(&request.sqlite_path, tables).await,
        Source::Postgres(_) => retire::retire_postgres(&request.target_url, tables).await,
    }
}

async fn unretire(request: &MoveRequest, source: &Source) -> StoreResult<()> {
    match source {
        Source::Sqlite(_) => retire::unretire_sqlite(&request.sqlite_path).await,
        Source::Postgres(_) => retire::unretire_postgres(&request.target_url).await,
    }
}

/// The switch once writes are paused and the source is retired.
async fn switch_paused(
    request: &MoveRequest,
    source: &Source,
    target: &mut Target,
    tables: &[TableSchema],
    applied: i64,
    pause: Option<WritePause>,
) -> anyhow::Result<()> {
    let last = source.snapshot().await?;
    let position = last.log_position().await?;
    apply::catch_up(&last, target, tables, applied, position, None).await?;
    apply::verify_changed(&last, target, tables, applied, position).await?;
    for table in tables {
        let (expected, found) = (last.count(table).await?, target.count(table).await?);
        if expected != found {
            bail!(
                "table {} has {expected} rows in {} but {found} in {}",
                table.name,
                source.name(),
                target.name()
            );
        }
    }
    drop(last);
    let missing = target.deferred().await?;
    if !missing.is_empty() {
        bail!("the target lacks indexes or constraints the copy set aside: {missing:?}");
    }
    match target {
        Target::Postgres(target) => switch_to_postgres(request, pause, source, target).await,
        Target::Sqlite(target) => switch_to_sqlite(request, pause, source, target).await,
    }
}

/// The end of a move to PostgreSQL: the configuration names PostgreSQL, the running store
/// switches, and the bookkeeping on both sides goes.
async fn switch_to_postgres(
    request: &MoveRequest,
    pause: Option<WritePause>,
    source: &Source,
    target: &mut PostgresTarget,
) -> anyhow::Result<()> {
    let database =
        DatabaseConfig { backend: DatabaseBackend::Postgres, url: request.target_url.clone() };
    let new_store = match &pause {
        Some(_) => Some(store::open_postgres(&request.target_url).await?),
        None => None,
    };
    config::set_database(&request.config_path, &database)?;
    if let (Some(pause), Some(new_store)) = (pause, new_store) {
        pause.switch_to(new_store);
    }
    tracing::info!("the data moved to PostgreSQL; hearth.db stays as it was, as the way back");
    // The move's bookkeeping goes last: a crash before this only leaves it behind, and so does
    // a failure here, which must not report as failed a move that has switched.
    if let Err(error) = source.stop_change_log(None).await {
        tracing::warn!(error = format!("{error:#}"), "cannot remove the change log from hearth.db");
    }
    if let Err(error) = target.finish().await {
        tracing::warn!(error = format!("{error:#}"), "cannot remove the move's bookkeeping");
    }
    Ok(())
}

/// The end of a move back to SQLite, with writes still paused: the new file takes the place of
/// `hearth.db` (an old one is renamed aside), the change log leaves PostgreSQL, and only then
/// does the configuration name SQLite and the running store switch. See
/// [`sqlite_target`] for what a crash between these steps leaves and how a rerun finishes.
async fn switch_to_sqlite(
    request: &MoveRequest,
    pause: Option<WritePause>,
    source: &Source,
    target: &mut sqlite_target::SqliteTarget,
) -> anyhow::Result<()> {
    let live = request.sqlite_path.clone();
    let aside = target.install(&live, std::time::SystemTime::now()).await?;
    // Writes are paused (or no server runs): nothing can change between the last catch-up and
    // the log's end. A crash from here until the configuration names SQLite leaves PostgreSQL
    // serving without a log, and the next run starts afresh.
    source.stop_change_log(None).await?;
    sqlite_target::installed(&live).await?;
    let new_store = match &pause {
        Some(_) => {
            let path = live.clone();
            Some(tokio::task::spawn_blocking(move || store::open_sqlite(&path)).await??)
        }
        None => None,
    };
    let database = DatabaseConfig { backend: DatabaseBackend::Sqlite, url: String::new() };
    config::set_database(&request.config_path, &database)?;
    if let (Some(pause), Some(new_store)) = (pause, new_store) {
        pause.switch_to(new_store);
    }
    match &aside {
        Some(aside) => tracing::info!(
            old_copy = %aside.display(),
            "the data moved back to SQLite; the PostgreSQL database stays as it was, as the way \
             back, and the earlier hearth.db was renamed aside"
        ),
        None => tracing::info!(
            "the data moved back to SQLite; the PostgreSQL database stays as it was, as the way back"
        ),
    }
    if let Err(error) = sqlite_target::remove_bookkeeping(&live).await {
        tracing::warn!(error = format!("{error:#}"), "cannot remove the move's bookkeeping");
    }
    Ok(())
}
