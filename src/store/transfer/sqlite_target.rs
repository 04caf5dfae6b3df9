//! The SQLite side of a move back from PostgreSQL: a new database file beside `hearth.db`,
//! created by the same migrations the SQLite backend runs, filled in batches whose progress the
//! file records in the same transaction, and put in place of `hearth.db` at the switch.
//!
//! An existing `hearth.db` (the copy a move to PostgreSQL left behind) is never opened, written
//! or deleted: the move writes `hearth.db.moving`, and at the switch renames the old file aside
//! under a dated name (with its `-wal` and `-shm`) and the new one into its place. The
//! configuration stays the authority on which backend holds the truth, and every step in between
//! is made so that a rerun after a crash finishes it:
//!
//! 1. The aside name is chosen and recorded in `hearth.db.moving`, which is then checkpointed,
//!    closed and flushed. Renaming the old files aside is idempotent under that recorded name
//!    (its `-wal` goes first, the file itself last), so a rerun completes a half-done rename.
//! 2. A marker file `hearth.db.installing` is written, then `hearth.db.moving` becomes
//!    `hearth.db`. While the marker exists, `hearth.db` is this move's copy, not user data, and
//!    a rerun (the configuration still names PostgreSQL) renames it back to `hearth.db.moving`.
//! 3. The caller drops the change log, then the marker goes, then the configuration names
//!    SQLite. A crash between the marker and the configuration leaves a `hearth.db` the next
//!    run treats as an old copy: it is kept aside, and the move starts over.
//!
//! Renames of open files fail on Windows: every connection to a file is closed before it moves.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, anyhow, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params, params_from_iter};

use super::{
    Digest, Row, TableSchema, Value,
    postgres::TargetState,
    sqlite::{blocking, key_condition, read_row, read_schema},
};
use crate::store::StoreResult;

/// The move's progress table in the new file.
const PROGRESS: &str = "hearth_move_progress";
/// One row: the epoch of the source's change log the progress relies on, and the name the old
/// `hearth.db` is renamed to at the switch once it is chosen.
const RUN: &str = "hearth_move_run";
/// The files SQLite keeps beside a database, which move with it. The database itself goes last.
const COMPANIONS: [&str; 4] = ["-wal", "-shm", "-journal", ""];

/// A new SQLite database file to move data into.
pub struct SqliteTarget {
    /// `hearth.db.moving`.
    path: PathBuf,
    /// `None` once closed for the switch.
    connection: Arc<Mutex<Option<Connection>>>,
}

/// The file a move back writes, beside `live` (`hearth.db`).
pub fn moving_path(live: &Path) -> PathBuf {
    with_suffix(live, ".moving")
}

