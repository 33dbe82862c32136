import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { interpolate, keywordsToUrl, loadConfig, replicaTables } from '../../src/config';
import { ConfigError } from '../../src/errors';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-config-'));
let n = 0;
function file(text: string): string {
  const f = path.join(dir, `pgferry-${++n}.yaml`);
  fs.writeFileSync(f, text);
  return f;
}

const VALID = `
rabbitmq_url: amqp://pgferry:\${RABBIT_PASSWORD}@mq:5672
data_dir: /var/lib/pgferry
temporal:
  address: temporal.internal:7233
  namespace: replication
sources:
  - name: shop
    url: postgres://capture:\${SHOP_PASSWORD}@db1:5432/shop?sslmode=require
    mode: wal
    exclude: [public.audit_log]
    heartbeat_seconds: 15
    slot_warn_bytes: 5000000000
  - name: billing
    url: host=db2 port=5433 dbname=billing user=capture password='p w#1'
    mode: trigger
    tables: [public.invoices, public.payments]
replicas:
  - name: analytics
    source: shop
    url: postgres://app:\${ANALYTICS_PASSWORD:-dev}@dw:5432/analytics
  - name: search
    source: shop
    url: postgres://app@search-db/search
    tables: [orders, public.products]
  - name: finance
    source: billing
    url: postgres://app@fin/finance
stream:
  max_bytes: 1000000000
  max_age: 2D
batch:
  max_changes: 2000
metrics:
  port: 9100
`;
const ENV = { RABBIT_PASSWORD: 'r4bbit', SHOP_PASSWORD: 's:h#op' };

describe('config file', () => {
  it('reads a valid file: the chosen source, its replicas, secrets from the environment', () => {
    const c = loadConfig({ config: file(VALID), sourceName: 'shop' }, ENV);
    expect(c.rabbitmqUrl).toBe('amqp://pgferry:r4bbit@mq:5672');
    expect(c.dataDir).toBe('/var/lib/pgferry');
    expect(c.temporal).toEqual({ address: 'temporal.internal:7233', namespace: 'replication' });
    expect(c.source).toEqual({
      name: 'shop',
      url: 'postgres://capture:s:h#op@db1:5432/shop?sslmode=require',
      mode: 'wal',
      exclude: ['public.audit_log'],
      heartbeatMs: 15_000,
      slotWarnBytes: 5_000_000_000,
    });
    expect(c.replicas.map((r) => r.name)).toEqual(['analytics', 'search']);
    expect(c.replicas[0].url).toBe('postgres://app:dev@dw:5432/analytics');
    expect([...replicaTables(c, 'search')!]).toEqual(['public.orders', 'public.products']);
    expect(replicaTables(c, 'analytics')).toBeUndefined();
    expect(c.stream).toEqual({ maxBytes: 1_000_000_000, maxAge: '2D', segmentBytes: 500_000_000 });
    expect(c.batch).toEqual({ maxChanges: 2000, maxWaitMs: 100, chunkChanges: 2000, chunkBytes: 122880, runTxns: 256, runBytes: 512 * 1024, copyLinesAfter: 64, maxMessageBytes: 64 * 1024 * 1024, captureRunMs: 900_000, applySessionMs: 30_000 });
    expect(c.metrics).toEqual({ port: 9100, host: '0.0.0.0' });
    expect(Object.isFrozen(c.source)).toBe(true);
  });

  it('turns a libpq keyword/value string into a URL and picks the source by PGFERRY_SOURCE_NAME', () => {
    const c = loadConfig({}, { ...ENV, PGFERRY_CONFIG: file(VALID), PGFERRY_SOURCE_NAME: 'billing' });
    expect(c.source.mode).toBe('trigger');
    expect(c.source.tables).toEqual(['public.invoices', 'public.payments']);
    const u = new URL(c.source.url!);
    expect([u.hostname, u.port, u.pathname, decodeURIComponent(u.username), decodeURIComponent(u.password)]).toEqual(['db2', '5433', '/billing', 'capture', 'p w#1']);
    expect(c.replicas.map((r) => r.name)).toEqual(['finance']);
    expect(keywordsToUrl('host=/var/run/postgresql dbname=x')).toBe('postgresql:///x?host=%2Fvar%2Frun%2Fpostgresql');
  });

  it('names every mistake of a file in one message', () => {
    const bad = file(`
sources:
  - name: main
    url: mysql://db/x
    mode: logical
replicas:
  - name: a
    url: postgres://h/a
batch:
  max_changes: -5
`);
    let message = '';
    try {
      loadConfig({ config: bad }, {});
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      message = (err as Error).message;
    }
    expect(message).toContain(`invalid configuration (file ${bad}, environment, flags): 3 problems`);
    expect(message).toContain('sources[].url (PGFERRY_SOURCE, --source): must be a postgres:// URL');
    expect(message).toContain("sources[].mode (PGFERRY_CAPTURE_MODE, --mode): capture mode is 'wal' or 'trigger'");
    expect(message).toContain('batch.max_changes (PGFERRY_BATCH_MAX_CHANGES): must be > 0');
  });

  it('reports unknown keys, unset variables and an ambiguous source along with the rest', () => {
    const f = file(`
rabbit_url: amqp://x
sources:
  - { name: a, url: "postgres://u:\${NOPE}@h/a" }
  - { name: b, url: postgres://h/b }
replicas:
  - { name: r, url: postgres://h/r }
`);
    const message = (() => {
      try {
        loadConfig({ config: f }, {});
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    })();
    expect(message).toContain('rabbit_url: unknown key');
    expect(message).toContain('${NOPE}: environment variable is not set');
    expect(message).toContain('lists 2 sources (a, b); choose one with --source-name');
    expect(message).toContain('replicas.r.source: required when the file lists several sources');
  });

  it('lets flags override the environment and the environment override the file', () => {
    const f = file(VALID);
    const c = loadConfig(
      { config: f, sourceName: 'shop', source: 'postgres://flag@h/db', rabbitmq: 'amqp://flag@mq', replica: ['x=postgres://flag@h/x'], metricsPort: '0' },
      { ...ENV, PGFERRY_SOURCE: 'postgres://env@h/db', PGFERRY_BATCH_MAX_CHANGES: '7', PGFERRY_CAPTURE_MODE: 'trigger', TEMPORAL_ADDRESS: 'env:7233' },
    );
    expect(c.source.url).toBe('postgres://flag@h/db');
    expect(c.rabbitmqUrl).toBe('amqp://flag@mq');
    expect(c.replicas).toEqual([{ name: 'x', url: 'postgres://flag@h/x' }]);
    expect(c.metrics.port).toBe(0);
    expect(c.batch.maxChanges).toBe(7);
    expect(c.source.mode).toBe('trigger');
    expect(c.source.heartbeatMs).toBe(15_000); // from the file: nothing overrides it
    expect(c.temporal.address).toBe('env:7233');
  });

  it('says which file cannot be read or parsed', () => {
    expect(() => loadConfig({ config: path.join(dir, 'missing.yaml') }, {})).toThrow(/config file .*missing\.yaml: cannot read it \(ENOENT\)/);
    expect(() => loadConfig({ config: file('sources: [\n') }, {})).toThrow(/not valid YAML/);
  });
});

describe('interpolate', () => {
  it('replaces ${VAR} and ${VAR:-default}, keeps $${VAR} literal, and reports unset variables', () => {
    const missing = new Set<string>();
    expect(interpolate('a=${A} b=${B:-dflt} c=$${A} d=${D}', { A: '1' }, missing)).toBe('a=1 b=dflt c=${A} d=');
    expect([...missing]).toEqual(['D']);
  });
});
