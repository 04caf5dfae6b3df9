//! SQLite queries for third-party identifiers (see `crate::store::threepids`).

use async_trait::async_trait;
use ruma::{OwnedUserId, UserId};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::SqliteStore;
use crate::store::{
    NewValidationSession, RequestedSession, StoreResult, ThreepidBind, ThreepidRecord,
    ThreepidStore, TokenCheck, ValidationSessionRecord,
};

#[async_trait]
impl ThreepidStore for SqliteStore {
    async fn request_validation_session(
        &self,
        session: NewValidationSession,
    ) -> StoreResult<RequestedSession> {
        self.write(move |c| request_validation_session(c, &session)).await
    }

    async fn validate_session_token(
        &self,
        sid: &str,
        client_secret_hash: &str,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<TokenCheck> {
        let (sid, secret, token) =
            (sid.to_owned(), client_secret_hash.to_owned(), token_hash.to_owned());
        self.write(move |c| validate_session_token(c, &sid, &secret, &token, now)).await
    }

    async fn validation_session(&self, sid: &str) -> StoreResult<Option<ValidationSessionRecord>> {
        let sid = sid.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT sid, medium, address, client_secret_hash, validated_ts
                 FROM threepid_validation_sessions WHERE sid = ?1",
                [&sid],
                |row| {
                    Ok(ValidationSessionRecord {
                        sid: row.get(0)?,
                        medium: row.get(1)?,
                        address: row.get(2)?,
                        client_secret_hash: row.get(3)?,
                        validated_ts: row.get(4)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn delete_validation_session(&self, sid: &str) -> StoreResult<()> {
        let sid = sid.to_owned();
        self.write(move |c| {
            c.execute("DELETE FROM threepid_validation_sessions WHERE sid = ?1", [&sid])?;
            Ok(())
        })
        .await
    }

    async fn add_threepid(&self, threepid: ThreepidRecord) -> StoreResult<bool> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO user_threepids (medium, address, user_id, validated_ts, added_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (medium, address) DO NOTHING",
                params![
                    threepid.medium,
                    threepid.address,
                    threepid.user_id.as_str(),
                    threepid.validated_ts,
                    threepid.added_ts
                ],
            )?;
            let owner: String = c.query_row(
                "SELECT user_id FROM user_threepids WHERE medium = ?1 AND address = ?2",
                params![threepid.medium, threepid.address],
                |row| row.get(0),
            )?;
            Ok(owner == threepid.user_id.as_str())
        })
        .await
    }

    async fn threepids(&self, user_id: &UserId) -> StoreResult<Vec<ThreepidRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT medium, address, validated_ts, added_ts FROM user_threepids
                 WHERE user_id = ?1 ORDER BY medium, address",
            )?;
            let rows = statement.query_map([user_id.as_str()], |row| {
                Ok(ThreepidRecord {
                    user_id: user_id.clone(),
                    medium: row.get(0)?,
                    address: row.get(1)?,
                    validated_ts: row.get(2)?,
                    added_ts: row.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn threepid_user(&self, medium: &str, address: &str) -> StoreResult<Option<OwnedUserId>> {
        let (medium, address) = (medium.to_owned(), address.to_owned());
        self.read(move |c| {
            let user_id: Option<String> = c
                .query_row(
                    "SELECT user_id FROM user_threepids WHERE medium = ?1 AND address = ?2",
                    params![medium, address],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(user_id.map(OwnedUserId::try_from).transpose()?)
        })
        .await
    }

    async fn delete_threepid(
        &self,
        user_id: &UserId,
        medium: &str,
        address: &str,
    ) -> StoreResult<bool> {
        let (user_id, medium, address) =
            (user_id.to_owned(), medium.to_owned(), address.to_owned());
        self.write(move |c| {
            let key = params![user_id.as_str(), medium, address];
            c.execute(
                "DELETE FROM threepid_id_server_binds
                 WHERE user_id = ?1 AND medium = ?2 AND address = ?3",
                key,
            )?;
            let deleted = c.execute(
                "DELETE FROM user_threepids WHERE user_id = ?1 AND medium = ?2 AND address = ?3",
                key,
            )?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn add_threepid_bind(&self, bind: ThreepidBind) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO threepid_id_server_binds (user_id, medium, address, id_server)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![bind.user_id.as_str(), bind.medium, bind.address, bind.id_server],
            )?;
            Ok(())
        })
        .await
    }

    async fn threepid_binds(
        &self,
        user_id: &UserId,
        medium: &str,
        address: &str,
    ) -> StoreResult<Vec<String>> {
        let (user_id, medium, address) =
            (user_id.to_owned(), medium.to_owned(), address.to_owned());
        self.read(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT id_server FROM threepid_id_server_binds
                 WHERE user_id = ?1 AND medium = ?2 AND address = ?3 ORDER BY id_server",
            )?;
            let rows = statement
                .query_map(params![user_id.as_str(), medium, address], |row| row.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn delete_threepid_bind(&self, bind: ThreepidBind) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM threepid_id_server_binds
                 WHERE user_id = ?1 AND medium = ?2 AND address = ?3 AND id_server = ?4",
                params![bind.user_id.as_str(), bind.medium, bind.address, bind.id_server],
            )?;
            Ok(())
        })
        .await
    }
}

/// See [`ThreepidStore::request_validation_session`].
fn request_validation_session(
    c: &Connection,
    new: &NewValidationSession,
) -> StoreResult<RequestedSession> {
    c.execute(
        "DELETE FROM threepid_validation_sessions WHERE created_ts < ?1",
        [new.forget_before],
    )?;
    let existing: Option<(String, i64)> = c
        .query_row(
            "SELECT sid, send_attempt FROM threepid_validation_sessions
             WHERE client_secret_hash = ?1 AND medium = ?2 AND address = ?3",
            params![new.client_secret_hash, new.medium, new.address],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    match existing {
        Some((sid, attempt)) if attempt >= new.send_attempt => {
            Ok(RequestedSession { sid, send: false })
        }
        Some((sid, _)) => {
            c.execute(
                "UPDATE threepid_validation_sessions
                 SET send_attempt = ?2, token_hash = ?3, token_expires_ts = ?4 WHERE sid = ?1",
                params![sid, new.send_attempt, new.token_hash, new.token_expires_ts],
            )?;
            Ok(RequestedSession { sid, send: true })
        }
        None => {
            c.execute(
                "INSERT INTO threepid_validation_sessions (sid, medium, address,
                     client_secret_hash, send_attempt, token_hash, token_expires_ts, created_ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    new.sid,
                    new.medium,
                    new.address,
                    new.client_secret_hash,
                    new.send_attempt,
                    new.token_hash,
                    new.token_expires_ts,
                    new.now
                ],
            )?;
            Ok(RequestedSession { sid: new.sid.clone(), send: true })
        }
    }
}

/// See [`ThreepidStore::validate_session_token`].
fn validate_session_token(
    c: &Connection,
    sid: &str,
    client_secret_hash: &str,
    token_hash: &str,
    now: i64,
) -> StoreResult<TokenCheck> {
    let row: Option<(String, i64, Option<i64>)> = c
        .query_row(
            "SELECT token_hash, token_expires_ts, validated_ts FROM threepid_validation_sessions
             WHERE sid = ?1 AND client_secret_hash = ?2",
            params![sid, client_secret_hash],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let Some((stored, expires_ts, validated_ts)) = row else {
        return Ok(TokenCheck::UnknownSession);
    };
    let check = crate::store::threepids::check_token(&stored, token_hash, expires_ts, now);
    if check == TokenCheck::Validated && validated_ts.is_none() {
        c.execute(
            "UPDATE threepid_validation_sessions SET validated_ts = ?2 WHERE sid = ?1",
            params![sid, now],
        )?;
    }
    Ok(check)
}
