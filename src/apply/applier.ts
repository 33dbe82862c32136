/**
 * How the changes of a batch reach one replica: the apply strategy in one
 * place. Runs of like changes go as one statement (runs.ts: COPY, multi-row
 * INSERT, UPDATE … FROM, DELETE … USING); single-row changes of consecutive
 * transactions are grouped into one round trip (statement-group.ts); a
 * TRUNCATE, and anything the replica refuses in a set form, goes one by one,
 * so a refusal names the row, its table, its key and its source position.
 *
 * Whole transactions of keyed tables are first gathered in a window and sent
 * as their net change (net-apply.ts: per table the keys deleted first, then
 * the last image of each key), falling back to the above, in order, when the
 * replica refuses the set form. Many rows updated or deleted by key, in a run
 * or a window, go through a staging table (staging.ts).
 *
 * A full window is sent while the next one fills (issue 27, item 3: the
 * replica runs one window's statements while apply reads and reduces the
 * next transactions): at most one window is in flight, and every other use
 * of the connection waits for it first (`settle`), so the replica still
 * receives everything in order, and a window's refusal or error surfaces at
 * the next step of the batch, which then stops as before.
 *
 * The applier works inside the caller's transaction and never commits; the
 * batch (apply-batch.ts) frames it. Queued statements are sent before
 * anything that depends on them: `flush()` before a savepoint, before a run,
 * and before the checkpoint is written; `quiesce()` before the batch rolls
 * back.
 */
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { Change, RelationInfo, Row, TxnMessage, relLabel } from '../change';
import { RejectedChangeError, SchemaMismatchError, isRefusal, isSchemaMismatch, isUniqueViolation } from '../errors';
import type { Logger } from '../logger';
import { ReplicaTypes } from './replica-types';
import { runLength } from './runs';
import {
  COPY_MIN_ROWS,
  ParamRef,
  Statement,
  arrayRefs,
  buildCopyInsert,
  buildDelete,
  buildDeleteRows,
  buildInsert,
  buildInsertRows,
  buildTruncate,
  buildUpdate,
  buildUpdateRows,
  changedColumns,
  copyText,
  describeKey,
  insertRowsLimit,
  keyColumns,
  positional,
} from './sql-builder';
import { APPLY_STATEMENTS, StatementGroup } from './statement-group';
import { reduceWindow, tableWrites, windowable } from './net-apply';
import { applyStaged, type KeyedRows } from './staging';
import { KeyNotUnique } from './net-change';
import { applySchemaChange, type SchemaPolicy } from './schema-apply';
import { route, TableGate, TableRegistry } from './table-registry';
import { ZERO_LSN } from '../lsn';
import { isLineInsert, lineSlices, type LineInsert } from '../changelog/copy-lines';

type Insert = Extract<Change, { op: 'insert' }>;
type Update = Extract<Change, { op: 'update' }>;
type Delete = Extract<Change, { op: 'delete' }>;
type RowChange = Exclude<Change, { op: 'truncate' } | { op: 'schema' }>;

export class Applier {
  private readonly group = new StatementGroup();
  private readonly types: ReplicaTypes;
  /** Whole transactions of keyed tables gathered for net-change apply (net-apply.ts); never at once with a queued group. */
  private window: TxnMessage[] = [];
  private windowChanges = 0;
  /** The window being written while the next one fills (null: none); awaited before anything else uses the connection. */
  private sending: Promise<void> | null = null;
  /** Transactions applied as part of a window's net change (not in order after a refusal). */
  netTxns = 0;
  /** The gate as it was at the batch's savepoint of a transaction in several chunks (`mark`), restored by `rollback`. */
  private marked: TableGate | undefined;

  constructor(
    private readonly c: pg.ClientBase,
    private readonly replica: string,
    private readonly log: Logger,
    /** Which tables' changes are applied, kept for a joining table, or left out (table-registry.ts); all applied when undefined. */
    private gate: TableGate | undefined,
    /** Gather whole transactions of keyed tables and apply their net change; false: every change as it happened. */
    private readonly netChange: boolean,
    /** What a schema change does to this replica (schema-apply.ts). */
    private readonly schemaPolicy: SchemaPolicy,
    /** Changes a window gathers before it is written (net-apply.ts windowFor: half a batch). */
    private readonly windowSize: number,
  ) {
    this.types = ReplicaTypes.of(c);
    this.types.refresh(); // the replica's tables may have been altered since the last batch
  }

