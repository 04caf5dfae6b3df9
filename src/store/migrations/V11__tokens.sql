-- Tokens besides the plain access token (client-server API, "Refreshing access tokens", "Login
-- with a login token" and "OpenID"). As for access tokens, only the SHA-256 of each is stored.
--
-- V11, not V10: V10 is taken by another change being written at the same time.

-- A refresh token, one per "generation" of a device's session: a refresh replaces it with a new
-- one (its successor, `next_token_hash`) and a new access token. The old one keeps working until
-- the successor or its access token is first used (so that a client that lost the answer can
-- refresh again), and then goes, with the access tokens issued with it.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    -- The refresh token issued when this one was used; NULL until then. Not a reference: the
    -- successor is deleted when this token is used again before the successor was.
    next_token_hash TEXT,
    created_ts BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_by_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_by_next ON refresh_tokens (next_token_hash);

-- When an access token stops working (NULL: never, as for clients that did not ask for a refresh
-- token), and the refresh token it was issued with (NULL: none).
ALTER TABLE access_tokens ADD COLUMN expires_ts BIGINT;
ALTER TABLE access_tokens ADD COLUMN refresh_token_hash TEXT;
CREATE INDEX access_tokens_by_refresh_token ON access_tokens (refresh_token_hash);

-- Single-use `m.login.token` tokens from `POST /login/get_token`; a login deletes the row.
CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    expires_ts BIGINT NOT NULL
);

-- OpenID tokens from `POST /user/{userId}/openid/request_token`, which third parties (integration
-- managers) exchange for the user ID at `GET /_matrix/federation/v1/openid/userinfo`.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    expires_ts BIGINT NOT NULL
);
