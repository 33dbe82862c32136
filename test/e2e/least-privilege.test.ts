import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import type { Proc } from '../helpers/procs';
import { Client, Connection } from '@temporalio/client';
import { cli, contentOf, createWorld, deleteStream, RABBIT_URL, startUp, upArgs, waitForEqual, World } from '../helpers/fixture';
import { createRabbitUser, RabbitUser, requirePasswords, secret, urlWith } from '../helpers/security';
import { waitFor } from '../helpers/wait';

/**
 * pgferry with least-privileged roles instead of superusers (the README's
 * "Least privileges" section lists these same statements):
 * - source: a role with only LOGIN REPLICATION and SELECT on the replicated
 *   tables (USAGE on their schema); the DBA created the publication;
 * - replica: a role with only SELECT, INSERT, UPDATE, DELETE, TRUNCATE on
 *   its tables (USAGE on their schema) and a `pgferry` schema it owns;
 * - RabbitMQ: a user allowed only the source's stream;
 * all with passwords checked by the servers. The WAL spine runs end to end
 * (inserts one by one, grouped and by COPY, updates of the key too, deletes,
 * TRUNCATE, an identity column), with the idle heartbeat, status, verify
 * and a second replica filled by `replica add --snapshot`.
 */
const SCHEMA = `
  CREATE SCHEMA sales;
  CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
  CREATE TABLE sales.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, customer_id int NOT NULL, amount numeric(12,2), note text);
  CREATE TABLE sales.lines (order_id bigint, sku text, qty int, PRIMARY KEY (order_id, sku));
  CREATE TABLE not_replicated (id int PRIMARY KEY);
`;
const TABLES = ['customers', 'sales.orders', 'sales.lines'];
/**
 * Trigger mode only: two tables with the same number of columns in another
 * order (a row of one read with the other's shape would put `note` into
 * `is_admin`).
 */
const APP_SCHEMA = `
  CREATE TABLE profiles (id int PRIMARY KEY, note text, is_admin boolean NOT NULL DEFAULT false);
  CREATE TABLE flags (id int PRIMARY KEY, is_admin boolean, note text);
`;
const APP_TABLES = ['profiles', 'flags'];
const TABLE_LIST = 'public.customers, sales.orders, sales.lines';

/** What the DBA runs on the source (as a superuser), before pgferry. */
const sourceGrants = (source: string, password: string) => `
  CREATE ROLE pgferry_capture LOGIN REPLICATION PASSWORD ${pg.escapeLiteral(password)};
  GRANT USAGE ON SCHEMA sales TO pgferry_capture;
  GRANT SELECT ON ${TABLE_LIST} TO pgferry_capture;
  CREATE PUBLICATION pgferry_${source} FOR TABLE ${TABLE_LIST} WITH (publish_via_partition_root = true);
`;
/** What the DBA runs in each replica database (the role itself once per cluster). */
const replicaGrants = `
  GRANT USAGE ON SCHEMA sales TO pgferry_apply;
  GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ${TABLE_LIST} TO pgferry_apply;
  CREATE SCHEMA pgferry AUTHORIZATION pgferry_apply;
`;

