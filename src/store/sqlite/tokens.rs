//! SQLite queries for refresh, login and OpenID tokens (see `crate::store::tokens`).

use async_trait::async_trait;
use ruma::OwnedUserId;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::SqliteStore;
use crate::store::{NewExpiringToken, RefreshSession, RefreshedSession, StoreResult, TokenStore};

#[async_trait]
impl TokenStore for SqliteStore {
    async fn refresh_session(
        &self,
        refresh: RefreshSession,
    ) -> StoreResult<Option<RefreshedSession>> {
        self.write(move |c| refresh_session(c, &refresh)).await
    }

    async fn first_use_of_access_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<Vec<String>>> {
        let token_hash = token_hash.to_owned();
        self.write(move |c| {
            let refresh_token: Option<Option<String>> = c
                .query_row(
                    "SELECT refresh_token_hash FROM access_tokens WHERE token_hash = ?1",
                    [&token_hash],
                    |row| row.get(0),
                )
                .optional()?;
            match refresh_token {
                None => Ok(None),
                Some(None) => Ok(Some(Vec::new())),
                Some(Some(refresh_token)) => Ok(Some(retire_predecessors(c, &refresh_token)?)),
            }
        })
        .await
    }

    async fn create_login_token(&self, token: NewExpiringToken) -> StoreResult<()> {
        self.write(move |c| insert_expiring(c, "login_tokens", &token)).await
    }

    async fn take_login_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<OwnedUserId>> {
        let token_hash = token_hash.to_owned();
        self.write(move |c| {
            let row: Option<(String, i64)> = c
                .query_row(
                    "DELETE FROM login_tokens WHERE token_hash = ?1 RETURNING user_id, expires_ts",
                    [&token_hash],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            match row {
                Some((user_id, expires_ts)) if expires_ts > now => {
                    Ok(Some(OwnedUserId::try_from(user_id)?))
                }
                _ => Ok(None),
            }
        })
        .await
    }

    async fn create_openid_token(&self, token: NewExpiringToken) -> StoreResult<()> {
        self.write(move |c| insert_expiring(c, "openid_tokens", &token)).await
    }

    async fn openid_token_user(
        &self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<OwnedUserId>> {
        let token_hash = token_hash.to_owned();
        self.read(move |c| {
            let user_id: Option<String> = c
                .query_row(
                    "SELECT user_id FROM openid_tokens WHERE token_hash = ?1 AND expires_ts > ?2",
                    params![token_hash, now],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(user_id.map(OwnedUserId::try_from).transpose()?)
        })
        .await
    }
}

/// See [`TokenStore::refresh_session`].
fn refresh_session(
    c: &Connection,
    refresh: &RefreshSession,
) -> StoreResult<Option<RefreshedSession>> {
    let row: Option<(String, String, Option<String>)> = c
        .query_row(
            "SELECT user_id, device_id, next_token_hash FROM refresh_tokens WHERE token_hash = ?1",
            [&refresh.refresh_token_hash],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let Some((user_id, device_id, successor)) = row else { return Ok(None) };

    // A successor never used: the client lost it, and this refresh replaces it.
    let mut revoked = match successor {
        Some(successor) => delete_generation(c, &successor)?,
        None => Vec::new(),
    };
    revoked.extend(retire_predecessors(c, &refresh.refresh_token_hash)?);

    c.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)
         VALUES (?1, ?2, ?3, ?4)",
        params![refresh.new_refresh_token_hash, user_id, device_id, refresh.created_ts],
    )?;
    c.execute(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts,
                                    refresh_token_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            refresh.new_access_token_hash,
            user_id,
            device_id,
            refresh.created_ts,
            refresh.expires_ts,
            refresh.new_refresh_token_hash,
        ],
    )?;
    c.execute(
        "UPDATE refresh_tokens SET next_token_hash = ?2 WHERE token_hash = ?1",
        params![refresh.refresh_token_hash, refresh.new_refresh_token_hash],
    )?;
    let user_id = OwnedUserId::try_from(user_id)?;
    Ok(Some(RefreshedSession { user_id, device_id, revoked }))
}

/// Deletes the refresh tokens that `refresh_token_hash` replaced, with their access tokens;
/// returns the hashes of those access tokens.
fn retire_predecessors(c: &Connection, refresh_token_hash: &str) -> StoreResult<Vec<String>> {
    let predecessors: Vec<String> = c
        .prepare("SELECT token_hash FROM refresh_tokens WHERE next_token_hash = ?1")?
        .query_map([refresh_token_hash], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut revoked = Vec::new();
    for predecessor in predecessors {
        revoked.extend(delete_generation(c, &predecessor)?);
    }
    Ok(revoked)
}

/// Deletes a refresh token and the access tokens issued with it; returns their hashes.
fn delete_generation(c: &Connection, refresh_token_hash: &str) -> StoreResult<Vec<String>> {
    let revoked = c
        .prepare("DELETE FROM access_tokens WHERE refresh_token_hash = ?1 RETURNING token_hash")?
        .query_map([refresh_token_hash], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    c.execute("DELETE FROM refresh_tokens WHERE token_hash = ?1", [refresh_token_hash])?;
    Ok(revoked)
}

/// Stores a login or OpenID token in `table`, deleting the expired ones first.
fn insert_expiring(c: &Connection, table: &str, token: &NewExpiringToken) -> StoreResult<()> {
    c.execute(&format!("DELETE FROM {table} WHERE expires_ts <= ?1"), [token.now])?;
    c.execute(
        &format!("INSERT INTO {table} (token_hash, user_id, expires_ts) VALUES (?1, ?2, ?3)"),
        params![token.token_hash, token.user_id.as_str(), token.expires_ts],
    )?;
    Ok(())
}
