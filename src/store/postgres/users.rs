//! PostgreSQL queries for accounts, devices, tokens, profiles, account data and filters.
//!
//! Each method does what its SQLite twin in `store/sqlite/users.rs` does, statement for statement,
//! so that both backends answer alike. Writes go through the writer thread only (account data
//! takes a stream position there); reads use pooled connections and never write.

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::value::RawValue;
use tokio_postgres::Row;

use super::{Conn, PostgresStore, execute, flag, next_stream_position, query, query_opt};
use crate::store::{
    AccountDataRecord, AccountRestrictions, DeviceRecord, DeviceSeen, NewSession, NewUser, Session,
    StoreResult, UserRecord, UserStore,
};

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<bool> {
        self.write(move |w| {
            let inserted = w.block_on(execute(
                w.conn(),
                "INSERT INTO users (user_id, password_hash, is_admin, created_ts)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING",
                &[
                    &user.user_id.as_str(),
                    &user.password_hash,
                    &flag(user.is_admin),
                    &user.created_ts,
                ],
            ))?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            "SELECT password_hash, is_admin, deactivated, displayname, avatar_url, locked,
             suspended FROM users WHERE user_id = $1",
            &[&user_id.as_str()],
        )
        .await?;
        row.map(|row| user_from_row(user_id, &row)).transpose()
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let c = self.conn().await?;
        let row = query_opt(&c, "SELECT COUNT(*) FROM users", &[]).await?;
        let count: i64 = row.map(|row| row.try_get(0)).transpose()?.unwrap_or(0);
        Ok(count.try_into().unwrap_or_default())
    }

    async fn set_password_hash(&self, user_id: &UserId, password_hash: &str) -> StoreResult<()> {
        let (user_id, hash) = (user_id.to_owned(), password_hash.to_owned());
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "UPDATE users SET password_hash = $2 WHERE user_id = $1",
                &[&user_id.as_str(), &hash],
            ))?;
            Ok(())
        })
        .await
    }

    async fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |w| w.block_on(deactivate(w.conn(), user_id.as_str()))).await
    }

    async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> StoreResult<()> {
        let (user_id, name) = (user_id.to_owned(), name.map(ToOwned::to_owned));
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "UPDATE users SET displayname = $2 WHERE user_id = $1",
                &[&user_id.as_str(), &name],
            ))?;
            Ok(())
        })
        .await
    }

    async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> StoreResult<()> {
        let (user_id, url) = (user_id.to_owned(), url.map(ToOwned::to_owned));
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "UPDATE users SET avatar_url = $2 WHERE user_id = $1",
                &[&user_id.as_str(), &url],
            ))?;
            Ok(())
        })
        .await
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        self.write(move |w| w.block_on(insert_session(w.conn(), &session))).await
    }

    async fn session_by_token(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            "SELECT a.user_id, a.device_id, a.expires_ts,
                    EXISTS (SELECT 1 FROM refresh_tokens r
                            WHERE r.next_token_hash = a.refresh_token_hash),
                    u.locked, u.suspended
             FROM access_tokens a JOIN users u ON u.user_id = a.user_id
             WHERE a.token_hash = $1",
            &[&token_hash],
        )
        .await?;
        row.map(|row| {
            let user_id: String = row.try_get(0)?;
            let restrictions = AccountRestrictions {
                locked: row.try_get::<_, i32>(4)? != 0,
                suspended: row.try_get::<_, i32>(5)? != 0,
            };
            Ok(Session {
                user_id: OwnedUserId::try_from(user_id)?,
                device_id: row.try_get(1)?,
                expires_ts: row.try_get(2)?,
                first_use_revokes: row.try_get(3)?,
                restrictions,
            })
        })
        .transpose()
    }

    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>> {
        let c = self.conn().await?;
        // `COLLATE "C"` sorts by code point, as SQLite's default BINARY collation does; the
        // database's own collation may sort by language rules instead.
        let rows = query(
            &c,
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts, last_seen_user_agent
             FROM devices
             WHERE user_id = $1 ORDER BY device_id COLLATE \"C\"",
            &[&user_id.as_str()],
        )
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn device(&self, user_id: &UserId, device_id: &str) -> StoreResult<Option<DeviceRecord>> {
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts, last_seen_user_agent
             FROM devices
             WHERE user_id = $1 AND device_id = $2",
            &[&user_id.as_str(), &device_id],
        )
        .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn set_device_display_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> StoreResult<bool> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let name = name.map(ToOwned::to_owned);
        self.write(move |w| {
            let updated = w.block_on(execute(
                w.conn(),
                "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
                &[&user_id.as_str(), &device_id, &name],
            ))?;
            Ok(updated == 1)
        })
        .await
    }

    async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[String],
    ) -> StoreResult<Vec<String>> {
        let (user_id, device_ids) = (user_id.to_owned(), device_ids.to_vec());
        self.write(move |w| w.block_on(delete_listed_devices(w.conn(), &user_id, &device_ids)))
            .await
    }

    async fn delete_all_devices(
        &self,
        user_id: &UserId,
        keep: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let (user_id, keep) = (user_id.to_owned(), keep.unwrap_or("").to_owned());
        self.write(move |w| w.block_on(delete_other_devices(w.conn(), &user_id, &keep))).await
    }

    async fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        seen: DeviceSeen,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "UPDATE devices SET last_seen_ip = $3, last_seen_ts = $4, last_seen_user_agent = $5
                 WHERE user_id = $1 AND device_id = $2",
                &[&user_id.as_str(), &device_id, &seen.ip, &seen.ts, &seen.user_agent],
            ))?;
            Ok(())
        })
        .await
    }

    async fn set_locked(&self, user_id: &UserId, locked: bool) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "UPDATE users SET locked = $2 WHERE user_id = $1",
                &[&user_id.as_str(), &flag(locked)],
            ))?;
            Ok(())
        })
        .await
    }

    async fn set_suspended(&self, user_id: &UserId, suspended: bool) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "UPDATE users SET suspended = $2 WHERE user_id = $1",
                &[&user_id.as_str(), &flag(suspended)],
            ))?;
            Ok(())
        })
        .await
    }

    async fn profile_fields(&self, user_id: &UserId) -> StoreResult<Vec<(String, String)>> {
        let c = self.conn().await?;
        // `COLLATE "C"`: code point order, as SQLite's BINARY collation sorts.
        let rows = query(
            &c,
            "SELECT field, value FROM profile_fields WHERE user_id = $1
             ORDER BY field COLLATE \"C\"",
            &[&user_id.as_str()],
        )
        .await?;
        rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
    }

    async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: &str,
    ) -> StoreResult<()> {
        let (user_id, field, value) = (user_id.to_owned(), field.to_owned(), value.to_owned());
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
                &[&user_id.as_str(), &field, &value],
            ))?;
            Ok(())
        })
        .await
    }

    async fn delete_profile_field(&self, user_id: &UserId, field: &str) -> StoreResult<()> {
        let (user_id, field) = (user_id.to_owned(), field.to_owned());
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "DELETE FROM profile_fields WHERE user_id = $1 AND field = $2",
                &[&user_id.as_str(), &field],
            ))?;
            Ok(())
        })
        .await
    }

    async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &RawValue,
    ) -> StoreResult<i64> {
        let key = AccountDataKey::new(user_id, room_id, data_type);
        let content = content.get().to_owned();
        self.write(move |w| w.block_on(upsert_account_data(w.conn(), &key, &content))).await
    }

    async fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> StoreResult<Option<Box<RawValue>>> {
        let key = AccountDataKey::new(user_id, room_id, data_type);
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            "SELECT content FROM account_data
             WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
            &[&key.user_id.as_str(), &key.room_id, &key.data_type],
        )
        .await?;
        let content: Option<String> = row.map(|row| row.try_get(0)).transpose()?;
        Ok(content.map(RawValue::from_string).transpose()?)
    }

    async fn account_data_since(
        &self,
        user_id: &UserId,
        since: i64,
    ) -> StoreResult<Vec<AccountDataRecord>> {
        let c = self.conn().await?;
        let rows = query(
            &c,
            "SELECT room_id, data_type, content, stream_position FROM account_data
             WHERE user_id = $1 AND stream_position > $2 ORDER BY stream_position",
            &[&user_id.as_str(), &since],
        )
        .await?;
        rows.iter().map(account_data_from_row).collect()
    }

    async fn create_filter(&self, user_id: &UserId, filter: &str) -> StoreResult<i64> {
        let (user_id, filter) = (user_id.to_owned(), filter.to_owned());
        self.write(move |w| {
            // A user's filter IDs count up from 0; the single writer keeps two from racing.
            let rows = w.block_on(query(
                w.conn(),
                "INSERT INTO filters (user_id, filter_id, filter)
                 SELECT $1, COALESCE(MAX(filter_id), -1) + 1, $2 FROM filters WHERE user_id = $1
                 RETURNING filter_id",
                &[&user_id.as_str(), &filter],
            ))?;
            let row = rows.first().ok_or_else(|| anyhow::anyhow!("no filter ID returned"))?;
            Ok(row.try_get(0)?)
        })
        .await
    }

    async fn filter(&self, user_id: &UserId, filter_id: i64) -> StoreResult<Option<String>> {
        let c = self.conn().await?;
        let row = query_opt(
            &c,
            "SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2",
            &[&user_id.as_str(), &filter_id],
        )
        .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }
}

