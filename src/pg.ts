/**
 * PostgreSQL connections. Every value we read stays in PostgreSQL's text form:
 * the type parsers below return the raw string for every type, so timestamps
 * keep their microseconds and json keeps its key order and spacing.
 */
import pg from 'pg';
import { ConfigError, PgferryError, UnavailableError, describeCause, isAuthenticationError, isMissingDatabase, isTransient } from './errors';
import { redactText, redactUrl } from './redact';

const rawText = (v: string) => v;
export const TEXT_TYPES = {
  getTypeParser: () => rawText,
} as unknown as pg.CustomTypesConfig;

/**
 * Session settings pinned on every connection pgferry opens, source and
 * replica alike, including the replication connection (pgoutput formats
 * values with the walsender's settings). Values travel as text, so both ends
 * must write and read the same text whatever the servers' own defaults are:
 * a source with DateStyle 'SQL, DMY' would otherwise print 03/04/2024 for a
 * replica with 'ISO, MDY' to read as 4 March; money is printed and read in
 * the C locale so the amount, not a locale's rendering, crosses over.
 */
export const SESSION_OPTIONS = '-c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3 -c lc_monetary=C -c bytea_output=hex';

/**
 * Sessions that write replicas and compare them (apply, verify) also pin
 * search_path, as PostgreSQL's own apply worker does: everything pgferry
 * names is schema-qualified, and nothing it runs resolves through a schema a
 * role's default search_path happens to put first. (Not for the sessions an
 * application's subscriber handler uses: those are the application's.)
 */
export const REPLICA_SESSION_OPTIONS = `${SESSION_OPTIONS} -c search_path=pg_catalog,pg_temp`;

/** Turn a connection failure into a one-line error naming the server, the cause and the fix. */
export function connectError(what: string, url: string, err: unknown): PgferryError {
  const e = err as { code?: string };
  const cause = redactText(describeCause(err), [url]);
  const where = `${what} at ${redactUrl(url)}`;
  if (e?.code === 'ENOTFOUND') return new ConfigError(`${where}: host not found (${cause}); fix the host name in the connection URL`, { cause: err });
  if (isAuthenticationError(err)) {
    return new ConfigError(`${where}: authentication failed (${cause}); fix the user or password in the connection URL or pg_hba.conf`, { cause: err });
  }
  if (isMissingDatabase(err)) return new ConfigError(`${where}: ${cause}; create the database or fix its name in the connection URL`, { cause: err });
  if (isTransient(err) || !e?.code) {
    return new UnavailableError(`${where}: cannot connect (${cause}); check that PostgreSQL is running and reachable at that address`, { cause: err });
  }
  return new ConfigError(`${where}: ${cause}`, { cause: err });
}

export async function connectPg(what: string, url: string, options: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, types: TEXT_TYPES, options: SESSION_OPTIONS, connectionTimeoutMillis: 10_000, ...options });
  client.on('error', () => {
    /* surfaced by the next query */
  });
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw connectError(what, url, err);
  }
  return client;
}

export function createPool(url: string, max = 4, options = SESSION_OPTIONS): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, types: TEXT_TYPES, options, max, connectionTimeoutMillis: 10_000, idleTimeoutMillis: 30_000 });
  pool.on('error', () => {
    /* an idle client lost its connection; the pool replaces it */
  });
  // A client in use whose connection dies (pg_terminate_backend, a server restart) emits 'error'
  // besides failing its query; without a listener that event would kill the whole worker process.
  // The failed query is what reports it (the activity retries, releasing the client as broken).
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
  });
  return pool;
}

export async function poolConnect(what: string, url: string, pool: pg.Pool): Promise<pg.PoolClient> {
  try {
    return await pool.connect();
  } catch (err) {
    throw connectError(what, url, err);
  }
}

export async function withClient<T>(what: string, url: string, fn: (c: pg.Client) => Promise<T>, options: Partial<pg.ClientConfig> = {}): Promise<T> {
  const c = await connectPg(what, url, options);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

export const ident = (s: string) => pg.escapeIdentifier(s);
export const escapeLiteral = (s: string) => pg.escapeLiteral(s);
export const qualified = (schema: string, table: string) => `${ident(schema)}.${ident(table)}`;
