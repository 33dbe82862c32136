/**
 * Every setting of pgferry, one row each: where it lands in `Config`, its
 * key in the config file, its environment variable and CLI flag, its default
 * and what it means.
 *
 * config.ts builds everything else from these rows: the values it hands to
 * the schema (flag > environment > file > default), the known keys of each
 * file section (a typo is an error, not a silent default) and the names
 * error messages use. Adding a setting is adding a row here and its rule to
 * the zod schema in config.ts; test/unit/settings.test.ts fails until the two
 * agree.
 */
import type { RawConfig } from './config';

export interface Setting {
  /** Where the value lands in `Config`, dotted; `[]` marks a list element (`replicas[].url`). Absent for a file-only key. */
  readonly path?: string;
  /** The key in the config file, dotted by section: `batch.max_changes`, `sources[].mode`, `rabbitmq_url`. */
  readonly file: string;
  readonly env?: string;
  /** The commander option name (a `RawConfig` key); the flag is its kebab-case, `dataDir` → `--data-dir`. */
  readonly flag?: keyof RawConfig;
  /** The flag's value in CLI help, e.g. `<url>`. */
  readonly arg?: string;
  /** As the user would write it (seconds for `unit: 'seconds'`). */
  readonly default?: string | number;
  /**
   * text: taken as given; path: resolved against the working directory;
   * number: environment strings become numbers (the schema names anything
   * else); tables: a comma-separated list from a flag or variable, a YAML list
   * in the file.
   */
  readonly type: 'text' | 'path' | 'number' | 'tables';
  /** Written in seconds, kept in milliseconds (`*Ms` paths). */
  readonly unit?: 'seconds';
  /** An empty string is a value (no limit, no tables), not absence: it overrides lower sources. */
  readonly keepEmpty?: true;
  /** false: error messages name the setting by its path alone, without file key, variable and flag (as they always have for it). */
  readonly label?: false;
  /** Its shape is not one value from flag/environment/file/default, so config.ts reads it with dedicated code; the row still gives its keys. */
  readonly dedicated?: true;
  readonly help: string;
}

