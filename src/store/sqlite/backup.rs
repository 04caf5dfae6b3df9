//! SQLite queries for server-side key backups.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::SqliteStore;
use crate::store::shared::scope_values;
use crate::store::{
    BackupCounts, BackupDeletion, BackupKeyRecord, BackupKeysChange, BackupKeysScope, BackupStore,
    BackupVersionRecord, NewBackupKey, StoreResult,
};
use ruma::UserId;

#[async_trait]
impl BackupStore for SqliteStore {
    async fn create_backup_version(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: &str,
    ) -> StoreResult<i64> {
        let (user_id, algorithm, auth_data) =
            (user_id.to_string(), algorithm.to_owned(), auth_data.to_owned());
        self.write(move |c| {
            let version: i64 = c.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM backup_versions WHERE user_id = ?1",
                params![user_id],
                |row| row.get(0),
            )?;
            c.execute(
                "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, deleted)
                 VALUES (?1, ?2, ?3, ?4, 0, 0)",
                params![user_id, version, algorithm, auth_data],
            )?;
            Ok(version)
        })
        .await
    }

    async fn backup_version(
        &self,
        user_id: &UserId,
        version: Option<i64>,
    ) -> StoreResult<Option<BackupVersionRecord>> {
        let user_id = user_id.to_string();
        self.read(move |c| {
            let version = match version {
                Some(version) => Some(version),
                None => latest_version(c, &user_id)?,
            };
            let Some(version) = version else { return Ok(None) };
            let row = c
                .query_row(
                    "SELECT algorithm, auth_data FROM backup_versions
                     WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
                    params![user_id, version],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .optional()?;
            let Some((algorithm, auth_data)) = row else { return Ok(None) };
            let counts = counts(c, &user_id, version)?;
            Ok(Some(BackupVersionRecord { version, algorithm, auth_data, counts }))
        })
        .await
    }

    async fn update_backup_version(
        &self,
        user_id: &UserId,
        version: i64,
        auth_data: &str,
    ) -> StoreResult<bool> {
        let (user_id, auth_data) = (user_id.to_string(), auth_data.to_owned());
        self.write(move |c| {
            let changed = c.execute(
                "UPDATE backup_versions SET auth_data = ?3
                 WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
                params![user_id, version, auth_data],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn delete_backup_version(
        &self,
        user_id: &UserId,
        version: i64,
    ) -> StoreResult<BackupDeletion> {
        let user_id = user_id.to_string();
        self.write(move |c| {
            let deleted: Option<i64> = c
                .query_row(
                    "SELECT deleted FROM backup_versions WHERE user_id = ?1 AND version = ?2",
                    params![user_id, version],
                    |row| row.get(0),
                )
                .optional()?;
            match deleted {
                None => return Ok(BackupDeletion::Unknown),
                Some(1) => return Ok(BackupDeletion::AlreadyDeleted),
                Some(_) => {}
            }
            c.execute(
                "DELETE FROM backup_keys WHERE user_id = ?1 AND version = ?2",
                params![user_id, version],
            )?;
            c.execute(
                "UPDATE backup_versions SET deleted = 1, etag = etag + 1
                 WHERE user_id = ?1 AND version = ?2",
                params![user_id, version],
            )?;
            Ok(BackupDeletion::Deleted)
        })
        .await
    }

    async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        keys: Vec<NewBackupKey>,
    ) -> StoreResult<BackupKeysChange> {
        let user_id = user_id.to_string();
        self.write(move |c| {
            match latest_version(c, &user_id)? {
                None => return Ok(BackupKeysChange::NoSuchVersion),
                Some(latest) if latest != version => {
                    return Ok(BackupKeysChange::NotLatest { latest });
                }
                Some(_) => {}
            }
            let mut changed = 0;
            for key in &keys {
                changed += put_key(c, &user_id, version, key)?;
            }
            finish_change(c, &user_id, version, changed)
        })
        .await
    }

    async fn backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: BackupKeysScope,
    ) -> StoreResult<Option<Vec<BackupKeyRecord>>> {
        let user_id = user_id.to_string();
        self.read(move |c| {
            if !version_exists(c, &user_id, version)? {
                return Ok(None);
            }
            let (room, session) = scope_values(&scope);
            let mut statement = c.prepare(
                "SELECT room_id, session_id, key_data FROM backup_keys
                 WHERE user_id = ?1 AND version = ?2
                   AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)
                 ORDER BY room_id, session_id",
            )?;
            let rows = statement.query_map(params![user_id, version, room, session], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
            })?;
            let mut keys = Vec::new();
            for row in rows {
                let (room_id, session_id, key_data) = row?;
                keys.push(BackupKeyRecord { room_id: room_id.try_into()?, session_id, key_data });
            }
            Ok(Some(keys))
        })
        .await
    }

    async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: BackupKeysScope,
    ) -> StoreResult<BackupKeysChange> {
        let user_id = user_id.to_string();
        self.write(move |c| {
            if !version_exists(c, &user_id, version)? {
                return Ok(BackupKeysChange::NoSuchVersion);
            }
            let (room, session) = scope_values(&scope);
            let changed = c.execute(
                "DELETE FROM backup_keys
                 WHERE user_id = ?1 AND version = ?2
                   AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)",
                params![user_id, version, room, session],
            )?;
            finish_change(c, &user_id, version, changed)
        })
        .await
    }
}

