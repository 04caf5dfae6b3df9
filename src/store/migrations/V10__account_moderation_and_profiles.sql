-- Account locking and suspension (set by a server administrator through the client-server
-- admin API), the user agent of each device's last request (for `/admin/whois`), and the
-- profile fields beyond `displayname` and `avatar_url` (extended profiles, spec v1.16).

-- Locked: every authenticated request but logout answers 401 M_USER_LOCKED.
ALTER TABLE users ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
-- Suspended: actions that reach other users answer 403 M_USER_SUSPENDED; reading stays.
ALTER TABLE users ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;

-- Written with last_seen_ip and last_seen_ts, as seldom as they are.
ALTER TABLE devices ADD COLUMN last_seen_user_agent TEXT;

-- One row per custom profile field (`m.tz` included); the value is its JSON text.
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);
