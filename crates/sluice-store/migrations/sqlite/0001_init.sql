-- sluice schema, SQLite. Timestamps are INTEGER microseconds since the Unix epoch (UTC), so
-- they sort and compare as numbers; ids are 64-bit INTEGER PRIMARY KEYs.

CREATE TABLE events (
    id               INTEGER PRIMARY KEY,
    external_id      TEXT    NOT NULL UNIQUE,
    type             TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    payload_hash     TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'processing', 'processed', 'failed')),
    received_count   INTEGER NOT NULL DEFAULT 1,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    lease_expires_at INTEGER,
    leased_by        TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    processed_at     INTEGER,
    replayed_at      INTEGER,
    next_trigger     TEXT    NOT NULL DEFAULT 'initial'
                     CHECK (next_trigger IN ('initial', 'retry', 'replay')),
    replay_rules     TEXT    NOT NULL DEFAULT 'current'
                     CHECK (replay_rules IN ('current', 'original')),
    run_attempts     INTEGER NOT NULL DEFAULT 0,
    current_attempt_id INTEGER
);

CREATE INDEX events_due_idx ON events (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX events_lease_idx ON events (lease_expires_at) WHERE state = 'processing';
CREATE INDEX events_created_idx ON events (created_at DESC, id DESC);
CREATE INDEX events_type_created_idx ON events (type, created_at DESC, id DESC);
CREATE INDEX events_state_created_idx ON events (state, created_at DESC, id DESC);

CREATE TABLE rules (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL,
    event_type         TEXT    NOT NULL,
    active             INTEGER NOT NULL DEFAULT 1,
    current_version_id INTEGER REFERENCES rule_versions (id),
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX rules_event_type_idx ON rules (event_type) WHERE active = 1;

CREATE TABLE rule_versions (
    id          INTEGER PRIMARY KEY,
    rule_id     INTEGER NOT NULL REFERENCES rules (id),
    version     INTEGER NOT NULL,
    condition   TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    action_hash TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (rule_id, version)
);

CREATE TABLE rule_generation (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO rule_generation (id, generation) VALUES (1, 0);

CREATE TABLE event_attempts (
    id          INTEGER PRIMARY KEY,
    event_id    INTEGER NOT NULL REFERENCES events (id),
    attempt_no  INTEGER NOT NULL,
    trigger     TEXT    NOT NULL CHECK (trigger IN ('initial', 'retry', 'replay')),
    status      TEXT    NOT NULL
                CHECK (status IN ('running', 'success', 'failed', 'timeout', 'abandoned')),
    error       TEXT,
    worker      TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    duration_ms INTEGER,
    UNIQUE (event_id, attempt_no)
);

CREATE TABLE rule_executions (
    id              INTEGER PRIMARY KEY,
    attempt_id      INTEGER NOT NULL REFERENCES event_attempts (id),
    event_id        INTEGER NOT NULL REFERENCES events (id),
    rule_id         INTEGER NOT NULL REFERENCES rules (id),
    rule_version_id INTEGER NOT NULL REFERENCES rule_versions (id),
    result          TEXT    NOT NULL
                    CHECK (result IN ('applied', 'skipped', 'failed', 'deduped', 'started')),
    error           TEXT,
    idempotency_key TEXT,
    duration_ms     INTEGER,
    executed_at     INTEGER NOT NULL
);
CREATE INDEX rule_executions_attempt_idx ON rule_executions (attempt_id);
CREATE INDEX rule_executions_key_idx ON rule_executions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
