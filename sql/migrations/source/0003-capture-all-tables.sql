-- Migration source/0003: whether trigger capture takes every table, those created later included
-- (the source's config names no tables and excludes none: what FOR ALL TABLES is to WAL capture).
-- Set by each start-up (capture/trigger/install.ts); read by the event trigger
-- pgferry_capture_new_tables (sql/migrations/schema-capture/0002), which puts the capture triggers
-- on a table in the transaction that creates it.
ALTER TABLE pgferry.capture_state ADD COLUMN IF NOT EXISTS all_tables boolean NOT NULL DEFAULT false;
