-- Rate limits per target. `max_per_second` overrides the process default (NULL: the default;
-- 0: no limit). Every worker process takes its send times from `pace_next_us`, the next free
-- one, by moving it forward in one atomic UPDATE; it is microseconds since the epoch (an
-- integer) so both backends do that arithmetic the same way. A receiver's 429 pushes it past
-- its Retry-After and raises `slowdown` (the limit is divided by it), which decays from
-- `throttled_at` on.
ALTER TABLE targets ADD COLUMN max_per_second DOUBLE PRECISION;
ALTER TABLE targets ADD COLUMN pace_next_us BIGINT;
ALTER TABLE targets ADD COLUMN slowdown DOUBLE PRECISION NOT NULL DEFAULT 1;
ALTER TABLE targets ADD COLUMN throttled_at TIMESTAMPTZ;
