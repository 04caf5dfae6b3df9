//! PostgreSQL queries for event relations, the same as SQLite's (`src/store/sqlite/relations.rs`):
//! the `event_relations` rows written with each relating event, the thread list, and the
//! summaries bundled into events. Lists of parents are one array parameter.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, UserId};

use super::{
    Conn, execute, query,
    rooms::{EVENT_COLUMNS, Param, event_record},
};
use crate::store::{
    EventRecord, NewEvent, RelationFilter, RelationSummary, StoreResult, ThreadRoot, ThreadSummary,
    ThreadsQuery,
};

/// Records what a new event at `position` relates to, if anything.
pub(super) async fn insert_relation(c: &Conn, event: &NewEvent, position: i64) -> StoreResult<()> {
    if let Some(relation) = &event.relation {
        execute(
            c,
            "INSERT INTO event_relations (stream_position, relates_to, rel_type) VALUES ($1, $2, $3)",
            &[&position, &relation.relates_to.as_str(), &relation.rel_type],
        )
        .await?;
    }
    Ok(())
}

/// Forgets the relation of a redacted event.
pub(super) async fn delete_relation(c: &Conn, event_id: &str) -> StoreResult<()> {
    execute(
        c,
        "DELETE FROM event_relations
         WHERE stream_position = (SELECT stream_position FROM events WHERE event_id = $1)",
        &[&event_id],
    )
    .await?;
    Ok(())
}

/// The condition `room_events` adds for a `relates_to` filter: the events relating to the
/// parent, and with a depth above 1 also those relating to them, level by level.
pub(super) fn push_relation_filter(
    sql: &mut String,
    values: &mut Vec<Param>,
    filter: &RelationFilter,
) {
    values.push(Box::new(filter.event_id.to_string()));
    let parent = values.len();
    values.push(Box::new(i64::from(filter.depth)));
    let depth = values.len();
    let rel_type = match &filter.rel_type {
        Some(rel_type) => {
            values.push(Box::new(rel_type.clone()));
            format!(" AND r.rel_type = ${}", values.len())
        }
        None => String::new(),
    };
    sql.push_str(&format!(
        " AND e.stream_position IN (
            WITH RECURSIVE tree (position, event_id, depth) AS (
                SELECT r.stream_position, x.event_id, 1::BIGINT FROM event_relations r
                JOIN events x ON x.stream_position = r.stream_position
                WHERE r.relates_to = ${parent}{rel_type}
                UNION ALL
                SELECT r.stream_position, x.event_id, t.depth + 1 FROM tree t
                JOIN event_relations r ON r.relates_to = t.event_id
                JOIN events x ON x.stream_position = r.stream_position
                WHERE t.depth < ${depth}{rel_type}
            )
            SELECT position FROM tree)"
    ));
}

pub(super) async fn thread_roots(c: &Conn, query_: &ThreadsQuery) -> StoreResult<Vec<ThreadRoot>> {
    let participant = query_.participant.as_ref().map(|user| user.to_string());
    let limit = i64::try_from(query_.limit).unwrap_or(i64::MAX);
    let rows = query(
        c,
        "SELECT r.relates_to, MAX(r.stream_position) AS latest
         FROM event_relations r JOIN events e ON e.stream_position = r.stream_position
         JOIN events root ON root.event_id = r.relates_to AND root.room_id = e.room_id
         WHERE r.rel_type = 'm.thread' AND e.room_id = $1
         GROUP BY r.relates_to
         HAVING ($2::BIGINT IS NULL OR MAX(r.stream_position) < $2)
            AND ($3::TEXT IS NULL OR bool_or(root.sender = $3) OR bool_or(e.sender = $3))
         ORDER BY latest DESC LIMIT $4",
        &[&query_.room_id.as_str(), &query_.before, &participant, &limit],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let root = OwnedEventId::try_from(row.try_get::<_, String>(0)?)?;
            Ok(ThreadRoot { root, latest_position: row.try_get(1)? })
        })
        .collect()
}

/// The relation types each parent has; one cheap query, so that events without relations (most
/// of them) cost nothing more.
async fn relation_types(c: &Conn, parents: &[&str]) -> StoreResult<BTreeMap<String, Vec<String>>> {
    let rows = query(
        c,
        "SELECT DISTINCT relates_to, rel_type FROM event_relations
         WHERE relates_to = ANY($1) AND rel_type IN ('m.thread', 'm.replace', 'm.reference')",
        &[&parents],
    )
    .await?;
    let mut types: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        types.entry(row.try_get(0)?).or_default().push(row.try_get(1)?);
    }
    Ok(types)
}

