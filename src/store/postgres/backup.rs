//! PostgreSQL queries for server-side key backups.

use async_trait::async_trait;
use ruma::UserId;

use super::{Conn, PostgresStore, execute, flag, query, query_opt};
use crate::store::shared::scope_values;
use crate::store::{
    BackupCounts, BackupDeletion, BackupKeyRecord, BackupKeysChange, BackupKeysScope, BackupStore,
    BackupVersionRecord, NewBackupKey, StoreResult,
};

#[async_trait]
impl BackupStore for PostgresStore {
    async fn create_backup_version(
        &self,
        user_id: &UserId,
        algorithm: &str,
        auth_data: &str,
    ) -> StoreResult<i64> {
        let (user_id, algorithm, auth_data) =
            (user_id.to_string(), algorithm.to_owned(), auth_data.to_owned());
        self.write(move |w| {
            w.block_on(async {
                let row = query_opt(
                    w.conn(),
                    "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag,
                                                  deleted)
                     SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, 0, 0
                     FROM backup_versions WHERE user_id = $1
                     RETURNING version",
                    &[&user_id, &algorithm, &auth_data],
                )
                .await?;
                let row = row.ok_or_else(|| anyhow::anyhow!("no backup version was created"))?;
                Ok(row.try_get(0)?)
            })
        })
        .await
    }

    async fn backup_version(
        &self,
        user_id: &UserId,
        version: Option<i64>,
    ) -> StoreResult<Option<BackupVersionRecord>> {
        let c = &*self.conn().await?;
        let user_id = user_id.as_str();
        let version = match version {
            Some(version) => Some(version),
            None => latest_version(c, user_id).await?,
        };
        let Some(version) = version else { return Ok(None) };
        let row = query_opt(
            c,
            "SELECT algorithm, auth_data FROM backup_versions
             WHERE user_id = $1 AND version = $2 AND deleted = 0",
            &[&user_id, &version],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let counts = counts(c, user_id, version).await?;
        Ok(Some(BackupVersionRecord {
            version,
            algorithm: row.try_get(0)?,
            auth_data: row.try_get(1)?,
            counts,
        }))
    }

    async fn update_backup_version(
        &self,
        user_id: &UserId,
        version: i64,
        auth_data: &str,
    ) -> StoreResult<bool> {
        let (user_id, auth_data) = (user_id.to_string(), auth_data.to_owned());
        self.write(move |w| {
            w.block_on(async {
                let changed = execute(
                    w.conn(),
                    "UPDATE backup_versions SET auth_data = $3
                     WHERE user_id = $1 AND version = $2 AND deleted = 0",
                    &[&user_id, &version, &auth_data],
                )
                .await?;
                Ok(changed == 1)
            })
        })
        .await
    }

    async fn delete_backup_version(
        &self,
        user_id: &UserId,
        version: i64,
    ) -> StoreResult<BackupDeletion> {
        let user_id = user_id.to_string();
        self.write(move |w| w.block_on(delete_version(w.conn(), &user_id, version))).await
    }

    async fn put_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        keys: Vec<NewBackupKey>,
    ) -> StoreResult<BackupKeysChange> {
        let user_id = user_id.to_string();
        self.write(move |w| w.block_on(put_keys(w.conn(), &user_id, version, &keys))).await
    }

    async fn backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: BackupKeysScope,
    ) -> StoreResult<Option<Vec<BackupKeyRecord>>> {
        let c = &*self.conn().await?;
        let user_id = user_id.as_str();
        if !version_exists(c, user_id, version).await? {
            return Ok(None);
        }
        let (room, session) = scope_values(&scope);
        let rows = query(
            c,
            "SELECT room_id, session_id, key_data FROM backup_keys
             WHERE user_id = $1 AND version = $2
               AND ($3::TEXT IS NULL OR room_id = $3) AND ($4::TEXT IS NULL OR session_id = $4)
             ORDER BY room_id, session_id",
            &[&user_id, &version, &room, &session],
        )
        .await?;
        let keys = rows
            .iter()
            .map(|row| {
                Ok(BackupKeyRecord {
                    room_id: row.try_get::<_, String>(0)?.try_into()?,
                    session_id: row.try_get(1)?,
                    key_data: row.try_get(2)?,
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok(Some(keys))
    }

    async fn delete_backup_keys(
        &self,
        user_id: &UserId,
        version: i64,
        scope: BackupKeysScope,
    ) -> StoreResult<BackupKeysChange> {
        let user_id = user_id.to_string();
        self.write(move |w| w.block_on(delete_keys(w.conn(), &user_id, version, &scope))).await
    }
}

async fn delete_version(c: &Conn, user_id: &str, version: i64) -> StoreResult<BackupDeletion> {
    let row = query_opt(
        c,
        "SELECT deleted FROM backup_versions WHERE user_id = $1 AND version = $2",
        &[&user_id, &version],
    )
    .await?;
    match row.map(|row| row.try_get::<_, i32>(0)).transpose()? {
        None => return Ok(BackupDeletion::Unknown),
        Some(1) => return Ok(BackupDeletion::AlreadyDeleted),
        Some(_) => {}
    }
    execute(
        c,
        "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2",
        &[&user_id, &version],
    )
    .await?;
    execute(
        c,
        "UPDATE backup_versions SET deleted = 1, etag = etag + 1
         WHERE user_id = $1 AND version = $2",
        &[&user_id, &version],
    )
    .await?;
    Ok(BackupDeletion::Deleted)
}

async fn put_keys(
    c: &Conn,
    user_id: &str,
    version: i64,
    keys: &[NewBackupKey],
) -> StoreResult<BackupKeysChange> {
    match latest_version(c, user_id).await? {
        None => return Ok(BackupKeysChange::NoSuchVersion),
        Some(latest) if latest != version => return Ok(BackupKeysChange::NotLatest { latest }),
        Some(_) => {}
    }
    let mut changed = 0;
    for key in keys {
        changed += put_key(c, user_id, version, key).await?;
    }
    finish_change(c, user_id, version, changed).await
}

/// Stores one key unless the stored key of its session is as good; returns the rows changed.
async fn put_key(c: &Conn, user_id: &str, version: i64, key: &NewBackupKey) -> StoreResult<u64> {
    // The spec's rule: verified beats unverified, then the lower first message index, then the
    // lower forwarded count; a tie keeps the stored key.
    execute(
        c,
        "INSERT INTO backup_keys (user_id, version, room_id, session_id, is_verified,
                                  first_message_index, forwarded_count, key_data)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
        &[
            &user_id,
            &version,
            &key.room_id.as_str(),
            &key.session_id,
            &flag(key.is_verified),
            &key.first_message_index,
            &key.forwarded_count,
            &key.key_data,
        ],
    )
    .await
}

async fn delete_keys(
    c: &Conn,
    user_id: &str,
    version: i64,
    scope: &BackupKeysScope,
) -> StoreResult<BackupKeysChange> {
    if !version_exists(c, user_id, version).await? {
        return Ok(BackupKeysChange::NoSuchVersion);
    }
    let (room, session) = scope_values(scope);
    let changed = execute(
        c,
        "DELETE FROM backup_keys
         WHERE user_id = $1 AND version = $2
           AND ($3::TEXT IS NULL OR room_id = $3) AND ($4::TEXT IS NULL OR session_id = $4)",
        &[&user_id, &version, &room, &session],
    )
    .await?;
    finish_change(c, user_id, version, changed).await
}

/// Moves the version's etag on if any key changed, and reads what its keys add up to.
async fn finish_change(
    c: &Conn,
    user_id: &str,
    version: i64,
    changed: u64,
) -> StoreResult<BackupKeysChange> {
    if changed > 0 {
        execute(
            c,
            "UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
            &[&user_id, &version],
        )
        .await?;
    }
    Ok(BackupKeysChange::Done(counts(c, user_id, version).await?))
}

async fn counts(c: &Conn, user_id: &str, version: i64) -> StoreResult<BackupCounts> {
    let row = query_opt(
        c,
        "SELECT (SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2), etag
         FROM backup_versions WHERE user_id = $1 AND version = $2",
        &[&user_id, &version],
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("backup version {version} is missing"))?;
    let count: i64 = row.try_get(0)?;
    Ok(BackupCounts { count: u64::try_from(count)?, etag: row.try_get(1)? })
}

async fn latest_version(c: &Conn, user_id: &str) -> StoreResult<Option<i64>> {
    let row = query_opt(
        c,
        "SELECT MAX(version) FROM backup_versions WHERE user_id = $1 AND deleted = 0",
        &[&user_id],
    )
    .await?;
    Ok(row.map(|row| row.try_get::<_, Option<i64>>(0)).transpose()?.flatten())
}

async fn version_exists(c: &Conn, user_id: &str, version: i64) -> StoreResult<bool> {
    let row = query_opt(
        c,
        "SELECT 1 FROM backup_versions WHERE user_id = $1 AND version = $2 AND deleted = 0",
        &[&user_id, &version],
    )
    .await?;
    Ok(row.is_some())
}