  /**
   * Apply one chunk of a source transaction, or keep it for later: a whole
   * transaction of keyed tables joins the window, single-row statements are
   * queued. Order is kept: what is kept is sent before anything after it.
   */
  async apply(chunk: TxnMessage): Promise<void> {
    if (!this.gate) return this.take(chunk);
    const routed = route(this.gate, chunk);
    this.gate = { ...this.gate, entries: routed.entries };
    if (routed.pend) {
      await this.settle();
      await TableRegistry.pend(this.c, this.replica, routed.pend.keys, routed.pend.m);
      // A joining table renamed during its copy keeps its entry under the new name (route() followed it in memory).
      for (const ch of routed.pend.m.changes) if (ch.op === 'schema') await this.follow(ch);
    }
    for (const key of routed.unknown) warnUnknown(this.log, this.replica, key);
    if (routed.apply) await this.take(routed.apply);
  }

  /**
   * A whole transaction into the window at once, when that needs nothing of
   * the replica first: no table joining, none unknown, nothing queued, and
   * room left in the window. True if taken; false: nothing changed, use
   * `apply`. The batch's path for most transactions of a catch-up, without
   * the promises of `apply` (each under the activity's async hooks).
   */
  takeNow(m: TxnMessage): boolean {
    if (!this.netChange || this.group.size || this.windowChanges + m.changes.length >= this.windowSize) return false;
    let taken = m;
    let routed: ReturnType<typeof route> | undefined;
    if (this.gate) {
      routed = route(this.gate, m);
      if (routed.pend || routed.unknown.length || !routed.apply) return false;
      taken = routed.apply;
    }
    if (!windowable(taken)) return false;
    if (routed) this.gate = { ...this.gate!, entries: routed.entries };
    this.join(taken);
    return true;
  }

  private async take(m: TxnMessage): Promise<void> {
    if (this.netChange && windowable(m)) {
      await this.flushGroup();
      this.join(m);
      if (this.windowChanges >= this.windowSize) await this.sendWindow();
      return;
    }
    await this.flushWindow();
    await this.applyInOrder(m);
  }

  /**
   * The caller took a savepoint (a transaction in several chunks): remember
   * the registry as it is, so a rollback to that savepoint undoes in memory
   * what it undoes on the replica (a table a rolled-back RENAME or CREATE
   * followed). Call with nothing queued (after `flush`).
   */
  mark(): void {
    this.marked = this.gate;
  }

  /** The caller rolled back to its savepoint: the registry, and the column types read since, are as they were at `mark`. */
  rollback(): void {
    this.gate = this.marked;
    this.types.refresh();
  }

  /** Send everything kept (the window or the queued group), in order, and wait until the replica has it. */
  async flush(): Promise<void> {
    await this.flushGroup();
    await this.flushWindow();
  }

  /** The batch is giving up (it rolls back next): wait for the window in flight, whatever its outcome, so nothing of it reaches the replica after the rollback. */
  async quiesce(): Promise<void> {
    await this.settle().catch(() => undefined);
  }

  /** Wait for the window in flight; its error (a refusal naming the row, a lost connection) is thrown here. */
  private async settle(): Promise<void> {
    const s = this.sending;
    if (!s) return;
    this.sending = null;
    await s;
  }

  /** Every change of `m` as it happened: runs as one statement, single rows queued, a TRUNCATE alone. */
  private async applyInOrder(m: TxnMessage): Promise<void> {
    const changes = m.changes;
    for (let i = 0; i < changes.length; ) {
      const run = runLength(m, changes, i);
      const ch = changes[i];
      if (run > 1) {
        await this.flushGroup();
        await this.applyRun(m, changes.slice(i, i + run));
      } else if (ch.op === 'truncate') {
        await this.flushGroup();
        await this.one(m, ch);
      } else if (ch.op === 'schema') {
        await this.flushGroup();
        await applySchemaChange(this.c, { replica: this.replica, policy: this.schemaPolicy, log: this.log, takesNewTables: this.gate?.takesNewTables ?? false }, m, ch);
        for (const t of [ch.before, ch.after]) if (t) this.types.forget(t);
        await this.follow(ch);
      } else {
        await this.queue(m, ch);
      }
      i += run;
    }
  }

  /**
   * The registry follows a schema change it let through (route() already
   * follows it in memory): a table created on the source joins from its
   * first row, a renamed or moved table keeps its entry under the new name.
   * Always written, never "already there": a transaction undone and read
   * again (a re-send) must write it again.
   */
  private async follow(ch: Extract<Change, { op: 'schema' }>): Promise<void> {
    if (!this.gate?.entries || !ch.after) return;
    if (ch.partition) {
      // A detached partition is a table of its own, which a replica taking every table now holds (schema-apply).
      if (ch.partition.action === 'detach' && this.gate.takesNewTables) await TableRegistry.set(this.c, this.replica, [ch.partition], 'ready', ZERO_LSN, { keep: true });
      return;
    }
    if (!ch.before) await TableRegistry.set(this.c, this.replica, [ch.after], 'ready', ZERO_LSN, { keep: true });
    else if (ch.before.schema !== ch.after.schema || ch.before.table !== ch.after.table) await TableRegistry.rename(this.c, this.replica, ch.before, ch.after);
  }