pub(super) async fn relation_summaries(
    c: &Conn,
    parents: &[OwnedEventId],
    user_id: &UserId,
) -> StoreResult<BTreeMap<OwnedEventId, RelationSummary>> {
    let all: Vec<&str> = parents.iter().map(|id| id.as_str()).collect();
    let types = relation_types(c, &all).await?;
    let with = |rel_type: &str| -> Vec<&str> {
        types
            .iter()
            .filter(|(_, t)| t.iter().any(|t| t == rel_type))
            .map(|(p, _)| p.as_str())
            .collect()
    };
    let mut summaries: BTreeMap<OwnedEventId, RelationSummary> = BTreeMap::new();
    for (parent, thread) in threads(c, &with("m.thread"), user_id).await? {
        summaries.entry(parent).or_default().thread = Some(thread);
    }
    for (parent, edit) in replacements(c, &with("m.replace")).await? {
        summaries.entry(parent).or_default().replacements.push(edit);
    }
    for (parent, reference) in references(c, &with("m.reference")).await? {
        summaries.entry(parent).or_default().references.push(reference);
    }
    Ok(summaries)
}

async fn threads(
    c: &Conn,
    roots: &[&str],
    user_id: &UserId,
) -> StoreResult<Vec<(OwnedEventId, ThreadSummary)>> {
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let rows = query(
        c,
        "SELECT r.relates_to, COUNT(*), MAX(r.stream_position),
                bool_or(e.sender = $2) OR bool_or(root.sender = $2)
         FROM event_relations r JOIN events e ON e.stream_position = r.stream_position
         JOIN events root ON root.event_id = r.relates_to
         WHERE r.rel_type = 'm.thread' AND r.relates_to = ANY($1)
         GROUP BY r.relates_to",
        &[&roots, &user_id.as_str()],
    )
    .await?;
    let positions: Vec<i64> = rows.iter().map(|row| row.try_get(2)).collect::<Result<_, _>>()?;
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.stream_position = ANY($1)");
    let mut latest = BTreeMap::new();
    for row in query(c, &sql, &[&positions]).await? {
        let event = event_record(&row)?;
        latest.insert(event.stream_position, event);
    }
    let mut threads = Vec::with_capacity(rows.len());
    for row in rows {
        let position: i64 = row.try_get(2)?;
        if let Some(latest_event) = latest.remove(&position) {
            let count = u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0);
            let participated = row.try_get(3)?;
            let root = OwnedEventId::try_from(row.try_get::<_, String>(0)?)?;
            threads.push((root, ThreadSummary { count, latest_event, participated }));
        }
    }
    Ok(threads)
}

/// Edits by the parent's own sender, of the parent's own type, neither being state, of a parent
/// that is not an edit itself.
async fn replacements(c: &Conn, parents: &[&str]) -> StoreResult<Vec<(OwnedEventId, EventRecord)>> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, p.event_id FROM event_relations r
         JOIN events e ON e.stream_position = r.stream_position
         JOIN events p ON p.event_id = r.relates_to
         WHERE r.rel_type = 'm.replace' AND r.relates_to = ANY($1)
           AND e.sender = p.sender AND e.event_type = p.event_type
           AND e.state_key IS NULL AND p.state_key IS NULL AND e.room_id = p.room_id
           AND NOT EXISTS (SELECT 1 FROM event_relations pr
                           WHERE pr.stream_position = p.stream_position AND pr.rel_type = 'm.replace')
         ORDER BY e.stream_position"
    );
    query(c, &sql, &[&parents])
        .await?
        .iter()
        .map(|row| Ok((OwnedEventId::try_from(row.try_get::<_, String>(11)?)?, event_record(row)?)))
        .collect()
}

async fn references(c: &Conn, parents: &[&str]) -> StoreResult<Vec<(OwnedEventId, OwnedEventId)>> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    let rows = query(
        c,
        "SELECT r.relates_to, e.event_id FROM event_relations r
         JOIN events e ON e.stream_position = r.stream_position
         JOIN events p ON p.event_id = r.relates_to AND p.room_id = e.room_id
         WHERE r.rel_type = 'm.reference' AND r.relates_to = ANY($1)
         ORDER BY e.stream_position",
        &[&parents],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let parent = OwnedEventId::try_from(row.try_get::<_, String>(0)?)?;
            Ok((parent, OwnedEventId::try_from(row.try_get::<_, String>(1)?)?))
        })
        .collect()
}
