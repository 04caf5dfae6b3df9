-- Push notifications: what the push rules said about each event for each local user, and the
-- pushers (push gateways) that deliver them. A user's push rules themselves are the global
-- account data m.push_rules.

-- One row per event that notified a user (its push actions held `notify`). Unread counts are
-- the rows after the user's latest read receipt of the row's thread (or the unthreaded one).
CREATE TABLE push_notifications (
    user_id TEXT NOT NULL,
    -- The stream position of the event, which orders it against receipts.
    stream_position BIGINT NOT NULL,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_id TEXT NOT NULL,
    -- 'main' for the main timeline, the thread root's event ID for an event in a thread.
    thread_id TEXT NOT NULL,
    -- 1 when the actions set the highlight tweak.
    highlight INTEGER NOT NULL,
    -- The push actions, as JSON.
    actions TEXT NOT NULL,
    ts BIGINT NOT NULL,
    -- When the row was written, on the global stream that sync tokens count: a count that
    -- changed after a sync token shows in the next incremental sync.
    notified_position BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_position)
);

CREATE INDEX push_notifications_by_room ON push_notifications (user_id, room_id, stream_position);
CREATE INDEX push_notifications_by_change ON push_notifications (user_id, notified_position);

-- The pushers of each user: where notifications go. app_id and pushkey identify one.
CREATE TABLE pushers (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    -- 'http' (the only kind delivered).
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    -- '' when the client gave none.
    profile_tag TEXT NOT NULL,
    lang TEXT NOT NULL,
    -- The pusher's data object (url, format and whatever the client adds), as JSON.
    data TEXT NOT NULL,
    -- The device whose access token set the pusher: deleting the device deletes the pusher.
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);

CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);
