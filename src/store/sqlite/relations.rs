//! SQLite queries for event relations: the `event_relations` rows written with each relating
//! event, the thread list, and the summaries bundled into events. Which content counts as a
//! relation is decided by `crate::rooms::relations`; this file only keeps and reads the rows.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, UserId};
use rusqlite::{Connection, ToSql, params};

use super::rooms::{EVENT_COLUMNS, query_events, query_events_with};
use crate::store::{
    EventRecord, NewEvent, RelationFilter, RelationSummary, StoreResult, ThreadRoot, ThreadSummary,
    ThreadsQuery,
};

/// Records what a new event at `position` relates to, if anything.
pub(super) fn insert_relation(c: &Connection, event: &NewEvent, position: i64) -> StoreResult<()> {
    if let Some(relation) = &event.relation {
        c.prepare_cached(
            "INSERT INTO event_relations (stream_position, relates_to, rel_type) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![position, relation.relates_to.as_str(), relation.rel_type])?;
    }
    Ok(())
}

/// Forgets the relation of a redacted event.
pub(super) fn delete_relation(c: &Connection, event_id: &str) -> StoreResult<()> {
    c.prepare_cached(
        "DELETE FROM event_relations
         WHERE stream_position = (SELECT stream_position FROM events WHERE event_id = ?1)",
    )?
    .execute([event_id])?;
    Ok(())
}

/// The condition `room_events` adds for a `relates_to` filter: the events relating to the
/// parent, and with a depth above 1 also those relating to them, level by level.
pub(super) fn push_relation_filter(
    sql: &mut String,
    values: &mut Vec<Box<dyn ToSql>>,
    filter: &RelationFilter,
) {
    let rel_type = if filter.rel_type.is_some() { " AND r.rel_type = ?" } else { "" };
    sql.push_str(&format!(
        " AND e.stream_position IN (
            WITH RECURSIVE tree (position, event_id, depth) AS (
                SELECT r.stream_position, x.event_id, 1 FROM event_relations r
                JOIN events x ON x.stream_position = r.stream_position
                WHERE r.relates_to = ?{rel_type}
                UNION ALL
                SELECT r.stream_position, x.event_id, t.depth + 1 FROM tree t
                JOIN event_relations r ON r.relates_to = t.event_id
                JOIN events x ON x.stream_position = r.stream_position
                WHERE t.depth < ?{rel_type}
            )
            SELECT position FROM tree)"
    ));
    values.push(Box::new(filter.event_id.to_string()));
    if let Some(rel_type) = &filter.rel_type {
        values.push(Box::new(rel_type.clone()));
    }
    values.push(Box::new(i64::from(filter.depth)));
    if let Some(rel_type) = &filter.rel_type {
        values.push(Box::new(rel_type.clone()));
    }
}

