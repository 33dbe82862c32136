import type pg from 'pg';
import type { Change, TxnMessage, Value } from '../change';
import { isRefusal } from '../errors';
import type { Statement } from './sql-builder';
import type { Logger } from '../logger';

/**
 * The statements of many small changes — typically a stream of short OLTP
 * transactions, one insert, update or delete each — sent to the replica in
 * one round trip through pgferry.apply_statements (sql/target/schema.sql)
 * instead of one round trip each. Order is kept exactly; the statements run
 * in the batch's transaction like any other.
 *
 * If the replica refuses one of them, the group is undone (savepoint) and its
 * changes are applied one by one, so the refusal names the row and its source
 * position, as it would without grouping.
 */
const APPLY = 'SELECT pgferry.apply_statements($1::text[], $2::int[], $3::text[])';
/** Statements per round trip. */
export const GROUP_STATEMENTS = 1000;
/** Values per round trip (bounds the size of one call). */
const GROUP_VALUES = 20_000;

export type ApplyOne = (m: TxnMessage, change: Change) => Promise<void>;

export class StatementGroup {
  private texts: string[] = [];
  private counts: number[] = [];
  private values: Value[] = [];
  private items: { m: TxnMessage; change: Change }[] = [];

  constructor(
    private readonly c: pg.ClientBase,
    /** Apply one change on its own, with its own statement, naming it if refused. */
    private readonly one: ApplyOne,
    private readonly log: Logger,
  ) {}

  get size(): number {
    return this.texts.length;
  }

  /** Queue a change's statement (written with $1[n] references); sends the group when it is full. */
  async add(m: TxnMessage, change: Change, st: Statement): Promise<void> {
    this.texts.push(st.text);
    this.counts.push(st.values.length);
    for (const v of st.values) this.values.push(v);
    this.items.push({ m, change });
    if (this.texts.length >= GROUP_STATEMENTS || this.values.length >= GROUP_VALUES) await this.flush();
  }

  /** Run everything queued, in order. */
  async flush(): Promise<void> {
    const { texts, counts, values, items } = this;
    if (!texts.length) return;
    this.texts = [];
    this.counts = [];
    this.values = [];
    this.items = [];
    if (items.length === 1) return this.one(items[0].m, items[0].change); // nothing to group
    await this.c.query('SAVEPOINT pgferry_group');
    try {
      await this.c.query(APPLY, [texts, counts, values]);
    } catch (err) {
      if (!isRefusal(err)) throw err;
      await this.c.query('ROLLBACK TO SAVEPOINT pgferry_group');
      this.log.info({ statements: texts.length, error: (err as Error).message }, 'the replica refused a group of statements; applying them one by one');
      for (const it of items) await this.one(it.m, it.change);
    }
    await this.c.query('RELEASE SAVEPOINT pgferry_group');
  }
}
