-- Delivery isolation: each receiver ("target", scheme://host:port) has a circuit breaker
-- whose state the worker reads, and actions it cannot take now are `deferred`.
--
-- SQLite cannot change a CHECK constraint in place: the two tables are rebuilt with the new
-- allowed values. Foreign keys stay on (the migration runs in a transaction, where they cannot
-- be switched off), so the order matters: renaming event_attempts aside makes
-- rule_executions reference the old copy; rule_executions is then rebuilt to reference the
-- new event_attempts, and only once nothing references the old copies are they dropped.

ALTER TABLE event_attempts RENAME TO event_attempts_old;
CREATE TABLE event_attempts (
    id           INTEGER PRIMARY KEY,
    event_id     INTEGER NOT NULL REFERENCES events (id),
    attempt_no   INTEGER NOT NULL,
    trigger      TEXT    NOT NULL CHECK (trigger IN ('initial', 'retry', 'replay')),
    status       TEXT    NOT NULL
                 CHECK (status IN ('running', 'success', 'failed', 'timeout', 'abandoned', 'deferred')),
    error        TEXT,
    worker       TEXT,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    duration_ms  INTEGER,
    requested_by TEXT,
    UNIQUE (event_id, attempt_no)
);
INSERT INTO event_attempts
    (id, event_id, attempt_no, trigger, status, error, worker, started_at, finished_at,
     duration_ms, requested_by)
SELECT id, event_id, attempt_no, trigger, status, error, worker, started_at, finished_at,
       duration_ms, requested_by
FROM event_attempts_old;

ALTER TABLE rule_executions RENAME TO rule_executions_old;
CREATE TABLE rule_executions (
    id              INTEGER PRIMARY KEY,
    attempt_id      INTEGER NOT NULL REFERENCES event_attempts (id),
    event_id        INTEGER NOT NULL REFERENCES events (id),
    rule_id         INTEGER NOT NULL REFERENCES rules (id),
    rule_version_id INTEGER NOT NULL REFERENCES rule_versions (id),
    result          TEXT    NOT NULL
                    CHECK (result IN ('applied', 'skipped', 'failed', 'deduped', 'started', 'deferred')),
    error           TEXT,
    idempotency_key TEXT,
    duration_ms     INTEGER,
    executed_at     INTEGER NOT NULL
);
INSERT INTO rule_executions
    (id, attempt_id, event_id, rule_id, rule_version_id, result, error, idempotency_key,
     duration_ms, executed_at)
SELECT id, attempt_id, event_id, rule_id, rule_version_id, result, error, idempotency_key,
       duration_ms, executed_at
FROM rule_executions_old;
DROP TABLE rule_executions_old;
DROP TABLE event_attempts_old;
CREATE INDEX rule_executions_attempt_idx ON rule_executions (attempt_id);
CREATE INDEX rule_executions_key_idx ON rule_executions (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE targets (
    target               TEXT    PRIMARY KEY,
    state                TEXT    NOT NULL DEFAULT 'closed'
                         CHECK (state IN ('closed', 'open', 'half_open')),
    paused               INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    last_failure_at      INTEGER,
    opened_at            INTEGER,
    next_probe_at        INTEGER,
    delivered_total      INTEGER NOT NULL DEFAULT 0,
    failed_total         INTEGER NOT NULL DEFAULT 0,
    updated_at           INTEGER NOT NULL
);

CREATE TABLE target_load (
    target     TEXT    NOT NULL,
    worker     TEXT    NOT NULL,
    in_flight  INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (target, worker)
);

