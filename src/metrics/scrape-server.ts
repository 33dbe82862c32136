/**
 * The /metrics endpoint of a worker process: an HTTP server that, on each
 * scrape, reads replica and capture status from Temporal and the source
 * slot's retained WAL (bounded by SCRAPE_TIMEOUT_MS), records them in the
 * instruments (instruments.ts), and serves the registry. What did not answer
 * in time is left out of that scrape and pgferry_scrape_ok says so.
 */
import * as http from 'node:http';
import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import { ConfigError, describeCause } from '../errors';
import { logger } from '../logger';
import { redactText } from '../redact';
import { captureMode } from '../capture/mode';
import { within } from '../deadline';
import { connectClient } from '../temporal/connection';
import { captureView, CaptureView, listReplicaNames, listSubscriberNames, replicaView, ReplicaView, subscriberView, SubscriberView } from '../temporal/inspect';
import { SCRAPE_TIMEOUT_MS, ScrapeReading, collectProcessMetrics, recordScrape, registry } from './instruments';

export interface MetricsServer {
  url: string;
  close(): Promise<void>;
}

/** Resolve `p`, or reject after `ms` (the work itself is left to finish or fail on its own). */
function timed<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return within(p, ms, () => new Error(`${what}: no answer within the ${SCRAPE_TIMEOUT_MS / 1000} s scrape time limit`));
}

/**
 * Serve /metrics on config.metrics.host:port. Returns null when the port is 0
 * (off) or cannot be opened: a taken port is logged as a warning and the
 * process goes on replicating without metrics.
 */
export async function startMetricsServer(config: Config, temporalAddress: string, opts: { servesCapture: boolean }): Promise<MetricsServer | null> {
  const { port, host } = config.metrics;
  if (port === 0) return null;
  collectProcessMetrics();
  const scraper = new Scraper(config, temporalAddress, opts.servesCapture);
  const server = http.createServer((req, res) => scraper.answer(req, res));
  if (!(await listen(server, port, host, scraper.log))) {
    server.close();
    return null;
  }
  server.on('error', (err) => scraper.log.warn({ error: describeCause(err) }, 'metrics: server error'));
  const shownHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host;
  const where = `http://${shownHost}:${port}/metrics`;
  scraper.log.info({ port, host }, `metrics: serving Prometheus metrics at ${where}`);
  return {
    url: where,
    async close() {
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await scraper.close();
    },
  };
}

/** Open the port; a port in use or refused is a warning naming the fix, and no endpoint. */
function listen(server: http.Server, port: number, host: string, log: typeof logger): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'EADDRINUSE'
          ? 'the port is already in use (another pgferry worker on this machine?)'
          : err.code === 'EACCES'
            ? 'not allowed to listen on it'
            : describeCause(err);
      log.warn(
        { port, host, code: err.code },
        `metrics: cannot serve Prometheus metrics on ${host}:${port}: ${why}; replication goes on without a metrics endpoint in this process. ` +
          `Fix: give each worker process its own port with metrics.port in the config file, PGFERRY_METRICS_PORT or --metrics-port (0 turns the endpoint off)`,
      );
      resolve(false);
    });
    server.listen(port, host, () => resolve(true));
  });
}

/** One scrape's reads: Temporal (one client, opened on first use and kept) and the source slot. */
class Scraper {
  readonly log = logger.child({ component: 'metrics' });
  private readonly source: string;
  private readonly secrets: string[];
  /** part → last problem logged, so a lasting one is logged once. */
  private readonly problems = new Map<string, string>();
  private clientP: Promise<Client> | null = null;
  /** Concurrent scrapes share one refresh. */
  private inFlight: Promise<void> | null = null;
  private readonly slotHealth: ReturnType<typeof captureMode>['slotHealth'];

  constructor(
    private readonly config: Config,
    private readonly temporalAddress: string,
    servesCapture: boolean,
  ) {
    this.source = config.source.name;
    this.secrets = [config.source.url ?? ''].filter(Boolean);
    // Source slot (processes serving the capture queue, WAL mode): one short connection per scrape.
    const health = captureMode(config).slotHealth;
    this.slotHealth = servesCapture && config.source.url ? health : null;
  }

