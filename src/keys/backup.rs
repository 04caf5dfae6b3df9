//! Server-side key backups (client-server API, "Server-side key backups"): a user's backup
//! versions, each an algorithm with its opaque `auth_data`, and the encrypted room keys stored in
//! them.
//!
//! Versions are numbered per user and never reused. Keys go only into the latest version (a
//! client that writes to an older one gets `M_WRONG_ROOM_KEYS_VERSION` with the current version);
//! reading and deleting keys work on any version that exists. Which of two keys for one session
//! the server keeps follows the spec's rule, applied in the store ([`crate::store::BackupStore`]).
//! The server never looks inside `auth_data` or `session_data` beyond checking their shape.
//! FIXME: deactivating an account keeps its backups (they stay unreachable, as no one can log in
//! as the account again); they should be deleted with it.

use std::collections::BTreeMap;

use http::StatusCode;
use ruma::{
    OwnedRoomId, UserId,
    api::{
        client::backup::{BackupAlgorithm, KeyBackupData},
        error::{ErrorKind, WrongRoomKeysVersionErrorData},
    },
    serde::Raw,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    store::{
        BackupCounts, BackupDeletion, BackupKeysChange, BackupKeysScope, BackupVersionRecord,
        NewBackupKey, Store,
    },
};

/// The backed-up keys of one or more rooms: room ID → session ID → key data.
pub type RoomKeys = BTreeMap<OwnedRoomId, BTreeMap<String, Raw<KeyBackupData>>>;

/// The key backup service.
#[derive(Clone)]
pub struct KeyBackups {
    store: Store,
}

/// A backup version as clients see it.
pub struct VersionInfo {
    pub version: String,
    /// `{"algorithm": …, "auth_data": …}` as stored.
    pub algorithm: Raw<BackupAlgorithm>,
    pub counts: BackupCounts,
}

/// The parts of a backup version's body the server keeps: the algorithm's name and its
/// `auth_data` exactly as the client sent it.
#[derive(Deserialize)]
struct VersionBody {
    algorithm: String,
    auth_data: Box<RawValue>,
    /// On update only: if given, the version of the path.
    version: Option<String>,
}

impl KeyBackups {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Creates a backup version; returns its number.
    pub async fn create_version(
        &self,
        user_id: &UserId,
        algorithm: &Raw<BackupAlgorithm>,
    ) -> Result<String> {
        let body = version_body(algorithm)?;
        let version = self
            .store
            .create_backup_version(user_id, &body.algorithm, body.auth_data.get())
            .await?;
        Ok(version.to_string())
    }

    /// A version that exists (the latest when `version` is `None`).
    pub async fn version_info(
        &self,
        user_id: &UserId,
        version: Option<&str>,
    ) -> Result<VersionInfo> {
        let number = match version {
            Some(version) => Some(parse_version(version).ok_or_else(unknown_version)?),
            None => None,
        };
        let record = self.store.backup_version(user_id, number).await?;
        let record = record.ok_or_else(|| match version {
            Some(_) => unknown_version(),
            None => Error::not_found("No current backup version"),
        })?;
        info_of(record)
    }

    /// Replaces a version's `auth_data`; the algorithm must stay the same.
    pub async fn update_version(
        &self,
        user_id: &UserId,
        version: &str,
        algorithm: &Raw<BackupAlgorithm>,
    ) -> Result<()> {
        let body = version_body(algorithm)?;
        if body.version.as_ref().is_some_and(|v| v != version) {
            return Err(Error::invalid_param("The version in the body is not the path's"));
        }
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let stored = self.store.backup_version(user_id, Some(number)).await?;
        let stored = stored.ok_or_else(unknown_version)?;
        if stored.algorithm != body.algorithm {
            return Err(Error::invalid_param("Algorithm does not match the backup's"));
        }
        if !self.store.update_backup_version(user_id, number, body.auth_data.get()).await? {
            return Err(unknown_version());
        }
        Ok(())
    }

