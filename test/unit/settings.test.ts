/**
 * The settings table (src/settings.ts), row by row: each row's variable,
 * flag and file key set its value with the documented precedence, its
 * default applies, and a bad value is reported under the row's name. Also
 * that the table and the zod schema list the same settings, and the known
 * keys messages print. Pure: config files go to a temporary directory.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { configSchema, DEFAULTS, loadConfig, RawConfig, replicaTables } from '../../src/config';
import { flagName, mappingSections, sectionKeys, type Setting, settingLabel, SETTINGS, topLevelKeys } from '../../src/settings';

const ROWS = SETTINGS as readonly Setting[];
const PATH_ROWS = ROWS.filter((s): s is Setting & { path: string } => s.path !== undefined);

/** [given, expected in Config]. */
type Given<T> = [T, unknown];

interface Case {
  /** Two different values as a variable or flag takes them (rows with either). */
  a?: Given<string>;
  b?: Given<string>;
  /** A value as the file gives it. */
  file: Given<unknown>;
  /** A file value the schema refuses (absent: nothing written can be invalid). */
  invalid?: unknown;
  /** How the error names a `label: false` row (the others: by settingLabel). */
  shownAs?: string;
  /** Other variables the value needs to take effect. */
  also?: Record<string, string>;
  /** Why "variable beats file" does not apply to this row. */
  noEnvOverFile?: string;
  /** The value when nothing sets it (absent: undefined). */
  dflt?: unknown;
  /** The value an empty variable gives, for settings where empty is a value (absent: empty means unset, the file's value applies). */
  emptyVar?: unknown;
}

