import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import type { Proc } from '../helpers/procs';
import { cli, contentOf, createWorld, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';

/**
 * Gaps are loud: with a tiny stream retention, a replica paused long enough
 * for RabbitMQ to remove what it has not consumed goes to `needs_resync`
 * with the reason when resumed — it never skips ahead — and `replica
 * resync` rebuilds it while readers keep seeing whole tables.
 */
const SCHEMA = `CREATE TABLE events (id int PRIMARY KEY, payload text)`;
const RETENTION = { PGFERRY_STREAM_MAX_BYTES: '30000', PGFERRY_STREAM_SEGMENT_BYTES: '10000' };

describe('a retention gap', () => {
  let w: World;
  let up: Proc;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['b'], schema: SCHEMA });
    Object.assign(w.env, RETENTION); // the stream is created with this retention
    up = await startUp(w, upArgs(w));
  });

  afterAll(async () => {
    await up?.stop();
    await w?.teardown();
  });

  const status = async (name: string) => {
    const r = await cli(w, ['replica', 'status', name, '--json']);
    return { code: r.code, v: JSON.parse(r.stdout) };
  };

  it('puts a long-paused replica in needs_resync with the reason, applying nothing past the gap', async () => {
    await w.source.withClient('app', (c) => c.query(`INSERT INTO events VALUES (0, 'first')`));
    await waitForEqual(w, 'b', ['events']);

    expect((await cli(w, ['replica', 'pause', 'b'])).code).toBe(0);
    await waitFor('b to be paused', async () => (await status('b')).v.state === 'paused');
    const consumed: number = (await status('b')).v.offset;

    // ~150 kB of changes through a 30 kB stream: RabbitMQ removes the oldest segments.
    await w.source.withClient('app', async (c) => {
      for (let i = 1; i <= 200; i++) await c.query('INSERT INTO events VALUES ($1, repeat($2, 400))', [i, 'x']);
    });
    const range = await waitFor('retention to remove what b consumed last', async () => {
      const r = await cli(w, ['capture', 'status', '--json']);
      const v = JSON.parse(r.stdout);
      return v.retained?.first && v.retained.first.offset > consumed ? v.retained : null;
    });
    expect(range.last.offset).toBeGreaterThan(range.first.offset);
    const human = await cli(w, ['capture', 'status']);
    // Retention may have removed another segment since (it runs on its own clock): the first offset shown is at least that one.
    const shown = new RegExp(`RETAINED OFFSETS[^\\n]*\\n.*?(\\d+)–\\d+ \\(`).exec(human.stdout);
    expect(shown, human.stdout).not.toBeNull();
    expect(Number(shown![1])).toBeGreaterThanOrEqual(range.first.offset);

    expect((await cli(w, ['replica', 'resume', 'b'])).code).toBe(0);
    const stopped = await waitFor('b to need a resync', async () => {
      const s = await status('b');
      return s.v.state === 'needs_resync' ? s : null;
    });
    expect(stopped.code).toBe(1);
    expect(stopped.v.lastError).toMatch(
      new RegExp(
        `^replica 'b': the stream of source '${w.sourceName}' no longer holds offset ${consumed}, the last this replica consumed ` +
          `\\(the first retained is \\d+\\): retention removed changes this replica may not have applied; run pgferry replica resync b`,
      ),
    );
    // Nothing after the gap was applied: b still holds exactly what it had.
    expect((await contentOf(w.replicas, 'replica_b', ['events'])).events).toEqual(['(0,first)']);
    expect((await status('b')).v.offset).toBe(consumed);
  });

  it('replica resync rebuilds it from a snapshot, readers seeing the old or the new table whole, then it runs again', async () => {
    const reader = new pg.Client({ connectionString: w.replicaUrls.b });
    await reader.connect();
    const seen = new Set<string>();
    let stop = false;
    const poll = (async () => {
      while (!stop) {
        seen.add((await reader.query('SELECT count(*)::text AS n FROM events')).rows[0].n);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    let r;
    try {
      r = await cli(w, ['replica', 'resync', 'b', '--source', w.sourceUrl, '--replica', `b=${w.replicaUrls.b}`]);
    } finally {
      stop = true;
      await poll;
      await reader.end();
    }
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/replica 'b': rebuilt with 201 rows as of source position \S+/);
    expect(r.stdout).toContain(`replica 'b': resumed; it catches up from the stream`);
    expect([...seen].sort()).toEqual(['1', '201']); // never empty, never half
    await waitFor('b to run again', async () => (await status('b')).v.state === 'running');
    await w.source.withClient('app', (c) => c.query(`UPDATE events SET payload = 'after' WHERE id = 7`));
    await waitForEqual(w, 'b', ['events']);
  });

  it('a lost slot is never papered over: up marks the gap, the replica stops in needs_resync, resync repairs it', async () => {
    await up.stop();
    await w.source.withClient('app', async (c) => {
      await c.query(`SELECT pg_drop_replication_slot($1)`, [`pgferry_${w.sourceName}`]);
      await c.query(`INSERT INTO events VALUES (500, 'while no slot existed')`); // never captured
    });
    up = await startUp(w, upArgs(w));
    expect(up.output()).toMatch(
      new RegExp(`WARNING the replication slot pgferry_${w.sourceName} of source '${w.sourceName}' was lost and created anew at \\S+: changes made in between are not in the log; every replica will stop in state needs_resync`),
    );
    await w.source.withClient('app', (c) => c.query(`INSERT INTO events VALUES (501, 'after')`));
    const stopped = await waitFor('b to need a resync', async () => {
      const s = await status('b');
      return s.v.state === 'needs_resync' ? s.v : null;
    });
    expect(stopped.lastError).toMatch(new RegExp(`^replica 'b': the replication slot pgferry_${w.sourceName} of source '${w.sourceName}' was lost and created anew`));
    expect((await contentOf(w.replicas, 'replica_b', ['events'])).events).not.toContain('(500,"while no slot existed")');

    const r = await cli(w, ['replica', 'resync', 'b', '--source', w.sourceUrl, '--replica', `b=${w.replicaUrls.b}`]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await waitForEqual(w, 'b', ['events']);
    expect((await contentOf(w.replicas, 'replica_b', ['events'])).events).toContain('(500,"while no slot existed")');
  });
});
