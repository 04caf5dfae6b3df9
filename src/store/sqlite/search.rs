//! SQLite queries for the search index: the `event_search` row written with each searchable
//! event (its FTS5 index follows by trigger), dropped on redaction, and the `/search` query.

use async_trait::async_trait;
use rusqlite::{Connection, ToSql, params};

use super::SqliteStore;
use crate::store::{
    NewEvent, SearchHit, SearchOrder, SearchPage, SearchQuery, SearchStore, StoreResult,
    search::fts5_query,
};

/// Puts a new event's text into the index, if it has any.
pub(super) fn insert_search_text(
    c: &Connection,
    event: &NewEvent,
    position: i64,
) -> StoreResult<()> {
    if let Some(search) = &event.search {
        c.prepare_cached(
            "INSERT INTO event_search (stream_position, room_id, sender, search_key, value)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            position,
            event.room_id.as_str(),
            event.sender.as_str(),
            search.key,
            search.text
        ])?;
    }
    Ok(())
}

/// Takes a redacted event out of the index.
pub(super) fn delete_search_text(c: &Connection, event_id: &str) -> StoreResult<()> {
    c.prepare_cached(
        "DELETE FROM event_search
         WHERE stream_position = (SELECT stream_position FROM events WHERE event_id = ?1)",
    )?
    .execute([event_id])?;
    Ok(())
}

/// The conditions every search has: the terms, rooms, keys and senders (`?1` to `?5`).
const MATCHES: &str = "FROM event_search_fts f
     JOIN event_search s ON s.stream_position = f.rowid
     JOIN events e ON e.stream_position = s.stream_position
     WHERE event_search_fts MATCH ?1
       AND s.room_id IN (SELECT value FROM json_each(?2))
       AND s.search_key IN (SELECT value FROM json_each(?3))
       AND (?4 IS NULL OR s.sender IN (SELECT value FROM json_each(?4)))
       AND s.sender NOT IN (SELECT value FROM json_each(?5))";

#[async_trait]
impl SearchStore for SqliteStore {
    async fn search_events(&self, query: SearchQuery) -> StoreResult<SearchPage> {
        if query.room_ids.is_empty() || query.keys.is_empty() || query.terms.is_empty() {
            return Ok(SearchPage { hits: Vec::new(), count: 0 });
        }
        self.read(move |c| search(c, &query)).await
    }
}

fn search(c: &Connection, query: &SearchQuery) -> StoreResult<SearchPage> {
    let base: Vec<Box<dyn ToSql>> = vec![
        Box::new(fts5_query(&query.terms)),
        Box::new(serde_json::to_string(&query.room_ids)?),
        Box::new(serde_json::to_string(&query.keys)?),
        Box::new(query.senders.as_ref().map(serde_json::to_string).transpose()?),
        Box::new(serde_json::to_string(&query.not_senders)?),
    ];
    let count: i64 = {
        let sql = format!("SELECT count(*) {MATCHES}");
        let values: Vec<&dyn ToSql> = base.iter().map(|v| v.as_ref()).collect();
        c.prepare_cached(&sql)?.query_row(values.as_slice(), |row| row.get(0))?
    };
    let limit = i64::try_from(query.limit)?;
    let (offset, before, order) = match query.order {
        SearchOrder::Rank { offset } => {
            (i64::try_from(offset)?, None, "score DESC, s.stream_position DESC")
        }
        SearchOrder::Recent { before } => (0, before, "s.stream_position DESC"),
    };
    let sql = format!(
        "SELECT e.event_id, s.stream_position, -bm25(event_search_fts) AS score
         {MATCHES} AND (?8 IS NULL OR s.stream_position < ?8)
         ORDER BY {order} LIMIT ?6 OFFSET ?7"
    );
    let mut values: Vec<&dyn ToSql> = base.iter().map(|v| v.as_ref()).collect();
    values.extend([&limit as &dyn ToSql, &offset, &before]);
    let mut statement = c.prepare_cached(&sql)?;
    let rows = statement.query_map(values.as_slice(), |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, f64>(2)?))
    })?;
    let hits = rows
        .map(|row| {
            let (event_id, stream_position, rank) = row?;
            Ok(SearchHit { event_id: event_id.try_into()?, stream_position, rank })
        })
        .collect::<StoreResult<_>>()?;
    Ok(SearchPage { hits, count: u64::try_from(count)? })
}
