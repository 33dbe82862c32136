/**
 * Turns the pgoutput message sequence (begin, relation, insert/update/delete/
 * truncate, commit) into change-log messages: one per transaction, or ordered
 * chunks (the envelope's TxnChunker: at most `chunkChanges` changes and
 * about `chunkBytes` of values each) for large ones, so memory stays bounded
 * whatever the transaction size. Pure: no I/O.
 */
import type { Pgoutput } from 'pg-logical-replication';
import { Change, RelationInfo, Row, TxnMessage, microsToIso, relKey } from '../../change';
import { publicationName, TARGET_SCHEMA } from '../../names';
import { parseSchemaChange, SCHEMA_PREFIX } from '../schema-capture';
import { CHUNK_BYTES, TxnChunker } from '../../changelog/envelope';
import { normalizeLsn } from '../../lsn';
import { LineInsert, LineWriter } from '../../changelog/copy-lines';
import { InsertMessage } from './pgoutput';

/**
 * A transaction's inserts become COPY lines (changelog/copy-lines.ts) from
 * its 64th change on (batch.copy_lines_after): a large transaction is where
 * values cost the most, and its chunks travel alone (envelope version 5). A
 * small one keeps its rows as values, so it can join a run (version 4)
 * without being parsed.
 */
export const LINES_AFTER = 64;

export interface AssemblerOptions {
  source: string;
  chunkChanges: number;
  /** Inserts become COPY lines from this change of a transaction on (default LINES_AFTER); 0: never. */
  linesAfter?: number;
  /** A chunk also ends once its values add up to about this many bytes (bounds what readers buffer). */
  chunkBytes?: number;
  /** The largest single change a message may carry. */
  maxMessageBytes?: number;
  /** The source history positions belong to (see log/protocol.ts). */
  history?: string;
  /** The publication this capture reads (default pgferry_<source>): schema changes of tables it does not send are left out. */
  publication?: string;
  /** The key schema-change messages must carry (schema-capture.ts); null: none can be trusted. */
  schemaKey?: string | null;
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
  chunker: TxnChunker;
  lsn: string;
  commitTime: string;
}

/** What most messages give (every row of a chunk but its last): one shared, frozen answer, not two objects per row. */
const NOTHING: { out: readonly TxnMessage[] } = Object.freeze({ out: Object.freeze([]) as readonly TxnMessage[] });

export class TxnAssembler {
  private readonly relations = new Map<number, RelationInfo & { key: string; names: readonly string[] }>();
  private readonly lines = new LineWriter();
  /** The latest description of each relation key. */
  private readonly described = new Map<string, RelationInfo>();
  /** Relations of pgferry's own schema (a FOR ALL TABLES publication sends them): bookkeeping, never replicated. */
  private readonly own = new Set<number>();
  private readonly publication: string;
  private txn: OpenTxn | null = null;

  constructor(private readonly opts: AssemblerOptions) {
    this.publication = opts.publication ?? publicationName(opts.source);
  }

