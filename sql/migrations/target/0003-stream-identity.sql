-- Migration target/0003: the identity of the stream a replica's position is in.
--
-- A RabbitMQ stream deleted and re-created under the same name (an operator's
-- delete_queue, a broker re-created without its data) starts its offsets at 0
-- again: a stored stream_offset says nothing about it. Every message carries
-- its stream's identity (src/changelog/stream.ts); the replica keeps the one
-- its offset belongs to and stops in needs_resync when the stream shows
-- another (src/changelog/protocol.ts). Null: not known yet (a position stored
-- by an older pgferry), taken from the stream once it is proved to be the
-- same one.
-- (Checked first: ALTER TABLE would lock the table even when the column is there.)
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'pgferry.progress'::regclass AND attname = 'stream_id' AND NOT attisdropped) THEN
    ALTER TABLE pgferry.progress ADD COLUMN stream_id text;
  END IF;
END
$$;