  /**
   * The window's net change under a savepoint; if the replica refuses the set
   * form, its transactions in order instead (a refusal then names the row).
   */
  private async flushWindow(): Promise<void> {
    await this.settle();
    const txns = this.takeWindow();
    if (txns.length) await this.writeWindow(txns);
  }

  /** Start writing the full window, after the one in flight; the batch goes on reading meanwhile. */
  private async sendWindow(): Promise<void> {
    await this.settle();
    const sending = this.writeWindow(this.takeWindow());
    sending.catch(() => undefined); // observed by the next settle (or quiesce), not left unhandled meanwhile
    this.sending = sending;
  }

  /** A whole transaction joins the window (nothing queued: the caller flushed the group). */
  private join(m: TxnMessage): void {
    this.window.push(m);
    this.windowChanges += m.changes.length;
  }

  private takeWindow(): TxnMessage[] {
    const txns = this.window;
    this.window = [];
    this.windowChanges = 0;
    return txns;
  }

  private async writeWindow(txns: TxnMessage[]): Promise<void> {
    const tables = txns.length > 1 ? this.reduce(txns) : null; // one transaction: its own runs and groups do as well
    if (!tables) return this.applyAllInOrder(txns);
    await this.c.query('SAVEPOINT pgferry_net');
    try {
      const writes = tables.map(tableWrites);
      for (const w of writes) if (w.deletes) await this.setRows(w.deletes);
      for (const [i, w] of writes.entries()) {
        for (const rows of w.inserts) await this.insertRows(tables[i].rel, rows);
        for (const set of w.updates) await this.setRows(set);
      }
      this.netTxns += txns.length;
    } catch (err) {
      if (!isRefusal(err)) throw err;
      await this.c.query('ROLLBACK TO SAVEPOINT pgferry_net');
      for (const t of tables) this.types.forget(t.rel);
      this.log.info({ txns: txns.length, error: (err as Error).message }, 'the replica refused the net change of a window; applying its transactions in order');
      await this.applyAllInOrder(txns);
    }
    await this.c.query('RELEASE SAVEPOINT pgferry_net');
  }

  /** The window's net change (null: apply in order); a key the changes show naming two rows stops the replica. */
  private reduce(txns: TxnMessage[]): ReturnType<typeof reduceWindow> {
    try {
      return reduceWindow(txns);
    } catch (err) {
      if (!(err instanceof KeyNotUnique)) throw err;
      const m = txns.find((t) => t.changes.includes(err.change)) ?? txns[0];
      const r = m.relations[err.change.rel];
      const table = r ? relLabel(r) : 'unknown table';
      throw new RejectedChangeError(
        `replica '${this.replica}': the changes of ${table} up to source position ${m.lsn} name two rows by one key: ${err.message}. ` +
          `Its key cannot tell its rows apart (a DEFERRABLE key, checked only at commit, written by a capture that named rows by it); ` +
          `with this pgferry, trigger capture names such a table's rows by their whole value, and WAL capture needs ALTER TABLE ${table} REPLICA IDENTITY FULL on the source. ` +
          `Then copy the table again: pgferry table add ${table} --replace (or pgferry replica resync ${this.replica})`,
        { cause: err, sourceLsn: m.lsn },
      );
    }
  }

  private async applyAllInOrder(txns: TxnMessage[]): Promise<void> {
    for (const m of txns) await this.applyInOrder(m);
    await this.flushGroup();
  }

  /** Send everything queued, in order; if the replica refuses the group, apply its changes one by one. */
  private async flushGroup(): Promise<void> {
    if (!this.group.size) return;
    await this.settle();
    const { params, items } = this.group.take();
    if (items.length === 1) return this.one(items[0].m, items[0].change); // nothing to group
    await this.c.query('SAVEPOINT pgferry_group');
    try {
      await this.c.query(APPLY_STATEMENTS, params);
    } catch (err) {
      if (!isRefusal(err)) throw err;
      await this.c.query('ROLLBACK TO SAVEPOINT pgferry_group');
      this.log.info({ statements: items.length, error: (err as Error).message }, 'the replica refused a group of statements; applying them one by one');
      for (const it of items) await this.one(it.m, it.change);
    }
    await this.c.query('RELEASE SAVEPOINT pgferry_group');
  }

