//! SQLite queries for accounts, devices, tokens, profiles, account data and filters.

use async_trait::async_trait;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde_json::value::RawValue;

use super::{SqliteStore, next_stream_position, placeholders};
use crate::store::{
    AccountDataRecord, AccountRestrictions, DeviceRecord, DeviceSeen, NewSession, NewUser, Session,
    StoreResult, UserRecord, UserStore,
};

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> StoreResult<bool> {
        self.write(move |c| {
            let inserted = c.execute(
                "INSERT INTO users (user_id, password_hash, is_admin, created_ts)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_id) DO NOTHING",
                params![user.user_id.as_str(), user.password_hash, user.is_admin, user.created_ts],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn user(&self, user_id: &UserId) -> StoreResult<Option<UserRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT password_hash, is_admin, deactivated, displayname, avatar_url,
                     locked, suspended FROM users WHERE user_id = ?1",
                    [user_id.as_str()],
                    |row| {
                        Ok(UserRecord {
                            user_id: user_id.clone(),
                            password_hash: row.get(0)?,
                            is_admin: row.get(1)?,
                            deactivated: row.get(2)?,
                            displayname: row.get(3)?,
                            avatar_url: row.get(4)?,
                            locked: row.get(5)?,
                            suspended: row.get(6)?,
                        })
                    },
                )
                .optional()?;
            Ok(row)
        })
        .await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.read(|c| {
            let count: i64 = c.query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0))?;
            Ok(count.try_into().unwrap_or_default())
        })
        .await
    }

    async fn set_password_hash(&self, user_id: &UserId, password_hash: &str) -> StoreResult<()> {
        let (user_id, hash) = (user_id.to_owned(), password_hash.to_owned());
        self.write(move |c| {
            c.execute(
                "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
                params![user_id.as_str(), hash],
            )?;
            Ok(())
        })
        .await
    }

    async fn deactivate_user(&self, user_id: &UserId) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE users SET deactivated = 1, password_hash = NULL, displayname = NULL,
                 avatar_url = NULL WHERE user_id = ?1",
                [user_id.as_str()],
            )?;
            for table in [
                "access_tokens",
                "refresh_tokens",
                "login_tokens",
                "openid_tokens",
                "user_threepids",
                "threepid_id_server_binds",
            ] {
                c.execute(&format!("DELETE FROM {table} WHERE user_id = ?1"), [user_id.as_str()])?;
            }
            c.execute("DELETE FROM devices WHERE user_id = ?1", [user_id.as_str()])?;
            c.execute("DELETE FROM profile_fields WHERE user_id = ?1", [user_id.as_str()])?;
            Ok(())
        })
        .await
    }

    async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> StoreResult<()> {
        let (user_id, name) = (user_id.to_owned(), name.map(ToOwned::to_owned));
        self.write(move |c| {
            c.execute(
                "UPDATE users SET displayname = ?2 WHERE user_id = ?1",
                params![user_id.as_str(), name],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> StoreResult<()> {
        let (user_id, url) = (user_id.to_owned(), url.map(ToOwned::to_owned));
        self.write(move |c| {
            c.execute(
                "UPDATE users SET avatar_url = ?2 WHERE user_id = ?1",
                params![user_id.as_str(), url],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_session(&self, session: NewSession) -> StoreResult<()> {
        self.write(move |c| insert_session(c, &session)).await
    }

    async fn session_by_token(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        let token_hash = token_hash.to_owned();
        self.read(move |c| {
            let row: Option<(String, String, Option<i64>, bool, AccountRestrictions)> = c
                .query_row(
                    "SELECT a.user_id, a.device_id, a.expires_ts,
                            EXISTS (SELECT 1 FROM refresh_tokens r
                                    WHERE r.next_token_hash = a.refresh_token_hash),
                            u.locked, u.suspended
                     FROM access_tokens a JOIN users u ON u.user_id = a.user_id
                     WHERE a.token_hash = ?1",
                    [token_hash],
                    |row| {
                        let restrictions =
                            AccountRestrictions { locked: row.get(4)?, suspended: row.get(5)? };
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, restrictions))
                    },
                )
                .optional()?;
            row.map(|(user_id, device_id, expires_ts, first_use_revokes, restrictions)| {
                let user_id = OwnedUserId::try_from(user_id)?;
                Ok(Session { user_id, device_id, expires_ts, first_use_revokes, restrictions })
            })
            .transpose()
        })
        .await
    }

    async fn devices(&self, user_id: &UserId) -> StoreResult<Vec<DeviceRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT device_id, display_name, last_seen_ip, last_seen_ts, last_seen_user_agent
                 FROM devices
                 WHERE user_id = ?1 ORDER BY device_id",
            )?;
            let rows = statement.query_map([user_id.as_str()], device_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn device(&self, user_id: &UserId, device_id: &str) -> StoreResult<Option<DeviceRecord>> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT device_id, display_name, last_seen_ip, last_seen_ts, last_seen_user_agent
                 FROM devices
                 WHERE user_id = ?1 AND device_id = ?2",
                params![user_id.as_str(), device_id],
                device_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn set_device_display_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> StoreResult<bool> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        let name = name.map(ToOwned::to_owned);
        self.write(move |c| {
            let updated = c.execute(
                "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
                params![user_id.as_str(), device_id, name],
            )?;
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
        self.write(move |c| {
            let mut revoked = Vec::new();
            for chunk in device_ids.chunks(super::MAX_PARAMS) {
                revoked.extend(delete_device_chunk(c, &user_id, chunk)?);
            }
            Ok(revoked)
        })
        .await
    }

    async fn delete_all_devices(
        &self,
        user_id: &UserId,
        keep: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let (user_id, keep) = (user_id.to_owned(), keep.unwrap_or("").to_owned());
        self.write(move |c| {
            let mut statement = c.prepare(
                "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id != ?2
                 RETURNING token_hash",
            )?;
            let revoked = statement
                .query_map(params![user_id.as_str(), keep], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            c.execute(
                "DELETE FROM devices WHERE user_id = ?1 AND device_id != ?2",
                params![user_id.as_str(), keep],
            )?;
            Ok(revoked)
        })
        .await
    }

    async fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &str,
        seen: DeviceSeen,
    ) -> StoreResult<()> {
        let (user_id, device_id) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |c| {
            c.execute(
                "UPDATE devices SET last_seen_ip = ?3, last_seen_ts = ?4, last_seen_user_agent = ?5
                 WHERE user_id = ?1 AND device_id = ?2",
                params![user_id.as_str(), device_id, seen.ip, seen.ts, seen.user_agent],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_locked(&self, user_id: &UserId, locked: bool) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE users SET locked = ?2 WHERE user_id = ?1",
                params![user_id.as_str(), locked],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_suspended(&self, user_id: &UserId, suspended: bool) -> StoreResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE users SET suspended = ?2 WHERE user_id = ?1",
                params![user_id.as_str(), suspended],
            )?;
            Ok(())
        })
        .await
    }

    async fn profile_fields(&self, user_id: &UserId) -> StoreResult<Vec<(String, String)>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT field, value FROM profile_fields WHERE user_id = ?1 ORDER BY field",
            )?;
            let rows =
                statement.query_map([user_id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_profile_field(
        &self,
        user_id: &UserId,
        field: &str,
        value: &str,
    ) -> StoreResult<()> {
        let (user_id, field, value) = (user_id.to_owned(), field.to_owned(), value.to_owned());
        self.write(move |c| {
            c.execute(
                "INSERT INTO profile_fields (user_id, field, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
                params![user_id.as_str(), field, value],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_profile_field(&self, user_id: &UserId, field: &str) -> StoreResult<()> {
        let (user_id, field) = (user_id.to_owned(), field.to_owned());
        self.write(move |c| {
            c.execute(
                "DELETE FROM profile_fields WHERE user_id = ?1 AND field = ?2",
                params![user_id.as_str(), field],
            )?;
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
        let user_id = user_id.to_owned();
        let room_id = room_id.map_or_else(String::new, |id| id.to_string());
        let (data_type, content) = (data_type.to_owned(), content.get().to_owned());
        self.write(move |c| {
            let position = next_stream_position(c)?;
            c.execute(
                "INSERT INTO account_data (user_id, room_id, data_type, content, stream_position)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user_id, room_id, data_type)
                 DO UPDATE SET content = excluded.content, stream_position = excluded.stream_position",
                params![user_id.as_str(), room_id, data_type, content, position],
            )?;
            Ok(position)
        })
        .await
    }

    async fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> StoreResult<Option<Box<RawValue>>> {
        let user_id = user_id.to_owned();
        let room_id = room_id.map_or_else(String::new, |id| id.to_string());
        let data_type = data_type.to_owned();
        self.read(move |c| {
            let content: Option<String> = c
                .query_row(
                    "SELECT content FROM account_data
                     WHERE user_id = ?1 AND room_id = ?2 AND data_type = ?3",
                    params![user_id.as_str(), room_id, data_type],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(content.map(RawValue::from_string).transpose()?)
        })
        .await
    }

    async fn account_data_since(
        &self,
        user_id: &UserId,
        since: i64,
    ) -> StoreResult<Vec<AccountDataRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare(
                "SELECT room_id, data_type, content, stream_position FROM account_data
                 WHERE user_id = ?1 AND stream_position > ?2 ORDER BY stream_position",
            )?;
            let rows = statement.query_map(params![user_id.as_str(), since], |row| {
                Ok((row.get::<_, String>(0)?, row.get(1)?, row.get::<_, String>(2)?, row.get(3)?))
            })?;
            rows.map(|row| {
                let (room_id, data_type, content, stream_position) = row?;
                let room_id =
                    (!room_id.is_empty()).then(|| OwnedRoomId::try_from(room_id)).transpose()?;
                let content = RawValue::from_string(content)?;
                Ok(AccountDataRecord { room_id, data_type, content, stream_position })
            })
            .collect()
        })
        .await
    }

    async fn create_filter(&self, user_id: &UserId, filter: &str) -> StoreResult<i64> {
        let (user_id, filter) = (user_id.to_owned(), filter.to_owned());
        self.write(move |c| {
            let id = c.query_row(
                "INSERT INTO filters (user_id, filter_id, filter)
                 SELECT ?1, COALESCE(MAX(filter_id), -1) + 1, ?2 FROM filters WHERE user_id = ?1
                 RETURNING filter_id",
                params![user_id.as_str(), filter],
                |row| row.get(0),
            )?;
            Ok(id)
        })
        .await
    }

    async fn filter(&self, user_id: &UserId, filter_id: i64) -> StoreResult<Option<String>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT filter FROM filters WHERE user_id = ?1 AND filter_id = ?2",
                params![user_id.as_str(), filter_id],
                |row| row.get(0),
            )
            .optional()?)
        })
        .await
    }
}

fn insert_session(c: &Connection, session: &NewSession) -> StoreResult<()> {
    c.execute(
        "INSERT INTO devices (user_id, device_id, display_name) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id, device_id)
         DO UPDATE SET display_name = COALESCE(excluded.display_name, devices.display_name)",
        params![session.user_id.as_str(), session.device_id, session.display_name],
    )?;
    // Logging in again with an existing device ID replaces that device's tokens.
    for table in ["access_tokens", "refresh_tokens"] {
        c.execute(
            &format!("DELETE FROM {table} WHERE user_id = ?1 AND device_id = ?2"),
            params![session.user_id.as_str(), session.device_id],
        )?;
    }
    if let Some(refresh_token_hash) = &session.refresh_token_hash {
        c.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                refresh_token_hash,
                session.user_id.as_str(),
                session.device_id,
                session.created_ts
            ],
        )?;
    }
    c.execute(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts,
                                    refresh_token_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            session.token_hash,
            session.user_id.as_str(),
            session.device_id,
            session.created_ts,
            session.expires_ts,
            session.refresh_token_hash,
        ],
    )?;
    Ok(())
}

fn delete_device_chunk(
    c: &Connection,
    user_id: &UserId,
    chunk: &[String],
) -> StoreResult<Vec<String>> {
    let list = placeholders(chunk.len());
    let user = user_id.as_str();
    let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() + 1);
    values.push(&user);
    values.extend(chunk.iter().map(|id| id as &dyn rusqlite::ToSql));

    let mut statement = c.prepare(&format!(
        "DELETE FROM access_tokens WHERE user_id = ? AND device_id IN ({list}) RETURNING token_hash"
    ))?;
    let revoked = statement
        .query_map(values.as_slice(), |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    c.execute(
        &format!("DELETE FROM devices WHERE user_id = ? AND device_id IN ({list})"),
        values.as_slice(),
    )?;
    Ok(revoked)
}

fn device_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        device_id: row.get(0)?,
        display_name: row.get(1)?,
        last_seen_ip: row.get(2)?,
        last_seen_ts: row.get(3)?,
        last_seen_user_agent: row.get(4)?,
    })
}
