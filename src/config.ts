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
 *
 * Which settings exist, and their file keys, variables, flags and defaults,
 * is the table in settings.ts; this module turns it into values, known-key
 * checks and error-message names, and validates the result with the schema.
 */
import { z } from 'zod';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './errors';
import { checkName } from './names';
import { redactUrl } from './redact';
import { sectionKeys, mappingSections, type Setting, SETTINGS, settingAt, settingLabel, topLevelKeys } from './settings';

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
  /**
   * Column lists and row filters of pgferry's own publication, per table of
   * `tables` (WAL capture): what PostgreSQL 15 publications can say, set from
   * the config instead of by the DBA. Every part of pgferry then honours them
   * as it does a DBA's (capture/wal/prepare.ts publishedTables).
   */
  publish: z
    .record(
      tableName,
      z
        .object({
          columns: z.array(z.string().min(1)).min(1, 'list at least one column').optional(),
          rows: z.string().min(1, 'give an SQL condition, e.g. "region = \'eu\'"').optional(),
        })
        .strict(),
    )
    .optional(),
  /** How often capture writes a transactional logical message on a source that writes nothing, so its slot keeps advancing. */
  heartbeatMs: count.positive('must be > 0'),
  /** Status and metrics warn when the slot holds back more WAL than this. */
  slotWarnBytes: count.nonnegative(),
}).superRefine((src, ctx) => {
  if (!src.publish) return;
  const path = ['publish'];
  // (That each table is one of `tables` is checked against the catalog, where names resolve: capture/wal/prepare.ts.)
  if (src.mode !== 'wal') ctx.addIssue({ code: 'custom', path, message: 'column lists and row filters need WAL capture (mode: wal); trigger capture sends whole rows' });
});

/** Exported for test/unit/settings.test.ts, which keeps it and the settings table in step. */
export const configSchema = z.object({
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
      /** What a schema change captured on the source does to this replica (apply/schema-apply.ts). */
      schemaChanges: z.enum(['apply', 'stop', 'ignore'], { message: 'must be apply, stop or ignore' }).optional(),
    }),
  ),
  batch: z.object({
    maxChanges: count.positive('must be > 0'),
    maxWaitMs: count.positive('must be > 0'),
    chunkChanges: count.positive('must be > 0'),
    /** A chunk of a large transaction ends once its values add up to about this many bytes. */
    chunkBytes: count.min(1024, 'must be at least 1024'),
    /** Whole transactions one stream message may carry (a run, changelog/runs.ts); 1: one message per transaction. */
    runTxns: count.positive('must be > 0'),
    runBytes: count.min(1024, 'must be at least 1024'),
    /** WAL capture: a transaction's inserts travel as COPY lines (envelope version 5) from this change on; 0: never. */
    copyLinesAfter: count.nonnegative('must be 0 or more'),
    /** The largest single change capture may publish (RabbitMQ's max_message_size must allow it). */
    maxMessageBytes: count.min(1024 * 1024, 'must be at least 1 MiB'),
    /** Capture returns (and the workflow continues as new) after this long; it then reconnects to the slot. */
    captureRunMs: count.min(1000, 'must be at least 1 second'),
    applySessionMs: count.min(1000, 'must be at least 1 second'),
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

export type Config = Readonly<z.infer<typeof configSchema>>;
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

/** The defaults other modules need; they live in the settings table (heartbeatSeconds as written: seconds). */
export const DEFAULTS = {
  sourceName: settingAt('source.name').default,
  rabbitmqUrl: settingAt('rabbitmqUrl').default,
  heartbeatSeconds: settingAt('source.heartbeatMs').default,
  slotWarnBytes: settingAt('source.slotWarnBytes').default,
  metricsPort: settingAt('metrics.port').default,
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

/** The config file's top-level keys, and the keys of each of its sections, all from the settings table. */
const FILE_KEYS = topLevelKeys();
const SOURCE_KEYS = sectionKeys('sources');
const REPLICA_KEYS = sectionKeys('replicas');
/** Unknown keys of the mapping sections are reported in this order: temporal last, as before the settings table. */
const CHECKED_SECTIONS = [...mappingSections().filter((s) => s !== 'temporal'), 'temporal'];

/** The parsed, interpolated file: its top-level mapping, and its two lists checked to be lists. */
interface FileConfig {
  root: Record<string, unknown>;
  sources: Record<string, unknown>[];
  replicas: Record<string, unknown>[];
}

/** What the table's file keys are looked up in: the file, and of its sources the one this process serves. */
interface FileView {
  root: Record<string, unknown>;
  source: Record<string, unknown>;
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
  const root = (interpolateValues(doc ?? {}, env, missing) ?? {}) as Record<string, unknown>;
  if (typeof root !== 'object' || Array.isArray(root)) throw new ConfigError(`config file ${file}: the top level must be a mapping (keys ${FILE_KEYS.join(', ')})`);
  for (const m of missing) problems.push(`\${${m}}: environment variable is not set (set it, or write \${${m}:-default})`);
  for (const k of Object.keys(root)) if (!FILE_KEYS.includes(k)) problems.push(`${k}: unknown key (known: ${FILE_KEYS.join(', ')})`);
  return { root, sources: fileList(root, 'sources', problems), replicas: fileList(root, 'replicas', problems) };
}

/** Interpolate after parsing, in string values only: a secret containing ':' or '#' cannot break the YAML. */
function interpolateValues(v: unknown, env: NodeJS.ProcessEnv, missing: Set<string>): unknown {
  if (typeof v === 'string') return interpolate(v, env, missing);
  if (Array.isArray(v)) return v.map((x) => interpolateValues(x, env, missing));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, interpolateValues(x, env, missing)]));
  return v;
}

