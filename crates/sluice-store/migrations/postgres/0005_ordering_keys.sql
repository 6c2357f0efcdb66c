-- Ordering per key: events with the same ordering_key are processed one at a time, lowest
-- id first. The claim asks "is an earlier event of this key still unsettled?"; this index
-- answers it and holds only the keyed events still pending or processing.
ALTER TABLE events ADD COLUMN ordering_key TEXT;
CREATE INDEX events_ordering_idx ON events (ordering_key, id)
    WHERE ordering_key IS NOT NULL AND state IN ('pending', 'processing');