  /** A single-row change: into the group when its statement can be written with array references, else on its own. */
  private async queue(m: TxnMessage, ch: RowChange): Promise<void> {
    const r = rel(m, ch.rel);
    const ref = arrayRefs(
      r.columns.map((col) => col.name),
      await this.types.get(r, ch.rel),
    );
    if (!ref) {
      await this.flushGroup();
      return this.one(m, ch);
    }
    const st = statementFor(m, ch, ref);
    if (st && this.group.add(m, ch, st)) await this.flushGroup();
  }

  /** One change with its own statement; a refusal names the row. */
  private async one(m: TxnMessage, change: Change): Promise<void> {
    if (change.op === 'schema') throw new Error('a schema change is never applied as a row statement');
    const st = statementFor(m, change, positional);
    if (!st) return;
    try {
      await this.c.query(change.op === 'truncate' ? st : await this.types.prepared(rel(m, change.rel), st));
    } catch (err) {
      if (change.op !== 'truncate') this.types.forget(rel(m, change.rel));
      throw rejection(this.replica, m, change, err);
    }
  }

  /** A run (length ≥ 2 from runLength) as one statement, or row by row if the replica refuses it. */
  private async applyRun(m: TxnMessage, run: Change[]): Promise<void> {
    const first = run[0];
    if (first.op === 'truncate' || first.op === 'schema') throw new Error('a TRUNCATE or schema change is never part of a run');
    const r = rel(m, first.rel);
    await this.c.query('SAVEPOINT pgferry_rows');
    try {
      await this.runStatement(r, first, run);
    } catch (err) {
      if (!isRefusal(err)) throw err;
      await this.c.query('ROLLBACK TO SAVEPOINT pgferry_rows');
      this.types.forget(r);
      for (const ch of run) await this.one(m, ch);
    }
    await this.c.query('RELEASE SAVEPOINT pgferry_rows');
  }

  private async runStatement(r: RelationInfo, first: RowChange, run: Change[]): Promise<void> {
    if (isLineInsert(first) && run.length >= COPY_MIN_ROWS) return copyLines(this.c, r, run as LineInsert[]);
    if (first.op === 'insert') return this.insertRows(r, (run as Insert[]).map((ch) => ch.new));
    const keys = keyColumns(r);
    if (first.op === 'update') return this.setRows({ op: 'update', rel: r, keys, cols: changedColumns(first.old, first.new), rows: run as Update[] });
    return this.setRows({ op: 'delete', rel: r, keys, cols: [], rows: (run as Delete[]).map((ch) => ({ old: ch.old, new: ch.old })) });
  }

  /** Rows inserted into one table, all with the same columns: COPY for many, multi-row INSERTs for few. */
  private async insertRows(r: RelationInfo, rows: Row[]): Promise<void> {
    if (rows.length >= COPY_MIN_ROWS) return copyRows(this.c, r, rows);
    const perInsert = insertRowsLimit(Object.keys(rows[0]).length);
    for (let i = 0; i < rows.length; i += perInsert) await this.c.query(await this.types.prepared(r, buildInsertRows(r, rows.slice(i, i + perInsert))));
  }

  /**
   * Rows updated or deleted by key: through a staging table for many
   * (staging.ts), UPDATE … FROM / DELETE … USING (VALUES …) for few, or where
   * this connection cannot stage.
   */
  private async setRows(set: KeyedRows): Promise<void> {
    const types = await this.types.get(set.rel);
    if (set.rows.length >= COPY_MIN_ROWS && (await applyStaged(this.c, set, types, this.log))) return;
    const per = insertRowsLimit(set.keys.length + set.cols.length);
    for (let i = 0; i < set.rows.length; i += per) {
      const part = set.rows.slice(i, i + per);
      const st = set.op === 'update' ? buildUpdateRows(set.rel, set.keys, set.cols, part, types) : buildDeleteRows(set.rel, set.keys, part.map((r) => r.old), types);
      await this.c.query(await this.types.prepared(set.rel, st));
    }
  }
}

/** Insert rows with COPY … FROM STDIN (text format) on the batch's connection, inside its transaction. */
function copyRows(c: pg.ClientBase, rel: RelationInfo, rows: Row[]): Promise<void> {
  const cols = Object.keys(rows[0]);
  return copyIn(c, buildCopyInsert(rel, cols), copyText(cols, rows));
}

/**
 * Inserts carried as COPY lines (runs.ts: every column, one table), copied as
 * they are: each message's lines are one slice of its body, written as a
 * CopyData of its own — not joined into one buffer first (a bulk load's
 * window is tens of MB, which joining copied once more).
 */
