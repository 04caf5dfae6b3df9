//! `cargo bench --bench hearth-bench`: measures a Hearth server from the outside, over HTTP, and
//! prints a table of what was measured against Hearth's targets.
//!
//! By default it starts the release `hearth` binary that `cargo bench` builds alongside it, on a
//! fresh temporary data directory whose `hearth.toml` opens registration and lifts the login
//! rate limit. It measures:
//!
//! - the time from spawning the process to serving (first `200` on `/versions`), on fresh data
//!   directories and again on restarts over the data the workloads left;
//! - idle memory (VmRSS) after start, after the workloads settle, and after a restart;
//! - sends per second with 50 concurrent clients (50 users) in one room;
//! - the latency from the start of a send to the arrival of the `/sync` long poll it wakes;
//! - the initial `/sync` (default filter) of a user in 100 rooms of 100 messages;
//! - the fan-out of an encrypted message (key share to every device, then the message) to the
//!   long polls of a room's 20 members;
//! - the incremental and initial `/sync` of a user in 50 rooms whose syncs carry a message,
//!   read receipts and typing from every room.
//!
//! Options (after `--`): `--homeserver URL` measures an already running homeserver instead (open
//! registration needed; memory only with `--pid PID`), `--quick` makes a short run. A missed
//! target is reported, not asserted: the exit status is non-zero only when the run itself fails.
//!
//! Cargo passes `--bench` under `cargo bench`; without it (`cargo test --benches`) nothing runs.

#[path = "hearth_bench/busy_rooms.rs"]
mod busy_rooms;
#[path = "hearth_bench/client.rs"]
mod client;
#[path = "hearth_bench/encrypted.rs"]
mod encrypted;
#[path = "hearth_bench/report.rs"]
mod report;
#[path = "hearth_bench/server.rs"]
mod server;
#[path = "hearth_bench/workload.rs"]
mod workload;

