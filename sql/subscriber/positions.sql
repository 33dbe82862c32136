-- Positions of application subscribers, in a table of the application's
-- choosing (%TABLE% is replaced by its escaped, schema-qualified name).
-- One row per subscriber name: the last source transaction it finished
-- (commit LSN) and the stream offset of that transaction's last message.
-- Written after each handled transaction, or in the handler's own
-- transaction when the subscriber is transactional. Idempotent.
CREATE TABLE IF NOT EXISTS %TABLE% (
  subscriber    text        PRIMARY KEY,
  source        text        NOT NULL,
  lsn           pg_lsn      NOT NULL,
  stream_offset bigint,
  txns          bigint      NOT NULL DEFAULT 0,
  changes       bigint      NOT NULL DEFAULT 0,
  updated_at    timestamptz NOT NULL DEFAULT now()
)
