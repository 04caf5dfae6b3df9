-- Server-side key backups (the room keys a user's devices back up, encrypted, for other devices
-- to restore) and reports of content to the server's administrators.
-- Portable SQL: the same text runs on SQLite and PostgreSQL.

-- A user's backup versions. A version is numbered after every version the user ever had, so a
-- deleted version keeps its row (with `deleted` 1 and no keys): numbers are never handed out
-- twice, and deleting a deleted version again is known to have succeeded.
CREATE TABLE backup_versions (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    -- The algorithm's `auth_data` object as JSON, opaque to the server.
    auth_data TEXT NOT NULL,
    -- Counts every change of the keys stored in the version: the `etag` clients compare.
    etag BIGINT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

-- The keys of a backup version, one per room and megolm session. The three ranking columns are
-- copied out of `key_data` (the client's whole `KeyBackupData` object as JSON) so that the store
-- can decide in one statement whether an uploaded key replaces the stored one.
CREATE TABLE backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    is_verified INTEGER NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    key_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES backup_versions (user_id, version)
);

-- Reports of an event, a room or a user, kept for the server's administrators. Exactly one of
-- the three targets is set, except that an event report also names its room.
CREATE TABLE reports (
    report_id BIGINT PRIMARY KEY NOT NULL,
    reporter TEXT NOT NULL REFERENCES users (user_id),
    room_id TEXT,
    event_id TEXT,
    reported_user_id TEXT,
    reason TEXT,
    received_ts BIGINT NOT NULL
);
