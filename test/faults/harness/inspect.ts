/**
 * Looking inside the running system, beneath what pgferry reports: the
 * source's change stream in RabbitMQ (and messages delivered more than once),
 * a replica's stored position, the database backends of a replica and which
 * process owns them, and the attempts of an activity in a Temporal history.
 */
import * as fs from 'node:fs';
import * as amqp from 'amqplib';
import { decodeTxn } from '../../../src/changelog/envelope';
import { StreamReader } from '../../../src/changelog/stream';
import { RABBIT_URL, World } from '../../helpers/fixture';

/** One message of the change stream, as the fault tests look at it. */
export interface StreamEntry {
  offset: number;
  lsn: string;
  seq: number;
  last: boolean;
  xid: number;
  changes: number;
}

/**
 * Every message of the source's change stream, from its first retained one
 * until none arrives for `idleMs` (call it with the workload stopped).
 */
export async function readStream(w: World, idleMs = 3000): Promise<StreamEntry[]> {
  const conn = await amqp.connect(RABBIT_URL);
  const out: StreamEntry[] = [];
  try {
    const reader = await StreamReader.open(conn, w.sourceName, 'first', 256);
    try {
      for (;;) {
        const m = await reader.next(idleMs);
        if (!m) break;
        const t = decodeTxn(m.body);
        out.push({ offset: m.offset, lsn: t.lsn, seq: t.seq, last: t.last, xid: t.xid, changes: t.changes.length });
      }
    } finally {
      await reader.close();
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
  return out;
}

/**
 * Deliveries of the same message more than once: every (commit LSN, chunk seq)
 * found at several offsets, with those offsets. A transaction re-sent by a
 * capture that restarted before acknowledging the slot shows up here.
 */
export function repeatedDeliveries(entries: StreamEntry[]): { lsn: string; seq: number; offsets: number[] }[] {
  const at = new Map<string, number[]>();
  for (const e of entries) {
    const k = `${e.lsn}#${e.seq}`;
    const list = at.get(k);
    if (list) list.push(e.offset);
    else at.set(k, [e.offset]);
  }
  return [...at.entries()]
    .filter(([, offsets]) => offsets.length > 1)
    .map(([k, offsets]) => {
      const [lsn, seq] = k.split('#');
      return { lsn, seq: Number(seq), offsets };
    });
}

/** The replica's stored position (pgferry.progress). */
export async function progressLsn(w: World, replica: string): Promise<string | null> {
  return w.replicas.withClient(`replica_${replica}`, async (c) => {
    const r = await c.query(`SELECT lsn::text AS lsn FROM pgferry.progress WHERE replica = $1`, [replica]).catch(() => ({ rows: [] as { lsn: string }[] }));
    return r.rows[0]?.lsn ?? null;
  });
}

/** Backends of a replica database (other than the one asking), for the duplicate-worker fault. */
export interface Backend {
  pid: number;
  state: string | null;
  idleSeconds: number;
  waitEventType: string | null;
  /** The client's TCP port (-1 or null for a Unix socket). */
  clientPort: number | null;
  /** Holds a lock on pgferry.progress: an apply batch is in its transaction. */
  holdsProgress: boolean;
}

export async function replicaBackends(w: World, replica: string): Promise<Backend[]> {
  return w.replicas.withClient(`replica_${replica}`, async (c) => {
    const r = await c.query(
      `SELECT a.pid, a.state, extract(epoch FROM now() - a.state_change)::float8 AS idle, a.wait_event_type, a.client_port,
              EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted AND l.relation = to_regclass('pgferry.progress')) AS holds
         FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'`,
    );
    return r.rows.map((x) => ({
      pid: x.pid,
      state: x.state,
      idleSeconds: Number(x.idle ?? 0),
      waitEventType: x.wait_event_type,
      clientPort: x.client_port,
      holdsProgress: x.holds,
    }));
  });
}

/** Local TCP ports of the sockets a process has open (from /proc): which database backends are its. */
export function tcpPortsOf(pid: number): Set<number> {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      /* closed meanwhile */
    }
  }
  const ports = new Set<number>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!fs.existsSync(table)) continue;
    for (const line of fs.readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && inodes.has(f[9])) ports.add(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports;
}

/**
 * The highest attempt number at which an activity of type `activityType`
 * completed (or failed) in any run of workflow `workflowId` (its history
 * records the started event of the final attempt only): 2 or more means
 * Temporal ran the same activity again after an attempt was lost.
 */
export async function maxActivityAttempt(address: string, workflowId: string, activityType: string): Promise<number> {
  const { Client, Connection } = await import('@temporalio/client');
  const connection = await Connection.connect({ address });
  try {
    const client = new Client({ connection });
    let max = 0;
    for await (const wf of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
      const events = (await client.workflow.getHandle(workflowId, wf.runId).fetchHistory()).events ?? [];
      const types = new Map<string, string>();
      for (const e of events) {
        const s = e.activityTaskScheduledEventAttributes;
        if (s) types.set(String(e.eventId), s.activityType?.name ?? '');
        const st = e.activityTaskStartedEventAttributes;
        if (st && types.get(String(st.scheduledEventId)) === activityType) max = Math.max(max, st.attempt ?? 0);
      }
    }
    return max;
  } finally {
    await connection.close().catch(() => undefined);
  }
}
