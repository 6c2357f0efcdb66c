-- Reads that cost the page, not the table: counts and failures kept by triggers on `events`
-- (see the PostgreSQL migration of the same name for the layout, and for why a processing
-- event is counted as pending). One writer at a time here,
-- so the triggers update `event_counts` in place; `event_count_changes` stays empty and exists
-- so both backends are read by the same query. Timestamps are microseconds: a minute is
-- 60000000, an hour 3600000000.

CREATE TABLE event_counts (
    type           TEXT    NOT NULL,
    bucket         INTEGER NOT NULL,
    bucket_minutes INTEGER NOT NULL,
    status         TEXT    NOT NULL,
    failed_hour    INTEGER NOT NULL,
    n              INTEGER NOT NULL,
    PRIMARY KEY (type, bucket, bucket_minutes, status, failed_hour)
) WITHOUT ROWID;

-- Counts that fell to zero (a minute's pending events all processed), for compaction to drop.
CREATE INDEX event_counts_zero_idx ON event_counts (type) WHERE n = 0;

CREATE TABLE event_count_changes (
    type        TEXT    NOT NULL,
    bucket      INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    failed_hour INTEGER NOT NULL,
    n           INTEGER NOT NULL
);

CREATE TABLE failed_events (
    event_id   INTEGER PRIMARY KEY,
    type       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    failed_at  INTEGER NOT NULL
);
CREATE INDEX failed_events_created_idx ON failed_events (created_at DESC, event_id DESC);
CREATE INDEX failed_events_type_created_idx ON failed_events (type, created_at DESC, event_id DESC);
CREATE INDEX failed_events_failed_at_idx ON failed_events (failed_at);

CREATE TRIGGER events_counted_on_insert AFTER INSERT ON events BEGIN
    INSERT INTO event_counts (type, bucket, bucket_minutes, status, failed_hour, n)
    VALUES (NEW.type, NEW.created_at - NEW.created_at % 60000000, 1,
            CASE WHEN NEW.state = 'pending' AND NEW.attempts > 0 THEN 'retrying' WHEN NEW.state = 'processing' THEN 'pending' ELSE NEW.state END,
            CASE WHEN NEW.state = 'failed' THEN NEW.updated_at - NEW.updated_at % 3600000000 ELSE 0 END,
            1)
    ON CONFLICT (type, bucket, bucket_minutes, status, failed_hour) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER events_counted_on_update
AFTER UPDATE OF type, state, attempts, created_at, updated_at ON events
WHEN OLD.type IS NOT NEW.type
  OR OLD.created_at - OLD.created_at % 60000000 IS NOT NEW.created_at - NEW.created_at % 60000000
  OR (OLD.state = 'failed' AND OLD.created_at IS NOT NEW.created_at)
  OR (CASE WHEN OLD.state = 'pending' AND OLD.attempts > 0 THEN 'retrying' WHEN OLD.state = 'processing' THEN 'pending' ELSE OLD.state END)
     IS NOT (CASE WHEN NEW.state = 'pending' AND NEW.attempts > 0 THEN 'retrying' WHEN NEW.state = 'processing' THEN 'pending' ELSE NEW.state END)
  OR (OLD.state = 'failed' AND OLD.updated_at IS NOT NEW.updated_at)
  OR (NEW.state = 'failed' AND OLD.updated_at IS NOT NEW.updated_at)
BEGIN
    INSERT INTO event_counts (type, bucket, bucket_minutes, status, failed_hour, n)
    VALUES (OLD.type, OLD.created_at - OLD.created_at % 60000000, 1,
            CASE WHEN OLD.state = 'pending' AND OLD.attempts > 0 THEN 'retrying' WHEN OLD.state = 'processing' THEN 'pending' ELSE OLD.state END,
            CASE WHEN OLD.state = 'failed' THEN OLD.updated_at - OLD.updated_at % 3600000000 ELSE 0 END,
            -1)
    ON CONFLICT (type, bucket, bucket_minutes, status, failed_hour) DO UPDATE SET n = n - 1;
    INSERT INTO event_counts (type, bucket, bucket_minutes, status, failed_hour, n)
    VALUES (NEW.type, NEW.created_at - NEW.created_at % 60000000, 1,
            CASE WHEN NEW.state = 'pending' AND NEW.attempts > 0 THEN 'retrying' WHEN NEW.state = 'processing' THEN 'pending' ELSE NEW.state END,
            CASE WHEN NEW.state = 'failed' THEN NEW.updated_at - NEW.updated_at % 3600000000 ELSE 0 END,
            1)
    ON CONFLICT (type, bucket, bucket_minutes, status, failed_hour) DO UPDATE SET n = n + 1;
    DELETE FROM failed_events WHERE event_id = OLD.id AND OLD.state = 'failed';
    INSERT INTO failed_events (event_id, type, created_at, failed_at)
    SELECT NEW.id, NEW.type, NEW.created_at, NEW.updated_at WHERE NEW.state = 'failed';
END;

CREATE TRIGGER events_counted_on_delete AFTER DELETE ON events BEGIN
    INSERT INTO event_counts (type, bucket, bucket_minutes, status, failed_hour, n)
    VALUES (OLD.type, OLD.created_at - OLD.created_at % 60000000, 1,
            CASE WHEN OLD.state = 'pending' AND OLD.attempts > 0 THEN 'retrying' WHEN OLD.state = 'processing' THEN 'pending' ELSE OLD.state END,
            CASE WHEN OLD.state = 'failed' THEN OLD.updated_at - OLD.updated_at % 3600000000 ELSE 0 END,
            -1)
    ON CONFLICT (type, bucket, bucket_minutes, status, failed_hour) DO UPDATE SET n = n - 1;
    DELETE FROM failed_events WHERE event_id = OLD.id;
END;

-- The history so far: minutes for the last two hours, hours before (the clock in
-- microseconds, as the server writes it).
INSERT INTO event_counts (type, bucket, bucket_minutes, status, failed_hour, n)
SELECT type,
       CASE WHEN created_at >= now_us - 7200000000 THEN created_at - created_at % 60000000
            ELSE created_at - created_at % 3600000000 END,
       CASE WHEN created_at >= now_us - 7200000000 THEN 1 ELSE 60 END,
       CASE WHEN state = 'pending' AND attempts > 0 THEN 'retrying' WHEN state = 'processing' THEN 'pending' ELSE state END,
       CASE WHEN state = 'failed' THEN updated_at - updated_at % 3600000000 ELSE 0 END,
       count(*)
FROM events, (SELECT CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER) AS now_us)
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO failed_events (event_id, type, created_at, failed_at)
SELECT id, type, created_at, updated_at FROM events WHERE state = 'failed';

DROP INDEX IF EXISTS events_failed_created_idx;
