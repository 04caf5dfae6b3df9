//! TURN credentials for calls (`GET /voip/turnServer`), from `[voip]` in `hearth.toml`.
//!
//! Hearth runs no TURN server; it hands out credentials for one the family runs (coturn, say).
//! With a shared secret it follows coturn's REST API scheme: the username is
//! `<expiry in Unix seconds>:<user ID>` and the password the base64 of
//! HMAC-SHA1(secret, username), which the TURN server checks with the same secret, so nothing is
//! stored and the credentials expire by themselves. This module never knows HTTP.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use ruma::UserId;
use sha1::Sha1;

use crate::config::VoipConfig;

/// What a client gets to reach the TURN server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    pub uris: Vec<String>,
    pub ttl: Duration,
}

/// The credentials `user_id` gets at `now`, or `None` when no TURN server is configured.
pub fn turn_credentials(
    config: &VoipConfig,
    user_id: &UserId,
    now: SystemTime,
) -> anyhow::Result<Option<TurnCredentials>> {
    if config.turn_uris.is_empty() {
        return Ok(None);
    }
    let ttl = Duration::from_secs(config.turn_ttl_seconds);
    let (username, password) = if config.turn_shared_secret.is_empty() {
        (config.turn_username.clone(), config.turn_password.clone())
    } else {
        let expiry = now.duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
        let username = format!("{}:{user_id}", expiry.as_secs());
        let password = rest_api_password(&config.turn_shared_secret, &username)?;
        (username, password)
    };
    Ok(Some(TurnCredentials { username, password, uris: config.turn_uris.clone(), ttl }))
}

/// base64(HMAC-SHA1(secret, username)), the password coturn expects for `username`.
fn rest_api_password(secret: &str, username: &str) -> anyhow::Result<String> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot key HMAC-SHA1: {e}"))?;
    mac.update(username.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VoipConfig {
        VoipConfig {
            turn_uris: vec!["turn:turn.example.org:3478?transport=udp".to_owned()],
            turn_shared_secret: "north-wind".to_owned(),
            turn_ttl_seconds: 86_400,
            ..VoipConfig::default()
        }
    }

    #[test]
    fn a_shared_secret_gives_coturn_rest_api_credentials() {
        let alice = <&UserId>::try_from("@alice:localhost").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let credentials = turn_credentials(&config(), alice, now).unwrap().unwrap();
        assert_eq!(credentials.username, "1700086400:@alice:localhost");
        // Computed independently: base64(HMAC-SHA1("north-wind", username)).
        assert_eq!(credentials.password, "sgK1ocjhT0kLrXwipCVrtPiU7Sw=");
        assert_eq!(credentials.ttl, Duration::from_secs(86_400));
        assert_eq!(credentials.uris, config().turn_uris);
    }

    #[test]
    fn fixed_credentials_are_handed_out_as_they_are_and_no_uris_means_none() {
        let alice = <&UserId>::try_from("@alice:localhost").unwrap();
        let fixed = VoipConfig {
            turn_shared_secret: String::new(),
            turn_username: "family".to_owned(),
            turn_password: "hearth".to_owned(),
            ..config()
        };
        let credentials = turn_credentials(&fixed, alice, SystemTime::now()).unwrap().unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("family", "hearth")
        );
        let none = VoipConfig { turn_uris: Vec::new(), ..config() };
        assert_eq!(turn_credentials(&none, alice, SystemTime::now()).unwrap(), None);
    }
}
