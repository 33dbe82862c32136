-- Migration source/0001: trigger capture, for sources without wal_level=logical.
-- Idempotent, as the install.sql it replaces was re-run at every start: a
-- source installed before migrations existed takes it as a no-op.
--
-- Row triggers append every change to pgferry.events, in the writing
-- transaction (so a change and its event commit or vanish together). Values
-- are the row's own text form (OLD::text / NEW::text), printed with pinned
-- settings so every session writes the same text. A statement trigger sends
-- a NOTIFY, only to wake capture up: capture also polls, and loses nothing
-- while it is away.
--
-- Order: capture records ticks (pg_current_snapshot()); a batch is the set of
-- transactions that became visible between two consecutive ticks, and within
-- a batch transactions are ordered by their last event. Events are deleted
-- once RabbitMQ has confirmed them, with the tick they end at.
CREATE SCHEMA IF NOT EXISTS pgferry;

CREATE TABLE IF NOT EXISTS pgferry.events (
  ev_id      bigserial   PRIMARY KEY,
  txid       xid8        NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
  op         "char"      NOT NULL,            -- I, U, D, T
  rel_schema text        NOT NULL,
  rel_table  text        NOT NULL,
  old_row    text,
  new_row    text,
  at         timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
CREATE INDEX IF NOT EXISTS events_txid ON pgferry.events (txid);
-- What an event needs to be read right later, whatever DDL came in between:
-- rel_oid, the captured (root) table, so a rename is followed and a drop is
-- noticed; shape, the columns its row text holds, in order (by attnum of the
-- table the row trigger fired on, and by name as they were then), so a
-- column dropped and another added never shifts values.
ALTER TABLE pgferry.events ADD COLUMN IF NOT EXISTS rel_oid oid;
ALTER TABLE pgferry.events ADD COLUMN IF NOT EXISTS shape int;

CREATE TABLE IF NOT EXISTS pgferry.shapes (
  shape_id serial PRIMARY KEY,
  relid    oid    NOT NULL,   -- the table the row trigger fired on (a partition, for partitioned tables)
  nums     int2[] NOT NULL,   -- attnums of its columns as NEW::text prints them
  cols     text[] NOT NULL    -- their names then
);
-- Not unique on purpose: a writer never waits for another transaction's
-- uncommitted shape row (two may record the same shape; either will do).
CREATE INDEX IF NOT EXISTS shapes_relid ON pgferry.shapes (relid);

CREATE TABLE IF NOT EXISTS pgferry.ticks (
  tick_id bigserial    PRIMARY KEY,
  snap    pg_snapshot  NOT NULL,
  at      timestamptz  NOT NULL DEFAULT now()
);

-- The last tick whose batch RabbitMQ has confirmed, per pgferry source name,
-- and the id of this install (the source history its positions belong to:
-- installed anew, ticks start again and consumers must not compare them).
CREATE TABLE IF NOT EXISTS pgferry.capture_state (
  source    text   PRIMARY KEY,
  last_tick bigint NOT NULL
);
ALTER TABLE pgferry.capture_state ADD COLUMN IF NOT EXISTS incarnation text NOT NULL DEFAULT pg_catalog.gen_random_uuid()::text;

-- The capture triggers run with the rights of pgferry's role (SECURITY
-- DEFINER), not of whoever writes the table: applications keep writing their
-- tables with the privileges they had, and get none on the change log (with
-- SECURITY INVOKER every non-superuser writer failed with "permission denied
-- for schema pgferry"; found by test/e2e/least-privilege.test.ts). No one
-- else may attach these functions to a table (REVOKE below): that would let
-- them write changes for every replica.
CREATE OR REPLACE FUNCTION pgferry.capture_row() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' SET extra_float_digits = 3 SET lc_monetary = 'C' SET bytea_output = 'hex'
AS $$
DECLARE
  cached text := current_setting('pgferry.shape_' || TG_RELID, true);
  sid int;
  n int2[];
  c text[];
BEGIN
  -- The row's shape, looked up once per transaction and table (a transaction-local setting).
  IF cached IS NULL OR cached = '' THEN
    SELECT array_agg(a.attnum ORDER BY a.attnum), array_agg(a.attname::text ORDER BY a.attnum) INTO n, c
      FROM pg_catalog.pg_attribute a WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT s.shape_id INTO sid FROM pgferry.shapes s WHERE s.relid = TG_RELID AND s.nums = n AND s.cols = c LIMIT 1;
    IF sid IS NULL THEN
      INSERT INTO pgferry.shapes (relid, nums, cols) VALUES (TG_RELID, n, c) RETURNING shape_id INTO sid;
    END IF;
    PERFORM pg_catalog.set_config('pgferry.shape_' || TG_RELID, sid::text, true);
  ELSE
    sid := cached::int;
  END IF;
  -- TG_ARGV: the published table (a partition's root), not the partition the row landed in; its oid.
  INSERT INTO pgferry.events (op, rel_schema, rel_table, rel_oid, shape, old_row, new_row)
  VALUES (left(TG_OP, 1), TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]::oid, sid,
          CASE WHEN TG_OP <> 'INSERT' THEN OLD::text END,
          CASE WHEN TG_OP <> 'DELETE' THEN NEW::text END);
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgferry.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO pgferry.events (op, rel_schema, rel_table, rel_oid) VALUES ('T', TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]::oid);
  RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION pgferry.capture_row(), pgferry.capture_truncate() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgferry.wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_catalog.pg_notify('pgferry', '');  -- delivered at commit, once per transaction
  RETURN NULL;
END
$$;
