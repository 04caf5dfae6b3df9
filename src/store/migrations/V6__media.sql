-- Media uploaded to this server. The bytes live in the data directory, content-addressed by their
-- SHA-256 (media/ab/cd/<sha256>); a row is written only after its file is on disk, so a row never
-- points to a missing file. Moving to another database moves these rows; the files stay.
CREATE TABLE media (
    -- The media ID of mxc://<this server>/<media_id>.
    media_id TEXT PRIMARY KEY NOT NULL,
    uploader TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- For an ID reserved with POST /media/v1/create and not uploaded yet: when it expires.
    expires_ts BIGINT,
    -- The rest is NULL until the content is uploaded.
    uploaded_ts BIGINT,
    content_type TEXT,
    file_name TEXT,
    size BIGINT,
    sha256 TEXT
);

-- Counting a user's pending reservations, and finding expired ones.
CREATE INDEX media_pending ON media (uploader, uploaded_ts, expires_ts);

-- Thumbnails generated on first request, so that the next request is a lookup.
CREATE TABLE media_thumbnails (
    media_id TEXT NOT NULL REFERENCES media (media_id),
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    -- crop or scale.
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (media_id, width, height, method)
);
