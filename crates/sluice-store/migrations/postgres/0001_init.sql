-- sluice schema, PostgreSQL. Timestamps are timestamptz (UTC instants); ids are bigint.

CREATE TABLE events (
    id               BIGSERIAL PRIMARY KEY,
    external_id      TEXT        NOT NULL,
    type             TEXT        NOT NULL,
    payload          JSONB       NOT NULL,
    payload_hash     TEXT        NOT NULL,
    state            TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'processing', 'processed', 'failed')),
    received_count   BIGINT      NOT NULL DEFAULT 1,
    attempts         BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ DEFAULT now(),
    lease_expires_at TIMESTAMPTZ,
    leased_by        TEXT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at     TIMESTAMPTZ,
    replayed_at      TIMESTAMPTZ,
    -- Why the next attempt will run, and with which rules ('current' | 'original').
    next_trigger     TEXT        NOT NULL DEFAULT 'initial'
                     CHECK (next_trigger IN ('initial', 'retry', 'replay')),
    replay_rules     TEXT        NOT NULL DEFAULT 'current'
                     CHECK (replay_rules IN ('current', 'original')),
    -- Attempts since the event was ingested or last replayed: what MAX_ATTEMPTS bounds.
    run_attempts     BIGINT      NOT NULL DEFAULT 0,
    -- The attempt holding the lease; a completion for any other attempt is stale.
    current_attempt_id BIGINT,
    CONSTRAINT events_external_id_key UNIQUE (external_id)
);

-- The worker's claim: due pending events, oldest due first. Partial, so it stays small.
CREATE INDEX events_due_idx ON events (next_attempt_at, id) WHERE state = 'pending';
-- The lease reaper: processing events by lease expiry.
CREATE INDEX events_lease_idx ON events (lease_expires_at) WHERE state = 'processing';
-- Listings, newest first, optionally by type or state.
CREATE INDEX events_created_idx ON events (created_at DESC, id DESC);
CREATE INDEX events_type_created_idx ON events (type, created_at DESC, id DESC);
CREATE INDEX events_state_created_idx ON events (state, created_at DESC, id DESC);

CREATE TABLE rules (
    id                 BIGSERIAL PRIMARY KEY,
    name               TEXT        NOT NULL,
    event_type         TEXT        NOT NULL,
    active             BOOLEAN     NOT NULL DEFAULT TRUE,
    current_version_id BIGINT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rules_event_type_idx ON rules (event_type) WHERE active;

-- Immutable once written.
CREATE TABLE rule_versions (
    id          BIGSERIAL PRIMARY KEY,
    rule_id     BIGINT      NOT NULL REFERENCES rules (id),
    version     BIGINT      NOT NULL,
    condition   JSONB       NOT NULL,
    action      JSONB       NOT NULL,
    action_hash TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (rule_id, version)
);
ALTER TABLE rules ADD CONSTRAINT rules_current_version_fk
    FOREIGN KEY (current_version_id) REFERENCES rule_versions (id) DEFERRABLE INITIALLY DEFERRED;

-- Bumped by every rule change, so workers can tell cheaply whether their cache is current.
CREATE TABLE rule_generation (
    id         SMALLINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT   NOT NULL
);
INSERT INTO rule_generation (id, generation) VALUES (1, 0);

CREATE TABLE event_attempts (
    id          BIGSERIAL PRIMARY KEY,
    event_id    BIGINT      NOT NULL REFERENCES events (id),
    attempt_no  BIGINT      NOT NULL,
    trigger     TEXT        NOT NULL CHECK (trigger IN ('initial', 'retry', 'replay')),
    status      TEXT        NOT NULL
                CHECK (status IN ('running', 'success', 'failed', 'timeout', 'abandoned')),
    error       TEXT,
    worker      TEXT,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    duration_ms BIGINT,
    UNIQUE (event_id, attempt_no)
);

CREATE TABLE rule_executions (
    id              BIGSERIAL PRIMARY KEY,
    attempt_id      BIGINT      NOT NULL REFERENCES event_attempts (id),
    event_id        BIGINT      NOT NULL REFERENCES events (id),
    rule_id         BIGINT      NOT NULL REFERENCES rules (id),
    rule_version_id BIGINT      NOT NULL REFERENCES rule_versions (id),
    result          TEXT        NOT NULL
                    CHECK (result IN ('applied', 'skipped', 'failed', 'deduped', 'started')),
    error           TEXT,
    idempotency_key TEXT,
    duration_ms     BIGINT,
    executed_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rule_executions_attempt_idx ON rule_executions (attempt_id);
-- Dedupe of non-idempotent actions looks executions up by their idempotency key.
CREATE INDEX rule_executions_key_idx ON rule_executions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
