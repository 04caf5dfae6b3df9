//! Catching the target up with the change log, and checking the changed rows.
//!
//! A range of the log is read from one snapshot, reduced to the distinct keys it names, and each
//! key is made in the target what the snapshot holds: deleted where the snapshot has no row,
//! written where it has one. All of a range goes in one target transaction, deletions children
//! first and writes parents first, so that the target moves from one consistent state to the
//! next and never breaks a foreign key on the way.

use std::collections::BTreeSet;

use anyhow::Context as _;

use super::ends::{Snapshot, Target};
use crate::store::transfer::{Row, TableSchema, Value};

/// Log entries read at a time.
const LOG_PAGE: usize = 10_000;

/// The distinct (table index, key) pairs the log names in `(after, up_to]`, for the tables in
/// `only` (all when `None`).
async fn changed_keys(
    snapshot: &Snapshot,
    tables: &[TableSchema],
    after: i64,
    up_to: i64,
    only: Option<&[String]>,
) -> anyhow::Result<BTreeSet<(usize, String)>> {
    let mut keys = BTreeSet::new();
    let mut from = after;
    while from < up_to {
        let page = snapshot.changes(from, up_to, LOG_PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.id;
        for change in page {
            if only.is_some_and(|only| !only.contains(&change.table)) {
                continue;
            }
            // A table the log names but the schema no longer has cannot be: the move and the
            // schema belong to the same binary.
            let index = tables.iter().position(|t| t.name == change.table).with_context(|| {
                format!("the change log names an unknown table {}", change.table)
            })?;
            keys.insert((index, serde_json::to_string(&change.key)?));
        }
    }
    Ok(keys)
}

fn decode_key(key: &str) -> anyhow::Result<Vec<Value>> {
    Ok(serde_json::from_str(key)?)
}

/// Makes every key the log names in `(after, up_to]` what `snapshot` holds. Returns how many
/// distinct keys that was.
pub(super) async fn catch_up(
    snapshot: &Snapshot,
    target: &mut Target,
    tables: &[TableSchema],
    after: i64,
    up_to: i64,
    only: Option<&[String]>,
) -> anyhow::Result<usize> {
    if only.is_some_and(|only| only.is_empty()) {
        return Ok(0);
    }
    let keys = changed_keys(snapshot, tables, after, up_to, only).await?;
    let mut deletions: Vec<(usize, Vec<Value>)> = Vec::new();
    let mut upserts: Vec<(usize, Row)> = Vec::new();
    for (index, key) in &keys {
        let key = decode_key(key)?;
        match snapshot.row_by_key(&tables[*index], &key).await? {
            Some(row) => upserts.push((*index, row)),
            None => deletions.push((*index, key)),
        }
    }
    // Children first for deletions, parents first for writes.
    deletions.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
    upserts.sort_by_key(|(index, _)| *index);
    let deletions: Vec<(&TableSchema, Vec<Value>)> =
        deletions.into_iter().map(|(i, key)| (&tables[i], key)).collect();
    let upserts: Vec<(&TableSchema, Row)> =
        upserts.into_iter().map(|(i, row)| (&tables[i], row)).collect();
    target.apply_changes(&deletions, &upserts).await.context("catching up with changes failed")?;
    Ok(keys.len())
}

/// Checks that every key the log names in `(after, up_to]` is in the target exactly as in the
/// snapshot.
pub(super) async fn verify_changed(
    snapshot: &Snapshot,
    target: &Target,
    tables: &[TableSchema],
    after: i64,
    up_to: i64,
) -> anyhow::Result<()> {
    for (index, key) in changed_keys(snapshot, tables, after, up_to, None).await? {
        let table = &tables[index];
        let key = decode_key(&key)?;
        let (expected, found) =
            (snapshot.row_by_key(table, &key).await?, target.row_by_key(table, &key).await?);
        if expected != found {
            anyhow::bail!("a changed row of table {} differs after copying it", table.name);
        }
    }
    Ok(())
}