function fileList(root: Record<string, unknown>, key: string, problems: string[]): Record<string, unknown>[] {
  const v = root[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    problems.push(`${key}: must be a list (- name: …)`);
    return [];
  }
  return v as Record<string, unknown>[];
}

/** A file section that is some kind of object (a list too: its indexes are then reported as unknown keys). */
function fileMapping(v: unknown): Record<string, unknown> | undefined {
  return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
}

/** A dotted file key's value: `batch.max_changes`, `sources[].mode` (in the chosen source), `temporal.tls`. */
function fileValue(view: FileView, key: string): unknown {
  const [head, ...rest] = key.split('.');
  let v: unknown = head === 'sources[]' ? view.source : view.root[head];
  for (const k of rest) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return v;
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

/** The first value given: unset, null and empty all mean "not given here". */
function first(...values: unknown[]): any {
  return values.find((v) => v !== undefined && v !== null && v !== '') ?? undefined;
}

/** One table row's value before validation: flag, else environment, else file, else default. */
function resolveSetting(s: Setting, raw: RawConfig, env: NodeJS.ProcessEnv, view: FileView): unknown {
  const given = (...values: unknown[]) => (s.keepEmpty ? values.find((v) => v !== undefined && v !== null) : first(...values));
  const fromFlag = s.flag && raw[s.flag];
  const fromEnv = s.env && env[s.env];
  const fromFile = fileValue(view, s.file);
  switch (s.type) {
    case 'tables':
      // Flags and variables are comma-separated text; the file has a YAML list, passed as written for the schema to check.
      return split(given(fromFlag, fromEnv) as string | undefined) ?? fromFile;
    case 'path':
      return path.resolve(String(given(fromFlag, fromEnv, fromFile, s.default)));
    case 'number': {
      const n = num(given(fromFlag, fromEnv, fromFile, s.default));
      return s.unit === 'seconds' ? (n as number) * 1000 : n;
    }
    case 'text':
      return given(fromFlag, fromEnv, fromFile, s.default);
  }
}

type Tree = Record<string, unknown>;

function setAt(tree: Tree, dotted: string, value: unknown): void {
  const keys = dotted.split('.');
  let node = tree;
  for (const k of keys.slice(0, -1)) node = (node[k] ??= {}) as Tree;
  node[keys[keys.length - 1]] = value;
}

/** Every setting the table resolves by itself, placed at its path; dedicated rows are filled in by their own code. */
function tableValues(raw: RawConfig, env: NodeJS.ProcessEnv, view: FileView): Tree {
  const tree: Tree = {};
  for (const s of SETTINGS as readonly Setting[]) if (s.path && !s.dedicated) setAt(tree, s.path, resolveSetting(s, raw, env, view));
  return tree;
}

/** Which of the file's sources this process serves: the one named by flag or variable, else the only one. */
function chooseFileSource(sources: Record<string, unknown>[], wantedName: unknown, file: string | undefined, problems: string[]): Record<string, unknown> {
  if (!sources.length) return {};
  const named = sources.filter((s) => s && typeof s === 'object');
  const match = wantedName ? named.find((s) => s.name === wantedName) : named.length === 1 ? named[0] : undefined;
  if (match) return match;
  const listed = named.map((s) => String(s.name)).join(', ');
  if (wantedName) problems.push(`source '${wantedName}': not in ${file} (it has ${listed})`);
  else problems.push(`sources: ${file} lists ${named.length} sources (${listed}); choose one with --source-name or PGFERRY_SOURCE_NAME`);
  return {};
}

function checkFileSource(fileSource: Record<string, unknown>, sourceName: unknown, problems: string[]): void {
  for (const k of Object.keys(fileSource)) if (!SOURCE_KEYS.includes(k)) problems.push(`sources.${sourceName}.${k}: unknown key`);
}

function checkFileReplicas(f: FileConfig, problems: string[]): void {
  f.replicas.forEach((r, i) => {
    const label = `replicas.${typeof r?.name === 'string' ? r.name : i}`;
    if (!r || typeof r !== 'object') return problems.push(`${label}: must be a mapping (${REPLICA_KEYS.join(', ')})`);
    for (const k of Object.keys(r)) if (!REPLICA_KEYS.includes(k)) problems.push(`${label}.${k}: unknown key`);
    if (f.sources.length > 1 && r.source === undefined) problems.push(`${label}.source: required when the file lists several sources`);
  });
}

function checkFileSections(root: Record<string, unknown>, problems: string[]): void {
  for (const section of CHECKED_SECTIONS) {
    const known = sectionKeys(section);
    for (const k of Object.keys(fileMapping(root[section]) ?? {})) if (!known.includes(k)) problems.push(`${section}.${k}: unknown key (known: ${known.join(', ')})`);
  }
}

/** A replica's fields in the file and in `Config`, from the table: [file key, config key]. */
const REPLICA_FIELDS = (SETTINGS as readonly Setting[])
  .filter((s) => s.path?.startsWith('replicas[].'))
  .map((s) => [s.file.slice('replicas[].'.length), s.path!.slice('replicas[].'.length)] as const);

/** --replica flags, else PGFERRY_REPLICAS, replace the file's replicas; the file's are those of this source. */
function replicasOf(raw: RawConfig, env: NodeJS.ProcessEnv, f: FileConfig, sourceName: unknown, problems: string[]): Tree[] {
  const { flag, env: variable } = settingAt('replicas[].url');
  const flags = raw[flag];
  const specs = flags?.length ? flags : env[variable] ? [env[variable]] : [];
  if (specs.length) return replicaFlags(specs, problems);
  return f.replicas
    .filter((r) => r && typeof r === 'object' && (r.source === undefined || r.source === sourceName))
    .map((r) => Object.fromEntries(REPLICA_FIELDS.filter(([fileKey]) => r[fileKey] !== undefined).map(([fileKey, key]) => [key, r[fileKey]])));
}

const TLS_ROWS = (SETTINGS as readonly Setting[]).filter((s) => s.path?.startsWith('temporal.tls.'));

/** temporal.tls from the file's tls section (each field overridden by its variable), else from the variables alone. */
function temporalTls(env: NodeJS.ProcessEnv, view: FileView): Tree | undefined {
  const field = (s: Setting) => s.path!.slice('temporal.tls.'.length);
  if (fileValue(view, 'temporal.tls')) return Object.fromEntries(TLS_ROWS.map((s) => [field(s), first(env[s.env!], fileValue(view, s.file))]));
  // Without a tls section, a certificate or a CA in the environment turns TLS on.
  if (env[settingAt('temporal.tls.cert').env] || env[settingAt('temporal.tls.ca').env]) return Object.fromEntries(TLS_ROWS.map((s) => [field(s), env[s.env!]]));
  return undefined;
}

export function loadConfig(raw: RawConfig, env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const file = raw.config ?? env.PGFERRY_CONFIG;
  const f: FileConfig = file ? readConfigFile(file, env, problems) : { root: {}, sources: [], replicas: [] };
  const nameRow = settingAt('source.name');
  const fileSource = chooseFileSource(f.sources, first(raw[nameRow.flag], env[nameRow.env]), file, problems);
  const view: FileView = { root: f.root, source: fileSource };
  const candidate = tableValues(raw, env, view);
  const sourceName = (candidate.source as Tree).name;
  checkFileSource(fileSource, sourceName, problems);
  checkFileReplicas(f, problems);
  setAt(candidate, 'temporal.tls', temporalTls(env, view));
  const publish = fileValue(view, settingAt('source.publish').file);
  if (publish !== undefined && publish !== null) setAt(candidate, 'source.publish', publish);
  candidate.replicas = replicasOf(raw, env, f, sourceName, problems);
  checkFileSections(f.root, problems);
  return validated(candidate as Tree & { replicas: { name?: unknown }[] }, file, problems);
}

/** Check the candidate with the schema; every problem found so far and by the schema is reported in one error. */
function validated(candidate: Tree & { replicas: { name?: unknown }[] }, file: string | undefined, problems: string[]): Config {
  const parsed = configSchema.safeParse(candidate);
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

/** Where each setting comes from, as the user writes it: file key, then environment variable or flag (settingLabel). */
const LABELS: Record<string, string> = Object.fromEntries(
  (SETTINGS as readonly Setting[]).flatMap((s) => {
    const label = settingLabel(s);
    return s.path && label ? [[s.path, label]] : [];
  }),
);

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

/** Each replica's table set of a loaded config; a frozen config never changes, so its lists are parsed once. */
const replicaTableSets = new WeakMap<Config, ReadonlyMap<string, ReadonlySet<string> | undefined>>();

/** The tables a replica takes ("schema.table"; a bare name means public.name), or undefined for all the source publishes. */
export function replicaTables(config: Config, name: string): ReadonlySet<string> | undefined {
  // Called for every apply batch. A config built by hand (not frozen) may still change, so it is parsed each time.
  if (!Object.isFrozen(config)) return tableSet(config.replicas.find((x) => x.name === name)?.tables);
  let sets = replicaTableSets.get(config);
  if (!sets) {
    const byName = new Map<string, ReadonlySet<string> | undefined>();
    // The first of a name wins, as find() would pick it (loadConfig refuses duplicate names anyway).
    for (const r of config.replicas) if (!byName.has(r.name)) byName.set(r.name, tableSet(r.tables));
    replicaTableSets.set(config, (sets = byName));
  }
  return sets.get(name);
}

/** A table as the config names it: quoted parts are unquoted ("a.b"."c" is schema a.b, table c), a bare name is in public. */
export function parseTableName(t: string): { schema: string; table: string } {
  const parts = (t.match(TABLE_PART) ?? []).map((p) => (p.startsWith('"') ? p.slice(1, -1).replace(/""/g, '"') : p));
  return parts.length === 2 ? { schema: parts[0], table: parts[1] } : { schema: 'public', table: parts[0] ?? t };
}

/** "schema.table" of each, to compare with the catalog's names. */
function tableSet(tables: readonly string[] | undefined): ReadonlySet<string> | undefined {
  if (!tables) return undefined;
  return new Set(
    tables.map((t) => {
      const p = parseTableName(t);
      return `${p.schema}.${p.table}`;
    }),
  );
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

/** A replica's schema_changes policy: apply unless the config says otherwise. */
export function replicaSchemaPolicy(config: Config, name: string): 'apply' | 'stop' | 'ignore' {
  return config.replicas.find((x) => x.name === name)?.schemaChanges ?? 'apply';
}

/** Of the tables a source publishes, those a replica takes (its configured `tables`, or all of them). */
export function replicaShare<T extends { schema: string; table: string }>(config: Config, replica: string, tables: T[]): T[] {
  const only = replicaTables(config, replica);
  return only ? tables.filter((t) => only.has(`${t.schema}.${t.table}`)) : tables;
}
