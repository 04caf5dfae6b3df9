//! PostgreSQL queries for third-party identifiers (see `crate::store::threepids`).
//!
//! Each method does what its SQLite twin in `store/sqlite/threepids.rs` does, statement for
//! statement; every change goes through the writer.

use async_trait::async_trait;
use ruma::{OwnedUserId, UserId};

use super::{Conn, PostgresStore, execute, query, query_opt};
use crate::store::{
    NewValidationSession, RequestedSession, StoreResult, ThreepidBind, ThreepidRecord,
    ThreepidStore, TokenCheck, ValidationSessionRecord, threepids::check_token,
};

#[async_trait]
impl ThreepidStore for PostgresStore {
    async fn request_validation_session(
        &self,
        session: NewValidationSession,
    ) -> StoreResult<RequestedSession> {
        self.write(move |w| w.block_on(request_validation_session(w.conn(), &session))).await
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
        self.write(move |w| {
            w.block_on(validate_session_token(w.conn(), &sid, &secret, &token, now))
        })
        .await
    }

    async fn validation_session(&self, sid: &str) -> StoreResult<Option<ValidationSessionRecord>> {
        let row = query_opt(
            &*self.conn().await?,
            "SELECT sid, medium, address, client_secret_hash, validated_ts
             FROM threepid_validation_sessions WHERE sid = $1",
            &[&sid],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ValidationSessionRecord {
            sid: row.try_get(0)?,
            medium: row.try_get(1)?,
            address: row.try_get(2)?,
            client_secret_hash: row.try_get(3)?,
            validated_ts: row.try_get(4)?,
        }))
    }

    async fn delete_validation_session(&self, sid: &str) -> StoreResult<()> {
        let sid = sid.to_owned();
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "DELETE FROM threepid_validation_sessions WHERE sid = $1",
                &[&sid],
            ))?;
            Ok(())
        })
        .await
    }

    async fn add_threepid(&self, threepid: ThreepidRecord) -> StoreResult<bool> {
        self.write(move |w| w.block_on(add_threepid(w.conn(), &threepid))).await
    }

    async fn threepids(&self, user_id: &UserId) -> StoreResult<Vec<ThreepidRecord>> {
        let rows = query(
            &*self.conn().await?,
            "SELECT medium, address, validated_ts, added_ts FROM user_threepids
             WHERE user_id = $1 ORDER BY medium, address",
            &[&user_id.as_str()],
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ThreepidRecord {
                    user_id: user_id.to_owned(),
                    medium: row.try_get(0)?,
                    address: row.try_get(1)?,
                    validated_ts: row.try_get(2)?,
                    added_ts: row.try_get(3)?,
                })
            })
            .collect()
    }

    async fn threepid_user(&self, medium: &str, address: &str) -> StoreResult<Option<OwnedUserId>> {
        let row = query_opt(
            &*self.conn().await?,
            "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
            &[&medium, &address],
        )
        .await?;
        let user_id: Option<String> = row.map(|row| row.try_get(0)).transpose()?;
        Ok(user_id.map(OwnedUserId::try_from).transpose()?)
    }

    async fn delete_threepid(
        &self,
        user_id: &UserId,
        medium: &str,
        address: &str,
    ) -> StoreResult<bool> {
        let (user_id, medium, address) =
            (user_id.to_owned(), medium.to_owned(), address.to_owned());
        self.write(move |w| {
            let key: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                [&user_id.as_str(), &medium, &address];
            w.block_on(execute(
                w.conn(),
                "DELETE FROM threepid_id_server_binds
                 WHERE user_id = $1 AND medium = $2 AND address = $3",
                &key,
            ))?;
            let deleted = w.block_on(execute(
                w.conn(),
                "DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3",
                &key,
            ))?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn add_threepid_bind(&self, bind: ThreepidBind) -> StoreResult<()> {
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "INSERT INTO threepid_id_server_binds (user_id, medium, address, id_server)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&bind.user_id.as_str(), &bind.medium, &bind.address, &bind.id_server],
            ))?;
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
        let rows = query(
            &*self.conn().await?,
            "SELECT id_server FROM threepid_id_server_binds
             WHERE user_id = $1 AND medium = $2 AND address = $3 ORDER BY id_server",
            &[&user_id.as_str(), &medium, &address],
        )
        .await?;
        Ok(rows.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?)
    }

    async fn delete_threepid_bind(&self, bind: ThreepidBind) -> StoreResult<()> {
        self.write(move |w| {
            w.block_on(execute(
                w.conn(),
                "DELETE FROM threepid_id_server_binds
                 WHERE user_id = $1 AND medium = $2 AND address = $3 AND id_server = $4",
                &[&bind.user_id.as_str(), &bind.medium, &bind.address, &bind.id_server],
            ))?;
            Ok(())
        })
        .await
    }
}