const CASES: Record<string, Case> = {
  rabbitmqUrl: { a: ['amqp://a@mq', 'amqp://a@mq'], b: ['amqp://b@mq', 'amqp://b@mq'], file: ['amqps://f@mq', 'amqps://f@mq'], invalid: 'redis://x', dflt: 'amqp://guest:guest@127.0.0.1:5672' },
  dataDir: { a: ['/tmp/pgferry-a', '/tmp/pgferry-a'], b: ['/tmp/pgferry-b', '/tmp/pgferry-b'], file: ['/tmp/pgferry-f', '/tmp/pgferry-f'], dflt: path.resolve('.pgferry') },
  connectWaitMs: { a: ['7', 7000], b: ['8', 8000], file: [9, 9000], invalid: -1, dflt: 30_000 },
  'temporal.address': { a: ['a:7233', 'a:7233'], b: ['b:7233', 'b:7233'], file: ['f:7233', 'f:7233'], invalid: 7233, shownAs: 'temporal.address' },
  'temporal.namespace': { a: ['ns-a', 'ns-a'], b: ['ns-b', 'ns-b'], file: ['ns-f', 'ns-f'], invalid: 5, shownAs: 'temporal.namespace', dflt: 'default' },
  'temporal.tls.cert': { a: ['/a.pem', '/a.pem'], b: ['/b.pem', '/b.pem'], file: ['/f.pem', '/f.pem'], invalid: 5, shownAs: 'temporal.tls.cert' },
  'temporal.tls.key': { a: ['/a.key', '/a.key'], b: ['/b.key', '/b.key'], file: ['/f.key', '/f.key'], invalid: 5, shownAs: 'temporal.tls.key', also: { TEMPORAL_TLS_CERT: '/c.pem' } },
  'temporal.tls.ca': { a: ['/a.ca', '/a.ca'], b: ['/b.ca', '/b.ca'], file: ['/f.ca', '/f.ca'], invalid: 5, shownAs: 'temporal.tls.ca' },
  'temporal.tls.serverName': {
    a: ['a.example', 'a.example'], b: ['b.example', 'b.example'], file: ['f.example', 'f.example'], invalid: 5,
    shownAs: 'temporal.tls.serverName', also: { TEMPORAL_TLS_CERT: '/c.pem' },
  },
  'source.name': { a: ['shop', 'shop'], b: ['billing', 'billing'], file: ['fsrc', 'fsrc'], invalid: 'Bad!', noEnvOverFile: "the variable chooses among the file's sources", dflt: 'main' },
  'source.url': { a: ['postgres://a@h/db', 'postgres://a@h/db'], b: ['postgres://b@h/db', 'postgres://b@h/db'], file: ['postgres://f@h/db', 'postgres://f@h/db'], invalid: 'mysql://x' },
  'source.mode': { a: ['trigger', 'trigger'], b: ['wal', 'wal'], file: ['trigger', 'trigger'], invalid: 'logical', dflt: 'wal' },
  'source.tables': { a: ['public.a, "x,y".b', ['public.a', '"x,y".b']], b: ['c', ['c']], file: [['public.f'], ['public.f']], invalid: ['a.b.c'], shownAs: 'sources[].tables.0' },
  'source.exclude': { a: ['public.a, b', ['public.a', 'b']], b: ['c', ['c']], file: [['public.f'], ['public.f']], invalid: ['a.b.c'], shownAs: 'sources[].exclude.0', emptyVar: [] },
  'source.publish': { file: [{ users: { columns: ['id', 'name'], rows: 'id > 0' } }, { users: { columns: ['id', 'name'], rows: 'id > 0' } }], invalid: { users: { columns: [] } }, shownAs: 'sources[].publish.users.columns' },
  'source.heartbeatMs': { a: ['15', 15_000], b: ['16', 16_000], file: [17, 17_000], invalid: 0, dflt: 60_000 },
  'source.slotWarnBytes': { a: ['5', 5], b: ['6', 6], file: [7, 7], invalid: -1, dflt: 1024 ** 3 },
  'replicas[].name': { a: ['ra=postgres://h/a', 'ra'], b: ['rb=postgres://h/b', 'rb'], file: ['rf', 'rf'], invalid: 'Bad!', shownAs: 'replicas.Bad!.name' },
  'replicas[].url': { a: ['r=postgres://h/a', 'postgres://h/a'], b: ['r=postgres://h/b', 'postgres://h/b'], file: ['postgres://h/f', 'postgres://h/f'], invalid: 'http://x', shownAs: 'replicas.r.url' },
  'replicas[].tables': { file: [['public.f'], ['public.f']], invalid: ['a.b.c'], shownAs: 'replicas.r.tables.0' },
  'replicas[].schemaChanges': { file: ['stop', 'stop'], invalid: 'sometimes', shownAs: 'replicas.r.schemaChanges' },
  'stream.maxBytes': { a: ['5', 5], b: ['6', 6], file: [7, 7], invalid: -1, dflt: 20 * 1024 ** 3 },
  'stream.maxAge': { a: ['2h', '2h'], b: ['3m', '3m'], file: ['4D', '4D'], invalid: 'a week', dflt: '7D', emptyVar: '' },
  'stream.segmentBytes': { a: ['5', 5], b: ['6', 6], file: [7, 7], invalid: 0, dflt: 500_000_000 },
  'batch.maxChanges': { a: ['7', 7], b: ['8', 8], file: [9, 9], invalid: 0, dflt: 20_000 },
  'batch.maxWaitMs': { a: ['7', 7], b: ['8', 8], file: [9, 9], invalid: 0, dflt: 100 },
  'batch.chunkChanges': { a: ['7', 7], b: ['8', 8], file: [9, 9], invalid: 0, dflt: 2000 },
  'batch.chunkBytes': { a: ['2048', 2048], b: ['4096', 4096], file: [8192, 8192], invalid: 10, dflt: 120 * 1024 },
  'batch.runTxns': { a: ['1', 1], b: ['64', 64], file: [32, 32], invalid: 0, dflt: 256 },
  'batch.runBytes': { a: ['2048', 2048], b: ['4096', 4096], file: [8192, 8192], invalid: 10, dflt: 512 * 1024 },
  'batch.copyLinesAfter': { a: ['0', 0], b: ['200', 200], file: [1000, 1000], invalid: -1, dflt: 64 },
  'batch.maxMessageBytes': { a: ['2000000', 2_000_000], b: ['3000000', 3_000_000], file: [4_000_000, 4_000_000], invalid: 10, dflt: 64 * 1024 * 1024 },
  'batch.captureRunMs': { a: ['5', 5000], b: ['6', 6000], file: [7, 7000], invalid: 0.5, dflt: 900_000 },
  'batch.applySessionMs': { a: ['5', 5000], b: ['6', 6000], file: [7, 7000], invalid: 0.5, dflt: 30_000 },
  'metrics.port': { a: ['1', 1], b: ['2', 2], file: [3, 3], invalid: 70_000, dflt: 9464 },
  'metrics.host': { a: ['127.0.0.1', '127.0.0.1'], b: ['::1', '::1'], file: ['10.0.0.1', '10.0.0.1'], invalid: 5, dflt: '0.0.0.0' },
};

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-settings-'));
let files = 0;

