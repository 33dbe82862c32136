import { z } from 'zod';
import * as path from 'node:path';
import { ConfigError } from './errors';
import { checkName } from './names';
import { redactUrl } from './redact';

/**
 * Runtime configuration, parsed and validated once at start-up and frozen.
 * It comes from CLI flags and PGFERRY_* environment variables (flags win).
 * Connection strings stay here, in the worker process: workflows and
 * activities only ever see the source and replica *names*.
 */
const pgUrl = z
  .string()
  .min(1)
  .refine((s) => /^postgres(ql)?:\/\//.test(s), 'must be a postgres:// or postgresql:// URL');

const schema = z.object({
  dataDir: z.string().min(1),
  rabbitmqUrl: z.string().refine((s) => /^amqps?:\/\//.test(s), 'must be an amqp:// or amqps:// URL'),
  temporal: z.object({
    address: z.string().min(1).optional(),
    namespace: z.string().min(1),
  }),
  source: z.object({
    name: z.string().superRefine((s, ctx) => {
      const bad = checkName('source', s);
      if (bad) ctx.addIssue({ code: 'custom', message: bad });
    }),
    url: pgUrl.optional(),
    /** wal: logical decoding (pgoutput); trigger: row triggers + change-log table, for sources without wal_level=logical. */
    mode: z.enum(['wal', 'trigger'], { message: "capture mode is 'wal' or 'trigger'" }),
    tables: z.array(z.string().regex(/^[^.]+\.[^.]+$|^[^.]+$/, 'tables are schema.table or table')).optional(),
  }),
  replicas: z.array(
    z.object({
      name: z.string().superRefine((s, ctx) => {
        const bad = checkName('replica', s);
        if (bad) ctx.addIssue({ code: 'custom', message: bad });
      }),
      url: pgUrl,
    }),
  ),
  batch: z.object({
    maxChanges: z.number().int().positive(),
    maxWaitMs: z.number().int().positive(),
    chunkChanges: z.number().int().positive(),
  }),
  connectWaitMs: z.number().int().nonnegative(),
  stream: z.object({
    maxBytes: z.number().int().nonnegative(),
    maxAge: z.string().regex(/^$|^\d+[YMDhms]$/, 'stream max age is a number and a unit (Y, M, D, h, m, s), e.g. 7D; empty for no limit'),
    segmentBytes: z.number().int().positive(),
  }),
});

export type Config = Readonly<z.infer<typeof schema>>;

export interface RawConfig {
  source?: string;
  sourceName?: string;
  tables?: string;
  mode?: string;
  replica?: string[];
  rabbitmq?: string;
  dataDir?: string;
  wait?: string;
}

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

function intFrom(value: string | undefined, fallback: number): number {
  return value === undefined || value === '' ? fallback : Number(value);
}

export function loadConfig(raw: RawConfig, env: NodeJS.ProcessEnv = process.env): Config {
  const replicaSpecs = raw.replica?.length ? raw.replica : env.PGFERRY_REPLICAS ? [env.PGFERRY_REPLICAS] : [];
  const tables = raw.tables ?? env.PGFERRY_TABLES;
  const candidate = {
    dataDir: path.resolve(raw.dataDir ?? env.PGFERRY_DATA_DIR ?? '.pgferry'),
    rabbitmqUrl: raw.rabbitmq ?? env.PGFERRY_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
    temporal: {
      address: env.TEMPORAL_ADDRESS || undefined,
      namespace: env.TEMPORAL_NAMESPACE || 'default',
    },
    source: {
      name: raw.sourceName ?? env.PGFERRY_SOURCE_NAME ?? 'main',
      url: raw.source ?? env.PGFERRY_SOURCE,
      mode: raw.mode ?? env.PGFERRY_CAPTURE_MODE ?? 'wal',
      tables: tables
        ? tables
            .split(',')
            .map((t) => t.trim())
            .filter(Boolean)
        : undefined,
    },
    replicas: parseReplicaSpecs(replicaSpecs),
    batch: {
      maxChanges: intFrom(env.PGFERRY_BATCH_MAX_CHANGES, 5000),
      maxWaitMs: intFrom(env.PGFERRY_BATCH_MAX_WAIT_MS, 1000),
      chunkChanges: intFrom(env.PGFERRY_CHUNK_CHANGES, 2000),
    },
    connectWaitMs: intFrom(raw.wait ?? env.PGFERRY_CONNECT_WAIT_SECONDS, 30) * 1000,
    // Retention of the change log: RabbitMQ removes whole segments, oldest first, once either limit is passed.
    stream: {
      maxBytes: intFrom(env.PGFERRY_STREAM_MAX_BYTES, 20 * 1024 ** 3),
      maxAge: env.PGFERRY_STREAM_MAX_AGE ?? '7D',
      segmentBytes: intFrom(env.PGFERRY_STREAM_SEGMENT_BYTES, 500_000_000),
    },
  };
  const parsed = schema.safeParse(candidate);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'config'}: ${i.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  const names = parsed.data.replicas.map((r) => r.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new ConfigError(`replica '${dup}' is given twice; each --replica needs its own name`);
  return Object.freeze(parsed.data);
}

export function requireSourceUrl(config: Config): string {
  if (!config.source.url) {
    throw new ConfigError(`source '${config.source.name}': no connection URL; pass --source postgres://… or set PGFERRY_SOURCE`);
  }
  return config.source.url;
}

export function replicaUrl(config: Config, name: string): string {
  const r = config.replicas.find((x) => x.name === name);
  if (!r) {
    throw new ConfigError(
      `replica '${name}' is not configured in this worker; pass --replica ${name}=postgres://… (or PGFERRY_REPLICAS) to the process running the worker`,
    );
  }
  return r.url;
}
