-- The hot path. A claim no longer writes an attempt row: it takes the attempt's id from the
-- sequence and leases the event; the attempt is written once, when it ends (or when its
-- lease is given back), in the same statement as the event's move. A claimed event shows its
-- running attempt from the lease itself (claimed_at, leased_by, current_attempt_id).
--
-- History rows carry no foreign keys: only the store writes them, always after the event
-- and rule versions they name exist, and a key check here cost more than the insert itself
-- (each one locked the referenced event row). A `started` execution now names an attempt
-- whose row is written later.
ALTER TABLE events ADD COLUMN claimed_at TIMESTAMPTZ;
ALTER TABLE event_attempts DROP CONSTRAINT IF EXISTS event_attempts_event_id_fkey;
ALTER TABLE rule_executions DROP CONSTRAINT IF EXISTS rule_executions_attempt_id_fkey;
ALTER TABLE rule_executions DROP CONSTRAINT IF EXISTS rule_executions_event_id_fkey;
ALTER TABLE rule_executions DROP CONSTRAINT IF EXISTS rule_executions_rule_id_fkey;
ALTER TABLE rule_executions DROP CONSTRAINT IF EXISTS rule_executions_rule_version_id_fkey;
