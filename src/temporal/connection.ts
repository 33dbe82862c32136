/** Connecting to Temporal: the address (config, TEMPORAL_ADDRESS or the dev server's default), TLS from the files the config names, and a client with a clear error. */
import * as fs from 'node:fs';
import { Client, Connection, TLSConfig } from '@temporalio/client';
import type { Config } from '../config';
import { ConfigError, UnavailableError, describeCause } from '../errors';

/** Where Temporal is: config temporal.address / TEMPORAL_ADDRESS, or the dev server `pgferry up` starts on the default port. */
export const DEFAULT_TEMPORAL_ADDRESS = '127.0.0.1:7233';

export type TemporalSettings = Config['temporal'];

export function temporalAddress(t: TemporalSettings): string {
  return t.address || DEFAULT_TEMPORAL_ADDRESS;
}

/** TLS options for Connection and NativeConnection (same shape), read from the files the config names. */
export function temporalTls(t: TemporalSettings): TLSConfig | undefined {
  if (!t.tls) return undefined;
  const read = (what: string, file: string | undefined) => {
    if (!file) return undefined;
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw new ConfigError(`temporal.tls.${what} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)}); fix the path in the config file or TEMPORAL_TLS_${what.toUpperCase()}`);
    }
  };
  const crt = read('cert', t.tls.cert);
  const key = read('key', t.tls.key);
  if (Boolean(crt) !== Boolean(key)) throw new ConfigError('temporal.tls: cert and key go together (mTLS); give both or neither');
  return {
    ...(crt && key ? { clientCertPair: { crt, key } } : {}),
    ...(t.tls.ca ? { serverRootCACertificate: read('ca', t.tls.ca) } : {}),
    ...(t.tls.serverName ? { serverNameOverride: t.tls.serverName } : {}),
  };
}

const DEFAULT_HINT = 'is pgferry up running? (or set temporal.address in the config file / TEMPORAL_ADDRESS to your Temporal server)';

export async function connectClient(t: TemporalSettings, opts: { address?: string; hint?: string } = {}): Promise<Client> {
  const address = opts.address ?? temporalAddress(t);
  try {
    const connection = await Connection.connect({ address, tls: temporalTls(t), connectTimeout: 5000 });
    return new Client({ connection, namespace: t.namespace });
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new UnavailableError(`Temporal at ${address}: cannot connect (${describeCause(err)}); ${opts.hint ?? DEFAULT_HINT}`, { cause: err });
  }
}