/// Where one piece of account data lives; global account data has the room ID `''`.
struct AccountDataKey {
    user_id: OwnedUserId,
    room_id: String,
    data_type: String,
}

impl AccountDataKey {
    fn new(user_id: &UserId, room_id: Option<&RoomId>, data_type: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            room_id: room_id.map_or_else(String::new, |id| id.to_string()),
            data_type: data_type.to_owned(),
        }
    }
}

/// Clears the account's password and profile and removes its devices and tokens.
async fn deactivate(c: &Conn, user_id: &str) -> StoreResult<()> {
    execute(
        c,
        "UPDATE users SET deactivated = 1, password_hash = NULL, displayname = NULL,
         avatar_url = NULL WHERE user_id = $1",
        &[&user_id],
    )
    .await?;
    for table in [
        "access_tokens",
        "refresh_tokens",
        "login_tokens",
        "openid_tokens",
        "user_threepids",
        "threepid_id_server_binds",
    ] {
        execute(c, &format!("DELETE FROM {table} WHERE user_id = $1"), &[&user_id]).await?;
    }
    execute(c, "DELETE FROM devices WHERE user_id = $1", &[&user_id]).await?;
    execute(c, "DELETE FROM profile_fields WHERE user_id = $1", &[&user_id]).await?;
    Ok(())
}

