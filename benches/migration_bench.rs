//! `cargo bench --bench migration-bench`: times the move from SQLite to PostgreSQL on a generated
//! database and prints a table of what was measured against the target (≥ 50,000 rows/s).
//!
//! It generates a data directory (a first run's `hearth.toml` and a `hearth.db` of 1,000,000
//! events in 100 rooms of a household of six; see `migration_bench/generate.rs`), starts a
//! private PostgreSQL cluster with `scripts/pg-test-cluster` (or uses the server
//! `HEARTH_BENCH_POSTGRES_URL` names), and runs the whole move as `hearth migrate` does, with no
//! server running. The phases are timed from the move's progress reports. Afterwards it checks
//! that `hearth.toml` names PostgreSQL and that the target holds every event.
//!
//! The machine may be busy with other work: the report gives the CPU time of the move's process
//! and of the PostgreSQL cluster beside the wall-clock times, and the load average.
//!
//! Options (after `--`): `--events N` generates N events, `--quick` 50,000, `--keep-data` keeps
//! the generated data directory. A missed target is reported, not asserted: the exit status is
//! non-zero only when the run or its checks fail.
//!
//! Cargo passes `--bench` under `cargo bench`; without it (`cargo test --benches`) nothing runs.

#[path = "migration_bench/generate.rs"]
mod generate;
#[path = "migration_bench/postgres.rs"]
mod postgres;
// Shared with hearth-bench, which uses the percentile helpers this benchmark has no use for.
#[allow(dead_code)]
#[path = "hearth_bench/report.rs"]
mod report;

