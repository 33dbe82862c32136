import type { TxnMessage } from '../../src/change';
import { streamMarker } from '../../src/changelog/envelope';
import { formatLsn } from '../../src/lsn';
import { LogConsumer, LogPosition, LogProtocol, START_OF_LOG, StreamTip } from '../../src/changelog/protocol';

/**
 * A model of what capture writes to a source's log, for property tests of
 * the reading protocol: source transactions cut into chunks; capture
 * sessions that publish from their acknowledged position and may crash after
 * any chunk; and the faults a real log can hold (a zombie capture publishing
 * beside a new one, duplicated and stray chunks, a lost slot with its gap
 * marker, a new source history whose positions start again low, the stream
 * deleted and re-created: a new stream with another identity, offsets from 0
 * again, capture going on from its acknowledged position).
 *
 * Every random choice is read from a script of small numbers, so fast-check
 * shrinks a failing log by shrinking the script.
 */
export interface SourceTxn {
  history: string;
  lsn: string;
  /** The transaction's changes, in order (as labels). */
  changes: string[];
  /** Committed on the source, but in no message whole: its slot was lost before it was published. */
  lost?: boolean;
  /** Committed after a gap marker: a consumer reading from before the gap must stop at it. */
  afterGap?: boolean;
}

/** One stream message: a transaction or chunk (`m`), or a run of whole transactions (`run`, and `m` its first). */
export type Entry = { offset: number; m: TxnMessage; run?: TxnMessage[] };

/** What the protocol is given for an entry (protocol.ts LogMessage). */
export const asMessage = (e: Entry) => ({ offset: e.offset, lsn: e.m.lsn, stream: e.m.stream, read: () => e.m, readAll: e.run ? () => e.run! : undefined });

/** The transactions and chunks an entry holds. */
const partsOf = (e: Entry): TxnMessage[] => e.run ?? [e.m];

export interface ModelLog {
  /** The source's committed transactions, in commit order. */
  txns: SourceTxn[];
  /** The stream as it is now: offset and message. */
  log: Entry[];
  /** Every stream the source had, in order (the stream deleted and re-created): its identity and messages; the last is `log`. */
  streams: { id: string; log: Entry[] }[];
  /** The log breaks capture's promises (zombie, duplicate, stray): a consumer may stop loudly. */
  irregular: string[];
  /** The capture sessions ran out before the log was whole. */
  complete: boolean;
}

class Script {
  private i = 0;
  constructor(private readonly xs: number[]) {}
  /** A number in [0, n). */
  pick(n: number): number {
    const v = this.i < this.xs.length ? this.xs[this.i] : 0;
    this.i += 1;
    return n <= 1 ? 0 : Math.abs(v) % n;
  }
  /** True with about this probability; false once the script is used up (shrinking removes faults). */
  chance(percent: number): boolean {
    return this.pick(100) >= 100 - percent;
  }
}

const change = (txn: SourceTxn, j: number) => ({ op: 'insert' as const, rel: 't', new: { v: `${txn.lsn}#${j}:${txn.changes[j]}` } });

/** The chunks of one transaction: at most `per` changes each. */
function chunksOf(t: SourceTxn, per: number, source: string): TxnMessage[] {
  const out: TxnMessage[] = [];
  for (let seq = 0, j = 0; seq === 0 || j < t.changes.length; seq += 1) {
    const part = t.changes.slice(j, j + per).map((_, k) => change(t, j + k));
    j += per;
    out.push({
      v: 1,
      source,
      xid: 1,
      lsn: t.lsn,
      endLsn: j >= t.changes.length ? t.lsn : '',
      commitTime: '2026-01-01T00:00:00.000000Z',
      seq,
      last: j >= t.changes.length,
      relations: {},
      changes: part,
      history: t.history,
    });
  }
  return out;
}

/** Whether a stream holds every chunk of the transaction, in order, from one session (chunks 0..last in sequence). */
function publishedWhole(streams: ModelLog['streams'], t: SourceTxn): boolean {
  return streams.some((st) => wholeIn(st.log, t));
}

function wholeIn(log: Entry[], t: SourceTxn): boolean {
  let next = 0;
  for (const m of log.flatMap(partsOf)) {
    if (m.lsn !== t.lsn || m.history !== t.history) continue;
    if (m.seq === 0) next = 0;
    if (m.seq !== next) continue;
    next += 1;
    if (m.last) return true;
  }
  return false;
}

