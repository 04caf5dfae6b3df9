-- URL previews (GET /preview_url), kept so that a link shared in a busy room is fetched once.
-- Only previews that were made are kept; one older than the cache time is fetched again and
-- replaced, and old rows are removed whenever a new one is written.
CREATE TABLE url_previews (
    -- The URL asked for, without its fragment.
    url TEXT PRIMARY KEY NOT NULL,
    -- When the page was fetched (ms since the epoch).
    fetched_ts BIGINT NOT NULL,
    -- The preview: the JSON object the endpoint answers.
    preview TEXT NOT NULL
);

CREATE INDEX url_previews_fetched ON url_previews (fetched_ts);
