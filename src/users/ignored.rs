//! Ignored users (client-server API, "Ignoring Users"): the global account data
//! `m.ignored_user_list` a user sets, read back as the set of users whose events and invites the
//! server leaves out of that user's `/sync`, `/messages` and `/context` (`crate::sync` and the
//! event handlers apply it; state events are always kept).
//!
//! The list is checked when it is set; one stored before that which does not parse ignores
//! nobody.

use std::collections::BTreeSet;

use ruma::{OwnedUserId, UserId, events::ignored_user_list::IgnoredUserListEventContent};
use serde_json::value::RawValue;

use super::Users;
use crate::{Error, Result};

/// The account data type of the list.
pub const IGNORED_USER_LIST: &str = "m.ignored_user_list";

/// The users a user ignores, never the user themselves.
pub type IgnoredUsers = BTreeSet<OwnedUserId>;

/// Checks new account data of the type `m.ignored_user_list`: `ignored_users` must be an object
/// whose keys are user IDs (`M_BAD_JSON` otherwise). Other types pass unchecked.
pub fn check_account_data(data_type: &str, content: &RawValue) -> Result<()> {
    if data_type != IGNORED_USER_LIST {
        return Ok(());
    }
    serde_json::from_str::<IgnoredUserListEventContent>(content.get())
        .map(|_| ())
        .map_err(|error| Error::bad_json(format!("Invalid m.ignored_user_list: {error}")))
}

impl Users {
    /// The users `user_id` ignores.
    pub async fn ignored_users(&self, user_id: &UserId) -> Result<IgnoredUsers> {
        let Some(content) = self.store.account_data(user_id, None, IGNORED_USER_LIST).await? else {
            return Ok(IgnoredUsers::new());
        };
        // A list stored before lists were checked may not parse; it ignores nobody rather than
        // failing every sync of its user.
        let list = match serde_json::from_str::<IgnoredUserListEventContent>(content.get()) {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, "a stored m.ignored_user_list is invalid; ignoring nobody");
                return Ok(IgnoredUsers::new());
            }
        };
        let mut ignored: IgnoredUsers = list.ignored_users.into_keys().collect();
        // Ignoring yourself would hide your own messages from you.
        ignored.remove(user_id);
        Ok(ignored)
    }
}

/// Whether an event of `sender` is left out for someone who ignores `ignored`: only events that
/// are not state events.
pub fn is_ignored(ignored: &IgnoredUsers, sender: &UserId, is_state: bool) -> bool {
    !is_state && ignored.contains(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn only_a_list_of_user_ids_is_an_ignored_user_list() {
        let good = raw(r#"{"ignored_users":{"@bob:localhost":{}}}"#);
        assert!(check_account_data(IGNORED_USER_LIST, &good).is_ok());
        for bad in [
            r#"{}"#,
            r#"{"ignored_users":[]}"#,
            r#"{"ignored_users":{"bob":{}}}"#,
            r#"{"ignored_users":{"@bob:localhost":1}}"#,
        ] {
            assert!(check_account_data(IGNORED_USER_LIST, &raw(bad)).is_err(), "{bad}");
        }
        assert!(check_account_data("m.other", &raw("{}")).is_ok());
    }
}
