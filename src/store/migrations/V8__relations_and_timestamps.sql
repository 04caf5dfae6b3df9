-- Relations between events (`m.relates_to` in an event's content: threads, edits, references,
-- annotations), one row per relating event. The row goes when that event is redacted, since its
-- redacted content no longer says what it relates to.
CREATE TABLE event_relations (
    -- The relating event (the child), by its stream position.
    stream_position BIGINT PRIMARY KEY NOT NULL REFERENCES events (stream_position),
    -- The event it relates to (the parent). Not a reference: over federation a relation can
    -- arrive before its parent does.
    relates_to TEXT NOT NULL,
    -- m.thread, m.replace, m.reference, m.annotation or a custom type.
    rel_type TEXT NOT NULL
);
CREATE INDEX event_relations_by_parent ON event_relations (relates_to, rel_type, stream_position);

-- `/timestamp_to_event`: a room's events by the time their sender's server gave them.
CREATE INDEX events_by_room_ts ON events (room_id, origin_server_ts);
