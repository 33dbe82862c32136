-- Migration target/0001: pgferry's bookkeeping on a replica database.
-- Written to be idempotent, as the schema.sql it replaces was re-run at every
-- start: a replica set up before migrations existed takes it as a no-op.
--
-- progress holds, per replica name, the commit position of the last source
-- transaction applied and the stream offset after it. It is written in the
-- same transaction as the data it describes: it is the truth about what the
-- replica holds.
CREATE TABLE IF NOT EXISTS pgferry.progress (
  replica        text        PRIMARY KEY,
  source         text        NOT NULL,
  lsn            pg_lsn      NOT NULL DEFAULT '0/0',
  stream_offset  bigint,
  txns_applied   bigint      NOT NULL DEFAULT 0,
  changes_applied bigint     NOT NULL DEFAULT 0,
  last_commit_time timestamptz,
  updated_at     timestamptz NOT NULL DEFAULT now()
);
-- The source history lsn belongs to (see src/changelog/protocol.ts); null until known.
-- (Checked first: ALTER TABLE would lock the table even when the column is there.)
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'pgferry.progress'::regclass AND attname = 'history' AND NOT attisdropped) THEN
    ALTER TABLE pgferry.progress ADD COLUMN history text;
  END IF;
END
$$;

-- A snapshot copy in progress (replica add --snapshot): written once the
-- replica's tables were found empty, removed with the progress row's
-- creation. A retried copy empties the tables again only if this is here.
CREATE TABLE IF NOT EXISTS pgferry.snapshot_claims (
  replica    text        PRIMARY KEY,
  claimed_at timestamptz NOT NULL DEFAULT now()
);

-- Many small apply statements in one round trip. Each statement is SQL that
-- pgferry built (every identifier escaped) and reads its values only as
-- $1[1], $1[2], … cast to the replica's column types: statement i gets
-- counts[i] values from vals, in order. Values stay bound parameters and are
-- never spliced into SQL text. Runs with the caller's rights.
CREATE OR REPLACE FUNCTION pgferry.apply_statements(statements text[], counts int[], vals text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  o int := 0;
BEGIN
  FOR i IN 1 .. coalesce(array_length(statements, 1), 0) LOOP
    EXECUTE statements[i] USING vals[o + 1 : o + counts[i]];
    o := o + counts[i];
  END LOOP;
END
$fn$;
