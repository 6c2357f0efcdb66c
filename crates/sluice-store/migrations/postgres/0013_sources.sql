-- Sources: where events come from besides POST /events (inbound webhooks, broker queues).
-- `config` is the source as validated, secrets included (they are needed to verify
-- signatures and to connect); the API only ever shows it masked.
CREATE TABLE sources (
    name             TEXT        PRIMARY KEY,
    kind             TEXT        NOT NULL,
    config           TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    updated_by       TEXT,
    -- Requests or messages that became events (or duplicates), and those refused; added
    -- up from each process every second.
    accepted         BIGINT      NOT NULL DEFAULT 0,
    rejected         BIGINT      NOT NULL DEFAULT 0,
    last_rejected_at TIMESTAMPTZ,
    last_rejection   TEXT,
    -- A broker source's consumers: why the latest connection failed (cleared once one
    -- connects).
    last_error       TEXT,
    last_error_at    TIMESTAMPTZ
);
