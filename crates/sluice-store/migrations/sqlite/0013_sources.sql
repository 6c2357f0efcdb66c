-- Sources: where events come from besides POST /events (inbound webhooks, broker queues).
-- `config` is the source as validated, secrets included (they are needed to verify
-- signatures and to connect); the API only ever shows it masked.
CREATE TABLE sources (
    name             TEXT    PRIMARY KEY,
    kind             TEXT    NOT NULL,
    config           TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    updated_by       TEXT,
    accepted         INTEGER NOT NULL DEFAULT 0,
    rejected         INTEGER NOT NULL DEFAULT 0,
    last_rejected_at INTEGER,
    last_rejection   TEXT,
    last_error       TEXT,
    last_error_at    INTEGER
);
