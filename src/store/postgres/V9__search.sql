-- Server-side search (PostgreSQL): one row per searchable event in `event_search`, the same
-- table as on SQLite, searched through a GIN index on its text as a tsvector. The 'simple'
-- configuration folds case and does not stem, close to SQLite's unicode61 tokenizer, so that a
-- move between the backends keeps what a search finds; the punctuation inside host names, e-mail
-- addresses, URLs, paths, version numbers and tags becomes spaces first, so that their parts are
-- words of their own, as on SQLite, and not one word of PostgreSQL's parser. The index is built
-- from the rows, so the move copies `event_search` and the index follows.
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
CREATE INDEX event_search_fts ON event_search
    USING GIN (to_tsvector('simple', translate(value, '.@/:<>+-', '        ')));

-- The events stored before: the same rule as `crate::search::text_of` (a message's body, a
-- room's name and topic; not once redacted). A PDU with an escaped NUL character is left out:
-- PostgreSQL's text cannot hold the character, nor its json type unescape it.
INSERT INTO event_search (stream_position, room_id, sender, search_key, value)
SELECT stream_position, room_id, sender, search_key, value
FROM (
    SELECT stream_position, room_id, sender,
           CASE event_type
               WHEN 'm.room.message' THEN 'content.body'
               WHEN 'm.room.name' THEN 'content.name'
               ELSE 'content.topic'
           END AS search_key,
           CASE event_type
               WHEN 'm.room.message' THEN pdu::json -> 'content' -> 'body'
               WHEN 'm.room.name' THEN pdu::json -> 'content' -> 'name'
               ELSE pdu::json -> 'content' -> 'topic'
           END AS field
    FROM events
    WHERE redacted_by IS NULL AND strpos(pdu, '\u0000') = 0
      AND (event_type = 'm.room.message'
           OR (event_type IN ('m.room.name', 'm.room.topic') AND state_key = ''))
) AS candidates, LATERAL (SELECT field #>> '{}' AS value) AS text
WHERE json_typeof(field) = 'string' AND value <> '';
