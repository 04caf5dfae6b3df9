//! Server administration shared by the admin API and (later) the admin page: for now, moving the
//! running server's data from SQLite to PostgreSQL.
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
    config::{self, DatabaseBackend},
    migrate::{self, MoveHandle, MoveRequest, Progress},
    store::switch::SwitchableStore,
};

/// The administration of one running server.
pub struct Admin {
    data_dir: PathBuf,
    store: Arc<SwitchableStore>,
    /// The backend the server started on (a finished move changes the one in use).
    started_on: DatabaseBackend,
    current_move: Mutex<Option<MoveHandle>>,
}

impl Admin {
    pub fn new(data_dir: &Path, store: Arc<SwitchableStore>, backend: DatabaseBackend) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            store,
            started_on: backend,
            current_move: Mutex::new(None),
        }
    }

    /// Checks the target and starts moving the data there in the background.
    pub async fn start_move(&self, to: &str) -> Result<Progress> {
        if to == "sqlite" {
            return Err(Error::bad_request(
                "Moving back from PostgreSQL to SQLite is not supported yet",
            ));
        }
        if self.backend() == DatabaseBackend::Postgres {
            return Err(Error::bad_request("The data is in PostgreSQL already"));
        }
        if self.running_move().is_some() {
            return Err(Error::client(
                StatusCode::CONFLICT,
                ErrorKind::Unknown,
                "A move is running already",
            ));
        }
        // The checks run before the answer, so that a wrong URL or an unfit database is
        // reported at once; nothing has been written when they fail.
        migrate::check_target(to).await.map_err(|e| Error::bad_request(format!("{e:#}")))?;
        let request = MoveRequest {
            sqlite_path: self.data_dir.join(crate::server::DATABASE_FILE),
            config_path: self.data_dir.join(config::CONFIG_FILE),
            target_url: to.to_owned(),
            store: Some(self.store.clone()),
        };
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

    /// Asks the running move to stop; it stops at its next batch.
    pub fn cancel_move(&self) -> Result<Progress> {
        let handle = self.running_move().ok_or_else(|| Error::not_found("No move is running"))?;
        handle.cancel();
        Ok(handle.progress())
    }

    fn running_move(&self) -> Option<MoveHandle> {
        self.lock_move().as_ref().filter(|m| !m.is_finished()).cloned()
    }

    /// The backend in use: the one the server started on, unless a move has finished since.
    fn backend(&self) -> DatabaseBackend {
        let moved =
            self.lock_move().as_ref().is_some_and(|m| m.progress().phase == migrate::Phase::Done);
        if moved { DatabaseBackend::Postgres } else { self.started_on }
    }

    fn lock_move(&self) -> std::sync::MutexGuard<'_, Option<MoveHandle>> {
        self.current_move.lock().unwrap_or_else(|e| e.into_inner())
    }
}
