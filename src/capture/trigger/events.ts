/**
 * Reading trigger capture's queued events (pgferry.events) into changes,
 * whatever DDL happened between the write and the read:
 * - the table is the event's `rel_oid` (the captured root table), resolved
 *   to its name now: a renamed table is followed; a dropped one is applied
 *   by the names it had (its rows matched whole), never looked up forever;
 * - the row's fields are mapped by the event's `shape` (the attnums and
 *   names of the columns its row text held, recorded by the trigger): a
 *   column dropped since is left out, one renamed since takes its new name,
 *   one added since is absent (the replica's default) — never a shifted
 *   value. Events queued by an older pgferry (no oid, no shape) are read by
 *   position, as before.
 * Anything that cannot be resolved is a SourceError naming the table.
 */
import type pg from 'pg';
import { Change, RelationInfo, relKey, relLabel, Row, type TableShape } from '../../change';
import { parseSchemaChange } from '../schema-capture';
import { SourceError } from '../../errors';
import { qualified } from '../../pg';
import { parseRecordText } from './record-text';

export interface QueuedEvent {
  ev_id: string;
  op: string;
  rel_schema: string;
  rel_table: string;
  rel_oid: string | null;
  shape: number | null;
  old_row: string | null;
  new_row: string | null;
}

export interface Column {
  name: string;
  type: string;
  generated: boolean;
  key: boolean;
}

interface Resolved {
  key: string;
  /** The table is gone: its changes are applied by the names it had. */
  dropped?: boolean;
  info: RelationInfo;
  /** Every column of the table now (generated ones too), in attnum order. */
  columns: Column[];
}

interface Shape {
  /** For each field of the row text: the column's attnum. */
  nums: number[];
  /** For each field of the row text: the column's name now (null: dropped since). */
  names: (string | null)[];
  /** The names the columns had when the row was written. */
  then: string[];
}

const truthy = (v: unknown) => v === true || v === 't';

/**
 * One captured table as the change envelope describes it: every non-dropped
 * column in attnum order (as NEW::text prints them), its type and attnum,
 * whether it is generated (printed but not sent), and the table's unique
 * indexes that could identify its rows (rowIdentity picks one).
 */
const RELATION = `
WITH rel AS (SELECT $1::regclass AS oid)
SELECT a.attname AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.attnum,
       a.attgenerated <> '' AS generated,
       (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
                  'cols', i.indkey::int2[], 'primary', i.indisprimary, 'immediate', i.indimmediate, 'replident', i.indisreplident)), '[]')::text
          FROM pg_catalog.pg_index i WHERE i.indrelid = rel.oid AND (i.indisprimary OR i.indisreplident)) AS indexes
FROM pg_catalog.pg_attribute a, rel
WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`;

interface RelationRow {
  name: string;
  type: string;
  attnum: number | string;
  generated: boolean | string;
  /** JSON: the table's primary key and replica identity index (IdentityIndex[]). */
  indexes: string;
}

/** A unique index that might identify a captured table's rows. */
export interface IdentityIndex {
  /** The attnums of its columns. */
  cols: number[];
  primary: boolean;
  /** False for a DEFERRABLE constraint: its uniqueness is checked at commit, not at each row. */
  immediate: boolean;
  replident: boolean;
}

/**
 * What identifies a captured table's rows in the change log: its primary
 * key ('default'), else its replica identity index ('index'), else the whole
 * row ('full'). Only an immediate key identifies a row — PostgreSQL's own
 * rule for replica identities, which never takes a DEFERRABLE key: within a
 * transaction a deferrable key may name two rows at once (after UPDATE … SET
 * id = id + 1 row 1 holds key 2 beside row 2 until commit), so a change that
 * names its row by that key is ambiguous, and replicas applying it by key
 * lose rows. Such a table's rows are named by their whole old value instead.
 */
