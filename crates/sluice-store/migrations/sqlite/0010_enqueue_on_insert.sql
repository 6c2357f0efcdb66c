-- A new pending event enters the queue in the statement that inserts it, as the upsert's
-- CTE does on PostgreSQL: an ingest batch is then one statement, committed on its own, with
-- no transaction round trips on the one writer. The upsert's update path (a duplicate) fires
-- no INSERT trigger: a pending event is queued already, a settled one stays settled.
CREATE TRIGGER events_enqueued_on_insert AFTER INSERT ON events
WHEN NEW.state = 'pending'
BEGIN
    INSERT INTO event_queue (event_id, type, ordering_key, next_attempt_at)
    VALUES (NEW.id, NEW.type, NEW.ordering_key, NEW.next_attempt_at);
END;