// The order of rows is the order messages list known keys in ("known: rabbitmq_url, data_dir, …").
export const SETTINGS = [
  { path: 'rabbitmqUrl', file: 'rabbitmq_url', env: 'PGFERRY_RABBITMQ_URL', flag: 'rabbitmq', arg: '<url>', default: 'amqp://guest:guest@127.0.0.1:5672', type: 'text', help: 'RabbitMQ (3.9+, streams)' },
  { path: 'dataDir', file: 'data_dir', env: 'PGFERRY_DATA_DIR', flag: 'dataDir', arg: '<dir>', default: '.pgferry', type: 'path', help: 'where pgferry keeps local state such as the dev server database' },
  {
    path: 'connectWaitMs', file: 'connect_wait_seconds', env: 'PGFERRY_CONNECT_WAIT_SECONDS', flag: 'wait', arg: '<seconds>', default: 30, type: 'number', unit: 'seconds',
    help: 'how long `up` retries servers that do not answer at start-up before giving up',
  },

  { path: 'temporal.address', file: 'temporal.address', env: 'TEMPORAL_ADDRESS', type: 'text', label: false, help: 'your Temporal cluster; unset: `up` starts a dev server' },
  { path: 'temporal.namespace', file: 'temporal.namespace', env: 'TEMPORAL_NAMESPACE', default: 'default', type: 'text', label: false, help: 'Temporal namespace' },
  { path: 'temporal.tls.cert', file: 'temporal.tls.cert', env: 'TEMPORAL_TLS_CERT', type: 'text', label: false, dedicated: true, help: 'client certificate file (mTLS)' },
  { path: 'temporal.tls.key', file: 'temporal.tls.key', env: 'TEMPORAL_TLS_KEY', type: 'text', label: false, dedicated: true, help: 'client key file (mTLS)' },
  { path: 'temporal.tls.ca', file: 'temporal.tls.ca', env: 'TEMPORAL_TLS_CA', type: 'text', label: false, dedicated: true, help: 'CA certificate file of the Temporal server' },
  { path: 'temporal.tls.serverName', file: 'temporal.tls.server_name', env: 'TEMPORAL_TLS_SERVER_NAME', type: 'text', label: false, dedicated: true, help: 'name the Temporal server certificate must carry' },

  {
    path: 'source.name', file: 'sources[].name', env: 'PGFERRY_SOURCE_NAME', flag: 'sourceName', arg: '<name>', default: 'main', type: 'text',
    help: 'names the slot pgferry_<name>, the publication and the stream pgferry.<name>.changes; chooses among the file\'s sources',
  },
  { path: 'source.url', file: 'sources[].url', env: 'PGFERRY_SOURCE', flag: 'source', arg: '<url>', type: 'text', help: 'source database (libpq URL or keyword/value string)' },
  { path: 'source.mode', file: 'sources[].mode', env: 'PGFERRY_CAPTURE_MODE', flag: 'mode', arg: '<mode>', default: 'wal', type: 'text', help: 'capture mode: wal (logical decoding) or trigger (row triggers, for wal_level below logical)' },
  { path: 'source.tables', file: 'sources[].tables', env: 'PGFERRY_TABLES', flag: 'tables', arg: '<list>', type: 'tables', label: false, help: 'schema.table,… to replicate (default: all tables)' },
  {
    path: 'source.exclude', file: 'sources[].exclude', env: 'PGFERRY_EXCLUDE_TABLES', type: 'tables', keepEmpty: true, label: false,
    help: 'schema.table,… not to replicate (when tables is not given)',
  },
  {
    path: 'source.publish', file: 'sources[].publish', type: 'text', label: false, dedicated: true,
    help: 'per table of tables, the columns and rows pgferry\'s publication sends: {table: {columns: [..], rows: "SQL condition"}} (WAL capture, PostgreSQL 15+)',
  },
  { path: 'source.heartbeatMs', file: 'sources[].heartbeat_seconds', env: 'PGFERRY_HEARTBEAT_SECONDS', default: 60, type: 'number', unit: 'seconds', help: 'idle-source heartbeat' },
  { path: 'source.slotWarnBytes', file: 'sources[].slot_warn_bytes', env: 'PGFERRY_SLOT_WARN_BYTES', default: 1024 ** 3, type: 'number', help: 'status and metrics warn when the slot retains more WAL' },

  // --replica / PGFERRY_REPLICAS give name=url pairs, which replace the file's replicas.
  { path: 'replicas[].name', file: 'replicas[].name', env: 'PGFERRY_REPLICAS', flag: 'replica', arg: '<name=url>', type: 'text', label: false, dedicated: true, help: 'a replica, as name=url; repeatable (env: "a=url,b=url")' },
  { path: 'replicas[].url', file: 'replicas[].url', env: 'PGFERRY_REPLICAS', flag: 'replica', type: 'text', label: false, dedicated: true, help: 'a replica\'s connection' },
  { file: 'replicas[].source', type: 'text', label: false, dedicated: true, help: 'the source a replica takes; needed when the file lists several sources' },
  { path: 'replicas[].tables', file: 'replicas[].tables', type: 'tables', label: false, dedicated: true, help: 'only these tables are applied to the replica' },
  {
    path: 'replicas[].schemaChanges', file: 'replicas[].schema_changes', type: 'text', label: false, dedicated: true,
    help: 'what a schema change on the source does to the replica: apply (default; safe changes applied with the data, others stop it), stop (stop there for the operator), ignore',
  },

  { path: 'stream.maxBytes', file: 'stream.max_bytes', env: 'PGFERRY_STREAM_MAX_BYTES', default: 20 * 1024 ** 3, type: 'number', help: 'retention of the change stream, in bytes' },
  { path: 'stream.maxAge', file: 'stream.max_age', env: 'PGFERRY_STREAM_MAX_AGE', default: '7D', type: 'text', keepEmpty: true, help: 'retention of the change stream, e.g. 7D; empty for no limit' },
  { path: 'stream.segmentBytes', file: 'stream.segment_bytes', env: 'PGFERRY_STREAM_SEGMENT_BYTES', default: 500_000_000, type: 'number', help: 'size of the stream\'s segment files' },

  { path: 'batch.maxChanges', file: 'batch.max_changes', env: 'PGFERRY_BATCH_MAX_CHANGES', default: 20_000, type: 'number', help: 'most changes per apply batch (a batch also ends at max_wait_ms)' },
  { path: 'batch.maxWaitMs', file: 'batch.max_wait_ms', env: 'PGFERRY_BATCH_MAX_WAIT_MS', default: 100, type: 'number', help: 'longest a change waits in an apply batch before it commits: under load, about what a replica lags by' },
  { path: 'batch.chunkChanges', file: 'batch.chunk_changes', env: 'PGFERRY_CHUNK_CHANGES', default: 2000, type: 'number', help: 'most changes per stream message' },
  { path: 'batch.chunkBytes', file: 'batch.chunk_bytes', env: 'PGFERRY_CHUNK_BYTES', default: 120 * 1024 /* envelope.ts CHUNK_BYTES: one AMQP frame */, type: 'number', help: 'about how many bytes of values per stream message' },
  {
    path: 'batch.runTxns', file: 'batch.run_txns', env: 'PGFERRY_RUN_TXNS', default: 256, type: 'number',
    help: 'most whole transactions capture puts in one stream message while RabbitMQ confirms earlier ones (1: one message per transaction)',
  },
  { path: 'batch.runBytes', file: 'batch.run_bytes', env: 'PGFERRY_RUN_BYTES', default: 512 * 1024, type: 'number', help: 'about how many bytes of values one run of transactions holds' },
  {
    path: 'batch.copyLinesAfter', file: 'batch.copy_lines_after', env: 'PGFERRY_COPY_LINES_AFTER', default: 64, type: 'number',
    help: 'WAL capture: a transaction\'s inserts from its Nth change on travel as COPY lines (envelope version 5); 0: never, for readers older than version 5',
  },
  {
    path: 'batch.maxMessageBytes', file: 'batch.max_message_bytes', env: 'PGFERRY_MAX_MESSAGE_BYTES', default: 64 * 1024 * 1024, type: 'number',
    help: 'the largest single change capture publishes (RabbitMQ\'s max_message_size must allow it)',
  },
  {
    path: 'batch.captureRunMs', file: 'batch.capture_run_seconds', env: 'PGFERRY_CAPTURE_RUN_SECONDS', default: 900, type: 'number', unit: 'seconds',
    help: 'capture returns and reconnects to its slot this often',
  },
  {
    path: 'batch.applySessionMs', file: 'batch.apply_session_seconds', env: 'PGFERRY_APPLY_SESSION_SECONDS', default: 30, type: 'number', unit: 'seconds',
    help: 'an apply session runs batches this long before the replica workflow records its progress and starts the next',
  },

  {
    path: 'metrics.port', file: 'metrics.port', env: 'PGFERRY_METRICS_PORT', flag: 'metricsPort', arg: '<port>', default: 9464, type: 'number',
    help: 'Prometheus endpoint of worker processes; 0 turns it off',
  },
  { path: 'metrics.host', file: 'metrics.host', env: 'PGFERRY_METRICS_HOST', default: '0.0.0.0', type: 'text', help: 'address the metrics endpoint listens on' },
] as const satisfies readonly Setting[];