  answer(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === '/metrics') {
      this.refreshOnce()
        .catch((err) => this.log.warn({ error: redactText(describeCause(err), this.secrets) }, 'metrics: refresh failed'))
        .then(() => registry.metrics())
        .then(
          (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
          (err) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics: ${describeCause(err)}\n`),
        );
    } else if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`pgferry worker (source '${this.source}'): Prometheus metrics at /metrics\n`);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; metrics are at /metrics\n');
    }
  }

  async close(): Promise<void> {
    const c = this.clientP;
    this.clientP = null;
    await c?.then((x) => x.connection.close()).catch(() => undefined);
  }

  private refreshOnce(): Promise<void> {
    this.inFlight ??= this.refresh().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private async refresh(): Promise<void> {
    const deadline = Date.now() + SCRAPE_TIMEOUT_MS;
    const health = this.slotHealth;
    const [temporal, slot] = await Promise.allSettled([
      timed(this.readTemporal(deadline), SCRAPE_TIMEOUT_MS + 100, 'Temporal status'),
      health ? timed(health(this.config.source.url!, this.source), deadline - Date.now(), 'source slot query') : Promise.resolve(null),
    ]);
    const reading: ScrapeReading = { source: this.source, temporal: { ok: false } };
    if (temporal.status === 'fulfilled') {
      this.problems.delete('temporal');
      reading.temporal = { ok: true, ...temporal.value };
    } else this.note('temporal', temporal.reason);
    if (health) {
      if (slot.status === 'fulfilled') {
        this.problems.delete('slot');
        reading.slot = { ok: true, retainedBytes: slot.value?.retainedBytes ?? null, warnBytes: this.config.source.slotWarnBytes };
      } else {
        this.note('slot', slot.reason);
        reading.slot = { ok: false };
      }
    }
    recordScrape(reading);
  }

  private note(part: string, err: unknown): void {
    const msg = redactText(describeCause(err), this.secrets);
    if (this.problems.get(part) !== msg) this.log.warn({ part, error: msg }, `metrics: cannot read ${part} status for this scrape`);
    this.problems.set(part, msg);
  }

  private client(): Promise<Client> {
    if (!this.clientP) {
      const opening = connectClient(this.config.temporal, { address: this.temporalAddress });
      this.clientP = opening;
      opening.catch(() => {
        if (this.clientP === opening) this.clientP = null;
      });
    }
    return this.clientP;
  }

  private async readTemporal(deadline: number): Promise<{ capture: CaptureView | null; views: ReplicaView[]; subscribers: SubscriberView[] }> {
    const c = await timed(this.client(), deadline - Date.now(), 'Temporal connection');
    const { config, source } = this;
    return c.withDeadline(deadline, async () => {
      const capture = await captureView(c, source).catch((err) => {
        if (err instanceof ConfigError) return null; // no capture workflow (yet)
        throw err;
      });
      // Replicas running in Temporal, plus those this process is configured for (listing may lag a start);
      // subscriber workflows alongside, each within what is left of this scrape's time (their application's
      // worker answers their query: one that does not is reported as not answering, and the scrape stays in time).
      const [names, subscriberNames] = await Promise.all([listReplicaNames(c), listSubscriberNames(c)]);
      const [views, subs] = await Promise.all([
        Promise.all(
          [...new Set([...names, ...config.replicas.map((r) => r.name)])].map((n) =>
            replicaView(c, n, capture).catch((err) => {
              if (err instanceof ConfigError) return null; // not (or no longer) a replica
              throw err;
            }),
          ),
        ),
        Promise.all(
          subscriberNames.map((n) =>
            subscriberView(c, n, capture, Math.max(100, deadline - Date.now() - 400)).catch((err) => {
              if (err instanceof ConfigError) return null;
              throw err;
            }),
          ),
        ),
      ]);
      // Other sources' replicas and subscribers may share the namespace: report this process's source only.
      return {
        capture,
        views: views.filter((v): v is ReplicaView => v !== null && v.source === source),
        subscribers: subs.filter((v): v is SubscriberView => v !== null && (v.source === source || v.source === null)),
      };
    });
  }
}
