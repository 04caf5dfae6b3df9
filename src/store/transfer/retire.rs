//! Retiring the database a move leaves: once the data has moved, nothing may write into the old
//! copy, where a write would be lost.
//!
//! The server's own writes are paused for the switch, but another process may hold the old
//! database open: `hearth user add` reads `hearth.toml` once and writes where it named. So the
//! switch retires the old database before it takes its last snapshot: a trigger on every data
//! table refuses every write with [`RETIRED`]. A process that meets it reads `hearth.toml` again
//! and writes where the data is now. A switch that fails lifts the retirement again; so does the
//! server when it starts on a database the configuration names (after a crash in the middle of
//! the switch, or when someone points `hearth.toml` back at the old copy by hand).

use std::path::Path;

use anyhow::bail;
use rusqlite::TransactionBehavior;

use super::{TableSchema, sqlite};
use crate::store::StoreResult;

/// The message of a refused write, which callers recognise.
pub const RETIRED: &str = "hearth: this database was retired by a move of the data";

/// Names of the retirement's triggers (and, on PostgreSQL, of its function) start with this.
const PREFIX: &str = "hearth_retired";

/// Whether an error is a write refused by a retired database.
pub fn is_retired(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.to_string().contains(RETIRED))
}

/// Makes every data table of the SQLite file refuse writes.
pub async fn retire_sqlite(path: &Path, tables: &[TableSchema]) -> StoreResult<()> {
    let (path, tables) = (path.to_owned(), tables.to_vec());
    sqlite::blocking(move || {
        let mut c = sqlite::open(&path, true)?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for table in &tables {
            let name = checked_name(&table.name)?;
            for action in ["insert", "update", "delete"] {
                tx.execute_batch(&format!(
                    "CREATE TRIGGER IF NOT EXISTS {PREFIX}_{name}_{action}
                     BEFORE {action} ON \"{name}\"
                     BEGIN SELECT RAISE(ABORT, '{RETIRED}'); END;"
                ))?;
            }
        }
        tx.commit()?;
        Ok(())
    })
    .await
}

/// Lets the SQLite file take writes again.
pub async fn unretire_sqlite(path: &Path) -> StoreResult<()> {
    let path = path.to_owned();
    sqlite::blocking(move || {
        let mut c = sqlite::open(&path, true)?;
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let triggers: Vec<String> = {
            let mut statement = tx.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ?1",
            )?;
            let rows = statement.query_map([format!("{PREFIX}%")], |row| row.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for trigger in &triggers {
            tx.execute_batch(&format!("DROP TRIGGER IF EXISTS \"{trigger}\""))?;
        }
        tx.commit()?;
        if !triggers.is_empty() {
            tracing::info!("hearth.db takes writes again: the configuration names it");
        }
        Ok(())
    })
    .await
}

/// Makes every data table of the PostgreSQL database refuse writes. The server's writes must be
/// paused: each trigger takes its table's lock for a moment.
pub async fn retire_postgres(url: &str, tables: &[TableSchema]) -> StoreResult<()> {
    let mut client = super::postgres::connect_for_move(url).await?;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '5s';
         CREATE OR REPLACE FUNCTION {PREFIX}() RETURNS trigger LANGUAGE plpgsql AS $retired$
         BEGIN RAISE EXCEPTION '{RETIRED}'; END $retired$"
    ))
    .await?;
    for table in tables {
        let name = checked_name(&table.name)?;
        tx.batch_execute(&format!(
            "DROP TRIGGER IF EXISTS {PREFIX} ON \"{name}\";
             CREATE TRIGGER {PREFIX} BEFORE INSERT OR UPDATE OR DELETE ON \"{name}\"
             FOR EACH STATEMENT EXECUTE FUNCTION {PREFIX}()"
        ))
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Lets the PostgreSQL database take writes again.
pub async fn unretire_postgres(url: &str) -> StoreResult<()> {
    let client = super::postgres::connect_for_move(url).await?;
    let retired = client
        .query_opt(
            "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND p.proname = $1",
            &[&PREFIX],
        )
        .await?
        .is_some();
    if retired {
        // The function goes with every trigger that calls it.
        client.batch_execute(&format!("DROP FUNCTION IF EXISTS {PREFIX}() CASCADE")).await?;
        tracing::info!("the PostgreSQL database takes writes again: the configuration names it");
    }
    Ok(())
}

fn checked_name(name: &str) -> StoreResult<&str> {
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("table name {name:?} cannot carry a trigger");
    }
    Ok(name)
}
