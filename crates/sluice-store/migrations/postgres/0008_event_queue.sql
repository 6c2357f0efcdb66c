-- The queue apart from the history. Events not yet settled (pending or processing) have a
-- small row here, and only here are they found: the claim's scan, the order per key, the
-- leases the reaper watches. `events` keeps every column (state included, as every reader
-- sees it) but no index on what claims and completions change, so those updates are HOT
-- (no index entries written, the new row version on the same page). Half of each page is
-- left free for those versions: an event is updated twice while its page is still being
-- read, and a row version can only be pruned once no open snapshot needs it (fill factor 70
-- measured 0.80x the drain of 50; the history takes more room, which listings that cost the
-- page rather than the table will not pay for; it takes about twice the room).
CREATE TABLE event_queue (
    event_id         BIGINT      PRIMARY KEY,
    type             TEXT        NOT NULL,
    ordering_key     TEXT,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    -- Set while a worker holds the event; renewed by its heartbeat.
    lease_expires_at TIMESTAMPTZ
);
CREATE INDEX event_queue_due_idx ON event_queue (next_attempt_at, event_id)
    WHERE lease_expires_at IS NULL;
CREATE INDEX event_queue_lease_idx ON event_queue (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
CREATE INDEX event_queue_ordering_idx ON event_queue (ordering_key, event_id)
    WHERE ordering_key IS NOT NULL;

INSERT INTO event_queue (event_id, type, ordering_key, next_attempt_at, lease_expires_at)
SELECT id, type, ordering_key, COALESCE(next_attempt_at, now()),
       CASE WHEN state = 'processing' THEN COALESCE(lease_expires_at, now()) END
FROM events WHERE state IN ('pending', 'processing');

DROP INDEX IF EXISTS events_due_idx;
DROP INDEX IF EXISTS events_lease_idx;
DROP INDEX IF EXISTS events_ordering_idx;
DROP INDEX IF EXISTS events_failed_created_idx;
ALTER TABLE events SET (fillfactor = 50);
