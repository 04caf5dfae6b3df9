//! PostgreSQL queries for the search index: the `event_search` row written with each searchable
//! event (the GIN index on its tsvector follows), dropped on redaction, and the `/search` query.

use async_trait::async_trait;

use super::{Conn, PostgresStore, execute, query};
use crate::store::{
    NewEvent, SearchHit, SearchOrder, SearchPage, SearchQuery, SearchStore, StoreResult,
    search::tsquery,
};

/// Puts a new event's text into the index, if it has any.
pub(super) async fn insert_search_text(
    c: &Conn,
    event: &NewEvent,
    position: i64,
) -> StoreResult<()> {
    if let Some(search) = &event.search {
        execute(
            c,
            "INSERT INTO event_search (stream_position, room_id, sender, search_key, value)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &position,
                &event.room_id.as_str(),
                &event.sender.as_str(),
                &search.key,
                &search.text,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Takes a redacted event out of the index.
pub(super) async fn delete_search_text(c: &Conn, event_id: &str) -> StoreResult<()> {
    execute(
        c,
        "DELETE FROM event_search
         WHERE stream_position = (SELECT stream_position FROM events WHERE event_id = $1)",
        &[&event_id],
    )
    .await?;
    Ok(())
}

/// The conditions every search has: the terms, rooms, keys and senders (`$1` to `$5`). The
/// tsvector expression is the index's (migration V9), so that the GIN index serves it.
const MATCHES: &str = "FROM event_search s
     JOIN events e ON e.stream_position = s.stream_position,
     to_tsquery('simple', $1) q
     WHERE to_tsvector('simple', translate(s.value, '.@/:<>+-', '        ')) @@ q
       AND s.room_id = ANY($2) AND s.search_key = ANY($3)
       AND ($4::text[] IS NULL OR s.sender = ANY($4))
       AND NOT (s.sender = ANY($5))";

#[async_trait]
impl SearchStore for PostgresStore {
    async fn search_events(&self, search: SearchQuery) -> StoreResult<SearchPage> {
        if search.room_ids.is_empty() || search.keys.is_empty() || search.terms.is_empty() {
            return Ok(SearchPage { hits: Vec::new(), count: 0 });
        }
        let terms = tsquery(&search.terms);
        let rooms: Vec<&str> = search.room_ids.iter().map(|id| id.as_str()).collect();
        let senders = search.senders.clone();
        let connection = self.conn().await?;
        let base: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&terms, &rooms, &search.keys, &senders, &search.not_senders];
        let counted = query(&connection, &format!("SELECT count(*) {MATCHES}"), &base).await?;
        let count: i64 = counted.first().map(|row| row.try_get(0)).transpose()?.unwrap_or(0);

        let limit = i64::try_from(search.limit)?;
        let (offset, before, order) = match search.order {
            SearchOrder::Rank { offset } => {
                (i64::try_from(offset)?, None, "score DESC, s.stream_position DESC")
            }
            SearchOrder::Recent { before } => (0, before, "s.stream_position DESC"),
        };
        let sql = format!(
            "SELECT e.event_id, s.stream_position,
                    ts_rank(to_tsvector('simple', translate(s.value, '.@/:<>+-', '        ')), q)
                        ::float8 AS score
             {MATCHES} AND ($8::bigint IS NULL OR s.stream_position < $8)
             ORDER BY {order} LIMIT $6 OFFSET $7"
        );
        let mut values = base.to_vec();
        values.extend([&limit as &(dyn tokio_postgres::types::ToSql + Sync), &offset, &before]);
        let rows = query(&connection, &sql, &values).await?;
        let hits = rows
            .iter()
            .map(|row| {
                Ok(SearchHit {
                    event_id: row.try_get::<_, String>(0)?.try_into()?,
                    stream_position: row.try_get(1)?,
                    rank: row.try_get(2)?,
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok(SearchPage { hits, count: u64::try_from(count)? })
    }
}
