-- Migration source/0002: the schema changes queued in pgferry.events (op 'S', written by the event
-- trigger of sql/migrations/schema-capture), found per table without reading the whole queue: trigger
-- capture looks up each table's first pending one once per batch (capture/trigger/events.ts).
CREATE INDEX IF NOT EXISTS events_schema_changes ON pgferry.events (rel_oid, ev_id) WHERE op = 'S';
