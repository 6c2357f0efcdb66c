-- Reads that cost the page, not the table. Two things the database keeps up to date itself,
-- by triggers on `events`, so that no write path (ingest, claim, completion, release, replay,
-- requeue, retention) can forget them:
--
-- `event_counts`: how many events arrived per type and minute (rolled up to the hour once
-- older than two hours) are in each status — pending, retrying (pending after a failed
-- attempt), processed, failed — and, for failures, in which hour they failed. A processing
-- event is counted as pending: claims, the busiest statements, then change no count; readers
-- take the processing ones (a worker's capacity at most) from the queue's leases.
-- Stats and the overview's chart sum a few of these rows instead of counting the history.
-- Many writers change the same counts at once, so on PostgreSQL the triggers append signed
-- changes to `event_count_changes` (no row anyone else updates, so no waiting on locks) and
-- `Store::compact_counts` folds them in; readers add both tables, which is exact at every
-- moment.
--
-- `failed_events`: the failed events, newest first per type — the listing of failures and
-- the exact edge of "failed in the last 24 h". `events` has no index on its state (its
-- updates stay HOT), and failures are few.

CREATE TABLE event_counts (
    type           TEXT        NOT NULL,
    bucket         TIMESTAMPTZ NOT NULL,
    -- 1 for a minute, 60 once rolled up into the hour.
    bucket_minutes SMALLINT    NOT NULL,
    status         TEXT        NOT NULL,
    -- The hour a failed event failed in (of its `updated_at`); the epoch for other statuses.
    failed_hour    TIMESTAMPTZ NOT NULL,
    n              BIGINT      NOT NULL,
    PRIMARY KEY (type, bucket, bucket_minutes, status, failed_hour)
);

-- Counts that fell to zero (a minute's pending events all processed), for compaction to drop.
CREATE INDEX event_counts_zero_idx ON event_counts (type) WHERE n = 0;

CREATE TABLE event_count_changes (
    type        TEXT        NOT NULL,
    bucket      TIMESTAMPTZ NOT NULL,
    status      TEXT        NOT NULL,
    failed_hour TIMESTAMPTZ NOT NULL,
    n           BIGINT      NOT NULL
);

CREATE TABLE failed_events (
    event_id   BIGINT      PRIMARY KEY,
    type       TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    failed_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX failed_events_created_idx ON failed_events (created_at DESC, event_id DESC);
CREATE INDEX failed_events_type_created_idx ON failed_events (type, created_at DESC, event_id DESC);
CREATE INDEX failed_events_failed_at_idx ON failed_events (failed_at);

-- The key an event is counted under. Keep in step with the SQLite migration and with the
-- edges `event_stats` counts from `events` directly.
CREATE FUNCTION event_status(state TEXT, attempts BIGINT) RETURNS TEXT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN state = 'pending' AND attempts > 0 THEN 'retrying'
                WHEN state = 'processing' THEN 'pending'
                ELSE state END;
CREATE FUNCTION event_failed_hour(state TEXT, updated_at TIMESTAMPTZ) RETURNS TIMESTAMPTZ
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN state = 'failed'
                THEN date_bin('1 hour', updated_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')
                ELSE TIMESTAMPTZ '1970-01-01 00:00:00+00' END;

-- Once per statement, over the rows it changed: one appended row per key whose count moved.
CREATE FUNCTION count_event_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO event_count_changes (type, bucket, status, failed_hour, n)
        SELECT type, date_bin('1 minute', created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
               event_status(state, attempts), event_failed_hour(state, updated_at), count(*)
        FROM new_events GROUP BY 1, 2, 3, 4;
    ELSIF TG_OP = 'UPDATE' THEN
        -- Every ingest statement fires this too (its ON CONFLICT may update), mostly empty.
        IF NOT EXISTS (SELECT 1 FROM new_events) THEN
            RETURN NULL;
        END IF;
        INSERT INTO event_count_changes (type, bucket, status, failed_hour, n)
        SELECT type, date_bin('1 minute', created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
               status, failed_hour, sum(n)
        FROM (SELECT type, created_at, event_status(state, attempts) AS status,
                     event_failed_hour(state, updated_at) AS failed_hour, 1 AS n
              FROM new_events
              UNION ALL
              SELECT type, created_at, event_status(state, attempts),
                     event_failed_hour(state, updated_at), -1
              FROM old_events) moved
        GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0;
        IF EXISTS (SELECT 1 FROM old_events WHERE state = 'failed')
           OR EXISTS (SELECT 1 FROM new_events WHERE state = 'failed') THEN
            DELETE FROM failed_events f USING old_events o
            WHERE f.event_id = o.id AND o.state = 'failed';
            INSERT INTO failed_events (event_id, type, created_at, failed_at)
            SELECT id, type, created_at, updated_at FROM new_events WHERE state = 'failed';
        END IF;
    ELSE
        INSERT INTO event_count_changes (type, bucket, status, failed_hour, n)
        SELECT type, date_bin('1 minute', created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
               event_status(state, attempts), event_failed_hour(state, updated_at), -count(*)
        FROM old_events GROUP BY 1, 2, 3, 4;
        DELETE FROM failed_events f USING old_events o
        WHERE f.event_id = o.id AND o.state = 'failed';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER events_counted_on_insert AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION count_event_changes();
CREATE TRIGGER events_counted_on_update AFTER UPDATE ON events
    REFERENCING OLD TABLE AS old_events NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION count_event_changes();
CREATE TRIGGER events_counted_on_delete AFTER DELETE ON events
    REFERENCING OLD TABLE AS old_events
    FOR EACH STATEMENT EXECUTE FUNCTION count_event_changes();

-- The history so far: minutes for the last two hours, hours before.
INSERT INTO event_counts (type, bucket, bucket_minutes, status, failed_hour, n)
SELECT type,
       CASE WHEN created_at >= now() - INTERVAL '2 hours'
            THEN date_bin('1 minute', created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')
            ELSE date_bin('1 hour', created_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') END,
       CASE WHEN created_at >= now() - INTERVAL '2 hours' THEN 1 ELSE 60 END,
       event_status(state, attempts), event_failed_hour(state, updated_at), count(*)
FROM events GROUP BY 1, 2, 3, 4, 5;

INSERT INTO failed_events (event_id, type, created_at, failed_at)
SELECT id, type, created_at, updated_at FROM events WHERE state = 'failed';

