-- The listing indexes in ascending order. Events arrive in time order, so an index on
-- `created_at DESC` takes every new entry at its far left, where a B-tree page that fills
-- is rebalanced with its neighbours and left part-empty: the index grows larger than it
-- needs and every insert costs more. Ascending, new entries go to the right edge, where
-- SQLite appends to the last page without rebalancing. A scan backwards gives the same
-- newest-first order, so listings, their cursors and their plans do not change.
DROP INDEX events_created_idx;
CREATE INDEX events_created_idx ON events (created_at, id);

DROP INDEX events_type_created_idx;
CREATE INDEX events_type_created_idx ON events (type, created_at, id);

DROP INDEX failed_events_created_idx;
CREATE INDEX failed_events_created_idx ON failed_events (created_at, event_id);

DROP INDEX failed_events_type_created_idx;
CREATE INDEX failed_events_type_created_idx ON failed_events (type, created_at, event_id);
