/**
 * `pgferry replica sync-sequences`: logical replication carries rows, not
 * sequence positions, so on cut-over day each replica sequence is raised to
 * at least the source's value (never lowered: a replica that already handed
 * out higher values keeps them). Sequences the replica lacks are listed.
 */
import type pg from 'pg';
import { relLabel } from '../change';
import { qualified } from '../pg';

export interface SequenceSync {
  sequence: string;
  source: string | null;
  replica: string | null;
  missing: boolean;
}

/** Every user sequence with its current value (NULL: never used). Run on the source. */
const SEQUENCES = `
SELECT schemaname AS schema_name, sequencename AS sequence_name, last_value::text AS last_value
FROM pg_catalog.pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgferry')
ORDER BY 1, 2`;

/**
 * Move a sequence up to at least $2 (never down); returns the value it now has.
 * $1 is the sequence's quoted, qualified name. Run on the replica.
 */
const SEQUENCE_RAISE = `
SELECT pg_catalog.setval($1::regclass, greatest($2::bigint, coalesce(s.last_value, $2::bigint)), true)::text AS value
FROM pg_catalog.pg_sequences s
WHERE s.schemaname = $3 AND s.sequencename = $4`;

export async function syncSequences(source: pg.ClientBase, replica: pg.ClientBase): Promise<SequenceSync[]> {
  const { rows } = await source.query<{ schema_name: string; sequence_name: string; last_value: string | null }>(SEQUENCES);
  const out: SequenceSync[] = [];
  for (const r of rows) {
    const name = relLabel({ schema: r.schema_name, table: r.sequence_name });
    const exists = (await replica.query('SELECT to_regclass($1) IS NOT NULL AS e', [qualified(r.schema_name, r.sequence_name)])).rows[0].e;
    if (exists !== 't' && exists !== true) {
      out.push({ sequence: name, source: r.last_value, replica: null, missing: true });
      continue;
    }
    if (r.last_value === null) {
      out.push({ sequence: name, source: null, replica: null, missing: false }); // never used on the source: nothing to carry
      continue;
    }
    const set = await replica.query<{ value: string }>(SEQUENCE_RAISE, [qualified(r.schema_name, r.sequence_name), r.last_value, r.schema_name, r.sequence_name]);
    out.push({ sequence: name, source: r.last_value, replica: set.rows[0]?.value ?? null, missing: false });
  }
  return out;
}
