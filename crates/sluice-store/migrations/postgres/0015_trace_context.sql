-- The W3C `traceparent` of the span that ingested an event, when traces are exported: the
-- worker that claims it continues that trace. NULL when traces were off.
ALTER TABLE events ADD COLUMN trace_context TEXT;
