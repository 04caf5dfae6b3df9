-- Third-party identifiers (e-mail addresses) on accounts: the client-server API's "Adding
-- Account Administrative Contact Information", the requestToken endpoints and password reset.
--
-- V14, not V13: V13 is taken by another change being written at the same time.

-- A validation session (`sid`): a client asked for a mail to `address` with its client secret;
-- the mail carries a token, and the session is validated once the token comes back. Only the
-- SHA-256 of the client secret and of the token are kept. `send_attempt` is the highest the
-- client sent for this secret and address: a request with one no higher sends no mail.
CREATE TABLE threepid_validation_sessions (
    sid TEXT PRIMARY KEY NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    client_secret_hash TEXT NOT NULL,
    send_attempt BIGINT NOT NULL,
    token_hash TEXT NOT NULL,
    -- When the token of the last mail stops working (ms since the epoch).
    token_expires_ts BIGINT NOT NULL,
    -- When the token came back; NULL until then.
    validated_ts BIGINT,
    created_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX threepid_validation_sessions_by_secret
    ON threepid_validation_sessions (client_secret_hash, medium, address);
CREATE INDEX threepid_validation_sessions_by_created ON threepid_validation_sessions (created_ts);

-- The identifiers on accounts (`GET /account/3pid`), each on one account at most; an address is
-- kept in its canonical form (e-mail: lower case).
CREATE TABLE user_threepids (
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (user_id),
    validated_ts BIGINT NOT NULL,
    added_ts BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_by_user ON user_threepids (user_id);

-- The identity servers an identifier was bound on through `/account/3pid/bind`, so that
-- `/account/3pid/unbind` and `/delete` without an `id_server` know where to unbind it.
CREATE TABLE threepid_id_server_binds (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    id_server TEXT NOT NULL,
    PRIMARY KEY (user_id, medium, address, id_server)
);