/// While this file exists, `hearth.db` is a move's copy, put in place but not yet switched to.
fn marker_path(live: &Path) -> PathBuf {
    with_suffix(live, ".installing")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

impl SqliteTarget {
    /// Checks that a move back may write beside `live`: the directory exists, and
    /// `hearth.db.moving`, if there is one, is an unfinished move's. Writes nothing.
    pub async fn check(live: &Path) -> StoreResult<TargetState> {
        let live = live.to_owned();
        blocking(move || {
            let dir = live.parent().context("the database path has no directory")?;
            if !dir.is_dir() {
                bail!("the data directory {} does not exist", dir.display());
            }
            let (moving, marker) = (moving_path(&live), marker_path(&live));
            if marker.exists() && live.exists() && moving.exists() {
                bail!(
                    "{}, {} and {} all exist, which a move never leaves: move one of the first \
                     two away and run the move again",
                    live.display(),
                    moving.display(),
                    marker.display()
                );
            }
            let state = inspect(&moving)?;
            if let TargetState::Occupied(tables) = &state {
                bail!(
                    "{} holds tables ({}) that are not an unfinished move's; move it away",
                    moving.display(),
                    tables.join(", ")
                );
            }
            Ok(state)
        })
        .await
    }

    /// Opens (creating it if needed) `hearth.db.moving`, after taking back a copy an earlier run
    /// had put in place of `live` but not switched to. Call [`Self::check`] first.
    pub async fn open(live: &Path) -> StoreResult<Self> {
        let live = live.to_owned();
        let (path, connection) = blocking(move || {
            let (moving, marker) = (moving_path(&live), marker_path(&live));
            if marker.exists() {
                if live.exists() && !moving.exists() {
                    fs::rename(&live, &moving).context("cannot take back the unfinished copy")?;
                }
                fs::remove_file(&marker)?;
                sync_dir(&live)?;
            }
            let connection = Connection::open(&moving)
                .with_context(|| format!("cannot create {}", moving.display()))?;
            connection.execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 10000;",
            )?;
            Ok((moving, connection))
        })
        .await?;
        Ok(Self { path, connection: Arc::new(Mutex::new(Some(connection))) })
    }

    /// Runs `f` on the file's connection, off the async runtime.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let connection = self.connection.clone();
        blocking(move || {
            let mut guard =
                connection.lock().map_err(|_| anyhow!("a write to the copy panicked"))?;
            let connection = guard.as_mut().context("the copy is closed")?;
            f(connection)
        })
        .await
    }

    /// Creates Hearth's tables (by the same migrations the SQLite backend runs) and the move's
    /// own, unless an earlier run did, and checks that the schema is the source's.
    pub async fn prepare(&mut self, tables: &[TableSchema]) -> StoreResult<()> {
        let tables = tables.to_vec();
        self.with(move |c| {
            c.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {PROGRESS} (
                     table_name TEXT PRIMARY KEY NOT NULL,
                     last_key TEXT,
                     done INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS {RUN} (epoch TEXT, aside TEXT)"
            ))?;
            crate::store::schema::sqlite_migrations()
                .run(c)
                .context("cannot create Hearth's tables in the new SQLite file")?;
            if read_schema(c)? != tables {
                bail!(
                    "the PostgreSQL database's tables differ from those this version of Hearth \
                     creates in SQLite; run the move with the Hearth version that serves it"
                );
            }
            for table in &tables {
                c.execute(
                    &format!("INSERT OR IGNORE INTO {PROGRESS} (table_name, done) VALUES (?1, 0)"),
                    [&table.name],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// The move run this file belongs to.
    pub async fn epoch(&self) -> StoreResult<Option<String>> {
        self.with(|c| {
            let sql = format!("SELECT epoch FROM {RUN}");
            Ok(c.query_row(&sql, [], |r| r.get::<_, Option<String>>(0)).optional()?.flatten())
        })
        .await
    }

    /// Records the run's epoch, replacing an older one (the chosen aside name stays).
    pub async fn set_epoch(&mut self, epoch: &str) -> StoreResult<()> {
        let epoch = epoch.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            if tx.execute(&format!("UPDATE {RUN} SET epoch = ?1"), [&epoch])? == 0 {
                tx.execute(&format!("INSERT INTO {RUN} (epoch) VALUES (?1)"), [&epoch])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The tables an earlier run copied completely.
    pub async fn done_tables(&self) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut statement =
                c.prepare(&format!("SELECT table_name FROM {PROGRESS} WHERE done = 1"))?;
            let rows = statement.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Empties a table whose earlier copy cannot be kept, and resets its progress.
    pub async fn restart_table(&mut self, table: &TableSchema) -> StoreResult<()> {
        let name = table.name.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute_batch(&format!("DELETE FROM \"{name}\""))?;
            tx.execute(
                &format!("UPDATE {PROGRESS} SET last_key = NULL, done = 0 WHERE table_name = ?1"),
                [&name],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Inserts a batch of rows and records, in the same transaction, the key of the last one
    /// (and whether the table is complete).
    pub async fn copy_batch(
        &mut self,
        table: &TableSchema,
        rows: Vec<Row>,
        last_key: Option<Vec<Value>>,
        done: bool,
    ) -> StoreResult<()> {
        let table = table.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare(&insert_statement(&table))?;
                for row in &rows {
                    insert.execute(params_from_iter(row.iter()))?;
                }
            }
            let last_key = last_key.map(|key| serde_json::to_string(&key)).transpose()?;
            tx.execute(
                &format!("UPDATE {PROGRESS} SET last_key = ?2, done = ?3 WHERE table_name = ?1"),
                params![table.name, last_key, i64::from(done)],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Brings rows up to date in one transaction: first `deletions`, then `upserts`, ordered by
    /// the caller so that no foreign key is broken on the way.
    pub async fn apply_changes(
        &mut self,
        deletions: &[(&TableSchema, Vec<Value>)],
        upserts: &[(&TableSchema, Row)],
    ) -> StoreResult<()> {
        let deletions: Vec<(TableSchema, Vec<Value>)> =
            deletions.iter().map(|(t, k)| ((*t).clone(), k.clone())).collect();
        let upserts: Vec<(TableSchema, Row)> =
            upserts.iter().map(|(t, r)| ((*t).clone(), r.clone())).collect();
        self.with(move |c| {
            let tx = c.transaction()?;
            for (table, key) in &deletions {
                let sql = format!("DELETE FROM \"{}\" WHERE {}", table.name, key_condition(table));
                tx.prepare_cached(&sql)?.execute(params_from_iter(key.iter()))?;
            }
            for (table, row) in &upserts {
                tx.prepare_cached(&upsert_statement(table))?
                    .execute(params_from_iter(row.iter()))?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The row with this key, as the file holds it.
    pub async fn row_by_key(&self, table: &TableSchema, key: &[Value]) -> StoreResult<Option<Row>> {
        let (table, key) = (table.clone(), key.to_vec());
        self.with(move |c| super::sqlite::row_by_key_in(c, &table, &key)).await
    }

    pub async fn count(&self, table: &TableSchema) -> StoreResult<u64> {
        let sql = format!("SELECT count(*) FROM \"{}\"", table.name);
        self.with(move |c| Ok(c.query_row(&sql, [], |r| r.get::<_, i64>(0))?.max(0) as u64)).await
    }

    /// The digest of every row of the table.
    pub async fn digest(&self, table: &TableSchema) -> StoreResult<Digest> {
        let table = table.clone();
        self.with(move |c| {
            let sql = format!("SELECT {} FROM \"{}\"", table.column_list(), table.name);
            let mut statement = c.prepare(&sql)?;
            let mut rows = statement.query([])?;
            let mut digest = Digest::default();
            while let Some(row) = rows.next()? {
                digest.add(&read_row(row, 0, table.columns.len())?);
            }
            Ok(digest)
        })
        .await
    }

    /// Puts the copy in place of `live`: chooses and records the aside name, closes the file
    /// (the copy is complete and checked), renames an existing `live` and its companions aside,
    /// writes the marker and renames the copy to `live`. Returns where the old file went.
    /// Call [`installed`] once the change log is gone, then switch the configuration.
    pub async fn install(
        &mut self,
        live: &Path,
        now: std::time::SystemTime,
    ) -> StoreResult<Option<PathBuf>> {
        let aside = {
            let live = live.to_owned();
            self.with(move |c| choose_aside(c, &live, now)).await?
        };
        self.close().await?;
        let (moving, live) = (self.path.clone(), live.to_owned());
        blocking(move || {
            let moved = rename_aside(&live, &aside)?;
            // The marker is on disk before the copy takes the name `live`.
            fs::write(marker_path(&live), b"")?;
            sync_file(&marker_path(&live))?;
            sync_dir(&live)?;
            fs::rename(&moving, &live).with_context(|| {
                format!("cannot rename {} to {}", moving.display(), live.display())
            })?;
            sync_dir(&live)?;
            Ok(moved.then_some(aside))
        })
        .await
    }

    /// Checkpoints the file into itself, closes it and flushes it to disk.
    async fn close(&mut self) -> StoreResult<()> {
        let (connection, path) = (self.connection.clone(), self.path.clone());
        blocking(move || {
            let mut guard =
                connection.lock().map_err(|_| anyhow!("a write to the copy panicked"))?;
            if let Some(c) = guard.take() {
                c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
                c.close().map_err(|(_, e)| e).context("cannot close the new SQLite file")?;
            }
            if with_suffix(&path, "-wal").exists() {
                bail!("{} could not be closed cleanly; run the move again", path.display());
            }
            sync_file(&path)
        })
        .await
    }
}

/// The copy in place of `live` is final: the marker goes, so that from here a crash leaves a
/// `live` that the next run keeps aside rather than takes back.
pub async fn installed(live: &Path) -> StoreResult<()> {
    let live = live.to_owned();
    blocking(move || {
        let marker = marker_path(&live);
        if marker.exists() {
            fs::remove_file(&marker)?;
        }
        sync_dir(&live)
    })
    .await
}

/// Removes the move's own tables from the file now in use (after the switch).
pub async fn remove_bookkeeping(live: &Path) -> StoreResult<()> {
    let live = live.to_owned();
    blocking(move || {
        let c = Connection::open_with_flags(&live, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        c.execute_batch(&format!("DROP TABLE IF EXISTS {PROGRESS}; DROP TABLE IF EXISTS {RUN}"))?;
        Ok(())
    })
    .await
}

/// What a file holds: nothing (or no file), an unfinished move's tables, or other tables.
fn inspect(path: &Path) -> StoreResult<TargetState> {
    if !path.exists() {
        return Ok(TargetState::Empty);
    }
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut statement =
        c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
    let tables: Vec<String> =
        statement.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
    Ok(if tables.is_empty() {
        TargetState::Empty
    } else if tables.iter().any(|t| t == RUN) {
        TargetState::Unfinished
    } else {
        TargetState::Occupied(tables)
    })
}

/// The name the old `live` goes to: the one recorded by an earlier run, or a new dated one that
/// no file has yet (recorded before anything is renamed).
fn choose_aside(
    c: &mut Connection,
    live: &Path,
    now: std::time::SystemTime,
) -> StoreResult<PathBuf> {
    let recorded: Option<String> =
        c.query_row(&format!("SELECT aside FROM {RUN}"), [], |r| r.get(0)).optional()?.flatten();
    if let Some(name) = recorded {
        return Ok(live.with_file_name(name));
    }
    let stamp = utc_stamp(now);
    let free = |path: &Path| COMPANIONS.iter().all(|s| !with_suffix(path, s).exists());
    let mut aside = with_suffix(live, &format!(".before-{stamp}"));
    let mut n = 2;
    while !free(&aside) {
        aside = with_suffix(live, &format!(".before-{stamp}-{n}"));
        n += 1;
    }
    let name = aside.file_name().unwrap_or_default().to_string_lossy().into_owned();
    c.execute(&format!("UPDATE {RUN} SET aside = ?1"), [&name])?;
    Ok(aside)
}

/// Renames `live` and its companions to `aside`, the database last; what an earlier run already
/// renamed stays. Returns whether there was anything to rename.
fn rename_aside(live: &Path, aside: &Path) -> StoreResult<bool> {
    let mut moved = with_suffix(aside, "").exists();
    for suffix in COMPANIONS {
        let (from, to) = (with_suffix(live, suffix), with_suffix(aside, suffix));
        if from.exists() {
            if to.exists() {
                bail!("cannot rename {} aside: {} exists", from.display(), to.display());
            }
            fs::rename(&from, &to)
                .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
            moved = true;
        }
    }
    sync_dir(live)?;
    Ok(moved)
}

/// Flushes a file to disk (opened for writing: Windows flushes no read-only handle).
fn sync_file(path: &Path) -> StoreResult<()> {
    let file = fs::OpenOptions::new().write(true).open(path)?;
    file.sync_all().with_context(|| format!("cannot flush {}", path.display()))
}

/// Makes the renames in the directory of `path` durable (on Unix; Windows cannot open a
/// directory for that, and its file system journals renames).
fn sync_dir(path: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// `2026-12-04T051200Z`.
fn utc_stamp(now: std::time::SystemTime) -> String {
    let seconds = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}{:02}{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

fn insert_statement(table: &TableSchema) -> String {
    let placeholders: Vec<String> = (1..=table.columns.len()).map(|n| format!("?{n}")).collect();
    format!(
        "INSERT INTO \"{}\" ({}) VALUES ({})",
        table.name,
        table.column_list(),
        placeholders.join(", ")
    )
}

/// `INSERT ... ON CONFLICT (key) DO UPDATE`: the row as given, whether or not its key exists.
/// (Not `INSERT OR REPLACE`, which deletes first and would cascade to referencing rows.)
fn upsert_statement(table: &TableSchema) -> String {
    let key: Vec<String> =
        table.primary_key.iter().map(|&i| format!("\"{}\"", table.columns[i].name)).collect();
    let updates: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.primary_key.contains(i))
        .map(|(_, c)| format!("\"{0}\" = excluded.\"{0}\"", c.name))
        .collect();
    let action = match updates.is_empty() {
        true => "DO NOTHING".to_owned(),
        false => format!("DO UPDATE SET {}", updates.join(", ")),
    };
    format!("{} ON CONFLICT ({}) {action}", insert_statement(table), key.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aside_names_carry_the_date_in_utc() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_362_320);
        assert_eq!(utc_stamp(at), "2026-12-04T053200Z");
        assert_eq!(utc_stamp(std::time::UNIX_EPOCH), "1970-01-01T000000Z");
    }

    #[test]
    fn companion_files_keep_their_database_name() {
        let live = Path::new("/data/hearth.db");
        assert_eq!(moving_path(live), Path::new("/data/hearth.db.moving"));
        assert_eq!(with_suffix(live, "-wal"), Path::new("/data/hearth.db-wal"));
    }
}
