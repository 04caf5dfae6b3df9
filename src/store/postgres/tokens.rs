//! PostgreSQL queries for refresh, login and OpenID tokens (see `crate::store::tokens`).
//!
//! Each method does what its SQLite twin in `store/sqlite/tokens.rs` does, statement for
//! statement. Every change goes through the writer, so a refresh token is exchanged at most once
//! however many refreshes race.

use async_trait::async_trait;
use ruma::OwnedUserId;

use super::{Conn, PostgresStore, execute, query, query_opt};
use crate::store::{NewExpiringToken, RefreshSession, RefreshedSession, StoreResult, TokenStore};

#[async_trait]
impl TokenStore for PostgresStore {
    async fn refresh_session(
        &self,
        refresh: RefreshSession,
    ) -> StoreResult<Option<RefreshedSession>> {
        self.write(move |w| w.block_on(refresh_session(w.conn(), &refresh))).await
    }

    async fn first_use_of_access_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<Vec<String>>> {
        let token_hash = token_hash.to_owned();
        self.write(move |w| w.block_on(first_use_of_access_token(w.conn(), &token_hash))).await
    }

    async fn create_login_token(&self, token: NewExpiringToken) -> StoreResult<()> {
        self.write(move |w| w.block_on(insert_expiring(w.conn(), "login_tokens", &token))).await
    }

    async fn take_login_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<OwnedUserId>> {
        let token_hash = token_hash.to_owned();
        self.write(move |w| {
            let row = w.block_on(query_opt(
                w.conn(),
                "DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts",
                &[&token_hash],
            ))?;
            let Some(row) = row else { return Ok(None) };
            let (user_id, expires_ts): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            if expires_ts <= now {
                return Ok(None);
            }
            Ok(Some(OwnedUserId::try_from(user_id)?))
        })
        .await
    }

    async fn create_openid_token(&self, token: NewExpiringToken) -> StoreResult<()> {
        self.write(move |w| w.block_on(insert_expiring(w.conn(), "openid_tokens", &token))).await
    }

    async fn openid_token_user(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<OwnedUserId>> {
        let row = query_opt(
            &*self.conn().await?,
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2",
            &[&token_hash, &now],
        )
        .await?;
        let user_id: Option<String> = row.map(|row| row.try_get(0)).transpose()?;
        Ok(user_id.map(OwnedUserId::try_from).transpose()?)
    }
}

/// See [`TokenStore::refresh_session`].
async fn refresh_session(
    c: &Conn,
    refresh: &RefreshSession,
) -> StoreResult<Option<RefreshedSession>> {
    let row = query_opt(
        c,
        "SELECT user_id, device_id, next_token_hash FROM refresh_tokens WHERE token_hash = $1",
        &[&refresh.refresh_token_hash],
    )
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (user_id, device_id): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    let successor: Option<String> = row.try_get(2)?;

    // A successor never used: the client lost it, and this refresh replaces it.
    let mut revoked = match successor {
        Some(successor) => delete_generation(c, &successor).await?,
        None => Vec::new(),
    };
    revoked.extend(retire_predecessors(c, &refresh.refresh_token_hash).await?);

    execute(
        c,
        "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)
         VALUES ($1, $2, $3, $4)",
        &[&refresh.new_refresh_token_hash, &user_id, &device_id, &refresh.created_ts],
    )
    .await?;
    execute(
        c,
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts,
                                    refresh_token_hash)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &refresh.new_access_token_hash,
            &user_id,
            &device_id,
            &refresh.created_ts,
            &refresh.expires_ts,
            &refresh.new_refresh_token_hash,
        ],
    )
    .await?;
    execute(
        c,
        "UPDATE refresh_tokens SET next_token_hash = $2 WHERE token_hash = $1",
        &[&refresh.refresh_token_hash, &refresh.new_refresh_token_hash],
    )
    .await?;
    let user_id = OwnedUserId::try_from(user_id)?;
    Ok(Some(RefreshedSession { user_id, device_id, revoked }))
}

/// See [`TokenStore::first_use_of_access_token`].
async fn first_use_of_access_token(c: &Conn, token_hash: &str) -> StoreResult<Option<Vec<String>>> {
    let row = query_opt(
        c,
        "SELECT refresh_token_hash FROM access_tokens WHERE token_hash = $1",
        &[&token_hash],
    )
    .await?;
    let Some(row) = row else { return Ok(None) };
    match row.try_get::<_, Option<String>>(0)? {
        Some(refresh_token) => Ok(Some(retire_predecessors(c, &refresh_token).await?)),
        None => Ok(Some(Vec::new())),
    }
}

/// Deletes the refresh tokens that `refresh_token_hash` replaced, with their access tokens;
/// returns the hashes of those access tokens.
async fn retire_predecessors(c: &Conn, refresh_token_hash: &str) -> StoreResult<Vec<String>> {
    let rows = query(
        c,
        "SELECT token_hash FROM refresh_tokens WHERE next_token_hash = $1",
        &[&refresh_token_hash],
    )
    .await?;
    let mut revoked = Vec::new();
    for row in rows {
        let predecessor: String = row.try_get(0)?;
        revoked.extend(delete_generation(c, &predecessor).await?);
    }
    Ok(revoked)
}

/// Deletes a refresh token and the access tokens issued with it; returns their hashes.
async fn delete_generation(c: &Conn, refresh_token_hash: &str) -> StoreResult<Vec<String>> {
    let rows = query(
        c,
        "DELETE FROM access_tokens WHERE refresh_token_hash = $1 RETURNING token_hash",
        &[&refresh_token_hash],
    )
    .await?;
    execute(c, "DELETE FROM refresh_tokens WHERE token_hash = $1", &[&refresh_token_hash]).await?;
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

/// Stores a login or OpenID token in `table`, deleting the expired ones first.
async fn insert_expiring(c: &Conn, table: &str, token: &NewExpiringToken) -> StoreResult<()> {
    execute(c, &format!("DELETE FROM {table} WHERE expires_ts <= $1"), &[&token.now]).await?;
    execute(
        c,
        &format!("INSERT INTO {table} (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)"),
        &[&token.token_hash, &token.user_id.as_str(), &token.expires_ts],
    )
    .await?;
    Ok(())
}
