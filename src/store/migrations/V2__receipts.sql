-- Read receipts: for each user, room, receipt type and thread, the latest event the user read.
-- A receipt only moves forward in the room's timeline (event_position).
CREATE TABLE receipts (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    -- Not a reference to users: receipts of remote users arrive over federation.
    user_id TEXT NOT NULL,
    -- m.read or m.read.private.
    receipt_type TEXT NOT NULL,
    -- '' for an unthreaded receipt; 'main' or the thread root's event ID for a threaded one.
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- The stream position of the event read.
    event_position BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    -- When the receipt last changed, on the global stream that sync tokens count.
    stream_position BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);

CREATE INDEX receipts_by_position ON receipts (room_id, stream_position);