/** A config file holding one key (dotted as in the table) with `value`; list sections get one element with what it needs besides. */
function fileWith(key: string, value: unknown): string {
  const [head, ...rest] = key.split('.');
  const base: Record<string, Record<string, unknown>> = { 'sources[]': { name: 'main' }, 'replicas[]': { name: 'r', url: 'postgres://h/r' } };
  const inner = rest.reduceRight<unknown>((v, k) => ({ [k]: v }), value) as Record<string, unknown>;
  const doc = head.endsWith('[]') ? { [head.slice(0, -2)]: [{ ...base[head], ...inner }] } : { [head]: inner };
  const f = path.join(dir, `settings-${++files}.yaml`);
  fs.writeFileSync(f, JSON.stringify(doc)); // JSON is YAML
  return f;
}

/** `batch.maxChanges` → config.batch.maxChanges; `replicas[].url` → the first replica's url. */
function valueAt(config: unknown, dotted: string): unknown {
  return dotted.split('.').reduce<unknown>((node, k) => {
    const list = k.endsWith('[]');
    const v = (node as Record<string, unknown> | undefined)?.[list ? k.slice(0, -2) : k];
    return list ? (v as unknown[] | undefined)?.[0] : v;
  }, config);
}

function flagValue(s: Setting, given: string): RawConfig {
  return { [s.flag!]: s.flag === 'replica' ? [given] : given };
}

function messageOf(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    return (err as Error).message;
  }
  return '';
}

function schemaLeaves(schema: z.ZodType, prefix: string): string[] {
  if (schema instanceof z.ZodOptional) return schemaLeaves(schema.unwrap() as z.ZodType, prefix);
  if (schema instanceof z.ZodObject) return Object.entries(schema.shape).flatMap(([k, v]) => schemaLeaves(v as z.ZodType, prefix ? `${prefix}.${k}` : k));
  if (schema instanceof z.ZodArray && schema.element instanceof z.ZodObject) return schemaLeaves(schema.element, `${prefix}[]`);
  return [prefix];
}

