-- Server-side search (SQLite): one row per searchable event in `event_search`, the same table
-- as on PostgreSQL, and an FTS5 index over it (`event_search_fts`, an external-content table
-- that the triggers below keep in step with every insert, update and delete). The FTS5 table
-- and its shadow tables are derived data: the move copies `event_search` alone, and the
-- triggers fill the index of the SQLite file it writes.
CREATE TABLE event_search (
    -- The event, by its stream position.
    stream_position BIGINT PRIMARY KEY NOT NULL REFERENCES events (stream_position),
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    -- Which content key the text is: content.body, content.name or content.topic.
    search_key TEXT NOT NULL,
    -- The text searched.
    value TEXT NOT NULL
);
CREATE INDEX event_search_by_room ON event_search (room_id, stream_position);

-- unicode61 folds case and diacritics; no stemming, as on PostgreSQL ('simple').
CREATE VIRTUAL TABLE event_search_fts USING fts5 (
    value,
    content = 'event_search',
    content_rowid = 'stream_position',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER event_search_fts_insert AFTER INSERT ON event_search BEGIN
    INSERT INTO event_search_fts (rowid, value) VALUES (new.stream_position, new.value);
END;
CREATE TRIGGER event_search_fts_delete AFTER DELETE ON event_search BEGIN
    INSERT INTO event_search_fts (event_search_fts, rowid, value)
    VALUES ('delete', old.stream_position, old.value);
END;
CREATE TRIGGER event_search_fts_update AFTER UPDATE ON event_search BEGIN
    INSERT INTO event_search_fts (event_search_fts, rowid, value)
    VALUES ('delete', old.stream_position, old.value);
    INSERT INTO event_search_fts (rowid, value) VALUES (new.stream_position, new.value);
END;

-- The events stored before: the same rule as `crate::search::text_of` (a message's body, a
-- room's name and topic; not once redacted; NUL characters become spaces).
INSERT INTO event_search (stream_position, room_id, sender, search_key, value)
SELECT stream_position, room_id, sender, search_key, replace(value, char(0), ' ')
FROM (
    SELECT stream_position, room_id, sender, 'content.body' AS search_key,
           json_extract(pdu, '$.content.body') AS value
    FROM events
    WHERE event_type = 'm.room.message' AND redacted_by IS NULL AND json_valid(pdu)
      AND json_type(pdu, '$.content.body') = 'text'
    UNION ALL
    SELECT stream_position, room_id, sender, 'content.name', json_extract(pdu, '$.content.name')
    FROM events
    WHERE event_type = 'm.room.name' AND state_key = '' AND redacted_by IS NULL
      AND json_valid(pdu) AND json_type(pdu, '$.content.name') = 'text'
    UNION ALL
    SELECT stream_position, room_id, sender, 'content.topic', json_extract(pdu, '$.content.topic')
    FROM events
    WHERE event_type = 'm.room.topic' AND state_key = '' AND redacted_by IS NULL
      AND json_valid(pdu) AND json_type(pdu, '$.content.topic') = 'text'
)
WHERE value <> '';
