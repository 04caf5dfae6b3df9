//! `/sync`: what changed for a user since a stream position, waiting for it if nothing did.
//!
//! A sync token is `s<position>`: everything up to that global stream position was delivered.
//! Pagination tokens of `/messages` use the same form, and mean "between this position and the
//! next", so that a timeline's `prev_batch` feeds `/messages` directly.

mod filter;
mod notifier;
mod v3;

pub use self::{
    filter::{EventFilter, MAX_LIMIT, SyncFilter},
    notifier::Notifier,
    v3::{SyncRequest, sync},
};
use crate::{Error, Result};

/// Formats a stream position as a token.
pub fn token(position: i64) -> String {
    format!("s{position}")
}

/// Parses a token made by [`token`].
pub fn parse_token(token: &str) -> Result<i64> {
    token
        .strip_prefix('s')
        .and_then(|digits| digits.parse::<i64>().ok())
        .filter(|position| *position >= 0)
        .ok_or_else(|| Error::invalid_param("Invalid pagination or sync token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_token(&token(42)).unwrap(), 42);
        for bad in ["", "s", "42", "s-1", "sx", "t5", "s99999999999999999999"] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }
}
