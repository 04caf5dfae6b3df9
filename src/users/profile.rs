//! The profile fields beyond `displayname` and `avatar_url` (extended profiles, spec v1.16):
//! `m.tz` and custom fields named in the spec's namespaced grammar, each any JSON value.
//!
//! The display name and avatar URL are columns of the account and are repeated in membership
//! events, so they change through `crate::rooms::Rooms::update_profile`; this module keeps the
//! other fields, one row each, and bounds their names and their total size. It never knows HTTP.

use ruma::{UserId, api::error::ErrorKind};
use serde_json::Value as JsonValue;

use super::Users;
use crate::{Error, Result};

/// The longest field name, in bytes: longer ones are `M_KEY_TOO_LARGE`, as the spec says.
pub const MAX_FIELD_NAME_BYTES: usize = 255;

/// What the custom fields together may take, as the JSON object of them all. The spec bounds
/// the whole profile at 64 KiB; the rest is left for the longest display name and avatar URL
/// Hearth accepts (256 and 1,000 bytes, up to six times that once escaped as JSON).
pub const MAX_CUSTOM_FIELDS_BYTES: usize = 56 * 1024;

/// Checks the name of a field to set or delete against the spec's pattern: `avatar_url`,
/// `displayname`, `m.tz`, or the
/// [common namespaced identifier grammar](https://spec.matrix.org/v1.19/appendices/#common-namespaced-identifier-grammar)
/// in lower case (at least two dot-separated parts, each a letter then letters, digits or `_`).
pub fn check_field_name(name: &str) -> Result<()> {
    if name.len() > MAX_FIELD_NAME_BYTES {
        return Err(Error::client(
            http::StatusCode::BAD_REQUEST,
            ErrorKind::KeyTooLarge,
            "Profile field names may be at most 255 bytes long",
        ));
    }
    if !is_field_name(name) {
        return Err(Error::invalid_param(
            "Invalid profile field name: use avatar_url, displayname, m.tz or a namespaced name \
             such as org.example.field",
        ));
    }
    Ok(())
}

/// Whether `name` matches the spec's `keyName` pattern.
pub fn is_field_name(name: &str) -> bool {
    if matches!(name, "avatar_url" | "displayname" | "m.tz") {
        return true;
    }
    let is_part = |part: &str| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    name.split('.').count() >= 2 && name.split('.').all(is_part)
}

impl Users {
    /// The user's fields besides `displayname` and `avatar_url`, in name order.
    pub async fn custom_profile_fields(
        &self,
        user_id: &UserId,
    ) -> Result<Vec<(String, JsonValue)>> {
        let stored = self.store.profile_fields(user_id).await?;
        stored
            .into_iter()
            .map(|(name, text)| {
                let value = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("profile field {name} is not JSON: {e}"))?;
                Ok((name, value))
            })
            .collect()
    }

    /// Sets a field other than `displayname` and `avatar_url` (whose name the caller checked):
    /// `M_PROFILE_TOO_LARGE` if the custom fields would then exceed
    /// [`MAX_CUSTOM_FIELDS_BYTES`].
    pub async fn set_custom_profile_field(
        &self,
        user_id: &UserId,
        name: &str,
        value: JsonValue,
    ) -> Result<()> {
        let _guard = self.profile_lock.lock().await;
        let mut fields: serde_json::Map<String, JsonValue> =
            self.custom_profile_fields(user_id).await?.into_iter().collect();
        fields.insert(name.to_owned(), value.clone());
        let size = serde_json::to_string(&fields).map_err(anyhow::Error::from)?.len();
        if size > MAX_CUSTOM_FIELDS_BYTES {
            return Err(Error::client(
                http::StatusCode::BAD_REQUEST,
                ErrorKind::ProfileTooLarge,
                format!(
                    "The profile would be too large: its custom fields may take \
                     {MAX_CUSTOM_FIELDS_BYTES} bytes"
                ),
            ));
        }
        let text = serde_json::to_string(&value).map_err(anyhow::Error::from)?;
        self.store.set_profile_field(user_id, name, &text).await?;
        Ok(())
    }

    /// Removes a field other than `displayname` and `avatar_url`; nothing if it is not set.
    pub async fn delete_custom_profile_field(&self, user_id: &UserId, name: &str) -> Result<()> {
        let _guard = self.profile_lock.lock().await;
        self.store.delete_profile_field(user_id, name).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_follow_the_spec_pattern() {
        for good in ["displayname", "avatar_url", "m.tz", "org.example.field", "a.b", "x1.y_2.z"] {
            assert!(is_field_name(good), "{good}");
        }
        for bad in ["", "custom", "Org.example", "org..example", ".org", "org.", "1a.b", "a.b-c"] {
            assert!(!is_field_name(bad), "{bad}");
        }
    }

    #[test]
    fn long_names_are_key_too_large_and_bad_ones_invalid() {
        let long = format!("org.{}", "a".repeat(252));
        assert!(matches!(
            check_field_name(&long),
            Err(Error::Client { kind: ErrorKind::KeyTooLarge, .. })
        ));
        assert!(check_field_name(&long[..255]).is_ok());
        assert!(matches!(
            check_field_name("Bad"),
            Err(Error::Client { kind: ErrorKind::InvalidParam, .. })
        ));
    }
}