export function rowIdentity(indexes: readonly IdentityIndex[]): { identity: 'default' | 'index' | 'full'; cols: number[] } {
  const usable = indexes.filter((i) => i.immediate);
  const pk = usable.find((i) => i.primary);
  if (pk) return { identity: 'default', cols: pk.cols };
  const ri = usable.find((i) => i.replident);
  if (ri) return { identity: 'index', cols: ri.cols };
  return { identity: 'full', cols: [] };
}

/**
 * One row shape of trigger capture (pgferry.shapes), as JSON: for each field
 * of a row's text, the column's name then ("cols") and its name now
 * ("names": null where the column was dropped since, or the table is gone).
 */
const SHAPE = `
SELECT pg_catalog.json_build_object(
         'nums', s.nums,
         'cols', s.cols,
         'names', ARRAY(SELECT a.attname::text
                          FROM unnest(s.nums) WITH ORDINALITY AS u(num, i)
                          LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = s.relid AND a.attnum = u.num AND NOT a.attisdropped
                         ORDER BY u.i))::text AS shape
FROM pgferry.shapes s
WHERE s.shape_id = $1`;

/**
 * The first schema change still queued for a table, in the batch that
 * starts after tick $2 or a later one: its shape before is the table's
 * shape at the start of this batch.
 */
const FIRST_PENDING_SCHEMA_CHANGE = `
SELECT e.new_row FROM pgferry.events e, pgferry.ticks t
WHERE t.tick_id = $2 AND e.op = 'S' AND e.rel_oid = $1::oid AND NOT pg_catalog.pg_visible_in_snapshot(e.txid, t.snap)
ORDER BY e.ev_id LIMIT 1`;

export class TriggerEvents {
  private readonly byOid = new Map<string, Resolved>();
  private readonly byName = new Map<string, Resolved>();
  private readonly shapes = new Map<number, Shape>();
  /**
   * With schema changes captured (events 'S'), each table's shape where the
   * reader is in the log (by oid; null: no schema change queued, so the
   * table as it is now). Rows are named and typed by it, not by today's
   * catalog: a row written before a rename carries the old name, as the
   * replica then has it.
   */
  private readonly atLog = new Map<string, TableShape | null>();
  /** The relation description of each log-position shape, and the latest one per change key. */
  private readonly logInfo = new WeakMap<TableShape, RelationInfo>();
  private readonly lastInfo = new Map<string, RelationInfo>();

  constructor(
    private readonly c: pg.ClientBase,
    private readonly source: string,
    /** The tick this batch starts after (schema changes queued after it are still ahead of the reader). */
    private readonly fromTick?: bigint,
    /** The key the event trigger signs schema changes with (pgferry.events is pgferry's own, but the check is the same). */
    private readonly schemaKey: string | null = null,
  ) {}

  /** The relation description of a change key (for the envelope's relations): as of the change read last. */
  info(key: string): RelationInfo {
    const written = this.lastInfo.get(key);
    if (written) return written;
    for (const r of this.byOid.values()) if (r.key === key) return r.info;
    const r = this.byName.get(key);
    if (!r) throw new Error(`trigger capture: relation ${key} not resolved`);
    return r.info;
  }

  async change(e: QueuedEvent): Promise<Change> {
    if (e.op === 'S') {
      const { change } = parseSchemaChange(e.new_row ?? '', this.schemaKey);
      if (e.rel_oid !== null) this.atLog.set(e.rel_oid, change.after); // the table's shape from here on
      return change;
    }
    const at = e.rel_oid !== null && this.fromTick !== undefined ? await this.logShape(e.rel_oid) : null;
    if (at) return this.asLogged(e, at);
    const r = await this.relation(e);
    if (e.op === 'T') return { op: 'truncate', rels: [r.key], cascade: false, restartIdentity: false };
    const shape = e.shape === null ? null : await this.shape(e);
    const full = r.info.identity === 'full';
    const row = (text: string, keysOnly: boolean) => rowOf(e, r, shape, parseRecordText(text, shape?.nums.length), keysOnly && !full);
    switch (e.op) {
      case 'I':
        return { op: 'insert', rel: r.key, new: row(e.new_row!, false) };
      case 'U':
        return { op: 'update', rel: r.key, old: row(e.old_row!, true), new: row(e.new_row!, false) };
      default:
        return { op: 'delete', rel: r.key, old: row(e.old_row!, true) };
    }
  }