    /// Deletes a version and its keys; deleting a deleted version succeeds again.
    pub async fn delete_version(&self, user_id: &UserId, version: &str) -> Result<()> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        match self.store.delete_backup_version(user_id, number).await? {
            BackupDeletion::Deleted | BackupDeletion::AlreadyDeleted => Ok(()),
            BackupDeletion::Unknown => Err(unknown_version()),
        }
    }

    /// Stores keys in the latest version; a stored key stays where it is better.
    pub async fn put_keys(
        &self,
        user_id: &UserId,
        version: &str,
        keys: &RoomKeys,
    ) -> Result<BackupCounts> {
        let new_keys = keys
            .iter()
            .flat_map(|(room_id, sessions)| {
                sessions.iter().map(move |(session, data)| new_key(room_id, session, data))
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(number) = parse_version(version) else {
            // No version of ours has this name; the answer depends on what the latest one is.
            let latest = self.store.backup_version(user_id, None).await?;
            return Err(latest.map_or_else(unknown_version, |l| wrong_version(l.version)));
        };
        change_outcome(self.store.put_backup_keys(user_id, number, new_keys).await?)
    }

    /// The keys of a version in the scope. A single session that is not stored is `M_NOT_FOUND`.
    pub async fn keys(
        &self,
        user_id: &UserId,
        version: &str,
        scope: BackupKeysScope,
    ) -> Result<RoomKeys> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let single = matches!(scope, BackupKeysScope::Session(..));
        let stored = self.store.backup_keys(user_id, number, scope).await?;
        let stored = stored.ok_or_else(unknown_version)?;
        if single && stored.is_empty() {
            return Err(Error::not_found("No key for this session in the backup"));
        }
        let mut keys = RoomKeys::new();
        for key in stored {
            let data = RawValue::from_string(key.key_data).map_err(anyhow::Error::from)?;
            keys.entry(key.room_id).or_default().insert(key.session_id, Raw::from_json(data));
        }
        Ok(keys)
    }

    /// Deletes the keys of a version in the scope.
    pub async fn delete_keys(
        &self,
        user_id: &UserId,
        version: &str,
        scope: BackupKeysScope,
    ) -> Result<BackupCounts> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        change_outcome(self.store.delete_backup_keys(user_id, number, scope).await?)
    }
}

/// Checks a version's body with ruma (a known algorithm's `auth_data` must have its fields) and
/// takes out what is stored.
fn version_body(algorithm: &Raw<BackupAlgorithm>) -> Result<VersionBody> {
    algorithm.deserialize().map_err(|error| {
        Error::bad_json(format!("Invalid backup algorithm or auth_data: {error}"))
    })?;
    let body: VersionBody = serde_json::from_str(algorithm.json().get())
        .map_err(|error| Error::bad_json(format!("Invalid backup version: {error}")))?;
    if !body.auth_data.get().trim_start().starts_with('{') {
        return Err(Error::bad_json("auth_data must be a JSON object"));
    }
    Error::check_no_nul("algorithm", &body.algorithm)?;
    Ok(body)
}

/// A version number of ours: digits only, from 1 up. Anything else names no version.
fn parse_version(version: &str) -> Option<i64> {
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    version.parse().ok().filter(|&n| n > 0)
}

fn info_of(record: BackupVersionRecord) -> Result<VersionInfo> {
    let auth_data = RawValue::from_string(record.auth_data).map_err(anyhow::Error::from)?;
    let json = serde_json::json!({ "algorithm": record.algorithm, "auth_data": auth_data });
    let algorithm = serde_json::value::to_raw_value(&json).map_err(anyhow::Error::from)?;
    Ok(VersionInfo {
        version: record.version.to_string(),
        algorithm: Raw::from_json(algorithm),
        counts: record.counts,
    })
}

/// A key to store, checked against the spec's `KeyBackupData`.
fn new_key(
    room_id: &OwnedRoomId,
    session_id: &str,
    data: &Raw<KeyBackupData>,
) -> Result<NewBackupKey> {
    Error::check_no_nul("A session ID", session_id)?;
    let parsed = data.deserialize().map_err(|error| {
        Error::bad_json(format!("Invalid key data for session {session_id}: {error}"))
    })?;
    let number = |value: ruma::UInt| i64::try_from(u64::from(value)).unwrap_or(i64::MAX);
    Ok(NewBackupKey {
        room_id: room_id.clone(),
        session_id: session_id.to_owned(),
        is_verified: parsed.is_verified,
        first_message_index: number(parsed.first_message_index),
        forwarded_count: number(parsed.forwarded_count),
        key_data: data.json().get().to_owned(),
    })
}

fn change_outcome(change: BackupKeysChange) -> Result<BackupCounts> {
    match change {
        BackupKeysChange::Done(counts) => Ok(counts),
        BackupKeysChange::NoSuchVersion => Err(unknown_version()),
        BackupKeysChange::NotLatest { latest } => Err(wrong_version(latest)),
    }
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// 403 `M_WRONG_ROOM_KEYS_VERSION`, naming the current version.
fn wrong_version(latest: i64) -> Error {
    let data = WrongRoomKeysVersionErrorData::new(latest.to_string());
    Error::client(
        StatusCode::FORBIDDEN,
        ErrorKind::WrongRoomKeysVersion(data),
        format!("Keys go into the current backup version, {latest}"),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn only_positive_decimal_numbers_name_a_version() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("0042"), Some(42));
        for other in ["", "0", "-1", "+1", "1.0", " 1", "abc", "99999999999999999999"] {
            assert_eq!(parse_version(other), None, "{other:?}");
        }
    }
}
