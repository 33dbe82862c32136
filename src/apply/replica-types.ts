/**
 * The replica's column types (base names, no typmod), per connection and
 * table, for the statements apply prepares. A named statement is prepared
 * once per connection with the parameter types of the replica's columns at
 * that moment, so its name carries the connection's type generation: once a
 * table's types changed (ALTER COLUMN … TYPE on the replica), every
 * statement is prepared anew.
 */
import type pg from 'pg';
import { relKey, type RelationInfo } from '../change';

type Types = Map<string, string>;

// Without a typmod `character` and `bit` would mean length 1: cast to bpchar and varbit instead,
// and let the column's own typmod check the value, as a one-row statement would.
const TYPES_SQL = `SELECT a.attname,
        CASE a.atttypid WHEN 'bpchar'::regtype THEN 'pg_catalog.bpchar' WHEN '_bpchar'::regtype THEN 'pg_catalog.bpchar[]'
                        WHEN 'bit'::regtype THEN 'pg_catalog.varbit' WHEN '_bit'::regtype THEN 'pg_catalog.varbit[]'
                        ELSE pg_catalog.format_type(a.atttypid, NULL) END AS t
 FROM pg_catalog.pg_attribute a
 WHERE a.attrelid = (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)
   AND a.attnum > 0 AND NOT a.attisdropped`;

const perConnection = new WeakMap<pg.ClientBase, ReplicaTypes>();

export class ReplicaTypes {
  private current = new Map<string, Types>();
  /** The types loaded before the last refresh, to tell whether the replica's tables changed since. */
  private readonly previous = new Map<string, Types>();
  /** How many times a replica table's column types were seen to change on this connection. */
  private generation = 0;

  private constructor(private readonly c: pg.ClientBase) {}

  /** The cache of a connection (pooled connections keep theirs across batches). */
  static of(c: pg.ClientBase): ReplicaTypes {
    let t = perConnection.get(c);
    if (!t) perConnection.set(c, (t = new ReplicaTypes(c)));
    return t;
  }

  /** Read the types again as they are needed (apply calls this at the start of every batch). */
  refresh(): void {
    if (!this.current.size) return;
    for (const [k, v] of this.current) this.previous.set(k, v);
    this.current = new Map();
  }

  /** `key` is the relation's key in the change log (relKey), which changes already carry. */
  async get(rel: RelationInfo, key = relKey(rel.schema, rel.table)): Promise<Types> {
    let types = this.current.get(key);
    if (types) return types;
    const { rows } = await this.c.query(TYPES_SQL, [rel.schema, rel.table]);
    types = new Map(rows.map((r) => [r.attname as string, r.t as string]));
    this.current.set(key, types);
    const before = this.previous.get(key);
    if (before && !sameTypes(before, types)) this.generation += 1;
    this.previous.set(key, types);
    return types;
  }

  /** Forget a table's types (after a refusal: the table may have been altered). */
  forget(rel: { schema: string; table: string }): void {
    this.current.delete(relKey(rel.schema, rel.table));
  }

  /** A statement as this connection runs it: named statements carry the type generation they were prepared in. */
  async prepared<S extends { name: string }>(rel: RelationInfo, st: S): Promise<S> {
    if (!st.name) return st;
    await this.get(rel);
    return this.generation ? { ...st, name: `${st.name}_g${this.generation}` } : st;
  }
}

function sameTypes(a: Types, b: Types): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}
