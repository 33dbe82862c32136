/**
 * `pgferry replica sync-sequences`: logical replication carries rows, not
 * sequence positions, so on cut-over day each replica sequence is raised to
 * at least the source's value (never lowered: a replica that already handed
 * out higher values keeps them). Sequences the replica lacks are listed.
 */
import type pg from 'pg';
import { relLabel } from '../change';
import { qualified } from '../pg';
import { loadSql } from '../sql';

export interface SequenceSync {
  sequence: string;
  source: string | null;
  replica: string | null;
  missing: boolean;
}

export async function syncSequences(source: pg.ClientBase, replica: pg.ClientBase): Promise<SequenceSync[]> {
  const { rows } = await source.query(loadSql('source/sequences.sql'));
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
    const set = await replica.query(loadSql('target/sequence-raise.sql'), [qualified(r.schema_name, r.sequence_name), r.last_value, r.schema_name, r.sequence_name]);
    out.push({ sequence: name, source: r.last_value, replica: set.rows[0]?.value ?? null, missing: false });
  }
  return out;
}