describe('settings table and schema', () => {
  it('has exactly one row for every leaf of the schema, and no row the schema lacks', () => {
    const leaves = schemaLeaves(configSchema, '');
    expect([...leaves].sort()).toEqual(PATH_ROWS.map((s) => s.path).sort());
    expect(new Set(PATH_ROWS.map((s) => s.path)).size).toBe(PATH_ROWS.length);
    expect(new Set(ROWS.map((s) => s.file)).size).toBe(ROWS.length);
  });

  it('has a test case for every row', () => {
    expect(Object.keys(CASES).sort()).toEqual(PATH_ROWS.map((s) => s.path).sort());
  });

  it('keeps the names users write (renaming one breaks their files and deployments)', () => {
    expect(ROWS.map((s) => [s.file, s.env, s.flag && flagName(s.flag)].filter(Boolean).join(' '))).toEqual([
      'rabbitmq_url PGFERRY_RABBITMQ_URL --rabbitmq',
      'data_dir PGFERRY_DATA_DIR --data-dir',
      'connect_wait_seconds PGFERRY_CONNECT_WAIT_SECONDS --wait',
      'temporal.address TEMPORAL_ADDRESS',
      'temporal.namespace TEMPORAL_NAMESPACE',
      'temporal.tls.cert TEMPORAL_TLS_CERT',
      'temporal.tls.key TEMPORAL_TLS_KEY',
      'temporal.tls.ca TEMPORAL_TLS_CA',
      'temporal.tls.server_name TEMPORAL_TLS_SERVER_NAME',
      'sources[].name PGFERRY_SOURCE_NAME --source-name',
      'sources[].url PGFERRY_SOURCE --source',
      'sources[].mode PGFERRY_CAPTURE_MODE --mode',
      'sources[].tables PGFERRY_TABLES --tables',
      'sources[].exclude PGFERRY_EXCLUDE_TABLES',
      'sources[].publish',
      'sources[].heartbeat_seconds PGFERRY_HEARTBEAT_SECONDS',
      'sources[].slot_warn_bytes PGFERRY_SLOT_WARN_BYTES',
      'replicas[].name PGFERRY_REPLICAS --replica',
      'replicas[].url PGFERRY_REPLICAS --replica',
      'replicas[].source',
      'replicas[].tables',
      'replicas[].schema_changes',
      'stream.max_bytes PGFERRY_STREAM_MAX_BYTES',
      'stream.max_age PGFERRY_STREAM_MAX_AGE',
      'stream.segment_bytes PGFERRY_STREAM_SEGMENT_BYTES',
      'batch.max_changes PGFERRY_BATCH_MAX_CHANGES',
      'batch.max_wait_ms PGFERRY_BATCH_MAX_WAIT_MS',
      'batch.chunk_changes PGFERRY_CHUNK_CHANGES',
      'batch.chunk_bytes PGFERRY_CHUNK_BYTES',
      'batch.run_txns PGFERRY_RUN_TXNS',
      'batch.run_bytes PGFERRY_RUN_BYTES',
      'batch.copy_lines_after PGFERRY_COPY_LINES_AFTER',
      'batch.max_message_bytes PGFERRY_MAX_MESSAGE_BYTES',
      'batch.capture_run_seconds PGFERRY_CAPTURE_RUN_SECONDS',
      'batch.apply_session_seconds PGFERRY_APPLY_SESSION_SECONDS',
      'metrics.port PGFERRY_METRICS_PORT --metrics-port',
      'metrics.host PGFERRY_METRICS_HOST',
    ]);
  });

  it('keeps the exported DEFAULTS', () => {
    expect(DEFAULTS).toEqual({ sourceName: 'main', rabbitmqUrl: 'amqp://guest:guest@127.0.0.1:5672', heartbeatSeconds: 60, slotWarnBytes: 1024 ** 3, metricsPort: 9464 });
  });

  it('gives the known keys of every file section, in the order messages list them', () => {
    expect(topLevelKeys()).toEqual(['rabbitmq_url', 'data_dir', 'connect_wait_seconds', 'temporal', 'sources', 'replicas', 'stream', 'batch', 'metrics']);
    expect(sectionKeys('sources')).toEqual(['name', 'url', 'mode', 'tables', 'exclude', 'publish', 'heartbeat_seconds', 'slot_warn_bytes']);
    expect(sectionKeys('replicas')).toEqual(['name', 'url', 'source', 'tables', 'schema_changes']);
    expect(mappingSections()).toEqual(['temporal', 'stream', 'batch', 'metrics']);
    expect(sectionKeys('temporal')).toEqual(['address', 'namespace', 'tls']);
    expect(sectionKeys('stream')).toEqual(['max_bytes', 'max_age', 'segment_bytes']);
    expect(sectionKeys('batch')).toEqual(['max_changes', 'max_wait_ms', 'chunk_changes', 'chunk_bytes', 'run_txns', 'run_bytes', 'copy_lines_after', 'max_message_bytes', 'capture_run_seconds', 'apply_session_seconds']);
    expect(sectionKeys('metrics')).toEqual(['port', 'host']);
  });

  it.each(['', ...mappingSections(), 'sources[]', 'replicas[]'])('reports an unknown key in section %j', (section) => {
    const key = section ? `${section}.bogus` : 'bogus';
    const message = messageOf(() => loadConfig({ config: fileWith(key, 1) }, {}));
    expect(message).toMatch(/bogus: unknown key/);
    if (mappingSections().includes(section)) expect(message).toContain(`${section}.bogus: unknown key (known: ${sectionKeys(section).join(', ')})`);
  });
});