use std::{
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;

use self::{
    busy_rooms::BusyRooms,
    client::Client,
    encrypted::Fanout,
    report::{Goal, Row, median, ms, percentile, print_table, spread},
    server::{Server, Spawned, StartTime},
    workload::{InitialSync, Sizes, Throughput, Wake},
};

/// The `hearth` binary cargo built (in the bench profile, i.e. release) for this benchmark.
const HEARTH_BIN: &str = env!("CARGO_BIN_EXE_hearth");
/// How long the server is left alone before its idle memory is read.
const SETTLE: Duration = Duration::from_secs(3);

const SENDS_TARGET: f64 = 2_500.0;
const WAKE_P50_TARGET_MS: f64 = 5.0;
const INITIAL_SYNC_TARGET_MS: f64 = 50.0;
const IDLE_RSS_TARGET_MB: f64 = 20.0;
const START_TARGET_MS: f64 = 200.0;

/// Benchmarks a Hearth server (or another homeserver) and prints a table against the targets.
#[derive(Parser)]
#[command(name = "hearth-bench")]
struct Options {
    /// Measure the already running homeserver at this URL instead of starting one.
    #[arg(long, value_name = "URL")]
    homeserver: Option<String>,
    /// With --homeserver: the server's process ID, to read its memory use.
    #[arg(long, value_name = "PID", requires = "homeserver")]
    pid: Option<u32>,
    /// A short run: fewer messages, rooms and samples.
    #[arg(long)]
    quick: bool,
    /// Set by `cargo bench`; without it the benchmark does not run.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Everything measured, filled in as the run goes.
#[derive(Default)]
struct Measurements {
    fresh_starts: Vec<StartTime>,
    restarts: Vec<StartTime>,
    rss_after_start: Option<f64>,
    rss_after_workload: Option<f64>,
    rss_after_restart: Option<f64>,
    /// RSS right after each workload (no settling), to show which one grew it.
    rss_by_phase: Vec<(&'static str, Option<f64>)>,
    sends: Option<Throughput>,
    wake: Option<Wake>,
    initial_sync: Option<InitialSync>,
    fanout: Option<Fanout>,
    busy_rooms: Option<BusyRooms>,
    rate_limited: u64,
}

fn main() -> ExitCode {
    let options = Options::parse();
    if !options.bench {
        eprintln!("hearth-bench: not run without --bench (use `cargo bench --bench hearth-bench`)");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hearth-bench: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hearth-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let sizes = if options.quick { Sizes::quick() } else { Sizes::full() };
    let mut measured = Measurements::default();
    let mut server = match &options.homeserver {
        Some(url) => Server::External { base_url: url.clone(), pid: options.pid },
        None => Server::Spawned(Box::new(start_own_server(sizes, &mut measured).await?)),
    };
    progress(&format!("measuring {} ({sizes:?})", server.base_url()));
    run_workloads(&server, sizes, &mut measured).await?;
    tokio::time::sleep(SETTLE).await;
    measured.rss_after_workload = server.rss_mb();
    if let Server::Spawned(spawned) = &mut server {
        measure_restarts(spawned, sizes, &mut measured).await?;
        spawned.stop().await;
    }
    print_report(&options, sizes, &measured);
    Ok(())
}

/// Times starts on fresh data directories; the last server is kept for the workloads.
async fn start_own_server(sizes: Sizes, measured: &mut Measurements) -> anyhow::Result<Spawned> {
    if cfg!(debug_assertions) {
        progress("warning: this benchmark was built without optimizations; use `cargo bench`");
    }
    let binary = Path::new(HEARTH_BIN);
    progress(&format!("starting {}", binary.display()));
    for _ in 1..sizes.starts {
        let mut throwaway = Spawned::start(binary).await?;
        measured.fresh_starts.push(throwaway.start);
        throwaway.stop().await;
    }
    let spawned = Spawned::start(binary).await?;
    measured.fresh_starts.push(spawned.start);
    tokio::time::sleep(SETTLE).await;
    measured.rss_after_start = spawned.rss_mb();
    Ok(spawned)
}

async fn run_workloads(
    server: &Server,
    sizes: Sizes,
    measured: &mut Measurements,
) -> anyhow::Result<()> {
    let client = Client::new(server.base_url())?;
    let prefix = run_prefix();
    progress("concurrent sends");
    measured.sends = Some(workload::concurrent_sends(&client, &prefix, sizes).await?);
    measured.rss_by_phase.push(("sends", server.rss_mb()));
    progress("send → sync wake-up latency");
    measured.wake = Some(workload::wake_latency(&client, &prefix, sizes).await?);
    measured.rss_by_phase.push(("wake", server.rss_mb()));
    progress("filling rooms for the initial sync");
    measured.initial_sync = Some(workload::initial_sync(&client, &prefix, sizes).await?);
    measured.rss_by_phase.push(("initial sync", server.rss_mb()));
    progress("encrypted-room fan-out");
    measured.fanout = Some(encrypted::encrypted_fanout(&client, &prefix, sizes).await?);
    measured.rss_by_phase.push(("fan-out", server.rss_mb()));
    progress("syncs with receipts and typing in many rooms");
    measured.busy_rooms = Some(busy_rooms::busy_rooms(&client, &prefix, sizes).await?);
    measured.rss_by_phase.push(("busy rooms", server.rss_mb()));
    measured.rate_limited = client.rate_limited_count();
    Ok(())
}

/// Restarts the server on the data the workloads left, timing each start.
async fn measure_restarts(
    spawned: &mut Spawned,
    sizes: Sizes,
    measured: &mut Measurements,
) -> anyhow::Result<()> {
    progress("restarting on the filled data directory");
    for _ in 0..sizes.starts {
        spawned.restart(Path::new(HEARTH_BIN)).await?;
        measured.restarts.push(spawned.start);
    }
    tokio::time::sleep(SETTLE).await;
    measured.rss_after_restart = spawned.rss_mb();
    Ok(())
}

/// A prefix for this run's user names, so that runs against one server never collide.
fn run_prefix() -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    format!("bench{}", millis % 100_000_000)
}

fn progress(message: &str) {
    eprintln!("hearth-bench: {message}");
}

fn print_report(options: &Options, sizes: Sizes, measured: &Measurements) {
    let mut rows = Vec::new();
    rows.extend(send_rows(sizes, measured.sends.as_ref()));
    rows.extend(wake_rows(measured.wake.as_ref()));
    rows.extend(initial_sync_rows(sizes, measured.initial_sync.as_ref()));
    rows.extend(fanout_rows(measured.fanout.as_ref()));
    rows.extend(busy_room_rows(measured.busy_rooms.as_ref()));
    rows.extend(memory_rows(measured));
    rows.extend(start_rows(measured));
    if measured.rate_limited > 0 {
        rows.push(Row::info("429 answers waited out", measured.rate_limited.to_string()));
    }
    println!();
    match &options.homeserver {
        Some(url) => println!("hearth-bench against {url}{}", quick_note(options)),
        None => println!("hearth-bench against {HEARTH_BIN}{}", quick_note(options)),
    }
    println!();
    print_table(&rows);
}

fn quick_note(options: &Options) -> &'static str {
    if options.quick { " (--quick: smaller sizes)" } else { "" }
}

fn send_rows(sizes: Sizes, sends: Option<&Throughput>) -> Vec<Row> {
    let metric = format!(
        "sends/s, {} clients in one room ({} × {} sends)",
        sizes.senders, sizes.senders, sizes.sends_per_sender
    );
    let rate = sends.map(Throughput::per_second);
    let mut rows = vec![Row::target(&metric, rate, "sends/s", Goal::AtLeast(SENDS_TARGET))];
    if let Some(sends) = sends {
        rows.push(Row::info("  send round trip under that load", spread(&sends.latencies)));
    }
    rows
}

fn wake_rows(wake: Option<&Wake>) -> Vec<Row> {
    let samples = wake.map_or(&[][..], |wake| &wake.latencies[..]);
    let p50 = percentile(samples, 50.0).map(ms);
    let metric = format!("send → sync wake p50 ({} samples)", samples.len());
    let mut rows = vec![Row::target(&metric, p50, "ms", Goal::AtMost(WAKE_P50_TARGET_MS))];
    if let Some(wake) = wake {
        let p99 = percentile(&wake.latencies, 99.0).map_or(f64::NAN, ms);
        rows.push(Row::info("send → sync wake p99", format!("{p99:.1} ms")));
        rows.push(Row::info("  send round trip alone (idle room)", spread(&wake.sends)));
        if wake.early_answers > 0 {
            rows.push(Row::info(
                "  long polls that answered early",
                wake.early_answers.to_string(),
            ));
        }
    }
    rows
}

fn initial_sync_rows(sizes: Sizes, initial: Option<&InitialSync>) -> Vec<Row> {
    let times = initial.map_or(&[][..], |initial| &initial.times[..]);
    let metric = format!(
        "initial sync, {} rooms × {} messages (median of {})",
        sizes.rooms,
        sizes.messages_per_room,
        times.len()
    );
    let value = median(times).map(ms);
    let mut rows = vec![Row::target(&metric, value, "ms", Goal::AtMost(INITIAL_SYNC_TARGET_MS))];
    if let (Some(initial), Some(min), Some(max)) = (initial, times.iter().min(), times.iter().max())
    {
        let detail = format!(
            "min {:.1} ms, max {:.1} ms, {} rooms, {} kB",
            ms(*min),
            ms(*max),
            initial.rooms,
            initial.bytes / 1000
        );
        rows.push(Row::info("  initial sync spread, answer size", detail));
    }
    rows
}

/// The encrypted fan-out has no target of its own: it is shown for comparison between runs and
/// servers.
fn fanout_rows(fanout: Option<&Fanout>) -> Vec<Row> {
    let Some(fanout) = fanout else {
        return vec![Row::info("encrypted fan-out", "n/a".to_owned())];
    };
    let all = percentile(&fanout.all_members, 50.0).map_or(f64::NAN, ms);
    let all_p99 = percentile(&fanout.all_members, 99.0).map_or(f64::NAN, ms);
    let metric = format!(
        "encrypted message → all {} members' syncs p50 / p99 ({} samples)",
        fanout.members,
        fanout.all_members.len()
    );
    vec![
        Row::info(&metric, format!("{all:.1} / {all_p99:.1} ms")),
        Row::info("  → each member's sync", spread(&fanout.each_member)),
        Row::info("  key share to every device (/sendToDevice)", spread(&fanout.key_shares)),
    ]
}

/// The busy-room syncs have no target of their own either.
fn busy_room_rows(busy: Option<&BusyRooms>) -> Vec<Row> {
    let Some(busy) = busy else {
        return vec![Row::info("syncs with receipts and typing", "n/a".to_owned())];
    };
    let incremental = median(&busy.incremental).map_or(f64::NAN, ms);
    let initial = median(&busy.initial).map_or(f64::NAN, ms);
    vec![
        Row::info(
            &format!(
                "incremental sync, {} rooms with a message, receipts, typing (median of {})",
                busy.rooms,
                busy.incremental.len()
            ),
            format!("{incremental:.1} ms, {}", busy.incremental_size()),
        ),
        Row::info(
            &format!("initial sync of those rooms (median of {})", busy.initial.len()),
            format!("{initial:.1} ms, {} kB", busy.initial_bytes / 1000),
        ),
    ]
}

fn memory_rows(measured: &Measurements) -> Vec<Row> {
    let goal = Goal::AtMost(IDLE_RSS_TARGET_MB);
    let mut rows = vec![
        Row::target("idle RSS after start", measured.rss_after_start, "MB", goal),
        Row::target("idle RSS after the workloads", measured.rss_after_workload, "MB", goal),
    ];
    if measured.rss_by_phase.iter().any(|(_, rss)| rss.is_some()) {
        rows.push(Row::info("  RSS right after each workload", phase_rss(measured)));
    }
    if !measured.restarts.is_empty() {
        let value = measured.rss_after_restart;
        rows.push(Row::target("idle RSS after a restart on that data", value, "MB", goal));
    }
    rows
}

/// "sends 412.0 MB, wake 413.1 MB, …".
fn phase_rss(measured: &Measurements) -> String {
    let phases = measured.rss_by_phase.iter().map(|(phase, rss)| match rss {
        Some(rss) => format!("{phase} {rss:.1} MB"),
        None => format!("{phase} n/a"),
    });
    phases.collect::<Vec<_>>().join(", ")
}

fn start_rows(measured: &Measurements) -> Vec<Row> {
    let goal = Goal::AtMost(START_TARGET_MS);
    let mut rows = Vec::new();
    let cases =
        [("fresh data dir", &measured.fresh_starts), ("restart, filled data", &measured.restarts)];
    for (case, starts) in cases {
        let serving: Vec<Duration> = starts.iter().map(|start| start.serving).collect();
        let listening: Vec<Duration> = starts.iter().map(|start| start.listening).collect();
        let metric = format!("start → serving, {case} (median of {})", starts.len());
        rows.push(Row::target(&metric, median(&serving).map(ms), "ms", goal));
        if let Some(listening) = median(&listening) {
            let detail = format!("{:.1} ms", ms(listening));
            rows.push(Row::info("  start → \"listening\" line", detail));
        }
    }
    rows
}
