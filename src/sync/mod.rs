//! `/sync`: what changed for a user since a stream position, waiting for it if nothing did.
//!
//! A sync token is `s<position>_<typing>_<to-device>_<presence>`: everything up to that global
//! stream position was delivered, every typing change up to that serial (see
//! [`crate::rooms::typing`]), the device's to-device messages up to the third position (see
//! [`crate::keys::to_device`]), which lags behind the first when a full inbox pages, and every
//! presence change up to the last serial (see [`crate::presence`]). A token without the
//! to-device part (the form of earlier versions) counts its stream position for it; one without
//! the presence part gets everyone's presence again, as an initial sync does.
//! Pagination tokens of `/messages` are `s<position>` alone and mean "between this position and
//! the next", so that a timeline's `prev_batch` feeds `/messages` directly; `/messages` also
//! takes a sync token, whose position counts, and `/sync` takes a token without the typing part
//! (the form of earlier versions), sending the typing users of every room then.

mod filter;
mod ignored;
mod notifier;
mod peek;
mod presence;
mod sliding;
mod summary;
mod v3;

pub use self::{
    filter::{EventFilter, MAX_LIMIT, SyncFilter},
    notifier::Notifier,
    peek::RoomWatch,
    sliding::{Connections as SlidingSyncConnections, sliding_sync},
    v3::{MAX_TIMEOUT, SyncRequest, sync},
};
use crate::{Error, Result, services::Services};

/// How long a sync waits for push evaluation to record the counts of the newest room events
/// (see [`current_position`]). Past it, the counts come in a later answer.
const COUNTS_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// The stream position a sync answers up to: the current one, once the notification counts of
/// the room events published so far are recorded (or [`COUNTS_WAIT`] passed). Without the wait a
/// long poll woken by a message would answer it without the counts it changed, and the counts,
/// recorded a moment later, would wake the next poll for them alone.
async fn current_position(services: &Services) -> Result<i64> {
    let published = services.rooms.published_position();
    services.push.wait_for_counts(published, COUNTS_WAIT).await;
    Ok(services.store.current_position().await?)
}

/// Formats a stream position as a token.
pub fn token(position: i64) -> String {
    format!("s{position}")
}

/// The largest stream position a token may name: the largest integer a JSON number keeps
/// exactly (2^53 - 1), far beyond any real stream, so that arithmetic on a parsed position
/// (`position + 1` for "after this token") never overflows, whatever a client sends.
pub const MAX_POSITION: i64 = (1 << 53) - 1;

/// The parts of a sync token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncToken {
    /// Everything up to this stream position was delivered.
    pub position: i64,
    /// The typing serial, if the token has one.
    pub typing: Option<u64>,
    /// The position of the last to-device message delivered, if the token has one.
    pub to_device: Option<i64>,
    /// The presence serial, if the token has one.
    pub presence: Option<u64>,
}

/// Formats the `next_batch` token of a sync.
pub fn sync_token(position: i64, typing: u64, to_device: i64, presence: u64) -> String {
    format!("s{position}_{typing}_{to_device}_{presence}")
}

/// The stream position of a token made by [`token`] or [`sync_token`].
pub fn parse_token(token: &str) -> Result<i64> {
    parse_sync_token(token).map(|token| token.position)
}

/// The parts of a token made by [`token`] or [`sync_token`] (or by an earlier version, without
/// the last parts).
pub fn parse_sync_token(token: &str) -> Result<SyncToken> {
    let invalid = || Error::invalid_param("Invalid pagination or sync token");
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let position_of = |text: &str| {
        Some(text)
            .filter(|p| digits(p))
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|p| (0..=MAX_POSITION).contains(p))
            .ok_or_else(invalid)
    };
    let rest = token.strip_prefix('s').ok_or_else(invalid)?;
    let mut parts = rest.split('_');
    let position = position_of(parts.next().unwrap_or_default())?;
    let typing = match parts.next() {
        Some(typing) if digits(typing) => Some(typing.parse::<u64>().map_err(|_| invalid())?),
        Some(_) => return Err(invalid()),
        None => None,
    };
    let to_device = parts.next().map(position_of).transpose()?;
    let presence = match parts.next() {
        Some(presence) if digits(presence) => Some(presence.parse::<u64>().map_err(|_| invalid())?),
        Some(_) => return Err(invalid()),
        None => None,
    };
    if parts.next().is_some() || to_device.is_some_and(|t| t > position) {
        return Err(invalid());
    }
    Ok(SyncToken { position, typing, to_device, presence })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_token(&token(42)).unwrap(), 42);
        assert_eq!(parse_token(&token(MAX_POSITION)).unwrap(), MAX_POSITION);
        let too_big = [token(MAX_POSITION + 1), token(i64::MAX)];
        let garbage = [
            "",
            "s",
            "42",
            "s-1",
            "s+1",
            "sx",
            "t5",
            "s99999999999999999999",
            "s5_",
            "s_5",
            "s5_x",
            "s5_-1",
            "s5_1_2_3_4",
            "s5_1_2_",
            "s5_1_2_x",
            "s5_1_2_-3",
            "s5_1_2_99999999999999999999",
            "s5_1_6",
            "s5_1_x",
            "s5_1_",
            "s5_99999999999999999999",
        ];
        for bad in garbage.iter().copied().chain(too_big.iter().map(String::as_str)) {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
        let full =
            SyncToken { position: 42, typing: Some(7), to_device: Some(40), presence: Some(9) };
        assert_eq!(parse_sync_token(&sync_token(42, 7, 40, 9)).unwrap(), full);
        let without_presence = SyncToken { presence: None, ..full };
        assert_eq!(parse_sync_token("s42_7_40").unwrap(), without_presence, "before presence");
        let old = SyncToken { to_device: None, ..without_presence };
        assert_eq!(parse_sync_token("s42_7").unwrap(), old, "the form of earlier versions");
        let older = SyncToken { typing: None, ..old };
        assert_eq!(parse_sync_token("s42").unwrap(), older);
        assert_eq!(parse_token(&sync_token(42, 7, 40, 9)).unwrap(), 42);
    }
}
