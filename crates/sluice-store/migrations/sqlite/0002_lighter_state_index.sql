-- Every state change rewrites index entries (state is indexed, so updates are never HOT).
-- Listing by state mostly means "the failed ones": index only those, and let other state
-- filters use events_created_idx. One index fewer to maintain per insert and per update.
DROP INDEX IF EXISTS events_state_created_idx;
CREATE INDEX events_failed_created_idx ON events (created_at DESC, id DESC) WHERE state = 'failed';