/// Stores one key unless the stored key of its session is as good; returns the rows changed.
fn put_key(c: &Connection, user_id: &str, version: i64, key: &NewBackupKey) -> StoreResult<usize> {
    // The spec's rule: verified beats unverified, then the lower first message index, then the
    // lower forwarded count; a tie keeps the stored key.
    let changed = c
        .prepare_cached(
            "INSERT INTO backup_keys (user_id, version, room_id, session_id, is_verified,
                                      first_message_index, forwarded_count, key_data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE
             SET is_verified = excluded.is_verified,
                 first_message_index = excluded.first_message_index,
                 forwarded_count = excluded.forwarded_count,
                 key_data = excluded.key_data
             WHERE excluded.is_verified > backup_keys.is_verified
                OR (excluded.is_verified = backup_keys.is_verified
                    AND (excluded.first_message_index < backup_keys.first_message_index
                         OR (excluded.first_message_index = backup_keys.first_message_index
                             AND excluded.forwarded_count < backup_keys.forwarded_count)))",
        )?
        .execute(params![
            user_id,
            version,
            key.room_id.as_str(),
            key.session_id,
            i64::from(key.is_verified),
            key.first_message_index,
            key.forwarded_count,
            key.key_data
        ])?;
    Ok(changed)
}

/// Moves the version's etag on if any key changed, and reads what its keys add up to.
fn finish_change(
    c: &Connection,
    user_id: &str,
    version: i64,
    changed: usize,
) -> StoreResult<BackupKeysChange> {
    if changed > 0 {
        c.execute(
            "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = ?1 AND version = ?2",
            params![user_id, version],
        )?;
    }
    Ok(BackupKeysChange::Done(counts(c, user_id, version)?))
}

fn counts(c: &Connection, user_id: &str, version: i64) -> StoreResult<BackupCounts> {
    let (count, etag): (i64, i64) = c.query_row(
        "SELECT (SELECT COUNT(*) FROM backup_keys WHERE user_id = ?1 AND version = ?2), etag
         FROM backup_versions WHERE user_id = ?1 AND version = ?2",
        params![user_id, version],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(BackupCounts { count: u64::try_from(count)?, etag })
}

fn latest_version(c: &Connection, user_id: &str) -> StoreResult<Option<i64>> {
    Ok(c.query_row(
        "SELECT MAX(version) FROM backup_versions WHERE user_id = ?1 AND deleted = 0",
        params![user_id],
        |row| row.get(0),
    )?)
}

fn version_exists(c: &Connection, user_id: &str, version: i64) -> StoreResult<bool> {
    Ok(c.query_row(
        "SELECT 1 FROM backup_versions WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
        params![user_id, version],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}
