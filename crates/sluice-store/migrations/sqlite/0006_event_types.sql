-- Event types as a resource: settings that override the process defaults for events of one
-- type, and an optional JSON Schema their data must match. A type without a row here uses
-- the defaults. Changes bump rule_generation, which every worker already watches.
CREATE TABLE event_types (
    event_type            TEXT    PRIMARY KEY,
    description           TEXT,
    data_schema           TEXT,
    processing_timeout_ms INTEGER,
    max_attempts          INTEGER,
    retry_backoff_ms      TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    updated_by            TEXT
);
