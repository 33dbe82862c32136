import { z } from 'zod';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './errors';
import { checkName } from './names';
import { redactUrl } from './redact';

/**
 * Runtime configuration, parsed and validated once at start-up and frozen.
 *
 * Sources, lowest to highest precedence: built-in defaults, the config file
 * (`--config` or PGFERRY_CONFIG; YAML, `${VAR}` interpolated from the
 * environment), PGFERRY_* environment variables, CLI flags. Every mistake is
 * collected and reported in one message naming each field.
 *
 * A config file may list several sources; one pgferry process serves one of
 * them (`--source-name`, or the only one), with the replicas whose `source`
 * is that source. Connection strings stay here, in the worker process:
 * workflows and activities only ever see the source and replica *names*.
 */

/** libpq conventions: a postgres:// URL or a keyword/value string (host=… dbname=…); missing parts come from PG* variables and ~/.pgpass (node-postgres reads both). */
const pgConn = z
  .string()
  .min(1, 'is empty')
  .refine((s) => /^postgres(ql)?:\/\//.test(s) || /^\s*[a-z_]+\s*=/.test(s), 'must be a postgres:// URL or a libpq keyword/value string (host=… dbname=…)')
  .transform(keywordsToUrl);

/**
 * A table as SQL writes it: `schema.table` or `table`, each part bare or
 * double-quoted ("" for a quote inside). A quoted part may hold dots and
 * commas, e.g. "sch.ema"."a, b": such names were refused, or cut apart at the
 * commas (found by test/e2e/hostile-names.test.ts).
 */
const TABLE_PART = /"(?:[^"]|"")+"|[^."]+/g;
const tableName = z.string().regex(/^(?:"(?:[^"]|"")+"|[^."]+)(?:\.(?:"(?:[^"]|"")+"|[^."]+))?$/, 'tables are schema.table or table');

const name = (kind: 'source' | 'replica') =>
  z.string().superRefine((s, ctx) => {
    const bad = checkName(kind, s);
    if (bad) ctx.addIssue({ code: 'custom', message: bad });
  });

const count = z.number({ message: 'must be a number' }).int('must be a whole number');

const sourceSchema = z.object({
  name: name('source'),
  url: pgConn.optional(),
  /** wal: logical decoding (pgoutput); trigger: row triggers + change-log table, for sources without wal_level=logical. */
  mode: z.enum(['wal', 'trigger'], { message: "capture mode is 'wal' or 'trigger'" }),
  tables: z.array(tableName).optional(),
  exclude: z.array(tableName).optional(),
  /** How often capture writes a transactional logical message on a source that writes nothing, so its slot keeps advancing. */
  heartbeatMs: count.positive('must be > 0'),
  /** Status and metrics warn when the slot holds back more WAL than this. */
  slotWarnBytes: count.nonnegative(),
});

