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

/// The largest stream position a token may name: the largest integer a JSON number keeps
/// exactly (2^53 - 1), far beyond any real stream, so that arithmetic on a parsed position
/// (`position + 1` for "after this token") never overflows, whatever a client sends.
pub const MAX_POSITION: i64 = (1 << 53) - 1;

/// Parses a token made by [`token`].
pub fn parse_token(token: &str) -> Result<i64> {
    token
        .strip_prefix('s')
        .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse::<i64>().ok())
        .filter(|position| (0..=MAX_POSITION).contains(position))
        .ok_or_else(|| Error::invalid_param("Invalid pagination or sync token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_token(&token(42)).unwrap(), 42);
        assert_eq!(parse_token(&token(MAX_POSITION)).unwrap(), MAX_POSITION);
        let too_big = [token(MAX_POSITION + 1), token(i64::MAX)];
        let garbage = ["", "s", "42", "s-1", "s+1", "sx", "t5", "s99999999999999999999"];
        for bad in garbage.iter().copied().chain(too_big.iter().map(String::as_str)) {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }
}
