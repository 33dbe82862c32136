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
  relations: Record<string, RelationInfo>;
}

export class TxnAssembler {
  private readonly relations = new Map<number, RelationInfo>();
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
          relations: {},
        };
        return { out: [] };
      }
      case 'relation': {
        this.relations.set(msg.relationOid, {
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
    const key = relKey(info.schema, info.table);
    t.relations[key] = info;
    return key;
  }

  private add(change: Change): { out: TxnMessage[] } {
    const t = this.open(change.op);
    t.changes.push(change);
    if (t.changes.length < this.opts.chunkChanges) return { out: [] };
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
    t.relations = {};
    return m;
  }
}

/**
 * pgoutput tuples with our text parsers: every value is a string or null.
 * `undefined` marks an unchanged TOAST value that was not sent: leave it out.
 */
function toRow(tuple: Record<string, unknown>): Row {
  const row: Row = {};
  for (const [k, v] of Object.entries(tuple)) {
    if (v === undefined) continue;
    row[k] = v === null ? null : String(v);
  }
  return row;
}

function pickKey(info: RelationInfo, row: Row): Row {
  const key: Row = {};
  for (const c of info.columns) if (c.key && c.name in row) key[c.name] = row[c.name];
  return key;
}
