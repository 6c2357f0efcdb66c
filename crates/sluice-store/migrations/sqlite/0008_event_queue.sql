-- The queue apart from the history: events not yet settled (pending or processing) have a
-- small row here, and only here are they found — the claim's scan, the order per key, the
-- leases the reaper watches. `events` keeps every column, state included, as readers see it.
CREATE TABLE event_queue (
    event_id         INTEGER PRIMARY KEY,
    type             TEXT    NOT NULL,
    ordering_key     TEXT,
    next_attempt_at  INTEGER NOT NULL,
    lease_expires_at INTEGER
);
CREATE INDEX event_queue_due_idx ON event_queue (next_attempt_at, event_id)
    WHERE lease_expires_at IS NULL;
CREATE INDEX event_queue_lease_idx ON event_queue (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
CREATE INDEX event_queue_ordering_idx ON event_queue (ordering_key, event_id)
    WHERE ordering_key IS NOT NULL;

INSERT INTO event_queue (event_id, type, ordering_key, next_attempt_at, lease_expires_at)
SELECT id, type, ordering_key, COALESCE(next_attempt_at, created_at),
       CASE WHEN state = 'processing' THEN COALESCE(lease_expires_at, updated_at) END
FROM events WHERE state IN ('pending', 'processing');

DROP INDEX IF EXISTS events_due_idx;
DROP INDEX IF EXISTS events_lease_idx;
DROP INDEX IF EXISTS events_ordering_idx;
