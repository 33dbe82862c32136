-- Migration target/0002: which tables a replica takes, and since when.
--
-- replica_tables is the replica's own record of the tables it applies
-- (src/apply/table-registry.ts owns it). A running pipeline reads it at
-- every batch, inside the batch's transaction, so `pgferry table add` and
-- `pgferry table remove` change what a replica applies at a batch boundary
-- without restarting anything. A table's changes are applied only from
-- transactions after from_lsn (the snapshot that brought its rows), and:
--   ready    applied;
--   copying  joining: its snapshot is being copied, and its changes after
--            from_lsn are kept in table_pending, in the batch's transaction,
--            to be replayed when the copy is swapped in;
--   removed  no longer applied (its rows stay on the replica).
-- A replica with no rows here has not been prepared by this version yet.
CREATE TABLE IF NOT EXISTS pgferry.replica_tables (
  replica     text        NOT NULL,
  schema_name text        NOT NULL,
  table_name  text        NOT NULL,
  state       text        NOT NULL CHECK (state IN ('ready', 'copying', 'removed')),
  from_lsn    pg_lsn      NOT NULL DEFAULT '0/0',
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (replica, schema_name, table_name)
);

-- The changes of a joining table that arrived while its snapshot was being
-- copied: one row per chunk of a source transaction (only that table's
-- changes, in the change log's own encoding), in the order applied.
CREATE TABLE IF NOT EXISTS pgferry.table_pending (
  replica     text   NOT NULL,
  schema_name text   NOT NULL,
  table_name  text   NOT NULL,
  seq         bigserial,
  lsn         pg_lsn NOT NULL,
  message     bytea  NOT NULL,
  PRIMARY KEY (replica, schema_name, table_name, seq)
);
