//! The full-text search index of room events: what a new event puts into it
//! ([`NewSearchText`], decided by `crate::search`), and the queries `/search` runs on it
//! ([`SearchStore`]).
//!
//! Both backends keep the same `event_search` table (migration V9, one file per backend): one
//! row per searchable event with the room, the sender, the content key and the text. SQLite
//! searches it through an FTS5 index that triggers keep in step, PostgreSQL through a GIN index
//! on `to_tsvector('simple', value)` (with the punctuation inside addresses and URLs made spaces,
//! so that both backends cut text into the same words). A row is written in the same transaction as its event and
//! deleted when the event is redacted.

use async_trait::async_trait;
use ruma::{OwnedEventId, OwnedRoomId};

use super::StoreResult;

/// What an event puts into the search index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSearchText {
    /// The content key the text comes from: `content.body`, `content.name` or `content.topic`.
    pub key: String,
    /// The text, without NUL characters (PostgreSQL's text cannot hold them).
    pub text: String,
}

/// A search of the index. Every term must match the start of a word of the text (case and, on
/// SQLite, diacritics folded).
#[derive(Clone, Debug)]
pub struct SearchQuery {
    /// Lowercase words of letters and digits only; never empty.
    pub terms: Vec<String>,
    /// The content keys searched.
    pub keys: Vec<String>,
    /// The rooms searched.
    pub room_ids: Vec<OwnedRoomId>,
    /// Only these senders, if given.
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub order: SearchOrder,
    pub limit: usize,
}

/// How results are ordered, and where a page starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SearchOrder {
    /// Best match first (ties: newest first), skipping the first `offset` matches.
    Rank { offset: u64 },
    /// Newest first, from the match before stream position `before` (the newest when `None`).
    Recent { before: Option<i64> },
}

/// One match.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHit {
    pub event_id: OwnedEventId,
    pub stream_position: i64,
    /// How well the text matches: higher is better (comparable within one backend only).
    pub rank: f64,
}

/// A page of matches and how many there are in all (before history visibility, which the
/// caller applies).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    pub count: u64,
}

/// The search index.
#[async_trait]
pub trait SearchStore {
    /// A page of the events matching the query.
    async fn search_events(&self, query: SearchQuery) -> StoreResult<SearchPage>;
}

/// The query text SQLite's FTS5 gets: each term quoted (so nothing in it is FTS5 syntax) and
/// matched as a prefix; all must match.
pub(super) fn fts5_query(terms: &[String]) -> String {
    terms.iter().map(|term| format!("\"{}\"*", term.replace('"', ""))).collect::<Vec<_>>().join(" ")
}

/// The query text PostgreSQL's `to_tsquery` gets: each term quoted and matched as a prefix; all
/// must match.
#[cfg(feature = "postgres")]
pub(super) fn tsquery(terms: &[String]) -> String {
    let quoted = terms.iter().map(|term| format!("'{}':*", term.replace(['\'', '\\'], "")));
    quoted.collect::<Vec<_>>().join(" & ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_quoted_prefixes_for_both_backends() {
        let terms = vec!["hello".to_owned(), "wor".to_owned()];
        assert_eq!(fts5_query(&terms), "\"hello\"* \"wor\"*");
        let hostile = vec!["a\"b'c\\".to_owned()];
        assert_eq!(fts5_query(&hostile), "\"ab'c\\\"*");
        #[cfg(feature = "postgres")]
        {
            assert_eq!(tsquery(&terms), "'hello':* & 'wor':*");
            assert_eq!(tsquery(&hostile), "'a\"bc':*");
        }
    }
}
