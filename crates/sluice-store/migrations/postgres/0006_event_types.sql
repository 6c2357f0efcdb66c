-- Event types as a resource: settings that override the process defaults for events of one
-- type, and an optional JSON Schema their data must match. A type without a row here uses
-- the defaults. Changes bump rule_generation, which every worker already watches.
CREATE TABLE event_types (
    event_type            TEXT        PRIMARY KEY,
    description           TEXT,
    -- The JSON Schema as submitted (text, so it reads back exactly as written).
    data_schema           TEXT,
    processing_timeout_ms BIGINT,
    max_attempts          BIGINT,
    -- A JSON array of delays in milliseconds; the last one repeats.
    retry_backoff_ms      TEXT,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    updated_by            TEXT
);
