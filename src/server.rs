//! Process lifecycle: the data directory and its lock, first-run files, logging, and serving until
//! shutdown. Also the offline commands that act on a data directory (`hearth user add`).

use std::{
    fs::{self, File, TryLockError},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use ruma::OwnedServerName;
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::{
    appservice::Appservices,
    config::{self, Config, DatabaseBackend, DatabaseConfig, FirstRunSettings, RegistrationMode},
    federation::ServerKeys,
    services::Services,
    store::{self, Store},
    users::Users,
};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "hearth.db";
const LOCK_FILE: &str = "hearth.lock";

/// What `hearth serve` was asked for on the command line.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub listen: Option<SocketAddr>,
    pub server_name: Option<OwnedServerName>,
    pub registration: Option<RegistrationMode>,
}

/// Runs the server until Ctrl-C (or the service manager's stop).
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let data_dir = &options.data_dir;
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let _lock = lock_data_dir(data_dir)?;

    let first_run = FirstRunSettings {
        server_name: options.server_name.clone().unwrap_or_else(|| "localhost".try_into().unwrap()),
        listen: options.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8008))),
        registration: options.registration.unwrap_or_default(),
    };
    let mut config = Config::load_or_create(data_dir, &first_run)?;
    apply_overrides(&mut config, &options)?;
    let _log_guard = init_logging(data_dir, &config.log.level)?;
    fit_connections_to_file_limit(&mut config.limits);

    let Some(services) = open_services_when_reachable(data_dir, config).await? else {
        tracing::info!("stopped while waiting for the database");
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(services.config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", services.config.listen))?;
    let address = listener.local_addr()?;
    let configured = !services.config.email.public_base_url.is_empty()
        || !services.config.well_known.client.is_empty();
    services.threepids.listening_on(address, configured);
    tracing::info!(%address, server_name = %services.config.server_name, elapsed_ms = started.elapsed().as_millis() as u64, "serving");
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("hearth listening on http://{address}");

    crate::api::serve(services, listener, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// File descriptors kept for everything but client connections: the database, logs, media
/// files, outgoing requests.
const FILES_BESIDES_CONNECTIONS: u64 = 256;

/// Raises the process's open-file limit where the platform has one (launchd starts programs
/// at 256, systemd services at 1024) so that `[limits] max_connections` fits under it; when the
/// hard limit is lower, serves fewer connections rather than failing to accept them.
fn fit_connections_to_file_limit(limits: &mut crate::config::LimitsConfig) {
    let wanted = limits.max_connections as u64 + FILES_BESIDES_CONNECTIONS;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(available) if available < wanted => {
            let fitting = available.saturating_sub(FILES_BESIDES_CONNECTIONS).max(16);
            tracing::warn!(
                open_file_limit = available,
                max_connections = fitting,
                "the open-file limit is low: serving fewer connections at once"
            );
            limits.max_connections = usize::try_from(fitting).unwrap_or(usize::MAX);
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
}

/// Builds every component on the database the configuration names.
pub async fn open_services(data_dir: &Path, config: Config) -> anyhow::Result<Arc<Services>> {
    let registrations = &config.appservices.registration_files;
    let appservices = Appservices::load(registrations, data_dir, &config.server_name)?;
    let (key_dir, server_name) = (data_dir.to_owned(), config.server_name.clone());
    // Reading or generating the key is file work: it runs off the async runtime.
    let keys =
        tokio::task::spawn_blocking(move || ServerKeys::load_or_generate(&key_dir, server_name))
            .await
            .context("reading the signing key failed unexpectedly")??;
    let store = open_store(data_dir, &config.database).await?;
    #[cfg(feature = "postgres")]
    take_writes_again(data_dir, &config.database).await?;
    let services = Services::start(config, keys, data_dir, store, appservices)?;
    register_appservice_senders(&services).await?;
    Ok(services)
}

/// Creates the own user (`sender_localpart`) of each application service that has none yet.
async fn register_appservice_senders(services: &Services) -> anyhow::Result<()> {
    for service in services.appservices.iter() {
        if !services.users.is_taken(&service.sender).await? {
            services.users.create(&service.sender, None, false).await?;
            tracing::info!(appservice = service.id(), "created the application service's user");
        }
    }
    Ok(())
}

/// Lifts a retirement a move left on the database the configuration names (see
/// [`crate::store::transfer::retire`]): a crash in the middle of a switch, or a configuration
/// pointed back at the old copy by hand. Only the server does this, holding the data directory.
#[cfg(feature = "postgres")]
async fn take_writes_again(data_dir: &Path, database: &DatabaseConfig) -> anyhow::Result<()> {
    use crate::store::transfer::retire;
    let lifted = match database.backend {
        DatabaseBackend::Sqlite => retire::unretire_sqlite(&data_dir.join(DATABASE_FILE)).await,
        DatabaseBackend::Postgres => retire::unretire_postgres(&database.url).await,
    };
    lifted.context("cannot check whether a move left the database refusing writes")
}

/// The first wait before trying an unreachable database again; it doubles up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// [`open_services`], trying again with a growing delay while the database cannot be reached
/// (PostgreSQL may start after Hearth when the machine boots), each failure logged with its
/// cause. A failure that waiting cannot fix (a refused login, a bad URL) returns at once.
/// `None`: Ctrl-C (or the service manager's stop) came first.
async fn open_services_when_reachable(
    data_dir: &Path,
    config: Config,
) -> anyhow::Result<Option<Arc<Services>>> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let error = tokio::select! {
            opened = open_services(data_dir, config.clone()) => match opened {
                Ok(services) => return Ok(Some(services)),
                Err(error) if store::is_unavailable(&error) => error,
                Err(error) => return Err(error),
            },
            () = &mut shutdown => return Ok(None),
        };
        tracing::warn!(
            error = %format!("{error:#}"),
            retry_in_seconds = delay.as_secs(),
            "the database cannot be reached yet; retrying"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => return Ok(None),
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// Opens (and migrates) the configured database.
async fn open_store(data_dir: &Path, database: &DatabaseConfig) -> anyhow::Result<Store> {
    match database.backend {
        DatabaseBackend::Sqlite => {
            let path = data_dir.join(DATABASE_FILE);
            // Opening and migrating the file is blocking work.
            tokio::task::spawn_blocking(move || store::open_sqlite(&path))
                .await
                .context("opening the database failed unexpectedly")?
        }
        #[cfg(feature = "postgres")]
        DatabaseBackend::Postgres => store::open_postgres(&database.url)
            .await
            .context("cannot open the PostgreSQL database named in [database] url"),
        #[cfg(not(feature = "postgres"))]
        DatabaseBackend::Postgres => {
            anyhow::bail!("this build of Hearth has no PostgreSQL support")
        }
    }
}

/// `hearth user add`: creates an account directly in the database.
pub async fn add_user(
    data_dir: &Path,
    name: &str,
    password: String,
    admin: bool,
) -> anyhow::Result<()> {
    ensure_data_dir(data_dir)?;
    // A move of the data may switch databases meanwhile: the database the configuration named
    // then refuses the write, and the configuration, read again, names the new one.
    let mut waited = std::time::Duration::ZERO;
    loop {
        match create_user(data_dir, name, password.clone(), admin).await {
            Err(error) if is_retired(&error) && waited < MOVE_SWITCH_WAIT => {
                tokio::time::sleep(MOVE_SWITCH_POLL).await;
                waited += MOVE_SWITCH_POLL;
            }
            Err(error) if is_retired(&error) => {
                bail!("a move of the data is switching databases and did not finish; try again")
            }
            outcome => return outcome,
        }
    }
}

/// How long `hearth user add` waits for a move's switch to finish, and how often it looks.
const MOVE_SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
const MOVE_SWITCH_POLL: std::time::Duration = std::time::Duration::from_millis(250);

fn is_retired(error: &anyhow::Error) -> bool {
    #[cfg(feature = "postgres")]
    return crate::store::transfer::retire::is_retired(error);
    #[cfg(not(feature = "postgres"))]
    return {
        let _ = error;
        false
    };
}

async fn create_user(
    data_dir: &Path,
    name: &str,
    password: String,
    admin: bool,
) -> anyhow::Result<()> {
    let config = Config::load(&data_dir.join(config::CONFIG_FILE))
        .context("run `hearth serve` once first to create the data directory")?;
    let store = open_store(data_dir, &config.database).await?;
    let users = Users::new(store, config.server_name.clone(), None);
    let user_id =
        users.user_id_for_localpart(name).map_err(|e| anyhow::anyhow!("{}", client_message(&e)))?;
    users.create(&user_id, Some(password), admin).await.map_err(|e| match e {
        crate::Error::Internal(error) => error,
        other => anyhow::anyhow!("{}", client_message(&other)),
    })?;
    println!("created {user_id}{}", if admin { " (administrator)" } else { "" });
    Ok(())
}

/// `hearth db migrate --to URL`: moves the data of a stopped server from SQLite to PostgreSQL,
/// printing its progress. The data directory stays locked meanwhile, so no server starts on it.
#[cfg(feature = "postgres")]
pub async fn migrate_database(data_dir: &Path, to: &str) -> anyhow::Result<()> {
    ensure_data_dir(data_dir)?;
    config::check_postgres_url(to)?;
    let _lock =
        lock_data_dir(data_dir).map_err(|error| match error.downcast::<AlreadyRunning>() {
            Ok(_) => anyhow::anyhow!(
                "Hearth is running on {}: stop it first, or start the move through the admin API \
                 (POST /_hearth/admin/v1/database/migration), which moves the data while it serves",
                data_dir.display()
            ),
            Err(other) => other,
        })?;
    let config_path = data_dir.join(config::CONFIG_FILE);
    let config = Config::load(&config_path)
        .context("run `hearth serve` once first to create the data directory")?;
    let direction = match to {
        "sqlite" => crate::migrate::Direction::ToSqlite,
        _ => crate::migrate::Direction::ToPostgres,
    };
    if config.database.backend == direction.backend() {
        match direction {
            crate::migrate::Direction::ToSqlite => {
                bail!("this server keeps its data in SQLite already")
            }
            crate::migrate::Direction::ToPostgres => {
                bail!("this server keeps its data in PostgreSQL already")
            }
        }
    }
    let target_url = match direction {
        crate::migrate::Direction::ToSqlite => config.database.url.clone(),
        crate::migrate::Direction::ToPostgres => to.to_owned(),
    };
    let request = crate::migrate::MoveRequest {
        sqlite_path: data_dir.join(DATABASE_FILE),
        config_path,
        target_url,
        store: None,
        direction,
    };
    let last = std::sync::Mutex::new((None, None));
    crate::migrate::run_to_end(request, |progress| print_progress(&last, progress)).await?;
    match direction {
        crate::migrate::Direction::ToSqlite => println!(
            "done: the server now uses SQLite (hearth.db); the PostgreSQL database is kept \
             unchanged as the way back, and any earlier hearth.db is kept as \
             hearth.db.before-<date>"
        ),
        crate::migrate::Direction::ToPostgres => println!(
            "done: the server now uses PostgreSQL; hearth.db is kept unchanged as the way back"
        ),
    }
    Ok(())
}

/// Prints a line when the move enters a phase or a table.
#[cfg(feature = "postgres")]
fn print_progress(
    last: &std::sync::Mutex<(Option<crate::migrate::Phase>, Option<String>)>,
    progress: &crate::migrate::Progress,
) {
    let Ok(mut last) = last.lock() else { return };
    let now = (Some(progress.phase), progress.table.clone());
    if *last == now {
        return;
    }
    *last = now;
    let table = progress.table.as_deref().map(|t| format!(" {t}")).unwrap_or_default();
    println!(
        "{:?}{table}: {} of {} rows, {} rows/s",
        progress.phase, progress.rows_done, progress.rows_total, progress.rows_per_second
    );
}

fn client_message(error: &crate::Error) -> String {
    match error {
        crate::Error::Client { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn apply_overrides(config: &mut Config, options: &ServeOptions) -> anyhow::Result<()> {
    if let Some(listen) = options.listen {
        config.listen = listen;
    }
    if let Some(mode) = options.registration {
        if mode == RegistrationMode::Token && config.registration.tokens.is_empty() {
            bail!("--registration token needs tokens in [registration] of hearth.toml");
        }
        config.registration.mode = mode;
    }
    if let Some(name) = &options.server_name
        && name != &config.server_name
    {
        bail!(
            "the server name is {} in hearth.toml and cannot change after the first run",
            config.server_name
        );
    }
    Ok(())
}

/// Refuses, for the commands that act on an existing server's data (`hearth user add`, `hearth
/// db migrate`), a data directory that does not exist or has no `hearth.toml`: what they would
/// otherwise report (a lock they cannot take, a file they cannot read) hides the real mistake.
fn ensure_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    if !data_dir.is_dir() {
        bail!(
            "there is no Hearth data directory at {}: run `hearth serve` once first to create it \
             (with the same --data-dir), or give --data-dir the directory the server uses",
            data_dir.display()
        );
    }
    if !data_dir.join(config::CONFIG_FILE).is_file() {
        bail!(
            "{} is not a Hearth data directory (it has no {}): run `hearth serve` once first to \
             create it, or give --data-dir the directory the server uses",
            data_dir.display(),
            config::CONFIG_FILE
        );
    }
    Ok(())
}

/// Another process holds the data directory's lock.
#[derive(Debug, thiserror::Error)]
#[error("another Hearth server is already running on the data directory {0}")]
struct AlreadyRunning(String);

/// Holds an exclusive lock on the data directory for the life of the process.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join(LOCK_FILE);
    let file = File::create(&path)
        .with_context(|| format!("cannot create the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AlreadyRunning(data_dir.display().to_string()).into()),
        Err(TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Log lines queued for the file writer before new ones are dropped. tracing-appender's default
/// of 128,000 preallocates a 4 MB queue, a fifth of an idle server's memory; a household server's
/// log writer keeps up with far fewer.
const LOG_BUFFERED_LINES: usize = 4096;

/// Logs to stderr and to daily-rotated files in `<data dir>/logs`. `RUST_LOG` wins over the
/// configured level.
fn init_logging(
    data_dir: &Path,
    level: &str,
) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(quiet_dependencies(level)))
            .unwrap_or_else(|_| EnvFilter::new(quiet_dependencies("info")))
    };
    let log_dir = data_dir.join("logs");
    fs::create_dir_all(&log_dir).context("cannot create the log directory")?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("hearth")
        .filename_suffix("log")
        .max_log_files(7)
        .build(&log_dir)
        .context("cannot open the log directory")?;
    let (file_writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFERED_LINES)
        .finish(appender);
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let file = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(file_writer)
        .with_filter(filter());
    // A second initialisation (tests starting several servers in one process) is harmless.
    let _ = tracing_subscriber::registry().with(stderr).with(file).try_init();
    Ok(guard)
}

/// The configured level, with the dependencies that log at the wrong level turned down unless
/// the configuration names them: ruma's authorization checks log every accepted event at info,
/// and warp logs a client that hangs up (an ended long poll) as an error.
fn quiet_dependencies(level: &str) -> String {
    let mut directives = level.to_owned();
    for (target, quiet) in [("ruma_state_res", "warn"), ("warp::server", "off")] {
        if !level.contains(target) {
            directives.push_str(&format!(",{target}={quiet}"));
        }
    }
    directives
}

/// Resolves on Ctrl-C, or SIGTERM on Unix (what service managers send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        // Windows: Ctrl-C and Ctrl-Break; the service/tray wrapper stops through this too.
        let _ = tokio::signal::ctrl_c().await;
    }
}