  private async logShape(oid: string): Promise<TableShape | null> {
    if (!this.atLog.has(oid)) {
      const row = (await this.c.query<{ new_row: string }>(FIRST_PENDING_SCHEMA_CHANGE, [oid, String(this.fromTick)])).rows[0];
      this.atLog.set(oid, row ? parseSchemaChange(row.new_row, this.schemaKey).change.before : null);
    }
    return this.atLog.get(oid)!;
  }

  /** A row change named and typed by the table's shape at its place in the log; fields matched by attnum. */
  private async asLogged(e: QueuedEvent, at: TableShape): Promise<Change> {
    const now = await this.relation(e);
    const key = relKey(at.schema, at.table);
    let info = this.logInfo.get(at);
    if (!info) {
      const identity = now.info.identity;
      const nowKeys = new Set(now.info.columns.filter((c) => c.key).map((c) => c.name));
      const columns = at.columns
        .filter((c) => !c.generated)
        .map((c) => ({ name: c.name, type: c.type, key: identity === 'full' || (identity === 'default' ? c.key : nowKeys.has(c.name)) }));
      info = { schema: at.schema, table: at.table, identity, columns };
      this.logInfo.set(at, info);
    }
    this.lastInfo.set(key, info);
    if (e.op === 'T') return { op: 'truncate', rels: [key], cascade: false, restartIdentity: false };
    const shape = await this.shape(e);
    const byNum = new Map(at.columns.map((c) => [c.num, c]));
    const keys = new Set(info.columns.filter((c) => c.key).map((c) => c.name));
    const full = info.identity === 'full';
    const row = (text: string, keysOnly: boolean): Row => {
      const fields = parseRecordText(text, shape.nums.length);
      const label = relLabel(at);
      if (fields.length !== shape.nums.length) {
        throw new SourceError(`table ${label}: event ${e.ev_id} holds ${fields.length} fields where its shape says ${shape.nums.length}; resync the replicas' copy of ${label}`);
      }
      const out: Row = {};
      fields.forEach((v, i) => {
        const col = byNum.get(shape.nums[i]);
        if (col && !col.generated && (!keysOnly || full || keys.has(col.name))) out[col.name] = v;
      });
      return out;
    };
    switch (e.op) {
      case 'I':
        return { op: 'insert', rel: key, new: row(e.new_row!, false) };
      case 'U':
        return { op: 'update', rel: key, old: row(e.old_row!, true), new: row(e.new_row!, false) };
      default:
        return { op: 'delete', rel: key, old: row(e.old_row!, true) };
    }
  }

  private async relation(e: QueuedEvent): Promise<Resolved> {
    if (e.rel_oid !== null) {
      let r = this.byOid.get(e.rel_oid);
      if (!r) {
        const now = (await this.c.query('SELECT n.nspname AS schema, c.relname AS table FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::oid', [e.rel_oid])).rows[0];
        r = now ? await this.describe(now.schema, now.table, e.rel_oid) : await this.dropped(e);
        this.byOid.set(e.rel_oid, r);
      }
      return r;
    }
    const key = relKey(e.rel_schema, e.rel_table);
    let r = this.byName.get(key);
    if (!r) {
      const exists = (await this.c.query('SELECT pg_catalog.to_regclass($1) IS NOT NULL AS yes', [qualified(e.rel_schema, e.rel_table)])).rows[0].yes;
      if (!truthy(exists)) {
        throw new SourceError(
          `source '${this.source}': changes of table ${relLabel({ schema: e.rel_schema, table: e.rel_table })} are queued in pgferry.events, but the table no longer exists ` +
            `and these events (written by an older pgferry) do not say what its columns were; to go on without them: ` +
            `DELETE FROM pgferry.events WHERE rel_schema = '${e.rel_schema.replace(/'/g, "''")}' AND rel_table = '${e.rel_table.replace(/'/g, "''")}' AND rel_oid IS NULL — then resync the replicas' copy of that table`,
        );
      }
      r = await this.describe(e.rel_schema, e.rel_table, qualified(e.rel_schema, e.rel_table));
      this.byName.set(key, r);
    }
    return r;
  }