export function buildLog(xs: number[]): ModelLog {
  const s = new Script(xs);
  const source = 'main';
  const per = 1 + s.pick(3);
  const histories = ['H1', 'H2'];
  let h = 0;
  let base = 0x100;
  const txns: SourceTxn[] = [];
  let afterGap = false;
  const newTxns = (count: number) => {
    for (let i = 0; i < count; i += 1) {
      base += 16 + s.pick(64);
      const n = s.chance(30) ? 0 : 1 + s.pick(6);
      txns.push({ history: histories[h], lsn: formatLsn(BigInt(base)), changes: Array.from({ length: n }, (_, k) => `c${k}`), afterGap: afterGap || undefined });
    }
  };
  newTxns(1 + s.pick(8));

  const streams: ModelLog['streams'] = [];
  let log: Entry[] = [];
  let offset = 0;
  const put = (unit: TxnMessage | TxnMessage[]) => {
    const stream = streams[streams.length - 1].id; // the publisher stamps its stream's identity
    const ms = (Array.isArray(unit) ? unit : [unit]).map((m) => ({ ...m, stream }));
    log.push(ms.length > 1 ? { offset, m: ms[0], run: ms } : { offset, m: ms[0] });
    offset += 1 + s.pick(3); // offsets are not dense
  };
  /** A stream is created: offsets from 0, its marker first. */
  const newStream = () => {
    log = [];
    offset = 0;
    streams.push({ id: `S${streams.length + 1}`, log });
    put(streamMarker({ source, stream: streams[streams.length - 1].id }));
  };
  newStream();
  const irregular: string[] = [];
  let complete = false;
  let acked = 0; // transactions acknowledged (their index in txns)
  let sessions = 0;

  for (;;) {
    sessions += 1;
    // One capture session: from the acknowledged position, transaction by transaction, chunk by chunk;
    // whole transactions in a row may travel as one run (a message holding several), each session
    // cutting its runs its own way (its position may be inside an earlier session's run).
    const messages: TxnMessage[][] = [];
    let crashed = false;
    let full = acked;
    let runRoom = 0;
    for (let i = acked; i < txns.length && !crashed; i += 1) {
      const chunks = chunksOf(txns[i], per, source);
      for (const m of chunks) {
        if (chunks.length === 1 && runRoom > 0 && messages.length) {
          messages[messages.length - 1].push(m);
          runRoom -= 1;
        } else {
          messages.push([m]);
          runRoom = chunks.length === 1 && s.chance(60) ? 1 + s.pick(5) : 0;
        }
        if (sessions < 12 && s.chance(8)) {
          crashed = true;
          break;
        }
      }
      if (!crashed) full = i + 1;
    }
    if (s.chance(5) && messages.length > 1 && log.length) {
      // A zombie of the previous session publishes beside this one.
      const zombie = log.slice(-1 - s.pick(4)).map(partsOf);
      const merged: TxnMessage[][] = [];
      let a = 0;
      let b = 0;
      while (a < messages.length || b < zombie.length) {
        if (b < zombie.length && (a >= messages.length || s.chance(50))) merged.push(zombie[b++]);
        else merged.push(messages[a++]);
      }
      messages.splice(0, messages.length, ...merged);
      irregular.push('zombie');
    }
    for (const m of messages) {
      put(m);
      if (s.chance(2)) {
        put(m);
        irregular.push('duplicate');
      }
    }
    if (s.chance(3) && log.length > 2) {
      const stray = log[s.pick(log.length)].m;
      if (stray.seq > 0) {
        put(stray);
        irregular.push('stray');
      }
    }
    // What RabbitMQ confirmed and capture acknowledged: a prefix of what was published whole.
    acked = acked + s.pick(full - acked + 1);
    if (sessions < 12 && s.chance(6)) {
      // The stream is deleted and re-created: capture's next session publishes from its acknowledged position into a new one.
      newStream();
      continue;
    }
    if (sessions < 12 && s.chance(12)) {
      const k = s.pick(2);
      // Whatever was not published whole is in no log now: the slot is gone (or the source restored).
      for (const t of txns.slice(acked)) if (!publishedWhole(streams, t)) t.lost = true;
      acked = txns.length;
      if (k === 0) {
        // The slot was lost and made anew: a gap marker says changes are missing.
        base += 16;
        put({ ...chunksOf({ history: histories[h], lsn: formatLsn(BigInt(base)), changes: [] }, 1, source)[0], gap: 'slot lost' });
        afterGap = true;
      } else if (h === 0) {
        // Re-installed, re-created or restored: a new history whose positions start low again.
        h = 1;
        base = 0x100 + s.pick(0x200);
      }
      newTxns(1 + s.pick(5));
      continue;
    }
    if (!crashed && full === txns.length) {
      complete = true;
      break;
    }
    if (sessions > 40) break;
  }
  return { txns, log, streams, irregular, complete };
}

export interface ConsumeResult {
  /** Transactions committed, in order: lsn and the labels of their changes, and the stream they were read from. */
  committed: { history: string | undefined; lsn: string; changes: string[]; stream?: string }[];
  /** The consumer went on to a later stream (the one it read was deleted). */
  switched?: boolean;
  /** How reading ended. */
  end: 'caught-up' | 'gap' | 'error';
  reason?: string;
  position: LogPosition;
}

