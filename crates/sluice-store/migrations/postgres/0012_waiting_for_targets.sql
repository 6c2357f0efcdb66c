-- Events that wait for a receiver ("target") stay in the queue, marked with the target they
-- wait for and since when, and due only at the end of their longest allowed wait: claims
-- (which take rows due now) pass them by at no cost until the target is released (it closes,
-- is resumed, is due for a probe, or has room again), which makes them due at once.
ALTER TABLE event_queue ADD COLUMN waiting_for TEXT;
ALTER TABLE event_queue ADD COLUMN waiting_since TIMESTAMPTZ;
-- Releases take a target's waiting events oldest first; the targets' summary counts them.
CREATE INDEX event_queue_waiting_idx ON event_queue (waiting_for, event_id)
    WHERE waiting_for IS NOT NULL;

-- How long an event of this type may wait for its target (TARGET_MAX_WAIT otherwise).
ALTER TABLE event_types ADD COLUMN max_wait_ms BIGINT;
