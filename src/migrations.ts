/**
 * Installable DDL, versioned: what pgferry installs in a database lives in
 * numbered files under sql/migrations/<kind>/ (`target`: a replica's
 * bookkeeping; `source`: trigger capture), applied in order, each once,
 * recorded in pgferry.migrations of that database — as graphile-worker does
 * with its migrations. A change to installed DDL is a new file, never an
 * edit of a released one. Queries are not migrations: they are typed
 * functions next to the code that owns them.
 *
 * Migrations run under an advisory lock in one transaction, so two workers
 * preparing the same database at once apply each migration once.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type pg from 'pg';
import { loadSql, sqlDir } from './sql';

/** `schema-capture`: the event trigger of WAL capture (capture/wal/schema-capture.ts). */
export type MigrationKind = 'source' | 'target' | 'schema-capture';

/** pg_advisory_xact_lock key serializing migrations of one database. */
const MIGRATE_LOCK = 7_364_203;

// CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists, so it is
// only run when it does not: a least-privileged replica role, given a pgferry schema of its own by
// the DBA and no CREATE on the database, gets past this (found by test/e2e/least-privilege.test.ts).
const BOOTSTRAP = `
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgferry') THEN
    CREATE SCHEMA IF NOT EXISTS pgferry;
  END IF;
END
$$;
CREATE TABLE IF NOT EXISTS pgferry.migrations (
  name       text        PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now()
);`;

/** The migrations of a kind, in the order they apply: `target/0001-bookkeeping`, … */
export function migrationNames(kind: MigrationKind): string[] {
  return fs
    .readdirSync(path.join(sqlDir(), 'migrations', kind))
    .filter((f) => /^\d{4}-[a-z0-9-]+\.sql$/.test(f))
    .sort()
    .map((f) => `${kind}/${f.replace(/\.sql$/, '')}`);
}

/**
 * Apply the migrations of `kind` this database lacks; returns their names.
 * `inTransaction`: the caller has a transaction open and commits it (trigger
 * install does, with its triggers); otherwise this runs its own.
 */
export async function migrate(c: pg.ClientBase, kind: MigrationKind, o: { inTransaction?: boolean } = {}): Promise<string[]> {
  if (!o.inTransaction) await c.query('BEGIN');
  try {
    await c.query(`SELECT pg_catalog.pg_advisory_xact_lock(${MIGRATE_LOCK})`);
    await c.query(BOOTSTRAP);
    const done = new Set((await c.query('SELECT name FROM pgferry.migrations')).rows.map((r) => r.name as string));
    const applied: string[] = [];
    for (const name of migrationNames(kind)) {
      if (done.has(name)) continue;
      await c.query(loadSql(`migrations/${name}.sql`));
      await c.query('INSERT INTO pgferry.migrations (name) VALUES ($1)', [name]);
      applied.push(name);
    }
    if (!o.inTransaction) await c.query('COMMIT');
    return applied;
  } catch (err) {
    if (!o.inTransaction) await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