  /**
   * Feed one decoded message. Returns the envelopes ready to publish (in
   * order) and, on commit, the transaction's positions.
   */
  push(msg: Pgoutput.Message): { out: readonly TxnMessage[]; commit?: CommitInfo } {
    switch (msg.tag) {
      case 'begin': {
        if (this.txn) throw new Error(`pgoutput: BEGIN of xid ${msg.xid} inside open xid ${this.txn.xid}`);
        const lsn = normalizeLsn(msg.commitLsn ?? '0/0');
        const commitTime = microsToIso(msg.commitTime as bigint);
        const chunker = new TxnChunker(
          { source: this.opts.source, xid: msg.xid, lsn, commitTime, history: this.opts.history },
          { changes: this.opts.chunkChanges, bytes: this.opts.chunkBytes ?? CHUNK_BYTES, maxMessageBytes: this.opts.maxMessageBytes },
          (key) => this.byKey(key),
        );
        this.txn = { xid: msg.xid, chunker, lsn, commitTime };
        return NOTHING;
      }
      case 'relation': {
        if (msg.schema === TARGET_SCHEMA) {
          this.own.add(msg.relationOid);
          return NOTHING;
        }
        const key = relKey(msg.schema, msg.name);
        const info: RelationInfo = {
          schema: msg.schema,
          table: msg.name,
          identity: msg.replicaIdentity,
          columns: msg.columns.map((c) => ({
            name: c.name,
            type: this.opts.typeName(c.typeOid, c.typeMod),
            key: (c.flags & 1) === 1,
          })),
        };
        this.relations.set(msg.relationOid, { ...info, key, names: info.columns.map((c) => c.name) });
        this.described.set(key, info);
        return NOTHING;
      }
      case 'insert': {
        if (this.own.has(msg.relation.relationOid)) return NOTHING;
        const rel = this.useRel(msg.relation.relationOid);
        return this.add(this.asLine(msg) ?? { op: 'insert', rel, new: toRow(msg.new) });
      }
      case 'update': {
        if (this.own.has(msg.relation.relationOid)) return NOTHING;
        const rel = this.useRel(msg.relation.relationOid);
        const info = this.relations.get(msg.relation.relationOid)!;
        const newRow = toRow(msg.new);
        // Without an old tuple the identity did not change: take it from the new row.
        const old = msg.old ? toRow(msg.old) : msg.key ? toRow(msg.key) : pickKey(info, newRow);
        return this.add({ op: 'update', rel, old, new: newRow });
      }
      case 'delete': {
        if (this.own.has(msg.relation.relationOid)) return NOTHING;
        const rel = this.useRel(msg.relation.relationOid);
        return this.add({ op: 'delete', rel, old: toRow((msg.old ?? msg.key)!) });
      }
      case 'truncate': {
        const rels = msg.relations.filter((r) => !this.own.has(r.relationOid)).map((r) => this.useRel(r.relationOid));
        if (!rels.length) return NOTHING;
        return this.add({ op: 'truncate', rels, cascade: msg.cascade, restartIdentity: msg.restartIdentity });
      }
      case 'commit': {
        const t = this.open('COMMIT');
        this.txn = null;
        const endLsn = normalizeLsn(msg.commitEndLsn ?? '0/0');
        // An empty transaction publishes nothing, but its position still counts.
        const last = t.chunker.end(endLsn);
        return { out: last ? [last] : [], commit: { lsn: t.lsn, endLsn, commitTime: t.commitTime, chunks: t.chunker.emitted } };
      }
      case 'message': {
        if (msg.prefix !== SCHEMA_PREFIX || !msg.transactional) return NOTHING; // the idle heartbeat, other programs' messages
        const { change, publications } = parseSchemaChange(Buffer.from(msg.content).toString('utf8'), this.opts.schemaKey ?? null);
        return publications.includes(this.publication) ? this.add(change) : NOTHING;
      }
      default:
        return NOTHING; // type, origin: nothing to replicate
    }
  }

  private open(what: string): OpenTxn {
    if (!this.txn) throw new Error(`pgoutput: ${what} outside a transaction`);
    return this.txn;
  }

  private useRel(oid: number): string {
    this.open('change');
    const info = this.relations.get(oid);
    if (!info) throw new Error(`pgoutput: change for relation ${oid} before its RELATION message`);
    return info.key;
  }

  private byKey(key: string): RelationInfo {
    const info = this.described.get(key);
    if (!info) throw new Error(`pgoutput: relation ${key} not described`);
    return info;
  }

  /** An insert of a large transaction as its COPY line; null: as a row (a small transaction, a tuple a line cannot hold). */
  private asLine(msg: Pgoutput.MessageInsert): LineInsert | null {
    const { chunker } = this.open('insert');
    const after = this.opts.linesAfter ?? LINES_AFTER;
    if (!after || !(msg instanceof InsertMessage) || (chunker.emitted === 0 && chunker.holding < after)) return null;
    const info = this.relations.get(msg.relation.relationOid)!;
    return this.lines.line(info.key, info.names, msg.data, msg.tupleAt, msg.end);
  }

  private add(change: Change): { out: readonly TxnMessage[] } {
    const chunk = this.open(change.op).chunker.add(change);
    return chunk ? { out: [chunk] } : NOTHING;
  }
}

/**
 * Tuples come from pgoutput.ts, which already gives every value as a
 * string or null and leaves out unchanged TOAST values that were not sent.
 */
const toRow = (tuple: Record<string, unknown>): Row => tuple as Row;

function pickKey(info: RelationInfo, row: Row): Row {
  const key: Row = {};
  for (const c of info.columns) if (c.key && c.name in row) key[c.name] = row[c.name];
  return key;
}