  /** A captured table as it is now: every column, its type and key, and the table's identity (rowIdentity). */
  private async describe(schema: string, table: string, regclass: string): Promise<Resolved> {
    const { rows } = await this.c.query<RelationRow>(RELATION, [regclass]);
    const { identity, cols } = rowIdentity(rows.length ? (JSON.parse(rows[0].indexes) as IdentityIndex[]) : []);
    const columns: Column[] = rows.map((x) => ({ name: x.name, type: x.type, generated: truthy(x.generated), key: cols.includes(Number(x.attnum)) }));
    const sent = columns.filter((col) => !col.generated);
    return {
      key: relKey(schema, table),
      info: { schema, table, identity, columns: sent.map((col) => ({ name: col.name, type: col.type, key: identity === 'full' || col.key })) },
      columns,
    };
  }

  /**
   * A table dropped while its changes were queued: they are applied by the
   * names it had (the replica still has the table; the source's DROP is not
   * replicated), matching rows on their whole old value.
   */
  private async dropped(e: QueuedEvent): Promise<Resolved> {
    const shape = e.shape === null ? null : await this.shape(e);
    const names = shape?.then ?? [];
    const columns: Column[] = names.map((name) => ({ name, type: 'text', generated: false, key: true }));
    return {
      key: relKey(e.rel_schema, e.rel_table),
      dropped: true,
      info: { schema: e.rel_schema, table: e.rel_table, identity: 'full', columns: columns.map((col) => ({ name: col.name, type: col.type, key: true })) },
      columns,
    };
  }

  private async shape(e: QueuedEvent): Promise<Shape> {
    const id = e.shape!;
    let s = this.shapes.get(id);
    if (!s) {
      const row = (await this.c.query<{ shape: string }>(SHAPE, [id])).rows[0];
      if (!row) throw new SourceError(`source '${this.source}': event ${e.ev_id} of ${relLabel({ schema: e.rel_schema, table: e.rel_table })} names shape ${id}, which pgferry.shapes does not hold`);
      const j = JSON.parse(row.shape) as { nums: number[]; cols: string[]; names: (string | null)[] };
      s = { nums: j.nums, names: j.names, then: j.cols };
      this.shapes.set(id, s);
    }
    return s;
  }
}

/**
 * One row's fields as a Row of the table as it is now. With a shape, by the
 * shape (see above); without one, by position in today's columns.
 */
export function rowOf(e: QueuedEvent, r: Resolved, shape: Shape | null, fields: (string | null)[], keysOnly: boolean): Row {
  const out: Row = {};
  const label = relLabel({ schema: e.rel_schema, table: e.rel_table });
  if (shape) {
    if (fields.length !== shape.then.length) {
      throw new SourceError(
        `table ${label}: event ${e.ev_id} holds ${fields.length} fields where its shape says ${shape.then.length} ` +
          `(the table was altered inside the transaction that wrote it, between its writes); resync the replicas' copy of ${label}`,
      );
    }
    const cols = new Map(r.info.columns.map((c) => [c.name, c]));
    fields.forEach((v, i) => {
      const name = r.dropped ? shape.then[i] : shape.names[i];
      const col = name === null ? undefined : cols.get(name);
      if (col && (!keysOnly || col.key)) out[col.name] = v;
    });
    return out;
  }
  // Older events: by position in today's columns.
  if (fields.length > r.columns.length) {
    throw new SourceError(
      `table ${label} has ${r.columns.length} columns but a captured row has ${fields.length}: a column was dropped while changes were queued; resync the replicas`,
    );
  }
  r.columns.forEach((col, i) => {
    if (i < fields.length && !col.generated && (!keysOnly || col.key)) out[col.name] = fields[i];
  });
  return out;
}
