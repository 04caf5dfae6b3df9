//! The `hearth` command: run the server, manage accounts.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use hearth::{
    config::{self, RegistrationMode},
    server::{self, ServeOptions},
};

/// jemalloc on Linux; see `Cargo.toml` and `.cargo/config.toml` for why and how it is tuned.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Threads for blocking work: database reads (which wait for one of two to four connections
/// anyway), password hashing (two at a time) and file access. Tokio's default of 512 would let a burst start hundreds of
/// threads, each with its own stack and allocator arena, that an idle server then carries.
const MAX_BLOCKING_THREADS: usize = 6;

/// A Matrix homeserver for a household.
#[derive(Parser)]
#[command(name = "hearth", version, about)]
struct Cli {
    /// The data directory (default: the per-user application data directory).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server without a desktop user interface.
    Serve {
        /// The address to listen on [default: 127.0.0.1:8008, or the config file's].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// The server name, used on the first run only [default: localhost].
        #[arg(long, value_name = "NAME")]
        server_name: Option<String>,
        /// Who may register [default: closed, or the config file's].
        #[arg(long, value_enum)]
        registration: Option<RegistrationMode>,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the database.
    #[cfg(feature = "postgres")]
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[cfg(feature = "postgres")]
#[derive(Subcommand)]
enum DbCommand {
    /// Move the data to PostgreSQL, or back to SQLite, with the server stopped. The side moved
    /// from is kept unchanged (an earlier hearth.db is renamed aside, never overwritten); a move
    /// that stops half-way resumes when run again. (A running server moves itself through the
    /// admin API.)
    Migrate {
        /// The PostgreSQL database to move to, e.g.
        /// `postgresql://hearth:secret@localhost/hearth`: empty, PostgreSQL 12 or later, UTF-8.
        /// Or `sqlite`: back from PostgreSQL to a new hearth.db in the data directory.
        #[arg(long, value_name = "URL|sqlite")]
        to: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. Works while the server runs.
    Add {
        /// The user name (localpart), e.g. `alice`.
        name: String,
        /// Read the password from this file (first line).
        #[arg(long, value_name = "FILE", conflicts_with = "password")]
        password_file: Option<PathBuf>,
        /// The password itself, for scripts. Prefer --password-file: this one shows in `ps`.
        #[arg(long)]
        password: Option<String>,
        /// Make the account a server administrator.
        #[arg(long)]
        admin: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hearth: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = match cli.data_dir {
        Some(dir) => dir,
        None => config::default_data_dir()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()?;
    match cli.command {
        Command::Serve { listen, server_name, registration } => {
            let server_name = server_name.as_deref().map(config::parse_server_name).transpose()?;
            let options = ServeOptions { data_dir, listen, server_name, registration };
            runtime.block_on(server::serve(options))
        }
        Command::User { command: UserCommand::Add { name, password_file, password, admin } } => {
            let password = read_password(password_file, password)?;
            runtime.block_on(server::add_user(&data_dir, &name, password, admin))
        }
        #[cfg(feature = "postgres")]
        Command::Db { command: DbCommand::Migrate { to } } => {
            runtime.block_on(server::migrate_database(&data_dir, &to))
        }
    }
}

fn read_password(file: Option<PathBuf>, inline: Option<String>) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let password = match (file, inline) {
        (Some(path), _) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the password file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        (None, Some(password)) => password,
        (None, None) => anyhow::bail!("give --password-file FILE (or --password)"),
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
}