use std::{
    path::Path,
    process::ExitCode,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use hearth::{
    config::{Config, DatabaseBackend},
    migrate::{MoveRequest, Phase, Progress},
};

use self::{
    generate::Generated,
    report::{Goal, Row, print_table},
};

/// The target for the move, over the whole move and over the copy alone.
const ROWS_PER_SECOND_TARGET: f64 = 50_000.0;
const FULL_EVENTS: u64 = 1_000_000;
const QUICK_EVENTS: u64 = 50_000;

/// Times the move from SQLite to PostgreSQL on a generated database.
#[derive(Parser)]
#[command(name = "migration-bench")]
struct Options {
    /// How many events to generate (default 1,000,000).
    #[arg(long, value_name = "N", conflicts_with = "quick")]
    events: Option<u64>,
    /// A short run: 50,000 events.
    #[arg(long)]
    quick: bool,
    /// Keep the generated data directory (its path is printed), to look at it or to run
    /// `hearth db migrate` on a copy (after setting `backend = "sqlite"` in its hearth.toml
    /// again: the move switched it to a database that is gone).
    #[arg(long)]
    keep_data: bool,
    /// Set by `cargo bench`; without it the benchmark does not run.
    #[arg(long, hide = true)]
    bench: bool,
}

/// When the move entered each phase (and table), as its progress reports told.
struct Timeline {
    started: Instant,
    /// Every change of phase or table, with the time since the start.
    steps: Vec<(Phase, Option<String>, Duration)>,
    last: Option<Progress>,
}

/// Everything measured about one move.
struct Measured {
    total: Duration,
    timeline: Timeline,
    /// Rows the copy phase wrote, as the last progress report counts them.
    rows_copied: u64,
    /// Rows of Hearth's tables in `hearth.db` after the move.
    rows_in_sqlite: u64,
    events_in_target: i64,
    config_names_postgres: bool,
    load_before: String,
    load_after: String,
    /// CPU seconds this process (the move's side) used during the move.
    cpu_seconds: Option<f64>,
    /// CPU seconds the private PostgreSQL cluster used during the move.
    postgres_cpu_seconds: Option<f64>,
}

fn main() -> ExitCode {
    let options = Options::parse();
    if !options.bench {
        eprintln!(
            "migration-bench: not run without --bench (use `cargo bench --bench migration-bench`)"
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("migration-bench: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("migration-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        progress("warning: this benchmark was built without optimizations; use `cargo bench`");
    }
    let events = match (options.events, options.quick) {
        (Some(events), _) => events,
        (None, true) => QUICK_EVENTS,
        (None, false) => FULL_EVENTS,
    };
    let temp = tempfile::Builder::new().prefix("hearth-migration-bench").tempdir()?;
    let data_dir = temp.path().join("data");
    std::fs::create_dir(&data_dir).context("cannot create the data directory")?;
    progress(&format!("generating {events} events in {}", data_dir.display()));
    let generated = generate::data_directory(&data_dir, events).await?;
    progress(&format!("generated in {:.1} s; starting PostgreSQL", generated.took.as_secs_f64()));
    if options.keep_data {
        progress(&format!("keeping {}", temp.keep().display()));
    }

    let mut server = postgres::Server::start().await?;
    progress(&format!("moving to {}", server.describe()));
    let outcome = move_and_check(&generated, &server).await;
    server.stop().await;
    let measured = outcome?;

    print_report(&options, &generated, &measured, &server.describe());
    check(&generated, &measured)
}

/// Runs the move as `hearth migrate` does and reads back what it left.
async fn move_and_check(
    generated: &Generated,
    server: &postgres::Server,
) -> anyhow::Result<Measured> {
    let sqlite_path = generated.data_dir.join(hearth::server::DATABASE_FILE);
    let config_path = generated.data_dir.join(hearth::config::CONFIG_FILE);
    let request = MoveRequest {
        sqlite_path: sqlite_path.clone(),
        config_path: config_path.clone(),
        target_url: server.database_url.clone(),
        store: None,
        direction: hearth::migrate::Direction::ToPostgres,
    };
    let load_before = load_average();
    let cpu_before = cpu_seconds();
    let postgres_cpu_before = server.cpu_seconds();
    let timeline = Mutex::new(Timeline::new());
    hearth::migrate::run_to_end(request, |p| {
        if let Ok(mut timeline) = timeline.lock() {
            timeline.record(p);
        }
    })
    .await
    .context("the move failed")?;
    let timeline = timeline.into_inner().map_err(|_| anyhow::anyhow!("a report panicked"))?;
    let total = timeline.started.elapsed();
    let cpu_seconds = cpu_seconds().zip(cpu_before).map(|(after, before)| after - before);
    let postgres_cpu_seconds =
        server.cpu_seconds().zip(postgres_cpu_before).map(|(after, before)| after - before);
    let load_after = load_average();

    let config = Config::load(&config_path)?;
    Ok(Measured {
        total,
        rows_copied: timeline.last.as_ref().map_or(0, |p| p.rows_done),
        timeline,
        rows_in_sqlite: sqlite_rows(&sqlite_path)?,
        events_in_target: server.query_i64("SELECT count(*) FROM events").await?,
        config_names_postgres: config.database.backend == DatabaseBackend::Postgres,
        load_before,
        load_after,
        cpu_seconds,
        postgres_cpu_seconds,
    })
}

/// Fails unless the move left what it must: the configuration switched, every event copied.
fn check(generated: &Generated, measured: &Measured) -> anyhow::Result<()> {
    if !measured.config_names_postgres {
        bail!("after the move, hearth.toml does not name PostgreSQL");
    }
    if measured.events_in_target != generated.events as i64 {
        bail!(
            "PostgreSQL holds {} events, not the {} generated",
            measured.events_in_target,
            generated.events
        );
    }
    Ok(())
}

impl Timeline {
    fn new() -> Self {
        Self { started: Instant::now(), steps: Vec::new(), last: None }
    }

    fn record(&mut self, report: &Progress) {
        let step = (report.phase, report.table.clone());
        if self.steps.last().is_none_or(|(phase, table, _)| (*phase, table.clone()) != step) {
            let at = self.started.elapsed();
            let table = step.1.as_deref().map(|t| format!(" {t}")).unwrap_or_default();
            progress(&format!("  move at {:.1} s: {:?}{table}", at.as_secs_f64(), step.0));
            self.steps.push((step.0, step.1, at));
        }
        self.last = Some(report.clone());
    }

    /// When the move first reported `phase`.
    fn entered(&self, phase: Phase) -> Option<Duration> {
        self.steps.iter().find(|(p, _, _)| *p == phase).map(|(_, _, at)| *at)
    }

    /// From the first report of `from` to the first of `to`.
    fn between(&self, from: Phase, to: Phase) -> Option<Duration> {
        Some(self.entered(to)?.saturating_sub(self.entered(from)?))
    }

    /// How long the copy of each table took, in copy order.
    fn table_copies(&self) -> Vec<(String, Duration)> {
        let mut copies = Vec::new();
        for (n, (phase, table, at)) in self.steps.iter().enumerate() {
            let (Phase::Copying, Some(table)) = (phase, table) else { continue };
            let end = self.steps.get(n + 1).map_or(*at, |(_, _, next)| *next);
            copies.push((table.clone(), end.saturating_sub(*at)));
        }
        copies
    }
}

fn print_report(options: &Options, generated: &Generated, measured: &Measured, server: &str) {
    let mut rows = generation_rows(generated);
    rows.extend(move_rows(generated, measured));
    rows.extend(machine_rows(measured));
    println!();
    let quick = if options.quick { " (--quick: 50,000 events)" } else { "" };
    println!("migration-bench: SQLite → PostgreSQL ({server}){quick}");
    println!();
    print_table(&rows);
}

fn generation_rows(generated: &Generated) -> Vec<Row> {
    let rate = generated.events as f64 / generated.took.as_secs_f64().max(1e-9);
    vec![
        Row::info(
            "generated database",
            format!(
                "{} events, {} rooms, {} users, mean PDU {:.0} bytes, hearth.db {:.0} MB",
                group(generated.events),
                generated.rooms,
                generated.users,
                generated.mean_pdu_bytes,
                generated.db_bytes as f64 / 1e6
            ),
        ),
        Row::info(
            "  time to generate it",
            format!("{} ({} events/s)", secs(generated.took), group(rate as u64)),
        ),
    ]
}

fn move_rows(generated: &Generated, measured: &Measured) -> Vec<Row> {
    let timeline = &measured.timeline;
    let total = measured.total.as_secs_f64().max(1e-9);
    let copy = timeline.between(Phase::Copying, Phase::Indexing);
    let mut rows = vec![
        Row::info("rows copied (all tables)", group(measured.rows_copied)),
        Row::info("  rows in hearth.db's tables after the move", group(measured.rows_in_sqlite)),
        Row::info(
            "events in PostgreSQL afterwards",
            format!(
                "{} of {}",
                group(measured.events_in_target.max(0) as u64),
                group(generated.events)
            ),
        ),
        Row::info("hearth.toml names postgres afterwards", yes_no(measured.config_names_postgres)),
        Row::info("move, total", secs(measured.total)),
        Row::info(
            "  checking, schema, change log",
            optional_secs(timeline.entered(Phase::Copying)),
        ),
        Row::info("  copy", optional_secs(copy)),
    ];
    for (table, took) in timeline.table_copies() {
        if took >= Duration::from_millis(100) {
            rows.push(Row::info(&format!("    of which {table}"), secs(took)));
        }
    }
    rows.extend([
        Row::info(
            "  indexes and constraints built after the copy",
            optional_secs(timeline.between(Phase::Indexing, Phase::CatchingUp)),
        ),
        Row::info(
            "  catch-up",
            optional_secs(timeline.between(Phase::CatchingUp, Phase::Verifying)),
        ),
        Row::info(
            "  verify (digests of every table)",
            optional_secs(timeline.between(Phase::Verifying, Phase::Switching)),
        ),
        Row::info(
            "  switch (last changes, counts, config)",
            optional_secs(
                timeline.entered(Phase::Switching).map(|at| measured.total.saturating_sub(at)),
            ),
        ),
    ]);
    let overall = measured.rows_copied as f64 / total;
    let copy_rate = copy.map(|copy| measured.rows_copied as f64 / copy.as_secs_f64().max(1e-9));
    let goal = Goal::AtLeast(ROWS_PER_SECOND_TARGET);
    rows.push(Row::target("rows/s over the whole move", Some(overall), "rows/s", goal));
    rows.push(Row::target("rows/s during the copy phase", copy_rate, "rows/s", goal));
    rows
}

fn machine_rows(measured: &Measured) -> Vec<Row> {
    let seconds = measured.total.as_secs_f64().max(1e-9);
    let cpu = |cpu: Option<f64>| match cpu {
        Some(cpu) => format!("{cpu:.1} s ({:.0}% of one core)", 100.0 * cpu / seconds),
        None => "n/a".to_owned(),
    };
    vec![
        Row::info("CPU time of the move (this process)", cpu(measured.cpu_seconds)),
        Row::info("CPU time of PostgreSQL (all its processes)", cpu(measured.postgres_cpu_seconds)),
        Row::info(
            "load average before → after (1, 5, 15 min)",
            format!("{} → {} on {} cores", measured.load_before, measured.load_after, cores()),
        ),
    ]
}

/// Rows of Hearth's tables in the SQLite file (not the migration tool's bookkeeping).
fn sqlite_rows(path: &Path) -> anyhow::Result<u64> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let tables: Vec<String> = connection
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name <> 'refinery_schema_history'",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut rows = 0;
    for table in tables {
        let count: i64 =
            connection.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| r.get(0))?;
        rows += count.max(0) as u64;
    }
    Ok(rows)
}

/// The three load averages, from `/proc/loadavg` where there is one.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<&str> = text.split_whitespace().take(3).collect();
    if averages.is_empty() { "n/a".to_owned() } else { averages.join(" ") }
}

/// User and system CPU seconds of this process so far, from `/proc/self/stat` (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture Hearth builds for.
    Some(ticks as f64 / 100.0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

fn optional_secs(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "n/a".to_owned(), secs)
}

fn yes_no(value: bool) -> String {
    if value { "yes".to_owned() } else { "NO".to_owned() }
}

/// 1234567 → "1,234,567".
fn group(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

fn progress(message: &str) {
    eprintln!("migration-bench: {message}");
}