async fn insert_session(c: &Conn, session: &NewSession) -> StoreResult<()> {
    let user_id = session.user_id.as_str();
    execute(
        c,
        "INSERT INTO devices (user_id, device_id, display_name) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, device_id)
         DO UPDATE SET display_name = COALESCE(excluded.display_name, devices.display_name)",
        &[&user_id, &session.device_id, &session.display_name],
    )
    .await?;
    // Logging in again with an existing device ID replaces that device's tokens.
    for table in ["access_tokens", "refresh_tokens"] {
        execute(
            c,
            &format!("DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"),
            &[&user_id, &session.device_id],
        )
        .await?;
    }
    if let Some(refresh_token_hash) = &session.refresh_token_hash {
        execute(
            c,
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)
             VALUES ($1, $2, $3, $4)",
            &[refresh_token_hash, &user_id, &session.device_id, &session.created_ts],
        )
        .await?;
    }
    execute(
        c,
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts,
                                    refresh_token_hash)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &session.token_hash,
            &user_id,
            &session.device_id,
            &session.created_ts,
            &session.expires_ts,
            &session.refresh_token_hash,
        ],
    )
    .await?;
    Ok(())
}

/// Deletes the listed devices of a user; returns the hashes of their revoked tokens.
async fn delete_listed_devices(
    c: &Conn,
    user_id: &UserId,
    device_ids: &[String],
) -> StoreResult<Vec<String>> {
    let user_id = user_id.as_str();
    let rows = query(
        c,
        "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = ANY($2)
         RETURNING token_hash",
        &[&user_id, &device_ids],
    )
    .await?;
    execute(
        c,
        "DELETE FROM devices WHERE user_id = $1 AND device_id = ANY($2)",
        &[&user_id, &device_ids],
    )
    .await?;
    token_hashes(&rows)
}

/// Deletes every device of a user but `keep` (`''` keeps none); returns the revoked token hashes.
async fn delete_other_devices(c: &Conn, user_id: &UserId, keep: &str) -> StoreResult<Vec<String>> {
    let user_id = user_id.as_str();
    let rows = query(
        c,
        "DELETE FROM access_tokens WHERE user_id = $1 AND device_id != $2
         RETURNING token_hash",
        &[&user_id, &keep],
    )
    .await?;
    execute(c, "DELETE FROM devices WHERE user_id = $1 AND device_id != $2", &[&user_id, &keep])
        .await?;
    token_hashes(&rows)
}

/// Stores account data at the next stream position; returns that position.
async fn upsert_account_data(c: &Conn, key: &AccountDataKey, content: &str) -> StoreResult<i64> {
    let position = next_stream_position(c).await?;
    execute(
        c,
        "INSERT INTO account_data (user_id, room_id, data_type, content, stream_position)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, room_id, data_type)
         DO UPDATE SET content = excluded.content, stream_position = excluded.stream_position",
        &[&key.user_id.as_str(), &key.room_id, &key.data_type, &content, &position],
    )
    .await?;
    Ok(position)
}

fn token_hashes(rows: &[Row]) -> StoreResult<Vec<String>> {
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

fn user_from_row(user_id: &UserId, row: &Row) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        user_id: user_id.to_owned(),
        password_hash: row.try_get(0)?,
        is_admin: row.try_get::<_, i32>(1)? != 0,
        deactivated: row.try_get::<_, i32>(2)? != 0,
        displayname: row.try_get(3)?,
        avatar_url: row.try_get(4)?,
        locked: row.try_get::<_, i32>(5)? != 0,
        suspended: row.try_get::<_, i32>(6)? != 0,
    })
}

fn device_from_row(row: &Row) -> StoreResult<DeviceRecord> {
    Ok(DeviceRecord {
        device_id: row.try_get(0)?,
        display_name: row.try_get(1)?,
        last_seen_ip: row.try_get(2)?,
        last_seen_ts: row.try_get(3)?,
        last_seen_user_agent: row.try_get(4)?,
    })
}

fn account_data_from_row(row: &Row) -> StoreResult<AccountDataRecord> {
    let room_id: String = row.try_get(0)?;
    let room_id = (!room_id.is_empty()).then(|| OwnedRoomId::try_from(room_id)).transpose()?;
    let content: String = row.try_get(2)?;
    Ok(AccountDataRecord {
        room_id,
        data_type: row.try_get(1)?,
        content: RawValue::from_string(content)?,
        stream_position: row.try_get(3)?,
    })
}