pub(super) fn thread_roots(c: &Connection, query: &ThreadsQuery) -> StoreResult<Vec<ThreadRoot>> {
    let participant = query.participant.as_ref().map(|user| user.to_string());
    let mut statement = c.prepare_cached(
        "SELECT r.relates_to, MAX(r.stream_position) AS latest
         FROM event_relations r JOIN events e ON e.stream_position = r.stream_position
         JOIN events root ON root.event_id = r.relates_to AND root.room_id = e.room_id
         WHERE r.rel_type = 'm.thread' AND e.room_id = ?1
         GROUP BY r.relates_to
         HAVING (?2 IS NULL OR latest < ?2)
            AND (?3 IS NULL OR MAX(root.sender = ?3) = 1 OR MAX(e.sender = ?3) = 1)
         ORDER BY latest DESC LIMIT ?4",
    )?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let rows = statement
        .query_map(params![query.room_id.as_str(), query.before, participant, limit], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
    rows.map(|row| {
        let (root, latest_position) = row?;
        Ok(ThreadRoot { root: OwnedEventId::try_from(root)?, latest_position })
    })
    .collect()
}

/// The relation types each parent has; one cheap query, so that events without relations (most
/// of them) cost nothing more.
fn relation_types(c: &Connection, parents: &str) -> StoreResult<BTreeMap<String, Vec<String>>> {
    let mut statement = c.prepare_cached(
        "SELECT DISTINCT relates_to, rel_type FROM event_relations
         WHERE relates_to IN (SELECT value FROM json_each(?1))
           AND rel_type IN ('m.thread', 'm.replace', 'm.reference')",
    )?;
    let rows = statement.query_map([parents], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let mut types: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let (parent, rel_type) = row?;
        types.entry(parent).or_default().push(rel_type);
    }
    Ok(types)
}

pub(super) fn relation_summaries(
    c: &Connection,
    parents: &[OwnedEventId],
    user_id: &UserId,
) -> StoreResult<BTreeMap<OwnedEventId, RelationSummary>> {
    let all = serde_json::to_string(&parents)?;
    let types = relation_types(c, &all)?;
    let with = |rel_type: &str| -> StoreResult<String> {
        let ids: Vec<&String> =
            types.iter().filter(|(_, t)| t.iter().any(|t| t == rel_type)).map(|(p, _)| p).collect();
        Ok(serde_json::to_string(&ids)?)
    };
    let mut summaries: BTreeMap<OwnedEventId, RelationSummary> = BTreeMap::new();
    for (parent, thread) in threads(c, &with("m.thread")?, user_id)? {
        summaries.entry(parent).or_default().thread = Some(thread);
    }
    for (parent, edit) in replacements(c, &with("m.replace")?)? {
        summaries.entry(parent).or_default().replacements.push(edit);
    }
    for (parent, reference) in references(c, &with("m.reference")?)? {
        summaries.entry(parent).or_default().references.push(reference);
    }
    Ok(summaries)
}

fn threads(
    c: &Connection,
    roots: &str,
    user_id: &UserId,
) -> StoreResult<Vec<(OwnedEventId, ThreadSummary)>> {
    if roots == "[]" {
        return Ok(Vec::new());
    }
    let mut statement = c.prepare_cached(
        "SELECT r.relates_to, COUNT(*), MAX(r.stream_position),
                MAX(e.sender = ?2) OR MAX(root.sender = ?2)
         FROM event_relations r JOIN events e ON e.stream_position = r.stream_position
         JOIN events root ON root.event_id = r.relates_to
         WHERE r.rel_type = 'm.thread' AND r.relates_to IN (SELECT value FROM json_each(?1))
         GROUP BY r.relates_to",
    )?;
    let rows = statement.query_map(params![roots, user_id.as_str()], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?, row.get(3)?))
    })?;
    let rows: Vec<(String, i64, i64, bool)> = rows.collect::<Result<_, _>>()?;
    let positions = serde_json::to_string(&rows.iter().map(|r| r.2).collect::<Vec<_>>())?;
    let latest: BTreeMap<i64, _> = query_events(
        c,
        &format!(
            "SELECT {EVENT_COLUMNS} FROM events e
             WHERE e.stream_position IN (SELECT value FROM json_each(?1))"
        ),
        [positions],
    )?
    .into_iter()
    .map(|event| (event.stream_position, event))
    .collect();
    let mut threads = Vec::with_capacity(rows.len());
    for (root, count, position, participated) in rows {
        if let Some(latest_event) = latest.get(&position) {
            let count = u64::try_from(count).unwrap_or(0);
            let thread = ThreadSummary { count, latest_event: latest_event.clone(), participated };
            threads.push((OwnedEventId::try_from(root)?, thread));
        }
    }
    Ok(threads)
}

/// Edits by the parent's own sender, of the parent's own type, neither being state, of a parent
/// that is not an edit itself.
fn replacements(c: &Connection, parents: &str) -> StoreResult<Vec<(OwnedEventId, EventRecord)>> {
    if parents == "[]" {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, p.event_id FROM event_relations r
         JOIN events e ON e.stream_position = r.stream_position
         JOIN events p ON p.event_id = r.relates_to
         WHERE r.rel_type = 'm.replace' AND r.relates_to IN (SELECT value FROM json_each(?1))
           AND e.sender = p.sender AND e.event_type = p.event_type
           AND e.state_key IS NULL AND p.state_key IS NULL AND e.room_id = p.room_id
           AND NOT EXISTS (SELECT 1 FROM event_relations pr
                           WHERE pr.stream_position = p.stream_position AND pr.rel_type = 'm.replace')
         ORDER BY e.stream_position"
    );
    let rows = query_events_with(c, &sql, [parents], |row| row.get::<_, String>(11))?;
    rows.into_iter().map(|(edit, parent)| Ok((OwnedEventId::try_from(parent)?, edit))).collect()
}

fn references(c: &Connection, parents: &str) -> StoreResult<Vec<(OwnedEventId, OwnedEventId)>> {
    if parents == "[]" {
        return Ok(Vec::new());
    }
    let mut statement = c.prepare_cached(
        "SELECT r.relates_to, e.event_id FROM event_relations r
         JOIN events e ON e.stream_position = r.stream_position
         JOIN events p ON p.event_id = r.relates_to AND p.room_id = e.room_id
         WHERE r.rel_type = 'm.reference' AND r.relates_to IN (SELECT value FROM json_each(?1))
         ORDER BY e.stream_position",
    )?;
    let rows = statement
        .query_map([parents], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
    rows.map(|row| {
        let (parent, child) = row?;
        Ok((OwnedEventId::try_from(parent)?, OwnedEventId::try_from(child)?))
    })
    .collect()
}