export const CONSUMER: LogConsumer = { who: "replica 'r'", noun: 'replica', did: 'applied', source: 'main', fix: 'resync it', needsLogStart: true };

/** Where a position begins: the identity of the stream it was stored in (init records the stream's). */
export const startOf = (model: ModelLog): LogPosition => ({ ...START_OF_LOG, stream: model.streams[0].id });

/** What a reader attaching at `offset` finds (changelog/stream.ts streamTip): the first message at or after it, else the newest. */
function tipOf(log: Entry[], offset: number | null): StreamTip | null {
  const e = (offset === null ? undefined : log.find((x) => x.offset >= offset)) ?? log[log.length - 1];
  return e ? { offset: e.offset, lsn: e.m.lsn, stream: e.m.stream } : null;
}

/**
 * A consumer applying the log in batches, as apply does: each batch starts
 * from the stored position (RabbitMQ may start it a few messages early),
 * checks the stream it attached to, reads up to a scripted number of
 * messages, throws away an open transaction at its end, and commits its
 * completed transactions with the position. It stops at the first gap or
 * protocol break, keeping what came before. Across the model's streams: the
 * stream it reads is deleted after a scripted number of batches, and it
 * goes on with the next one from its stored position.
 */
export function consumeModel(model: Pick<ModelLog, 'streams'>, xs: number[], start: LogPosition, consumer = CONSUMER): ConsumeResult {
  const s = new Script(xs);
  let stored = start;
  const committed: ConsumeResult['committed'] = [];
  const first = Math.max(0, model.streams.findIndex((st) => st.id === start.stream));
  for (let k = first; k < model.streams.length; k += 1) {
    const log = model.streams[k].log;
    const switched = k > first || undefined;
    const deletedAfter = k < model.streams.length - 1 ? s.pick(12) : Infinity; // batches read before the stream is deleted
    for (let batch = 0; batch < 10_000; batch += 1) {
      if (batch >= deletedAfter) break;
      const p = new LogProtocol(consumer, stored);
      if (stored.offset !== null || stored.stream) {
        const gap = p.attach(tipOf(log, stored.offset));
        if (gap) return { committed, end: 'gap', reason: gap.message, position: stored, switched };
      }
      let i = stored.offset === null ? 0 : log.findIndex((e) => e.offset >= stored.offset!);
      if (i < 0) i = log.length;
      i = Math.max(0, i - s.pick(3));
      const limit = 1 + s.pick(6); // transactions completed before the batch is full (it then ends at a transaction boundary)
      const done: ConsumeResult['committed'] = [];
      let open: { lsn: string; changes: string[] } | null = null;
      let applied = 0;
      let stop: { end: 'gap' | 'error'; reason: string } | null = null;
      let full = false; // the batch ended between the transactions of a run
      for (; i < log.length && !full && !stop; i += 1) {
        if (!open && applied >= limit) break;
        if (open && s.chance(3)) break; // the rest of the transaction did not arrive in time
        const parts = p.parts(asMessage(log[i]));
        for (let j = 0; j < parts.length; j += 1) {
          // A batch may end between the transactions of a run (then i stays at the run: not read to its end).
          if (j > 0 && !open && applied >= limit) {
            full = true;
            i -= 1;
            break;
          }
          const step = p.step(parts[j]);
          if (step.discard) open = null;
          if (step.kind === 'skip') continue;
          if (step.kind !== 'chunk') {
            stop = { end: step.kind, reason: step.error.message };
            break;
          }
          if (step.m.seq === 0) open = { lsn: step.m.lsn, changes: [] };
          if (!open) throw new Error('the protocol gave a chunk of a transaction that was not begun');
          open.changes.push(...step.m.changes.map((ch) => String((ch as { new: { v: string } }).new.v).split(':')[1]));
          if (step.m.last) {
            done.push({ history: step.m.history, lsn: step.m.lsn, changes: open.changes, stream: step.m.stream });
            open = null;
            applied += 1;
          }
        }
      }
      if (open) p.abandon();
      committed.push(...done);
      stored = p.position;
      if (stop) return { committed, ...stop, position: stored, switched };
      if (i >= log.length && !done.length) {
        if (k === model.streams.length - 1) return { committed, end: 'caught-up', position: stored, switched };
        break; // caught up with a stream that is then deleted
      }
    }
  }
  throw new Error('consumer did not finish');
}

/** The same on a single stream (hand-written logs). */
export function consume(log: Entry[], xs: number[], start: LogPosition = START_OF_LOG, consumer = CONSUMER): ConsumeResult {
  return consumeModel({ streams: [{ id: start.stream ?? '', log }] }, xs, start, consumer);
}