const schema = z.object({
  dataDir: z.string().min(1),
  rabbitmqUrl: z.string().refine((s) => /^amqps?:\/\//.test(s), 'must be an amqp:// or amqps:// URL'),
  temporal: z.object({
    address: z.string().min(1).optional(),
    namespace: z.string().min(1),
    tls: z
      .object({
        cert: z.string().min(1).optional(),
        key: z.string().min(1).optional(),
        ca: z.string().min(1).optional(),
        serverName: z.string().min(1).optional(),
      })
      .optional(),
  }),
  source: sourceSchema,
  replicas: z.array(
    z.object({
      name: name('replica'),
      url: pgConn,
      /** Only these tables are applied to this replica (default: every table the source publishes). */
      tables: z.array(tableName).optional(),
    }),
  ),
  batch: z.object({
    maxChanges: count.positive('must be > 0'),
    maxWaitMs: count.positive('must be > 0'),
    chunkChanges: count.positive('must be > 0'),
    /** A chunk of a large transaction ends once its values add up to about this many bytes. */
    chunkBytes: count.min(1024, 'must be at least 1024'),
    /** The largest single change capture may publish (RabbitMQ's max_message_size must allow it). */
    maxMessageBytes: count.min(1024 * 1024, 'must be at least 1 MiB'),
    /** Capture returns (and the workflow continues as new) after this long; it then reconnects to the slot. */
    captureRunMs: count.min(1000, 'must be at least 1 second'),
  }),
  connectWaitMs: count.nonnegative(),
  stream: z.object({
    maxBytes: count.nonnegative(),
    maxAge: z.string().regex(/^$|^\d+[YMDhms]$/, 'stream max age is a number and a unit (Y, M, D, h, m, s), e.g. 7D; empty for no limit'),
    segmentBytes: count.positive('must be > 0'),
  }),
  metrics: z.object({
    /** Prometheus endpoint of worker processes; 0 turns it off. */
    port: count.min(0).max(65535),
    host: z.string().min(1),
  }),
});

export type Config = Readonly<z.infer<typeof schema>>;
export type SourceConfig = Config['source'];

/** What CLI flags can set (commander's option names). */
export interface RawConfig {
  config?: string;
  source?: string;
  sourceName?: string;
  tables?: string;
  mode?: string;
  replica?: string[];
  rabbitmq?: string;
  dataDir?: string;
  wait?: string;
  metricsPort?: string;
}

export const DEFAULTS = {
  sourceName: 'main',
  rabbitmqUrl: 'amqp://guest:guest@127.0.0.1:5672',
  heartbeatSeconds: 60,
  slotWarnBytes: 1024 ** 3,
  metricsPort: 9464,
} as const;

/** Parse "name=url" pairs from --replica flags or PGFERRY_REPLICAS ("a=url,b=url" or one per line). */
export function parseReplicaSpecs(specs: string[]): { name: string; url: string }[] {
  return specs
    .flatMap((s) => s.split(/[\n,](?=\s*[a-z][a-z0-9_]*=)/))
    .map((s) => s.trim())
    .filter(Boolean)
    .map((spec) => {
      const i = spec.indexOf('=');
      if (i <= 0) throw new ConfigError(`--replica '${redactUrl(spec)}' must be name=postgres://…, e.g. --replica analytics=postgres://host/db`);
      return { name: spec.slice(0, i), url: spec.slice(i + 1) };
    });
}

function replicaFlags(specs: string[], problems: string[]): { name: string; url: string }[] {
  try {
    return parseReplicaSpecs(specs);
  } catch (err) {
    problems.push((err as Error).message);
    return [];
  }
}

/** libpq keyword/value connection string → URL, so every later step handles one form. URLs pass through. */
export function keywordsToUrl(conn: string): string {
  if (/^postgres(ql)?:\/\//.test(conn)) return conn;
  const kv = new Map<string, string>();
  const re = /([a-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)/g;
  for (let m = re.exec(conn); m; m = re.exec(conn)) {
    const v = m[2].startsWith("'") ? m[2].slice(1, -1).replace(/\\(.)/g, '$1') : m[2];
    kv.set(m[1], v);
  }
  const u = new URL('postgresql://');
  const host = kv.get('host') ?? kv.get('hostaddr');
  if (host?.startsWith('/')) u.searchParams.set('host', host);
  else if (host) u.hostname = host;
  if (kv.get('port')) u.port = kv.get('port')!;
  if (kv.get('user')) u.username = encodeURIComponent(kv.get('user')!);
  if (kv.get('password')) u.password = encodeURIComponent(kv.get('password')!);
  if (kv.get('dbname')) u.pathname = `/${encodeURIComponent(kv.get('dbname')!)}`;
  for (const [k, v] of kv) if (!['host', 'hostaddr', 'port', 'user', 'password', 'dbname'].includes(k)) u.searchParams.set(k, v);
  return u.toString();
}

/** `${VAR}` and `${VAR:-default}` from the environment; `$${` is a literal `${`. Unset variables without a default are reported. */
export function interpolate(text: string, env: NodeJS.ProcessEnv, missing: Set<string>): string {
  return text.replace(/\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (whole, escaped, name, fallback) => {
    if (escaped) return whole.slice(1);
    const v = env[name];
    if (v !== undefined && v !== '') return v;
    if (fallback !== undefined) return fallback;
    missing.add(name);
    return '';
  });
}

const FILE_KEYS = ['rabbitmq_url', 'data_dir', 'connect_wait_seconds', 'temporal', 'sources', 'replicas', 'stream', 'batch', 'metrics'];

interface FileConfig {
  rabbitmqUrl?: unknown;
  dataDir?: unknown;
  connectWaitSeconds?: unknown;
  temporal?: Record<string, unknown>;
  sources: Record<string, unknown>[];
  replicas: Record<string, unknown>[];
  stream?: Record<string, unknown>;
  batch?: Record<string, unknown>;
  metrics?: Record<string, unknown>;
}

/** Read a pgferry.yaml. Shape problems are pushed to `problems` (reported with the rest), not thrown. */
export function readConfigFile(file: string, env: NodeJS.ProcessEnv, problems: string[]): FileConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`config file ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)}); check the path given by --config or PGFERRY_CONFIG`);
  }
  const missing = new Set<string>();
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config file ${file}: not valid YAML (${(err as Error).message.split('\n')[0]})`);
  }
  // Interpolate after parsing, in string values only: a secret containing ':' or '#' cannot break the YAML.
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return interpolate(v, env, missing);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  const root = (walk(doc ?? {}) ?? {}) as Record<string, unknown>;
  if (typeof root !== 'object' || Array.isArray(root)) throw new ConfigError(`config file ${file}: the top level must be a mapping (keys ${FILE_KEYS.join(', ')})`);
  for (const m of missing) problems.push(`\${${m}}: environment variable is not set (set it, or write \${${m}:-default})`);
  for (const k of Object.keys(root)) if (!FILE_KEYS.includes(k)) problems.push(`${k}: unknown key (known: ${FILE_KEYS.join(', ')})`);
  const list = (key: string): Record<string, unknown>[] => {
    const v = root[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      problems.push(`${key}: must be a list (- name: …)`);
      return [];
    }
    return v as Record<string, unknown>[];
  };
  const obj = (key: string) => (root[key] && typeof root[key] === 'object' ? (root[key] as Record<string, unknown>) : undefined);
  return {
    rabbitmqUrl: root.rabbitmq_url,
    dataDir: root.data_dir,
    connectWaitSeconds: root.connect_wait_seconds,
    temporal: obj('temporal'),
    sources: list('sources'),
    replicas: list('replicas'),
    stream: obj('stream'),
    batch: obj('batch'),
    metrics: obj('metrics'),
  };
}

/** Environment variables are strings: numbers are converted, anything else is left for the schema to name. */
function num(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  if (value.trim() === '') return undefined;
  const n = Number(value);
  return Number.isNaN(n) ? value : n;
}

/** A comma-separated list of tables; a comma inside double quotes belongs to a name. */
function split(list: string | undefined): string[] | undefined {
  return list === undefined ? undefined : (list.match(/(?:"(?:[^"]|"")*"?|[^,"])+/g) ?? []).map((t) => t.trim()).filter(Boolean);
}

function first(...values: unknown[]): any {
  return values.find((v) => v !== undefined && v !== null && v !== '') ?? undefined;
}

export function loadConfig(raw: RawConfig, env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const file = raw.config ?? env.PGFERRY_CONFIG;
  const f: FileConfig = file ? readConfigFile(file, env, problems) : { sources: [], replicas: [] };

  // Which of the file's sources this process serves.
  const wantedName = first(raw.sourceName, env.PGFERRY_SOURCE_NAME);
  let fileSource: Record<string, unknown> = {};
  if (f.sources.length) {
    const named = f.sources.filter((s) => s && typeof s === 'object');
    const match = wantedName ? named.find((s) => s.name === wantedName) : named.length === 1 ? named[0] : undefined;
    if (match) fileSource = match;
    else if (wantedName) problems.push(`source '${wantedName}': not in ${file} (it has ${named.map((s) => String(s.name)).join(', ')})`);
    else problems.push(`sources: ${file} lists ${named.length} sources (${named.map((s) => String(s.name)).join(', ')}); choose one with --source-name or PGFERRY_SOURCE_NAME`);
  }
  const sourceName = first(wantedName, fileSource.name as string, DEFAULTS.sourceName)!;
  for (const k of Object.keys(fileSource)) {
    if (!['name', 'url', 'mode', 'tables', 'exclude', 'heartbeat_seconds', 'slot_warn_bytes'].includes(k)) problems.push(`sources.${sourceName}.${k}: unknown key`);
  }
  f.replicas.forEach((r, i) => {
    const label = `replicas.${typeof r?.name === 'string' ? r.name : i}`;
    if (!r || typeof r !== 'object') return problems.push(`${label}: must be a mapping (name, url, source, tables)`);
    for (const k of Object.keys(r)) if (!['name', 'url', 'source', 'tables'].includes(k)) problems.push(`${label}.${k}: unknown key`);
    if (f.sources.length > 1 && r.source === undefined) problems.push(`${label}.source: required when the file lists several sources`);
  });
  const fileReplicas = f.replicas
    .filter((r) => r && typeof r === 'object' && (r.source === undefined || r.source === sourceName))
    .map((r) => ({ name: r.name, url: r.url, ...(r.tables !== undefined ? { tables: r.tables } : {}) }));

  const flagReplicas = raw.replica?.length ? raw.replica : env.PGFERRY_REPLICAS ? [env.PGFERRY_REPLICAS] : [];
  const t = f.temporal ?? {};
  const tls = (t.tls ?? undefined) as Record<string, unknown> | undefined;
  const candidate = {
    dataDir: path.resolve(String(first(raw.dataDir, env.PGFERRY_DATA_DIR, f.dataDir as string, '.pgferry'))),
    rabbitmqUrl: first(raw.rabbitmq, env.PGFERRY_RABBITMQ_URL, f.rabbitmqUrl as string, DEFAULTS.rabbitmqUrl),
    temporal: {
      address: first(env.TEMPORAL_ADDRESS, t.address as string),
      namespace: first(env.TEMPORAL_NAMESPACE, t.namespace as string, 'default'),
      tls: tls
        ? {
            cert: first(env.TEMPORAL_TLS_CERT, tls.cert as string),
            key: first(env.TEMPORAL_TLS_KEY, tls.key as string),
            ca: first(env.TEMPORAL_TLS_CA, tls.ca as string),
            serverName: first(env.TEMPORAL_TLS_SERVER_NAME, tls.server_name as string),
          }
        : env.TEMPORAL_TLS_CERT || env.TEMPORAL_TLS_CA
          ? { cert: env.TEMPORAL_TLS_CERT, key: env.TEMPORAL_TLS_KEY, ca: env.TEMPORAL_TLS_CA, serverName: env.TEMPORAL_TLS_SERVER_NAME }
          : undefined,
    },
    source: {
      name: sourceName,
      url: first(raw.source, env.PGFERRY_SOURCE, fileSource.url as string),
      mode: first(raw.mode, env.PGFERRY_CAPTURE_MODE, fileSource.mode as string, 'wal'),
      tables: split(first(raw.tables, env.PGFERRY_TABLES)) ?? fileSource.tables,
      exclude: split(env.PGFERRY_EXCLUDE_TABLES) ?? fileSource.exclude,
      heartbeatMs: (num(first(env.PGFERRY_HEARTBEAT_SECONDS, fileSource.heartbeat_seconds as string, DEFAULTS.heartbeatSeconds)) as number) * 1000,
      slotWarnBytes: num(first(env.PGFERRY_SLOT_WARN_BYTES, fileSource.slot_warn_bytes as string, DEFAULTS.slotWarnBytes)),
    },
    replicas: flagReplicas.length ? replicaFlags(flagReplicas, problems) : fileReplicas,
    batch: {
      maxChanges: num(first(env.PGFERRY_BATCH_MAX_CHANGES, f.batch?.max_changes as string, 5000)),
      maxWaitMs: num(first(env.PGFERRY_BATCH_MAX_WAIT_MS, f.batch?.max_wait_ms as string, 1000)),
      chunkChanges: num(first(env.PGFERRY_CHUNK_CHANGES, f.batch?.chunk_changes as string, 2000)),
      chunkBytes: num(first(env.PGFERRY_CHUNK_BYTES, f.batch?.chunk_bytes as string, 128 * 1024)),
      maxMessageBytes: num(first(env.PGFERRY_MAX_MESSAGE_BYTES, f.batch?.max_message_bytes as string, 64 * 1024 * 1024)),
      captureRunMs: (num(first(env.PGFERRY_CAPTURE_RUN_SECONDS, f.batch?.capture_run_seconds as string, 900)) as number) * 1000,
    },
    connectWaitMs: (num(first(raw.wait, env.PGFERRY_CONNECT_WAIT_SECONDS, f.connectWaitSeconds as string, 30)) as number) * 1000,
    // Retention of the change log: RabbitMQ removes whole segments, oldest first, once either limit is passed.
    stream: {
      maxBytes: num(first(env.PGFERRY_STREAM_MAX_BYTES, f.stream?.max_bytes as string, 20 * 1024 ** 3)),
      maxAge: env.PGFERRY_STREAM_MAX_AGE ?? (f.stream?.max_age as string | undefined) ?? '7D',
      segmentBytes: num(first(env.PGFERRY_STREAM_SEGMENT_BYTES, f.stream?.segment_bytes as string, 500_000_000)),
    },
    metrics: {
      port: num(first(raw.metricsPort, env.PGFERRY_METRICS_PORT, f.metrics?.port as string, DEFAULTS.metricsPort)),
      host: first(env.PGFERRY_METRICS_HOST, f.metrics?.host as string, '0.0.0.0'),
    },
  };
  for (const [section, value] of [['stream', f.stream], ['batch', f.batch], ['metrics', f.metrics], ['temporal', f.temporal]] as const) {
    const known: Record<string, string[]> = {
      stream: ['max_bytes', 'max_age', 'segment_bytes'],
      batch: ['max_changes', 'max_wait_ms', 'chunk_changes', 'chunk_bytes', 'max_message_bytes', 'capture_run_seconds'],
      metrics: ['port', 'host'],
      temporal: ['address', 'namespace', 'tls'],
    };
    for (const k of Object.keys(value ?? {})) if (!known[section].includes(k)) problems.push(`${section}.${k}: unknown key (known: ${known[section].join(', ')})`);
  }
  const parsed = schema.safeParse(candidate);
  if (!parsed.success) {
    for (const i of parsed.error.issues) problems.push(`${fieldName(i.path, candidate)}: ${i.message}`);
  }
  const names = (parsed.success ? parsed.data.replicas : candidate.replicas).map((r) => r.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) problems.push(`replica '${String(dup)}' is given twice; each replica needs its own name`);
  if (problems.length || !parsed.success) {
    const where = file ? ` (file ${file}, environment, flags)` : '';
    throw new ConfigError(`invalid configuration${where}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n  - ${problems.join('\n  - ')}`);
  }
  return deepFreeze(parsed.data);
}

/** Where each setting comes from, as the user writes it: file key, then environment variable or flag. */
const LABELS: Record<string, string> = {
  dataDir: 'data_dir (PGFERRY_DATA_DIR, --data-dir)',
  rabbitmqUrl: 'rabbitmq_url (PGFERRY_RABBITMQ_URL, --rabbitmq)',
  connectWaitMs: 'connect_wait_seconds (PGFERRY_CONNECT_WAIT_SECONDS, --wait)',
  'source.name': 'sources[].name (PGFERRY_SOURCE_NAME, --source-name)',
  'source.url': 'sources[].url (PGFERRY_SOURCE, --source)',
  'source.mode': 'sources[].mode (PGFERRY_CAPTURE_MODE, --mode)',
  'source.heartbeatMs': 'sources[].heartbeat_seconds (PGFERRY_HEARTBEAT_SECONDS)',
  'source.slotWarnBytes': 'sources[].slot_warn_bytes (PGFERRY_SLOT_WARN_BYTES)',
  'batch.maxChanges': 'batch.max_changes (PGFERRY_BATCH_MAX_CHANGES)',
  'batch.maxWaitMs': 'batch.max_wait_ms (PGFERRY_BATCH_MAX_WAIT_MS)',
  'batch.chunkChanges': 'batch.chunk_changes (PGFERRY_CHUNK_CHANGES)',
  'batch.chunkBytes': 'batch.chunk_bytes (PGFERRY_CHUNK_BYTES)',
  'batch.maxMessageBytes': 'batch.max_message_bytes (PGFERRY_MAX_MESSAGE_BYTES)',
  'batch.captureRunMs': 'batch.capture_run_seconds (PGFERRY_CAPTURE_RUN_SECONDS)',
  'stream.maxBytes': 'stream.max_bytes (PGFERRY_STREAM_MAX_BYTES)',
  'stream.maxAge': 'stream.max_age (PGFERRY_STREAM_MAX_AGE)',
  'stream.segmentBytes': 'stream.segment_bytes (PGFERRY_STREAM_SEGMENT_BYTES)',
  'metrics.port': 'metrics.port (PGFERRY_METRICS_PORT, --metrics-port)',
  'metrics.host': 'metrics.host (PGFERRY_METRICS_HOST)',
};

/** A zod issue path as the user wrote it: "replicas.0.url" → "replicas.analytics.url", "source.heartbeatMs" → "sources[].heartbeat_seconds (…)". */
function fieldName(p: PropertyKey[], candidate: { replicas: { name?: unknown }[] }): string {
  const parts = p.map(String);
  if (parts[0] === 'replicas' && parts.length > 1) {
    const r = candidate.replicas[Number(parts[1])];
    if (r && typeof r.name === 'string' && r.name) parts[1] = r.name;
    return parts.join('.');
  }
  const key = parts.join('.');
  return LABELS[key] ?? (parts[0] === 'source' ? `sources[].${parts.slice(1).join('.')}` : key || 'config');
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

export function requireSourceUrl(config: Config): string {
  if (!config.source.url) {
    throw new ConfigError(`source '${config.source.name}': no connection URL; pass --source postgres://…, set PGFERRY_SOURCE, or give sources[].url in the config file`);
  }
  return config.source.url;
}

