/**
 * pgoutput (protocol 1) decoding for capture, written for the hot path.
 *
 * pg-logical-replication's own parser runs every value through node-postgres'
 * global type parsers (timestamps become JS Dates, losing microseconds; jsonb
 * becomes an object, losing key order) and copies each tuple once more; at a
 * million rows that parsing was the largest cost of capture (measured with
 * --cpu-prof). This parser keeps every value in PostgreSQL's text form and
 * builds each row once, as the change model wants it: a string or null per
 * column, and no entry at all for an unchanged TOAST value that was not sent
 * (unless the old tuple of a REPLICA IDENTITY FULL update supplies it).
 *
 * It produces pg-logical-replication's message shapes (its types), so the
 * assembler and the type names keep them.
 * https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
 */
import type { Pgoutput } from 'pg-logical-replication';
import type { Row } from '../../change';
import { formatLsnHalves } from '../../lsn';

/** The pgoutput messages of one replication connection, decoded in order (RELATION messages are remembered). */
export class PgoutputDecoder {
  private readonly relations = new Map<number, Pgoutput.MessageRelation>();

  /** The message at bytes `start` to `end` of `buf`. */
  parse(buf: Buffer, start: number, end: number): Pgoutput.Message {
    return decodePgoutput(buf, this.relations, start, end);
  }
}

/** Decode one pgoutput message (exported for tests); `relations` carries RELATION messages between calls. */
export function decodePgoutput(buf: Buffer, relations: Map<number, Pgoutput.MessageRelation>, start = 0, end = buf.length): Pgoutput.Message {
  return new Reader(buf, start, end).message(relations);
}

/**
 * An INSERT whose tuple is read only when asked for: as a row (`new`), or
 * by the assembler straight into a COPY line (changelog/copy-lines.ts),
 * which never makes a value of it. `data` holds the message's bytes (up to
 * `end`), as read from the replication connection, which never reuses them.
 */
export class InsertMessage {
  readonly tag = 'insert' as const;
  private row: Row | undefined;

  constructor(
    readonly relation: Pgoutput.MessageRelation,
    readonly data: Buffer,
    /** Where the TupleData starts in `data`, and where the message ends. */
    readonly tupleAt: number,
    readonly end: number,
  ) {}

  get new(): Row {
    return (this.row ??= new Reader(this.data, this.tupleAt, this.end).tuple(this.relation, null));
  }
}

class Reader {
  constructor(
    private readonly buf: Buffer,
    private pos: number,
    /** Where the message ends in `buf`. */
    private readonly end: number,
  ) {}

  message(relations: Map<number, Pgoutput.MessageRelation>): Pgoutput.Message {
    const tag = this.u8();
    switch (tag) {
      case 0x42 /* B */:
        return { tag: 'begin', commitLsn: this.lsn(), commitTime: this.time(), xid: this.i32() };
      case 0x43 /* C */:
        return { tag: 'commit', flags: this.u8(), commitLsn: this.lsn(), commitEndLsn: this.lsn(), commitTime: this.time() };
      case 0x52 /* R */: {
        const rel = this.relation();
        relations.set(rel.relationOid, rel);
        return rel;
      }
      case 0x49 /* I */: {
        const relation = this.rel(relations);
        this.u8(); // 'N'
        return new InsertMessage(relation, this.buf, this.pos, this.end) as Pgoutput.MessageInsert;
      }
      case 0x55 /* U */: {
        const relation = this.rel(relations);
        let key: Row | null = null;
        let old: Row | null = null;
        let sub = this.u8();
        if (sub === 0x4b /* K */) key = this.keyTuple(relation);
        else if (sub === 0x4f /* O */) old = this.tuple(relation, null);
        if (sub !== 0x4e /* N */) sub = this.u8();
        if (sub !== 0x4e) throw new Error(`pgoutput: unexpected UPDATE submessage ${String.fromCharCode(sub)}`);
        return { tag: 'update', relation, key, old, new: this.tuple(relation, old) };
      }
      case 0x44 /* D */: {
        const relation = this.rel(relations);
        const sub = this.u8();
        if (sub === 0x4b) return { tag: 'delete', relation, key: this.keyTuple(relation), old: null };
        if (sub === 0x4f) return { tag: 'delete', relation, key: null, old: this.tuple(relation, null) };
        throw new Error(`pgoutput: unexpected DELETE submessage ${String.fromCharCode(sub)}`);
      }
      case 0x54 /* T */: {
        const n = this.i32();
        const flags = this.u8();
        const rels: Pgoutput.MessageRelation[] = [];
        for (let i = 0; i < n; i++) rels.push(this.rel(relations));
        return { tag: 'truncate', cascade: (flags & 1) !== 0, restartIdentity: (flags & 2) !== 0, relations: rels };
      }
      case 0x59 /* Y */:
        return { tag: 'type', typeOid: this.i32(), typeSchema: this.str(), typeName: this.str() };
      case 0x4f /* O */:
        return { tag: 'origin', originLsn: this.lsn(), originName: this.str() };
      case 0x4d /* M */: {
        const flags = this.u8();
        const messageLsn = this.lsn();
        const prefix = this.str();
        const len = this.i32();
        const content = this.buf.subarray(this.pos, this.pos + len);
        this.pos += len;
        return { tag: 'message', flags, transactional: (flags & 1) !== 0, messageLsn, prefix, content };
      }
      default:
        throw new Error(`pgoutput: unknown message type ${String.fromCharCode(tag)} (0x${tag.toString(16)})`);
    }
  }

