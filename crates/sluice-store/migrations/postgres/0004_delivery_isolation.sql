-- Delivery isolation: each receiver ("target", scheme://host:port) has a circuit breaker
-- whose state every worker process reads, and actions it cannot take now are `deferred`.

ALTER TABLE event_attempts DROP CONSTRAINT event_attempts_status_check;
ALTER TABLE event_attempts ADD CONSTRAINT event_attempts_status_check
    CHECK (status IN ('running', 'success', 'failed', 'timeout', 'abandoned', 'deferred'));
ALTER TABLE rule_executions DROP CONSTRAINT rule_executions_result_check;
ALTER TABLE rule_executions ADD CONSTRAINT rule_executions_result_check
    CHECK (result IN ('applied', 'skipped', 'failed', 'deduped', 'started', 'deferred'));

CREATE TABLE targets (
    target               TEXT        PRIMARY KEY,
    -- closed: deliveries go; open: none until next_probe_at; half_open: one probe in flight.
    state                TEXT        NOT NULL DEFAULT 'closed'
                         CHECK (state IN ('closed', 'open', 'half_open')),
    -- An operator's pause, apart from the breaker's state.
    paused               BOOLEAN     NOT NULL DEFAULT FALSE,
    consecutive_failures BIGINT      NOT NULL DEFAULT 0,
    last_error           TEXT,
    last_failure_at      TIMESTAMPTZ,
    opened_at            TIMESTAMPTZ,
    next_probe_at        TIMESTAMPTZ,
    delivered_total      BIGINT      NOT NULL DEFAULT 0,
    failed_total         BIGINT      NOT NULL DEFAULT 0,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What each worker process has in flight to each target, reported every second; rows not
-- refreshed for a few seconds belong to stopped workers and are ignored.
CREATE TABLE target_load (
    target     TEXT        NOT NULL,
    worker     TEXT        NOT NULL,
    in_flight  BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (target, worker)
);