export function replicaUrl(config: Config, name: string): string {
  const r = config.replicas.find((x) => x.name === name);
  if (!r) {
    throw new ConfigError(
      `replica '${name}' is not configured in this worker; add it to the config file's replicas, or pass --replica ${name}=postgres://… (or PGFERRY_REPLICAS) to the process running the worker`,
    );
  }
  return r.url;
}

/** The tables a replica takes ("schema.table"; a bare name means public.name), or undefined for all the source publishes. */
export function replicaTables(config: Config, name: string): ReadonlySet<string> | undefined {
  const tables = config.replicas.find((x) => x.name === name)?.tables;
  // Quoted parts are unquoted ("a.b"."c" is schema a.b, table c), to compare with the catalog's names.
  return tables ? new Set(tables.map((t) => {
    const parts = (t.match(TABLE_PART) ?? []).map((p) => (p.startsWith('"') ? p.slice(1, -1).replace(/""/g, '"') : p));
    return parts.length === 2 ? `${parts[0]}.${parts[1]}` : `public.${parts[0] ?? t}`;
  })) : undefined;
}

/** The configuration as `config check` shows it: every connection string with its password masked. */
export function redactConfig(config: Config): unknown {
  return {
    ...config,
    rabbitmqUrl: redactUrl(config.rabbitmqUrl),
    source: { ...config.source, url: config.source.url && redactUrl(config.source.url) },
    replicas: config.replicas.map((r) => ({ ...r, url: redactUrl(r.url) })),
  };
}

/** Of the tables a source publishes, those a replica takes (its configured `tables`, or all of them). */
export function replicaShare<T extends { schema: string; table: string }>(config: Config, replica: string, tables: T[]): T[] {
  const only = replicaTables(config, replica);
  return only ? tables.filter((t) => only.has(`${t.schema}.${t.table}`)) : tables;
}