/// See [`ThreepidStore::request_validation_session`].
async fn request_validation_session(
    c: &Conn,
    new: &NewValidationSession,
) -> StoreResult<RequestedSession> {
    execute(
        c,
        "DELETE FROM threepid_validation_sessions WHERE created_ts < $1",
        &[&new.forget_before],
    )
    .await?;
    let existing = query_opt(
        c,
        "SELECT sid, send_attempt FROM threepid_validation_sessions
         WHERE client_secret_hash = $1 AND medium = $2 AND address = $3",
        &[&new.client_secret_hash, &new.medium, &new.address],
    )
    .await?;
    let Some(row) = existing else {
        execute(
            c,
            "INSERT INTO threepid_validation_sessions (sid, medium, address, client_secret_hash,
                 send_attempt, token_hash, token_expires_ts, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &new.sid,
                &new.medium,
                &new.address,
                &new.client_secret_hash,
                &new.send_attempt,
                &new.token_hash,
                &new.token_expires_ts,
                &new.now,
            ],
        )
        .await?;
        return Ok(RequestedSession { sid: new.sid.clone(), send: true });
    };
    let (sid, attempt): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
    if attempt >= new.send_attempt {
        return Ok(RequestedSession { sid, send: false });
    }
    execute(
        c,
        "UPDATE threepid_validation_sessions
         SET send_attempt = $2, token_hash = $3, token_expires_ts = $4 WHERE sid = $1",
        &[&sid, &new.send_attempt, &new.token_hash, &new.token_expires_ts],
    )
    .await?;
    Ok(RequestedSession { sid, send: true })
}

/// See [`ThreepidStore::validate_session_token`].
async fn validate_session_token(
    c: &Conn,
    sid: &str,
    client_secret_hash: &str,
    token_hash: &str,
    now: i64,
) -> StoreResult<TokenCheck> {
    let row = query_opt(
        c,
        "SELECT token_hash, token_expires_ts, validated_ts FROM threepid_validation_sessions
         WHERE sid = $1 AND client_secret_hash = $2",
        &[&sid, &client_secret_hash],
    )
    .await?;
    let Some(row) = row else { return Ok(TokenCheck::UnknownSession) };
    let (stored, expires_ts): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
    let validated_ts: Option<i64> = row.try_get(2)?;
    let check = check_token(&stored, token_hash, expires_ts, now);
    if check == TokenCheck::Validated && validated_ts.is_none() {
        execute(
            c,
            "UPDATE threepid_validation_sessions SET validated_ts = $2 WHERE sid = $1",
            &[&sid, &now],
        )
        .await?;
    }
    Ok(check)
}

/// See [`ThreepidStore::add_threepid`].
async fn add_threepid(c: &Conn, threepid: &ThreepidRecord) -> StoreResult<bool> {
    execute(
        c,
        "INSERT INTO user_threepids (medium, address, user_id, validated_ts, added_ts)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (medium, address) DO NOTHING",
        &[
            &threepid.medium,
            &threepid.address,
            &threepid.user_id.as_str(),
            &threepid.validated_ts,
            &threepid.added_ts,
        ],
    )
    .await?;
    let row = query_opt(
        c,
        "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
        &[&threepid.medium, &threepid.address],
    )
    .await?;
    let owner: Option<String> = row.map(|row| row.try_get(0)).transpose()?;
    Ok(owner.as_deref() == Some(threepid.user_id.as_str()))
}
