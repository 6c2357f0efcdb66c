-- Access control: API keys (stored as hashes), console sessions, and who did what.
-- Timestamps are INTEGER microseconds since the Unix epoch, as everywhere.

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL,
    -- The key's first characters (`sk_` and its public part): shown in listings and used to
    -- find the row; the rest of the key is secret and stored only as a hash.
    prefix       TEXT    NOT NULL UNIQUE,
    -- SHA-256 of the whole key, hex. Keys are random and long, so a fast hash is enough.
    key_hash     TEXT    NOT NULL,
    -- Comma-separated: ingest, read, admin.
    scopes       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    -- Recorded in batches a few times a minute, not per request.
    last_used_at INTEGER,
    revoked_at   INTEGER
);

CREATE TABLE console_sessions (
    -- SHA-256 of the session cookie's token, hex; the token itself is never stored.
    token_hash TEXT    PRIMARY KEY,
    api_key_id INTEGER NOT NULL REFERENCES api_keys (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at);

-- The name of the key that wrote a rule version, or asked for a replay (NULL without auth).
ALTER TABLE rule_versions ADD COLUMN created_by TEXT;
ALTER TABLE events ADD COLUMN replay_requested_by TEXT;
ALTER TABLE event_attempts ADD COLUMN requested_by TEXT;
