-- Hearth's core schema. Portable SQL: the same text runs on SQLite and PostgreSQL.
-- Booleans are INTEGER 0/1, timestamps are milliseconds since the Unix epoch, JSON is TEXT.

-- One global, monotonically increasing stream position shared by every stream a sync token
-- covers (room events, account data). Exactly one row.
CREATE TABLE stream_counter (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    position BIGINT NOT NULL
);
INSERT INTO stream_counter (id, position) VALUES (1, 0);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT,
    is_admin INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    displayname TEXT,
    avatar_url TEXT,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ip TEXT,
    last_seen_ts BIGINT,
    PRIMARY KEY (user_id, device_id)
);

-- Only the SHA-256 of an access token is stored.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_by_device ON access_tokens (user_id, device_id);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY NOT NULL,
    room_version TEXT NOT NULL,
    -- Listed in the public room directory.
    published INTEGER NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL
);

-- Every PDU of every room, in the order this server accepted them.
CREATE TABLE events (
    stream_position BIGINT PRIMARY KEY NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- The PDU as canonical JSON (redacted in place once a redaction applies).
    pdu TEXT NOT NULL,
    -- The event ID of the redaction that applied to this event, if any.
    redacted_by TEXT,
    -- For state events: the event this one replaced in the room's state, if any.
    replaces_state TEXT
);
CREATE INDEX events_by_room ON events (room_id, stream_position);

-- The events of a room that have no children yet: the next local event's prev_events.
CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- The room's current state: one event per (type, state key).
CREATE TABLE current_state (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- For m.room.member: the membership, so that a user's rooms are one indexed query.
    membership TEXT,
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE INDEX current_state_by_member ON current_state (state_key, event_type);

-- Every change of the current state, in stream order: the state at any stream position is the
-- latest entry at or before it for each (type, state key).
CREATE TABLE state_history (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key, stream_position)
);
CREATE INDEX state_history_by_member ON state_history (state_key, event_type, stream_position);
CREATE INDEX state_history_by_position ON state_history (room_id, stream_position);

-- Client transaction IDs, so that a retried send returns the same event. The spec scopes a
-- transaction ID to a device and an endpoint: `scope` names the endpoint and its path arguments.
CREATE TABLE event_transactions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);
-- Formatting events for their sender looks transaction IDs up by event: all three columns, so
-- that the planner prefers this index to the primary key's (user, device) prefix, which would
-- scan every transaction the device ever made.
CREATE INDEX event_transactions_by_event ON event_transactions (event_id, user_id, device_id);

CREATE TABLE room_aliases (
    room_alias TEXT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_by_room ON room_aliases (room_id);

-- Global account data has room_id ''.
CREATE TABLE account_data (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_by_position ON account_data (user_id, stream_position);

CREATE TABLE filters (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    filter_id BIGINT NOT NULL,
    filter TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    PRIMARY KEY (user_id, room_id)
);

-- Durable bus streams: messages kept in order, and how far each consumer acknowledged.
CREATE TABLE bus_messages (
    stream TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    subject TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (stream, sequence)
);

CREATE TABLE bus_consumers (
    stream TEXT NOT NULL,
    consumer TEXT NOT NULL,
    acked_sequence BIGINT NOT NULL,
    PRIMARY KEY (stream, consumer)
);
