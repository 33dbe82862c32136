import type { Pgoutput } from 'pg-logical-replication';
import { Change, ENVELOPE_VERSION, RelationInfo, Row, TxnMessage, microsToIso, relKey } from '../change';
import { normalizeLsn } from '../lsn';

/**
 * Turns the pgoutput message sequence (begin, relation, insert/update/delete/
 * truncate, commit) into change-log messages: one per transaction, or ordered
 * chunks of at most `chunkChanges` changes for large ones, so memory stays
 * bounded whatever the transaction size. Pure: no I/O.
 */
export interface AssemblerOptions {
  source: string;
  chunkChanges: number;
  /** A chunk also ends once its values add up to about this many bytes (bounds what readers buffer). */
  chunkBytes?: number;
  /** Resolves a column's type name (format_type) for a relation; called once per relation message. */
  typeName: (typeOid: number, typeMod: number) => string;
}

export interface CommitInfo {
  lsn: string;
  endLsn: string;
  commitTime: string;
  /** Chunks emitted for this transaction (0 for an empty transaction). */
  chunks: number;
}

interface OpenTxn {
  xid: number;
  lsn: string;
  commitTime: string;
  seq: number;
  changes: Change[];
  /** Approximate size of the open chunk's values. */
  bytes: number;
  relations: Record<string, RelationInfo>;
}

/** Default chunk size: 128 kB of values, so a reader's prefetch of a few hundred messages stays small in memory. */
export const CHUNK_BYTES = 128 * 1024;

/** Bytes of a row's values and names (an estimate of its encoded size). */
function rowBytes(row: Row | undefined): number {
  let n = 0;
  if (row) for (const k in row) n += k.length + (row[k]?.length ?? 0) + 6;
  return n;
}

export class TxnAssembler {
  private readonly relations = new Map<number, RelationInfo & { key: string }>();
  private txn: OpenTxn | null = null;

  constructor(private readonly opts: AssemblerOptions) {}

  /**
   * Feed one decoded message. Returns the envelopes ready to publish (in
   * order) and, on commit, the transaction's positions.
   */
  push(msg: Pgoutput.Message): { out: TxnMessage[]; commit?: CommitInfo } {
    switch (msg.tag) {
      case 'begin': {
        if (this.txn) throw new Error(`pgoutput: BEGIN of xid ${msg.xid} inside open xid ${this.txn.xid}`);
        this.txn = {
          xid: msg.xid,
          lsn: normalizeLsn(msg.commitLsn ?? '0/0'),
          commitTime: microsToIso(msg.commitTime as bigint),
          seq: 0,
          changes: [],
          bytes: 0,
          relations: {},
        };
        return { out: [] };
      }
      case 'relation': {
        this.relations.set(msg.relationOid, {
          key: relKey(msg.schema, msg.name),
          schema: msg.schema,
          table: msg.name,
          identity: msg.replicaIdentity,
          columns: msg.columns.map((c) => ({
            name: c.name,
            type: this.opts.typeName(c.typeOid, c.typeMod),
            key: (c.flags & 1) === 1,
          })),
        });
        return { out: [] };
      }
      case 'insert':
        return this.add({ op: 'insert', rel: this.useRel(msg.relation.relationOid), new: toRow(msg.new) });
      case 'update': {
        const rel = this.useRel(msg.relation.relationOid);
        const info = this.relations.get(msg.relation.relationOid)!;
        const newRow = toRow(msg.new);
        // Without an old tuple the identity did not change: take it from the new row.
        const old = msg.old ? toRow(msg.old) : msg.key ? toRow(msg.key) : pickKey(info, newRow);
        return this.add({ op: 'update', rel, old, new: newRow });
      }
      case 'delete': {
        const rel = this.useRel(msg.relation.relationOid);
        return this.add({ op: 'delete', rel, old: toRow((msg.old ?? msg.key)!) });
      }
      case 'truncate': {
        const rels = msg.relations.map((r) => this.useRel(r.relationOid));
        return this.add({ op: 'truncate', rels, cascade: msg.cascade, restartIdentity: msg.restartIdentity });
      }
      case 'commit': {
        const t = this.open('COMMIT');
        this.txn = null;
        const endLsn = normalizeLsn(msg.commitEndLsn ?? '0/0');
        // An empty transaction publishes nothing, but its position still counts.
        const out = t.changes.length || t.seq > 0 ? [this.envelope(t, endLsn, true)] : [];
        return { out, commit: { lsn: t.lsn, endLsn, commitTime: t.commitTime, chunks: t.seq } };
      }
      default:
        return { out: [] }; // type, origin, message: nothing to replicate
    }
  }

  private open(what: string): OpenTxn {
    if (!this.txn) throw new Error(`pgoutput: ${what} outside a transaction`);
    return this.txn;
  }

  private useRel(oid: number): string {
    const t = this.open('change');
    const info = this.relations.get(oid);
    if (!info) throw new Error(`pgoutput: change for relation ${oid} before its RELATION message`);
    if (!(info.key in t.relations)) t.relations[info.key] = { schema: info.schema, table: info.table, identity: info.identity, columns: info.columns };
    return info.key;
  }

  private add(change: Change): { out: TxnMessage[] } {
    const t = this.open(change.op);
    t.changes.push(change);
    if (change.op !== 'truncate') t.bytes += rowBytes(change.op === 'delete' ? undefined : change.new) + rowBytes(change.op === 'insert' ? undefined : change.old);
    if (t.changes.length < this.opts.chunkChanges && t.bytes < (this.opts.chunkBytes ?? CHUNK_BYTES)) return { out: [] };
    return { out: [this.envelope(t, '', false)] };
  }

  /** Emit what the open transaction holds and start its next chunk. */
  private envelope(t: OpenTxn, endLsn: string, last: boolean): TxnMessage {
    const m: TxnMessage = {
      v: ENVELOPE_VERSION,
      source: this.opts.source,
      xid: t.xid,
      lsn: t.lsn,
      endLsn: last ? endLsn : '',
      commitTime: t.commitTime,
      seq: t.seq,
      last,
      relations: t.relations,
      changes: t.changes,
    };
    t.seq += 1;
    t.changes = [];
    t.bytes = 0;
    t.relations = {};
    return m;
  }
}

/**
 * Tuples come from TextPgoutputPlugin, which already gives every value as a
 * string or null and leaves out unchanged TOAST values that were not sent.
 */
const toRow = (tuple: Record<string, unknown>): Row => tuple as Row;

function pickKey(info: RelationInfo, row: Row): Row {
  const key: Row = {};
  for (const c of info.columns) if (c.key && c.name in row) key[c.name] = row[c.name];
  return key;
}
