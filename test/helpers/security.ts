import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { PgCluster } from './pg-cluster';
import { RABBIT_URL } from './fixture';

/**
 * Helpers of the security tests: clusters that demand passwords, RabbitMQ
 * users of their own, and the search for secrets in everything pgferry
 * printed, logged or left in Temporal.
 */
const run = promisify(execFile);

/**
 * Make a private cluster check passwords (SCRAM) on TCP for every role but
 * `postgres`, which the test harness itself keeps using without one. Unix
 * sockets stay trusted.
 */
export async function requirePasswords(cluster: PgCluster): Promise<void> {
  fs.writeFileSync(
    path.join(cluster.dir, 'pg_hba.conf'),
    [
      'local all all trust',
      'host all postgres 127.0.0.1/32 trust',
      'host replication postgres 127.0.0.1/32 trust',
      'host all all 127.0.0.1/32 scram-sha-256',
      'host replication all 127.0.0.1/32 scram-sha-256',
      '',
    ].join('\n'),
  );
  // Roles created afterwards get SCRAM secrets (password_encryption's default since PostgreSQL 14).
  await cluster.withClient('postgres', (c) => c.query('SELECT pg_reload_conf()'));
}

/** postgres://user:password@…/db, the password percent-encoded as a URL needs it. */
export function urlWith(cluster: PgCluster, db: string, user: string, password: string): string {
  return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${cluster.port}/${encodeURIComponent(db)}`;
}

/** A password unique to this run: a readable prefix, random letters, and optionally characters a URL must encode. */
export function secret(prefix: string, special = ''): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 12)}${special}`;
}

export interface RabbitUser {
  user: string;
  password: string;
  url: string;
  remove(): Promise<void>;
}

/**
 * A RabbitMQ user with a password of its own, allowed only what pgferry
 * does with the stream of one source: declare it (configure), publish to it
 * through the default exchange (write), consume it (read). Null when
 * rabbitmqctl cannot be run here (RabbitMQ elsewhere): the caller then uses
 * the default URL.
 */
export async function createRabbitUser(user: string, password: string, sourceName: string): Promise<RabbitUser | null> {
  const stream = `^pgferry\\.${sourceName}\\.changes$`;
  // Configure also covers the stream's identity lock, an exclusive queue held while a stream gets its identity (README, Least privileges).
  const configure = `^pgferry\\.${sourceName}\\.changes(\\.identity-lock)?$`;
  try {
    await run('rabbitmqctl', ['-q', 'add_user', user, password]);
    await run('rabbitmqctl', ['-q', 'set_permissions', '-p', '/', user, configure, `^(amq\\.default|pgferry\\.${sourceName}\\.changes)$`, stream]);
  } catch {
    await run('rabbitmqctl', ['-q', 'delete_user', user]).catch(() => undefined);
    return null;
  }
  const u = new URL(RABBIT_URL);
  u.username = user;
  u.password = encodeURIComponent(password);
  return {
    user,
    password,
    url: u.toString().replace(/\/$/, ''),
    async remove() {
      await run('rabbitmqctl', ['-q', 'delete_user', user]).catch(() => undefined);
    },
  };
}

/** Base64 of `s` at each of the three byte alignments it can take inside a longer base64 text. */
function base64Forms(s: string): string[] {
  const out: string[] = [];
  for (let pad = 0; pad < 3; pad++) {
    const b = Buffer.from('x'.repeat(pad) + s).toString('base64');
    // Drop the characters that depend on the padding bytes or on what follows.
    const start = pad === 0 ? 0 : Math.ceil((pad * 4) / 3) + 1;
    const end = b.length - 4;
    if (end - start >= 8) out.push(b.slice(start, end));
  }
  return out;
}

/**
 * Every way a secret could show in `text`: each password as is,
 * percent-encoded and in base64 (payloads are base64 in raw histories), any
 * scheme://user:password@ whose password is not the mask `***`, and libpq
 * `password=…` pairs. Returns one line per finding, with context.
 */
export function findSecrets(text: string, passwords: string[]): string[] {
  const found: string[] = [];
  const context = (i: number, len: number) => JSON.stringify(text.slice(Math.max(0, i - 80), i + len + 80));
  for (const p of passwords) {
    for (const form of new Set([p, encodeURIComponent(p), ...base64Forms(p)])) {
      const i = text.indexOf(form);
      if (i >= 0) found.push(`password ${JSON.stringify(p)} (as ${JSON.stringify(form)}) at ${context(i, form.length)}`);
    }
  }
  for (const m of text.matchAll(/\b(postgres(?:ql)?|amqps?):\/\/([^\s:@/"'\\]*):([^\s@/"'\\]*)@/gi)) {
    if (m[3] !== '***' && m[3] !== '%2A%2A%2A') found.push(`a ${m[1]} URL with credentials at ${context(m.index!, m[0].length)}`);
  }
  for (const m of text.matchAll(/\bpassword\s*=\s*('[^']*'|[^\s&"',;)]+)/gi)) {
    if (!/^'?\*\*\*'?$/.test(m[1])) found.push(`a password= pair at ${context(m.index!, m[0].length)}`);
  }
  return found;
}

/** Every file under `dir` (recursively), as text, with its path: for grepping state directories. */
export function filesUnder(dir: string): { file: string; text: string }[] {
  if (!fs.existsSync(dir)) return [];
  const out: { file: string; text: string }[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push({ file: p, text: fs.readFileSync(p).toString('latin1') });
  }
  return out;
}
