-- The listing indexes in ascending order. Events arrive in time order, so an index on
-- `created_at DESC` takes every new entry at its far left, where a B-tree page that fills
-- is split in half and the left half never fills again: the index ends up about twice its
-- size and every insert costs more. Ascending, new entries go to the right edge, pages are
-- split where they fill and stay full, and PostgreSQL caches that rightmost page for the
-- next insert. A scan backwards gives the same newest-first order, so listings, their
-- cursors and their plans do not change.
CREATE INDEX events_created_asc_idx ON events (created_at, id);
DROP INDEX events_created_idx;
ALTER INDEX events_created_asc_idx RENAME TO events_created_idx;

CREATE INDEX events_type_created_asc_idx ON events (type, created_at, id);
DROP INDEX events_type_created_idx;
ALTER INDEX events_type_created_asc_idx RENAME TO events_type_created_idx;

CREATE INDEX failed_events_created_asc_idx ON failed_events (created_at, event_id);
DROP INDEX failed_events_created_idx;
ALTER INDEX failed_events_created_asc_idx RENAME TO failed_events_created_idx;

CREATE INDEX failed_events_type_created_asc_idx ON failed_events (type, created_at, event_id);
DROP INDEX failed_events_type_created_idx;
ALTER INDEX failed_events_type_created_asc_idx RENAME TO failed_events_type_created_idx;
