/**
 * The statements of many small changes — typically a stream of short OLTP
 * transactions, one insert, update or delete each — queued to go to the
 * replica in one round trip through pgferry.apply_statements
 * (sql/migrations/target/0001-bookkeeping.sql) instead of one round trip each. Order is kept
 * exactly. A buffer only: the applier (applier.ts) sends it, and applies its
 * changes one by one if the replica refuses the group.
 */
import type { Change, TxnMessage, Value } from '../change';
import type { Statement } from './sql-builder';

export const APPLY_STATEMENTS = 'SELECT pgferry.apply_statements($1::text[], $2::int[], $3::text[])';
/** Statements per round trip. */
export const GROUP_STATEMENTS = 1000;
/** Values per round trip (bounds the size of one call). */
const GROUP_VALUES = 20_000;

export interface QueuedChange {
  m: TxnMessage;
  change: Change;
}

export interface TakenGroup {
  /** The parameters of APPLY_STATEMENTS. */
  params: [string[], number[], Value[]];
  items: QueuedChange[];
}

export class StatementGroup {
  private texts: string[] = [];
  private counts: number[] = [];
  private values: Value[] = [];
  private items: QueuedChange[] = [];

  get size(): number {
    return this.texts.length;
  }

  /** Queue a change's statement (written with $1[n] references); true when the group is full and must be sent. */
  add(m: TxnMessage, change: Change, st: Statement): boolean {
    this.texts.push(st.text);
    this.counts.push(st.values.length);
    for (const v of st.values) this.values.push(v);
    this.items.push({ m, change });
    return this.texts.length >= GROUP_STATEMENTS || this.values.length >= GROUP_VALUES;
  }

  /** Everything queued, in order, leaving the group empty. */
  take(): TakenGroup {
    const taken: TakenGroup = { params: [this.texts, this.counts, this.values], items: this.items };
    this.texts = [];
    this.counts = [];
    this.values = [];
    this.items = [];
    return taken;
  }
}
