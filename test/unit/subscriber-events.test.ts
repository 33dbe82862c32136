import { describe, expect, it } from 'vitest';
import { relKey, TxnMessage } from '../../src/change';
import { compileFilter, eventsOf, splitList } from '../../src/subscribe/events';
import { describeChange } from '../../src/subscribe/deliver';
import { humanLine } from '../../src/cli/tail';

/** Turning change-log messages into what a subscriber's handler receives: filters, keys, idempotency ids. */
const orders = relKey('public', 'orders');
const odd = relKey('we"ird.schema', 'a.b');
const msg = (over: Partial<TxnMessage> = {}): TxnMessage => ({
  v: 1,
  source: 'main',
  xid: 742,
  lsn: '0/16B3748',
  endLsn: '0/16B3778',
  commitTime: '2026-11-21T14:00:00.123456Z',
  seq: 0,
  last: true,
  relations: {
    [orders]: {
      schema: 'public',
      table: 'orders',
      identity: 'default',
      columns: [
        { name: 'id', type: 'bigint', key: true },
        { name: 'total', type: 'numeric(12,2)', key: false },
      ],
    },
    [odd]: { schema: 'we"ird.schema', table: 'a.b', identity: 'full', columns: [{ name: 'x', type: 'text', key: true }] },
  },
  changes: [
    { op: 'insert', rel: orders, new: { id: '1', total: '9.99' } },
    { op: 'update', rel: orders, old: { id: '1' }, new: { id: '1', total: '10.00' } },
    { op: 'insert', rel: odd, new: { x: 'y' } },
    { op: 'truncate', rels: [orders, odd], cascade: false, restartIdentity: true },
    { op: 'delete', rel: orders, old: { id: '1' } },
  ],
  ...over,
});

describe('eventsOf', () => {
  it('numbers every change of the transaction (a truncate once per table) and keeps the ones the filter wants', () => {
    const all = eventsOf(msg(), 0, compileFilter({}, 't'));
    expect(all.nextIndex).toBe(6);
    expect(all.events.map((e) => [e.index, e.operation, e.table])).toEqual([
      [0, 'insert', 'orders'],
      [1, 'update', 'orders'],
      [2, 'insert', 'a.b'],
      [3, 'truncate', 'orders'],
      [4, 'truncate', 'a.b'],
      [5, 'delete', 'orders'],
    ]);
    const some = eventsOf(msg(), 0, compileFilter({ tables: ['orders'], operations: ['update', 'delete'] }, 't'));
    expect(some.nextIndex).toBe(6);
    // Indexes are counted before filtering: a change keeps its id whatever a subscriber filters.
    expect(some.events.map((e) => e.id)).toEqual(['main/0/16B3748/1', 'main/0/16B3748/5']);
  });

  it('carries key, new and old rows, types and metadata', () => {
    const [ins, upd, , trunc, , del] = eventsOf(msg(), 0, compileFilter({}, 't')).events;
    expect(ins).toMatchObject({ source: 'main', lsn: '0/16B3748', xid: 742, commitTime: '2026-11-21T14:00:00.123456Z', key: { id: '1' }, new: { id: '1', total: '9.99' }, old: null });
    expect(upd).toMatchObject({ key: { id: '1' }, old: { id: '1' }, new: { id: '1', total: '10.00' } });
    expect(del).toMatchObject({ key: { id: '1' }, new: null, old: { id: '1' } });
    expect(trunc).toMatchObject({ key: null, truncate: { cascade: false, restartIdentity: true } });
    expect(ins.columns.map((c) => c.type)).toEqual(['bigint', 'numeric(12,2)']);
  });

  it('continues the numbering across the chunks of a large transaction', () => {
    const second = eventsOf(msg({ seq: 1 }), 6, compileFilter({}, 't'));
    expect(second.events[0].id).toBe('main/0/16B3748/6');
    expect(second.nextIndex).toBe(12);
  });

  it('matches table names with dots and quotes given as objects', () => {
    const f = compileFilter({ tables: [{ schema: 'we"ird.schema', table: 'a.b' }] }, 't');
    expect(eventsOf(msg(), 0, f).events.map((e) => e.index)).toEqual([2, 4]);
  });
});

describe('compileFilter', () => {
  it('names every bad entry at once', () => {
    expect(() => compileFilter({ tables: ['public.', ''], operations: ['upsert' as never] }, "subscriber 's'")).toThrow(
      /subscriber 's': table 'public\.' is not a table name.*table '' is not a table name.*operation 'upsert' is not one of insert, update, delete, truncate/,
    );
  });
  it('splits CLI lists', () => {
    expect(splitList(' public.a, b ,,')).toEqual(['public.a', 'b']);
    expect(splitList(undefined)).toBeUndefined();
  });
});

describe('how a change is shown', () => {
  const [ins, upd, odd] = eventsOf(msg(), 0, compileFilter({}, 't')).events;
  it('in errors: operation, table, key, id and position', () => {
    expect(describeChange(upd)).toBe('update of public.orders key {"id":"1"} (change main/0/16B3748/1, source position 0/16B3748, committed 2026-11-21T14:00:00.123456Z)');
    expect(describeChange(odd)).toContain('insert of "we""ird.schema"."a.b" key {"x":"y"}');
  });
  it('in pgferry tail', () => {
    expect(humanLine(ins)).toBe('2026-11-21 14:00:00.123456 0/16B3748 insert   public.orders {"id":"1","total":"9.99"}');
    expect(humanLine(upd)).toBe('2026-11-21 14:00:00.123456 0/16B3748 update   public.orders {"id":"1"} → {"id":"1","total":"10.00"}');
  });
});

describe('schema change events', () => {
  const shape = (names: string[]) => ({ schema: 'public', table: 'orders', columns: names.map((name, i) => ({ num: i + 1, name, type: i ? 'text' : 'bigint', notNull: i === 0, key: i === 0, generated: false })) });
  const m = msg({
    changes: [
      { op: 'insert', rel: orders, new: { id: '1', total: '9.99' } },
      { op: 'schema', oid: 16400, command: 'ALTER TABLE', before: shape(['id', 'total']), after: shape(['id', 'amount']), fills: {}, unfilled: [] },
      { op: 'delete', rel: orders, old: { id: '1' } },
    ],
  });

  it('come in their place, numbered with the others, with the shapes before and after; filters take them by table and as operation schema', () => {
    const all = eventsOf(m, 0, compileFilter({}, 'test')).events;
    expect(all.map((e) => [e.index, e.operation])).toEqual([
      [0, 'insert'],
      [1, 'schema'],
      [2, 'delete'],
    ]);
    const ev = all[1];
    expect(ev).toMatchObject({ id: 'main/0/16B3748/1', schema: 'public', table: 'orders', key: null, new: null, old: null });
    expect(ev.columns).toEqual([
      { name: 'id', type: 'bigint', key: true },
      { name: 'amount', type: 'text', key: false },
    ]);
    expect(ev.schemaChange?.before?.columns.map((c) => c.name)).toEqual(['id', 'total']);
    expect(eventsOf(m, 0, compileFilter({ operations: ['schema'] }, 'test')).events.map((e) => e.index)).toEqual([1]);
    expect(eventsOf(m, 0, compileFilter({ tables: ['public.other'] }, 'test')).events).toEqual([]);
    expect(humanLine(ev)).toBe('2026-11-21 14:00:00.123456 0/16B3748 schema   public.orders ALTER TABLE public.orders: rename column total to amount');
    expect(describeChange(ev)).toBe('schema of public.orders (change main/0/16B3748/1, source position 0/16B3748, committed 2026-11-21T14:00:00.123456Z)');
  });
});
