import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyTables } from '../../src/snapshot/copy';
import { SourceError } from '../../src/errors';
import { PgCluster } from '../helpers/pg-cluster';

/**
 * A snapshot copy whose exported snapshot is gone (the session that
 * exported it ended: a source restart, a terminated connection) fails
 * naming the cause and the fix, not with PostgreSQL's bare "invalid
 * snapshot identifier".
 */
describe('snapshot copy', () => {
  let cluster: PgCluster;
  let sourceUrl: string;
  let replicaUrl: string;

  beforeAll(async () => {
    cluster = await PgCluster.start();
    sourceUrl = await cluster.createDatabase('src');
    replicaUrl = await cluster.createDatabase('dst');
    for (const db of ['src', 'dst']) await cluster.withClient(db, (c) => c.query('CREATE TABLE t (id int PRIMARY KEY)'));
    await cluster.withClient('src', (c) => c.query('INSERT INTO t SELECT generate_series(1, 10)'));
  });

  afterAll(async () => {
    cluster?.destroy();
  });

  it('says the snapshot is gone, why, and to run the command again, when the exporting session ended', async () => {
    const exporter = new pg.Client({ connectionString: sourceUrl });
    await exporter.connect();
    await exporter.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    const name = (await exporter.query('SELECT pg_export_snapshot() AS s')).rows[0].s as string;
    await exporter.end(); // the exporting session ends: the snapshot with it
    const copying = copyTables({
      sourceUrl,
      replicaUrl,
      source: 'shop',
      replica: 'r',
      snapshot: name,
      tables: [{ schema: 'public', table: 't', columns: [{ name: 'id', type: 'integer' }] }],
      parallel: 1,
    });
    await expect(copying).rejects.toBeInstanceOf(SourceError);
    await expect(copying).rejects.toThrow(
      new RegExp(`^source 'shop': the snapshot the copy reads from \\(${name}\\) is gone before public\\.t was copied: the session that exported it ended .*run the command again, which starts the copy over$`),
    );
    expect((await cluster.withClient('dst', (c) => c.query('SELECT count(*)::int AS n FROM t'))).rows[0].n).toBe(0);
  });
});