describe('least-privileged roles', () => {
  let w: World;
  let up: Proc;
  let rabbit: RabbitUser | null = null;
  let bUrl: string;
  const pw = { capture: secret('capture'), apply: secret('apply'), rabbit: secret('mq'), trigger: secret('trigger'), app: secret('app'), notes: secret('notes') };
  let trigger: Proc | undefined;
  const triggerSource = `lptrg${Math.random().toString(36).slice(2, 8)}`;

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a'], schema: SCHEMA });
    await Promise.all([requirePasswords(w.source), requirePasswords(w.replicas)]);
    await w.source.withClient('app', (c) => c.query(sourceGrants(w.sourceName, pw.capture)));
    await w.replicas.withClient('postgres', (c) => c.query(`CREATE ROLE pgferry_apply LOGIN PASSWORD ${pg.escapeLiteral(pw.apply)}`));
    await w.replicas.withClient('replica_a', (c) => c.query(replicaGrants));
    await w.replicas.createDatabase('replica_b');
    await w.replicas.withClient('replica_b', (c) => c.query(SCHEMA + replicaGrants));
    rabbit = await createRabbitUser(`pgferry_lp_${w.sourceName}`, pw.rabbit, w.sourceName);
    if (!rabbit) console.log('rabbitmqctl is not usable here: RabbitMQ is reached with the default user');

    w.sourceUrl = urlWith(w.source, 'app', 'pgferry_capture', pw.capture);
    w.replicaUrls = { a: urlWith(w.replicas, 'replica_a', 'pgferry_apply', pw.apply) };
    bUrl = urlWith(w.replicas, 'replica_b', 'pgferry_apply', pw.apply);
    Object.assign(w.env, { PGFERRY_RABBITMQ_URL: rabbit?.url ?? RABBIT_URL, PGFERRY_SOURCE: w.sourceUrl, PGFERRY_REPLICAS: `a=${w.replicaUrls.a}` });

    // The roles really are that small.
    const attrs = await w.source.withClient('app', async (c) => (await c.query(`SELECT rolsuper, rolreplication, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = 'pgferry_capture'`)).rows[0]);
    expect(attrs).toEqual({ rolsuper: false, rolreplication: true, rolcreatedb: false, rolcreaterole: false });
    const applyCanCreate = await w.replicas.withClient('replica_a', async (c) => (await c.query(`SELECT has_database_privilege('pgferry_apply', 'replica_a', 'CREATE') AS c`)).rows[0].c);
    expect(applyCanCreate).toBe(false);

    // `init` with --tables checks the DBA's publication and creates the slot; then `up`, with the idle heartbeat every second.
    const init = await cli(w, ['init', '--source', w.sourceUrl, '--replica', `a=${w.replicaUrls.a}`, '--tables', TABLES.join(',')]);
    expect(init.code, init.stdout + init.stderr).toBe(0);
    up = await startUp(w, upArgs(w, ['--tables', TABLES.join(',')]), { PGFERRY_HEARTBEAT_SECONDS: '1' });
  });

  afterAll(async () => {
    await up?.stop();
    await trigger?.stop();
    await deleteStream(triggerSource).catch(() => undefined);
    await rabbit?.remove();
    await w?.teardown();
  });

  const src = (sql: string, values?: unknown[]) => w.source.withClient('app', (c) => c.query(sql, values));

  it('replicates inserts, updates, deletes and TRUNCATE with a REPLICATION + SELECT source role and a write-only replica role', async () => {
    await src(`INSERT INTO customers SELECT g, 'c' || g, 'c' || g || '@x' FROM generate_series(1, 30) g`); // one transaction: COPY
    for (let i = 1; i <= 20; i++) {
      await w.source.withClient('app', async (c) => {
        await c.query('BEGIN');
        const id = (await c.query(`INSERT INTO sales.orders (customer_id, amount, note) VALUES ($1, $2, $3) RETURNING id`, [i, `${i}.5`, `it's "${i}"`])).rows[0].id;
        await c.query(`INSERT INTO sales.lines VALUES ($1, 'a', 1), ($1, 'b', 2)`, [id]);
        await c.query(`UPDATE customers SET email = NULL WHERE id = $1`, [i]);
        await c.query('COMMIT');
      });
    }
    await src(`UPDATE customers SET id = 1000 WHERE id = 30`); // the key changes
    await src(`UPDATE sales.lines SET qty = qty + 10 WHERE sku = 'a'`);
    await src(`DELETE FROM sales.orders WHERE id % 4 = 0`);
    await src(`DELETE FROM customers WHERE id BETWEEN 25 AND 29`);
    await src(`INSERT INTO not_replicated VALUES (1)`);
    await waitForEqual(w, 'a', TABLES);
    await src(`TRUNCATE sales.lines`);
    await src(`INSERT INTO sales.lines VALUES (1, 'after', 1)`);
    await waitForEqual(w, 'a', TABLES);
    expect((await contentOf(w.replicas, 'replica_a', ['sales.lines']))['sales.lines']).toEqual(['(1,after,1)']);
  });

  it('status, the idle heartbeat and verify work with these roles', async () => {
    const status = await waitFor('status to show the capture and replica running', async () => {
      const r = await cli(w, ['status', '--json']);
      const v = JSON.parse(r.stdout);
      return r.code === 0 && v.sources?.[0]?.slot?.exists && v.replicas?.[0]?.state === 'running' ? v : null;
    }, 30_000);
    expect(status.sources[0].slot.active).toBe(true);
    // The heartbeat is written (a role without EXECUTE on pg_logical_emit_message would get a warning) and moves the slot.
    const before = status.sources[0].slot.confirmedLsn;
    await waitFor('the idle heartbeat to move the slot', async () => {
      const v = JSON.parse((await cli(w, ['status', '--json'])).stdout);
      return v.sources[0].slot.confirmedLsn !== before;
    }, 30_000, 1000);
    // Schema-change capture needs a superuser for its event trigger: said once, as a WARNING with the way to enable it.
    const lines = up.output().split('\n');
    expect(lines.filter((l) => /^WARNING .*schema changes are not captured: installing the event trigger pgferry_schema_changes needs a superuser/.test(l))).toHaveLength(1);
    expect(lines.filter((l) => !/schema changes are not captured/.test(l)).join('\n')).not.toMatch(/cannot write the idle heartbeat|permission denied|not allowed/);
    // A write-only replica role may not set session_replication_role: apply says so once, with the grant.
    expect(up.output()).toMatch(/replica 'a': apply runs with session_replication_role = origin, because role pgferry_apply may not set it: .*GRANT SET ON PARAMETER session_replication_role TO \\?"pgferry_apply\\?"/);
    const verify = await cli(w, ['verify', 'a', '--json']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(JSON.parse(verify.stdout).equal).toBe(true);
  });

  it('replica add --snapshot fills a second replica with the same roles', async () => {
    const add = await cli(w, ['replica', 'add', 'b', '--snapshot', '--source', w.sourceUrl, '--replica', `b=${bUrl}`]);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    // Nothing was written since: the copy equals the source.
    expect(await contentOf(w.replicas, 'replica_b', TABLES)).toEqual(await contentOf(w.source, 'app', TABLES));
  });

  it('trigger mode: a capture role with TRIGGER and SELECT on the tables and CREATE on the database; applications write as before', async () => {
    // One source per Temporal namespace at a time: the WAL source's process and workflows end first.
    await up.stop();
    const connection = await Connection.connect({ address: w.temporal.address });
    try {
      const client = new Client({ connection });
      for (const id of [`pgferry-capture-${w.sourceName}`, 'pgferry-replica-a']) await client.workflow.getHandle(id).terminate('next test');
    } finally {
      await connection.close();
    }
    await w.source.createDatabase('app_trg');
    await w.source.withClient('app_trg', (c) =>
      c.query(`${SCHEMA}
        CREATE ROLE pgferry_trigger LOGIN PASSWORD ${pg.escapeLiteral(pw.trigger)};
        GRANT CREATE ON DATABASE app_trg TO pgferry_trigger;
        GRANT USAGE ON SCHEMA sales TO pgferry_trigger;
        GRANT SELECT, TRIGGER ON ${TABLE_LIST} TO pgferry_trigger;
        -- the application: writes its tables, and nothing else
        CREATE ROLE app_writer LOGIN PASSWORD ${pg.escapeLiteral(pw.app)};
        GRANT USAGE ON SCHEMA sales TO app_writer;
        GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ${TABLE_LIST} TO app_writer;
        ${APP_SCHEMA}
        GRANT SELECT, TRIGGER ON ${APP_TABLES.join(', ')} TO pgferry_trigger;
        -- an application that may only add and edit notes
        CREATE ROLE app_notes LOGIN PASSWORD ${pg.escapeLiteral(pw.notes)};
        GRANT INSERT, UPDATE ON profiles TO app_notes;`),
    );
    await w.replicas.createDatabase('replica_ta');
    await w.replicas.withClient('replica_ta', (c) => c.query(SCHEMA + APP_SCHEMA + replicaGrants + `GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ${APP_TABLES.join(', ')} TO pgferry_apply;`));
    const sourceUrl = urlWith(w.source, 'app_trg', 'pgferry_trigger', pw.trigger);
    const replicaUrl = urlWith(w.replicas, 'replica_ta', 'pgferry_apply', pw.apply);
    trigger = await startUp(w, ['up', '--mode', 'trigger', '--source', sourceUrl, '--replica', `ta=${replicaUrl}`, '--tables', [...TABLES, ...APP_TABLES].join(',')], {
      PGFERRY_SOURCE_NAME: triggerSource,
      PGFERRY_SOURCE: sourceUrl,
      PGFERRY_REPLICAS: '',
      PGFERRY_RABBITMQ_URL: RABBIT_URL, // the RabbitMQ user above may use only the first source's stream
    });

    const appClient = new pg.Client({ connectionString: urlWith(w.source, 'app_trg', 'app_writer', pw.app) });
    await appClient.connect();
    try {
      await appClient.query(`INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 20) g`);
      await appClient.query(`INSERT INTO sales.orders (customer_id, amount) VALUES (1, 1.5), (2, 2.5)`);
      await appClient.query(`INSERT INTO sales.lines VALUES (1, 'a', 1), (2, 'b', 2)`);
      await appClient.query(`UPDATE customers SET id = 100 WHERE id = 20`);
      await appClient.query(`DELETE FROM customers WHERE id < 5`);
      await appClient.query(`TRUNCATE sales.lines`);
      await appClient.query(`INSERT INTO sales.lines VALUES (2, 'after', 3)`);
    } finally {
      await appClient.end();
    }
    await waitFor(
      'the trigger-mode replica to equal its source',
      async () => JSON.stringify(await contentOf(w.replicas, 'replica_ta', TABLES)) === JSON.stringify(await contentOf(w.source, 'app_trg', TABLES)),
      60_000,
      500,
    );
    expect((await contentOf(w.replicas, 'replica_ta', ['customers'])).customers).toHaveLength(16);
    // The application cannot write the change log itself (it could forge changes for every replica).
    const forged = new pg.Client({ connectionString: urlWith(w.source, 'app_trg', 'app_writer', pw.app) });
    await forged.connect();
    try {
      await expect(forged.query(`INSERT INTO pgferry.events (op, rel_schema, rel_table, new_row) VALUES ('I', 'public', 'customers', '(999,x,)')`)).rejects.toThrow(/permission denied/);
      // Nor attach pgferry's trigger functions to a table of its own to the same end.
      await forged.query('CREATE TEMP TABLE mine (id int)');
      await expect(forged.query(`CREATE TRIGGER t AFTER INSERT ON mine FOR EACH ROW EXECUTE FUNCTION pgferry.capture_row('public', 'customers')`)).rejects.toThrow(/permission denied/);
    } finally {
      await forged.end();
    }
  });
  /**
   * Issue 26, item 5: the row trigger used to cache each table's row shape in a transaction-local
   * setting (pgferry.shape_<table oid>), which any writer may set. Whatever an application sets,
   * capture records the row's real shape and keeps going.
   */
  describe('trigger mode: an application role cannot steer capture through settings', () => {
    const trg = (sql: string, values?: unknown[]) => w.source.withClient('app_trg', (c) => c.query(sql, values));
    /** Run statements as app_notes (INSERT and UPDATE on profiles, nothing else), in one transaction. */
    const asNotes = async (statements: [string, unknown[]?][]) => {
      const c = new pg.Client({ connectionString: urlWith(w.source, 'app_trg', 'app_notes', pw.notes) });
      await c.connect();
      try {
        await c.query('BEGIN');
        for (const [sql, values] of statements) await c.query(sql, values);
        await c.query('COMMIT');
      } finally {
        await c.end();
      }
    };
    const setShape = (value: string): [string, unknown[]] => [`SELECT pg_catalog.set_config('pgferry.shape_' || 'profiles'::regclass::oid, $1, true)`, [value]];
    /** The trigger-mode replica equals its source, every column of every row; on time-out, both sides. */
    const replicaEqualsSource = async (tables: string[]) => {
      try {
        await waitFor(
          'the trigger-mode replica to equal its source',
          async () => JSON.stringify(await contentOf(w.replicas, 'replica_ta', tables)) === JSON.stringify(await contentOf(w.source, 'app_trg', tables)),
          60_000,
          500,
        );
      } catch (err) {
        const [source, replica] = [await contentOf(w.source, 'app_trg', tables), await contentOf(w.replicas, 'replica_ta', tables)];
        throw new Error(`${(err as Error).message}\nsource:  ${JSON.stringify(source)}\nreplica: ${JSON.stringify(replica)}`);
      }
    };

    it('a setting pointing at another table\'s shape (same field count, other column order) changes nothing', async () => {
      await trg(`INSERT INTO flags VALUES (1, false, 'flags row')`);
      const flagsShape = (await trg(`SELECT max(shape_id)::text AS id FROM pgferry.shapes WHERE relid = 'flags'::regclass`)).rows[0].id;
      expect(flagsShape).not.toBeNull();
      await asNotes([setShape(flagsShape), [`INSERT INTO profiles (id, note) VALUES (1, 'yes')`], [`INSERT INTO profiles (id, note) VALUES (2, 'no')`]]);
      await asNotes([setShape(flagsShape), [`UPDATE profiles SET note = 'true'`]]);
      await asNotes([[`INSERT INTO profiles (id, note) VALUES (3, 'plain')`]]);
      await replicaEqualsSource(APP_TABLES);
      expect((await contentOf(w.replicas, 'replica_ta', ['profiles'])).profiles).toEqual(['(1,true,f)', '(2,true,f)', '(3,plain,f)']);
    });

    it('a setting naming a shape that does not exist does not stop capture', async () => {
      await asNotes([setShape('999999'), [`INSERT INTO profiles (id, note) VALUES (10, 'ten')`]]);
      await asNotes([setShape(''), [`INSERT INTO profiles (id, note) VALUES (11, 'eleven')`]]);
      // Later changes, of this table and of others, still arrive.
      await trg(`INSERT INTO flags VALUES (2, true, 'after')`);
      await trg(`INSERT INTO customers VALUES (500, 'after the forged settings')`);
      await replicaEqualsSource([...APP_TABLES, ...TABLES]);
      expect((await contentOf(w.replicas, 'replica_ta', ['profiles'])).profiles).toContain('(10,ten,f)');
    });
  });
});
