//! Server administration shared by the admin API and (later) the admin page: for now, moving the
//! running server's data between SQLite and PostgreSQL, either way.
//!
//! Only one move runs at a time. Its handle stays after it ends, so that its outcome (done,
//! failed and why, cancelled) can still be read.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use http::StatusCode;
use ruma::api::error::ErrorKind;

use crate::{
    Error, Result,
    config::{self, DatabaseBackend, DatabaseConfig},
    migrate::{self, Direction, MoveHandle, MoveRequest, Phase, Progress},
    store::switch::SwitchableStore,
};

/// The administration of one running server.
pub struct Admin {
    data_dir: PathBuf,
    store: Arc<SwitchableStore>,
    current_move: Mutex<Option<MoveHandle>>,
}

impl Admin {
    /// The backend in use is the one `hearth.toml` in `data_dir` names: the server started on
    /// it, and a finished move switches the file and the running store together.
    pub fn new(data_dir: &Path, store: Arc<SwitchableStore>) -> Self {
        Self { data_dir: data_dir.to_owned(), store, current_move: Mutex::new(None) }
    }

    /// Checks the target and starts moving the data there in the background: `to` is a
    /// PostgreSQL URL, or `sqlite` for the move back to a `hearth.db` in the data directory.
    pub async fn start_move(&self, to: &str) -> Result<Progress> {
        let direction = match to {
            "sqlite" => Direction::ToSqlite,
            _ => Direction::ToPostgres,
        };
        if self.running_move().is_some() {
            return Err(Error::client(
                StatusCode::CONFLICT,
                ErrorKind::Unknown,
                "A move is running already",
            ));
        }
        let database = self.database()?;
        match (direction, database.backend) {
            (Direction::ToPostgres, DatabaseBackend::Postgres) => {
                return Err(Error::bad_request("The data is in PostgreSQL already"));
            }
            (Direction::ToSqlite, DatabaseBackend::Sqlite) => {
                return Err(Error::bad_request("The data is in SQLite already"));
            }
            _ => {}
        }
        let request = self.request(direction, to, database);
        // The checks run before the answer, so that a wrong URL or an unfit database is
        // reported at once; nothing has been written when they fail.
        let checked = match direction {
            Direction::ToPostgres => migrate::check_target(to).await,
            Direction::ToSqlite => migrate::check_move_back(&request).await,
        };
        checked.map_err(|e| Error::bad_request(format!("{e:#}")))?;
        let mut current = self.lock_move();
        if current.as_ref().is_some_and(|m| !m.is_finished()) {
            return Err(Error::client(
                StatusCode::CONFLICT,
                ErrorKind::Unknown,
                "A move is running already",
            ));
        }
        let handle = migrate::start(request);
        let progress = handle.progress();
        *current = Some(handle);
        Ok(progress)
    }

    /// The progress of the running move, or the outcome of the last one.
    pub fn move_progress(&self) -> Result<Progress> {
        let current = self.lock_move();
        let handle =
            current.as_ref().ok_or_else(|| Error::not_found("No move has been started"))?;
        Ok(handle.progress())
    }

    /// Asks the running move to stop; it stops at its next batch. With no move running, gives
    /// up whatever an earlier one left unfinished (it failed, or the server died during it): its
    /// change log goes, and the next move starts over.
    pub async fn cancel_move(&self) -> Result<Progress> {
        if let Some(handle) = self.running_move() {
            handle.cancel();
            return Ok(handle.progress());
        }
        let database = self.database()?;
        let direction = match database.backend {
            DatabaseBackend::Sqlite => Direction::ToPostgres,
            DatabaseBackend::Postgres => Direction::ToSqlite,
        };
        let request = self.request(direction, "", database);
        migrate::abandon(&request)
            .await
            .map_err(|e| Error::Internal(e.context("cannot give up the unfinished move")))?;
        *self.lock_move() = None;
        Ok(Progress { to: request.direction, phase: Phase::Cancelled, ..Progress::default() })
    }

    /// The database the configuration names: the one that holds the data, since a finished move
    /// switches the file together with the running store.
    fn database(&self) -> Result<DatabaseConfig> {
        let config_path = self.data_dir.join(config::CONFIG_FILE);
        Ok(config::Config::load(&config_path)
            .map_err(|e| Error::Internal(e.context("cannot read the configuration")))?
            .database)
    }

    /// A move of the running server's data: to PostgreSQL at `to`, or back from the PostgreSQL
    /// database `database` names.
    fn request(&self, direction: Direction, to: &str, database: DatabaseConfig) -> MoveRequest {
        MoveRequest {
            sqlite_path: self.data_dir.join(crate::server::DATABASE_FILE),
            config_path: self.data_dir.join(config::CONFIG_FILE),
            target_url: match direction {
                Direction::ToPostgres => to.to_owned(),
                Direction::ToSqlite => database.url,
            },
            store: Some(self.store.clone()),
            direction,
        }
    }

    fn running_move(&self) -> Option<MoveHandle> {
        self.lock_move().as_ref().filter(|m| !m.is_finished()).cloned()
    }

    fn lock_move(&self) -> std::sync::MutexGuard<'_, Option<MoveHandle>> {
        self.current_move.lock().unwrap_or_else(|e| e.into_inner())
    }
}