describe.each(PATH_ROWS.map((s) => [s.path, s] as const))('setting %s', (p, s) => {
  const c = CASES[p];
  const also = c.also ?? {};
  const [a, b] = [c.a ?? ['', undefined], c.b ?? ['', undefined]];

  if (s.env !== undefined) it('is set by its variable', () => {
    expect(valueAt(loadConfig({}, { ...also, [s.env!]: a[0] }), p)).toEqual(a[1]);
  });

  if (s.flag !== undefined) it('is set by its flag, over the variable', () => {
    expect(valueAt(loadConfig(flagValue(s, a[0]), { ...also, [s.env!]: b[0] }), p)).toEqual(a[1]);
  });

  it('is set by its file key', () => {
    expect(valueAt(loadConfig({ config: fileWith(s.file, c.file[0]) }, {}), p)).toEqual(c.file[1]);
  });

  if (s.env !== undefined && !c.noEnvOverFile) it('takes the variable over the file', () => {
    expect(valueAt(loadConfig({ config: fileWith(s.file, c.file[0]) }, { ...also, [s.env!]: b[0] }), p)).toEqual(b[1]);
  });

  if (s.env !== undefined) it(c.emptyVar === undefined ? 'takes an empty variable as unset' : 'takes an empty variable as a value, over the file', () => {
    expect(valueAt(loadConfig({ config: fileWith(s.file, c.file[0]) }, { [s.env!]: '' }), p)).toEqual(c.emptyVar ?? c.file[1]);
  });

  it('falls back to its default', () => {
    expect(valueAt(loadConfig({}, {}), p)).toEqual(c.dflt);
  });

  if (c.invalid !== undefined) it('is named in the error for a bad value', () => {
    const label = settingLabel(s);
    if (label) for (const part of [s.file, s.env, s.flag && flagName(s.flag)]) if (part) expect(label).toContain(part);
    const shown = c.shownAs ?? label;
    expect(shown, 'a label: false row needs shownAs').toBeDefined();
    expect(messageOf(() => loadConfig({ config: fileWith(s.file, c.invalid) }, {}))).toContain(`\n  - ${shown}: `);
  });
});

describe('file-only setting replicas[].source', () => {
  it('keeps the replicas of the chosen source only', () => {
    const f = path.join(dir, 'replica-source.yaml');
    fs.writeFileSync(
      f,
      JSON.stringify({
        sources: [{ name: 'shop' }, { name: 'billing' }],
        replicas: [{ name: 'a', url: 'postgres://h/a', source: 'shop' }, { name: 'b', url: 'postgres://h/b', source: 'billing' }],
      }),
    );
    expect(loadConfig({ config: f, sourceName: 'billing' }, {}).replicas.map((r) => r.name)).toEqual(['b']);
  });
});

describe('replicaTables', () => {
  it('parses a loaded config once, and a hand-built one each time', () => {
    const c = loadConfig({ config: fileWith('replicas[].tables', ['"a.b"."c"', 'orders']) }, {});
    const first = replicaTables(c, 'r');
    expect([...first!]).toEqual(['a.b.c', 'public.orders']);
    expect(replicaTables(c, 'r')).toBe(first);
    expect(replicaTables(c, 'nope')).toBeUndefined();
    const byHand = { ...c, replicas: [{ name: 'r', url: 'postgres://h/r', tables: ['x'] }] };
    expect([...replicaTables(byHand, 'r')!]).toEqual(['public.x']);
    byHand.replicas[0].tables = ['y'];
    expect([...replicaTables(byHand, 'r')!]).toEqual(['public.y']);
  });
});