  private relation(): Pgoutput.MessageRelation {
    const relationOid = this.i32();
    const schema = this.str();
    const name = this.str();
    const ident = this.u8();
    const replicaIdentity = ({ 0x64: 'default', 0x6e: 'nothing', 0x66: 'full', 0x69: 'index' } as const)[ident as 0x64];
    if (!replicaIdentity) throw new Error(`pgoutput: unknown replica identity ${String.fromCharCode(ident)} for ${schema}.${name}`);
    const n = this.i16();
    const columns: Pgoutput.RelationColumn[] = [];
    for (let i = 0; i < n; i++) {
      const flags = this.u8();
      const colName = this.str();
      const typeOid = this.i32();
      const typeMod = this.i32();
      columns.push({ flags, name: colName, typeOid, typeMod, typeSchema: null, typeName: null, parser: keepText });
    }
    const keyColumns = columns.filter((c) => c.flags & 1).map((c) => c.name);
    return { tag: 'relation', relationOid, schema, name, replicaIdentity, columns, keyColumns };
  }

  private rel(relations: Map<number, Pgoutput.MessageRelation>): Pgoutput.MessageRelation {
    const oid = this.i32();
    const r = relations.get(oid);
    if (!r) throw new Error(`pgoutput: change for relation ${oid} before its RELATION message`);
    return r;
  }

  /** A tuple as a row; `fallback` (the old tuple of a FULL-identity update) fills unchanged TOAST values. */
  tuple(relation: Pgoutput.MessageRelation, fallback: Row | null): Row {
    const { columns } = relation;
    const n = this.i16();
    const row: Row = {};
    const buf = this.buf;
    for (let i = 0; i < n; i++) {
      const name = columns[i].name;
      const kind = buf[this.pos++];
      if (kind === 0x74 /* t */) {
        const len = buf.readInt32BE(this.pos);
        const start = this.pos + 4;
        this.pos = start + len;
        row[name] = buf.toString('utf8', start, this.pos);
      } else if (kind === 0x6e /* n */) {
        row[name] = null;
      } else if (kind === 0x75 /* u */) {
        if (fallback && fallback[name] !== undefined) row[name] = fallback[name];
      } else {
        // 'b' (binary) is only sent when a subscriber asks for it; pgferry never does.
        throw new Error(`pgoutput: unsupported value kind ${String.fromCharCode(kind)} in ${relation.schema}.${relation.name}.${name}`);
      }
    }
    return row;
  }

  /** A key tuple: only the identity columns (the others are sent as nulls). */
  private keyTuple(relation: Pgoutput.MessageRelation): Row {
    const all = this.tuple(relation, null);
    const key: Row = {};
    for (const k of relation.keyColumns) if (all[k] !== null && all[k] !== undefined) key[k] = all[k];
    return key;
  }

  private u8(): number {
    return this.buf[this.pos++];
  }

  private i16(): number {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  private i32(): number {
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  private lsn(): string {
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    return formatLsnHalves(hi, lo);
  }

  /** Microseconds since the Unix epoch (the wire counts from 2000-01-01). */
  private time(): bigint {
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v + 946_684_800_000_000n;
  }

  private str(): string {
    const end = this.buf.indexOf(0, this.pos);
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }
}

const keepText = (raw: unknown) => raw;
