-- The room state after every event, as state groups: a group per state change, stored as the
-- entries that changed against a parent group, with a full snapshot (no parent) at least every
-- 32 groups of a chain so that reading a group's state reads a bounded number of groups.
-- Portable SQL: the same text runs on SQLite and PostgreSQL.

-- A group is numbered with the stream position of the event whose state-after it first was.
-- `chain_length` counts the deltas down to the group's snapshot: 0 for a snapshot.
CREATE TABLE state_groups (
    state_group BIGINT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    parent_group BIGINT,
    chain_length BIGINT NOT NULL
);

-- A snapshot's entries are its whole state; a delta's are the keys it changed against its parent.
-- A NULL event_id removes the key (state resolution can drop a key that only one fork had).
CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL REFERENCES state_groups (state_group),
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (state_group, event_type, state_key)
);

-- The state group holding the room state after each event. Non-state events share the group of
-- the state they were sent in, so a message adds no row here.
ALTER TABLE events ADD COLUMN state_group BIGINT;

-- Rooms written under V1 never forked (one writer, prev_events = the single forward extremity),
-- so the state after each event is the state_history at its stream position. Every state event
-- gets a group: a snapshot every 32 state events of a room, a one-entry delta otherwise.
INSERT INTO state_groups (state_group, room_id, parent_group, chain_length)
SELECT stream_position, room_id,
       CASE WHEN (ordinal - 1) % 32 = 0 THEN NULL ELSE previous END,
       (ordinal - 1) % 32
FROM (
    SELECT stream_position, room_id,
           ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY stream_position) AS ordinal,
           LAG(stream_position) OVER (PARTITION BY room_id ORDER BY stream_position) AS previous
    FROM events
    WHERE state_key IS NOT NULL
) numbered;

INSERT INTO state_group_entries (state_group, event_type, state_key, event_id)
SELECT g.state_group, e.event_type, e.state_key, e.event_id
FROM state_groups g JOIN events e ON e.stream_position = g.state_group
WHERE g.parent_group IS NOT NULL;

INSERT INTO state_group_entries (state_group, event_type, state_key, event_id)
SELECT g.state_group, h.event_type, h.state_key, h.event_id
FROM state_groups g
JOIN state_history h ON h.room_id = g.room_id AND h.stream_position <= g.state_group
WHERE g.parent_group IS NULL AND NOT EXISTS (
    SELECT 1 FROM state_history later
    WHERE later.room_id = h.room_id AND later.event_type = h.event_type
      AND later.state_key = h.state_key AND later.stream_position > h.stream_position
      AND later.stream_position <= g.state_group
);

-- The group of every event: the position of the newest state event at or before it in its room,
-- in one ordered pass over the events rather than a lookup per event.
UPDATE events SET state_group = numbered.state_group
FROM (
    SELECT stream_position,
           MAX(CASE WHEN state_key IS NOT NULL THEN stream_position END) OVER (
               PARTITION BY room_id ORDER BY stream_position ROWS UNBOUNDED PRECEDING
           ) AS state_group
    FROM events
) numbered
WHERE events.stream_position = numbered.stream_position;

-- From V3 on, state_history also records changes that state resolution makes to the current
-- state. A key that resolution removes is recorded with event_id '' and no membership; every
-- reader joins state_history with events, which such an entry never matches.
