//! The user directory (client-server API, "User directory"): the local users a user may find by
//! a part of their user ID's localpart or of their display name, which the store searches
//! (`crate::store::UserDirectoryStore`) without reading every account.
//!
//! A user finds the users they share a joined room with and those joined to a room published in
//! the room directory; deactivated accounts are never found.
//! FIXME: rooms whose join rule is `public` but which are not published do not count as public
//! rooms here; results are ordered by user ID, not by how well they match; SQLite folds the case
//! of ASCII letters only; users of other servers are not searched.

use ruma::UserId;

use super::Users;
use crate::{
    Error, Result,
    store::{DirectoryUser, UserDirectoryQuery},
};

/// The most results one search returns, whatever the client asks for.
pub const MAX_RESULTS: usize = 50;

/// The longest search term, in characters.
pub const MAX_TERM_CHARS: usize = 1000;

/// What a search found, and whether it found more than it returns.
pub struct DirectorySearch {
    pub users: Vec<DirectoryUser>,
    pub limited: bool,
}

impl Users {
    /// Searches the directory for `searcher`, returning at most `limit` users (capped at
    /// [`MAX_RESULTS`]).
    pub async fn search_directory(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> Result<DirectorySearch> {
        if term.chars().count() > MAX_TERM_CHARS {
            return Err(Error::invalid_param(format!(
                "search_term is longer than {MAX_TERM_CHARS} characters"
            )));
        }
        let limit = limit.min(MAX_RESULTS);
        let query = UserDirectoryQuery {
            searcher: searcher.to_owned(),
            term: term.trim().to_owned(),
            limit: limit + 1,
        };
        let mut users = self.store.search_user_directory(query).await?;
        let limited = users.len() > limit;
        users.truncate(limit);
        Ok(DirectorySearch { users, limited })
    }
}