type Row = (typeof SETTINGS)[number];
export type SettingPath = NonNullable<Extract<Row, { path: string }>['path']>;

/** The row of a `Config` path, typed exactly (its default keeps its literal type). */
export function settingAt<P extends SettingPath>(path: P): Extract<Row, { path: P }> {
  const row = (SETTINGS as readonly Setting[]).find((s) => s.path === path);
  if (!row) throw new Error(`no setting for ${path}`);
  return row as Extract<Row, { path: P }>;
}

/** `dataDir` → `--data-dir`. */
export function flagName(flag: keyof RawConfig): string {
  return `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** How error messages name a setting: file key, then variable and flag, e.g. `batch.max_changes (PGFERRY_BATCH_MAX_CHANGES)`; undefined for `label: false`. */
export function settingLabel(s: Setting): string | undefined {
  if (s.label === false) return undefined;
  const also = [s.env, s.flag && flagName(s.flag)].filter(Boolean);
  return also.length ? `${s.file} (${also.join(', ')})` : s.file;
}

/** `sources[].mode` → ['sources[]', 'mode']; `rabbitmq_url` → ['rabbitmq_url']. */
function fileKeyParts(s: Setting): string[] {
  return s.file.split('.');
}

const unique = (xs: string[]): string[] => [...new Set(xs)];

/** The config file's top-level keys, in table order: rabbitmq_url, …, sources, replicas, …. */
export function topLevelKeys(): string[] {
  return unique(SETTINGS.map((s) => fileKeyParts(s)[0].replace(/\[\]$/, '')));
}

/** The top-level keys that hold one mapping (temporal, stream, batch, metrics). */
export function mappingSections(): string[] {
  return unique(SETTINGS.map(fileKeyParts).filter((p) => p.length > 1 && !p[0].endsWith('[]')).map((p) => p[0]));
}

/** The keys a file section may hold, in table order: `sectionKeys('batch')`, `sectionKeys('sources')`. */
export function sectionKeys(section: string): string[] {
  return unique(
    SETTINGS.map(fileKeyParts)
      .filter((p) => p.length > 1 && p[0].replace(/\[\]$/, '') === section)
      .map((p) => p[1]),
  );
}

/** A CLI option from its setting row: `--source-name <name>`, its help with the variable and default. */
export function flagOption(flag: keyof RawConfig): { flags: string; description: string } {
  const row = (SETTINGS as readonly Setting[]).find((s) => s.flag === flag);
  if (!row) throw new Error(`no setting has the flag ${flag}`);
  const notes = [row.env && `env ${row.env}`, row.default !== undefined && `default ${row.default}`].filter(Boolean);
  return { flags: `${flagName(flag)} ${row.arg ?? '<value>'}`, description: notes.length ? `${row.help} (${notes.join(', ')})` : row.help };
}

/** The flags connection options offer, in table order (the replica pair is one flag). */
export function connectionFlags(): (keyof RawConfig)[] {
  return unique((SETTINGS as readonly Setting[]).flatMap((s) => (s.flag ? [s.flag] : []))) as (keyof RawConfig)[];
}
