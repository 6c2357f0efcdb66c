-- When the current attempt was claimed. On PostgreSQL a claim writes no attempt row and a
-- running attempt is read from the lease; SQLite still writes the row at claim (its one
-- writer makes the extra row cheap next to the commit), and records the time the same way.
ALTER TABLE events ADD COLUMN claimed_at INTEGER;