function copyLines(c: pg.ClientBase, rel: RelationInfo, lines: LineInsert[]): Promise<void> {
  return copyIn(c, buildCopyInsert(rel, lines[0].columns), lineSlices(lines));
}

async function copyIn(c: pg.ClientBase, sql: string, data: string | Buffer[]): Promise<void> {
  const stream = c.query(copyFrom(sql));
  await new Promise<void>((resolve, reject) => {
    stream.on('error', reject);
    stream.on('finish', resolve);
    if (typeof data === 'string') stream.end(data);
    else {
      for (const slice of data) stream.write(slice);
      stream.end();
    }
  });
}

function rel(m: TxnMessage, key: string): RelationInfo {
  const r = m.relations[key];
  if (!r) throw new Error(`change-log message ${m.lsn}#${m.seq} references relation ${key} without describing it`);
  return r;
}

function statementFor(m: TxnMessage, ch: RowChange | Extract<Change, { op: 'truncate' }>, ref: ParamRef): Statement | null {
  switch (ch.op) {
    case 'insert':
      return buildInsert(rel(m, ch.rel), ch.new, ref);
    case 'update':
      return buildUpdate(rel(m, ch.rel), ch.old, ch.new, ref);
    case 'delete':
      return buildDelete(rel(m, ch.rel), ch.old, ref);
    case 'truncate':
      return buildTruncate(
        ch.rels.map((k) => rel(m, k)),
        ch.restartIdentity,
      );
  }
}

/**
 * A change the replica refused. Connection-level problems are re-thrown to be
 * retried; anything about the data or the schema stops this replica with the
 * table, the key, the source position and the database's own message.
 */
function rejection(replica: string, m: TxnMessage, ch: RowChange | Extract<Change, { op: 'truncate' }>, err: unknown): Error {
  const e = err as { code?: string; message?: string };
  if (!isRefusal(err)) return err as Error;
  const r = ch.op === 'truncate' ? m.relations[ch.rels[0]] : m.relations[ch.rel];
  const table = r ? relLabel(r) : 'unknown table';
  const key = ch.op === 'truncate' ? '' : ` key ${describeKey(r, ch.op === 'insert' ? ch.new : ch.old)}`;
  const where = `replica '${replica}': ${ch.op} on ${table}${key} at source position ${m.lsn} was rejected: ${e.message} [${e.code}]`;
  if (ch.op === 'update' && isUniqueViolation(err) && r && movesKey(r, ch)) {
    // A source key checked only at commit lets a transaction move rows through keys other rows still hold
    // (UPDATE … SET id = id + 1); applied row by row, the replica's immediate constraint sees each step.
    return new RejectedChangeError(
      `${where}; the source moved this row onto a key another row held at that moment, which only a DEFERRABLE key allows ` +
        `(e.g. UPDATE … SET id = id + 1 on a key checked at commit) — or the replica holds a row the source does not. ` +
        `If the source's constraint is DEFERRABLE, make the replica's the same (drop it and add it again with DEFERRABLE INITIALLY DEFERRED), ` +
        `then run pgferry replica resume ${replica}`,
      { cause: err, sourceLsn: m.lsn },
    );
  }
  return isSchemaMismatch(err)
    ? new SchemaMismatchError(`${where}; make the replica's table match the source's, then run pgferry replica resume ${replica}`, { cause: err, sourceLsn: m.lsn })
    : new RejectedChangeError(`${where}; fix the replica (or the row), then run pgferry replica resume ${replica}`, { cause: err, sourceLsn: m.lsn });
}

/** Whether an update changes a value its table's unique keys may hold: a key column, or any column of a row matched whole. */
function movesKey(r: RelationInfo, ch: Update): boolean {
  if (r.identity === 'full') return changedColumns(ch.old, ch.new).length > 0;
  return keyColumns(r).some((k) => k in ch.new && ch.new[k] !== ch.old[k]);
}

/** Tables a replica was warned about, so a busy table says it once per process, not once per batch. */
const warned = new Set<string>();

function warnUnknown(log: Logger, replica: string, key: string): void {
  const id = `${replica}\u0000${key}`;
  if (warned.has(id)) return;
  warned.add(id);
  const [schema, table] = JSON.parse(key) as [string, string];
  const name = relLabel({ schema, table });
  log.warn(
    { replica, table: name },
    `replica '${replica}': the stream carries changes of table ${name}, which has not joined this replica; they are not applied here. ` +
      `Run pgferry table add ${name} to copy it in (the other tables keep streaming), or leave it out of the source's tables`,
  );
}
