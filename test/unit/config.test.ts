import { describe, expect, it } from 'vitest';
import { loadConfig, parseReplicaSpecs } from '../../src/config';
import { ConfigError } from '../../src/errors';
import { redactSecrets, redactText, redactUrl } from '../../src/redact';
import { describeCause, isTransient } from '../../src/errors';

describe('config', () => {
  it('reads flags, with environment variables as fallback and flags winning', () => {
    const c = loadConfig(
      { source: 'postgres://u:p@src/db', replica: ['a=postgres://r/a'], tables: 'public.x, y' },
      { PGFERRY_SOURCE: 'postgres://ignored/db', PGFERRY_REPLICAS: 'b=postgres://r/b', PGFERRY_SOURCE_NAME: 'shop', TEMPORAL_ADDRESS: 'temporal:7233' },
    );
    expect(c.source).toEqual({ name: 'shop', url: 'postgres://u:p@src/db', mode: 'wal', tables: ['public.x', 'y'], heartbeatMs: 60_000, slotWarnBytes: 1024 ** 3 });
    expect(c.stream).toEqual({ maxBytes: 20 * 1024 ** 3, maxAge: '7D', segmentBytes: 500_000_000 });
    expect(c.replicas).toEqual([{ name: 'a', url: 'postgres://r/a' }]);
    expect(c.temporal.address).toBe('temporal:7233');
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reads the capture mode and stream retention, and names a bad one', () => {
    const c = loadConfig({ mode: 'trigger' }, { PGFERRY_STREAM_MAX_BYTES: '1000', PGFERRY_STREAM_MAX_AGE: '2h', PGFERRY_STREAM_SEGMENT_BYTES: '500' });
    expect(c.source.mode).toBe('trigger');
    expect(c.stream).toEqual({ maxBytes: 1000, maxAge: '2h', segmentBytes: 500 });
    expect(loadConfig({}, { PGFERRY_CAPTURE_MODE: 'trigger' }).source.mode).toBe('trigger');
    expect(() => loadConfig({ mode: 'logical' }, {})).toThrow(/sources\[\]\.mode \(PGFERRY_CAPTURE_MODE, --mode\): capture mode is 'wal' or 'trigger'/);
    expect(() => loadConfig({}, { PGFERRY_STREAM_MAX_AGE: 'a week' })).toThrow(/stream.max_age \(PGFERRY_STREAM_MAX_AGE\): stream max age is a number and a unit/);
  });

  it('parses PGFERRY_REPLICAS lists, keeping commas inside URLs', () => {
    expect(parseReplicaSpecs(['a=postgres://h/a?options=-c%20x,b=postgres://h/b'])).toEqual([
      { name: 'a', url: 'postgres://h/a?options=-c%20x' },
      { name: 'b', url: 'postgres://h/b' },
    ]);
  });

  it('names every bad field in one message', () => {
    try {
      loadConfig({ source: 'mysql://x', sourceName: 'Main!', replica: ['a=http://x'], rabbitmq: 'redis://x' }, {});
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const m = (err as Error).message;
      for (const field of ['rabbitmq_url', 'sources[].name', 'sources[].url', 'replicas.a.url']) expect(m).toContain(field);
      expect(m).toMatch(/4 problems/);
    }
  });

  it('rejects duplicate replica names and malformed --replica', () => {
    expect(() => loadConfig({ replica: ['a=postgres://h/1', 'a=postgres://h/2'] }, {})).toThrow(/replica 'a' is given twice/);
    expect(() => loadConfig({ replica: ['postgres://u:secret@h/1'] }, {})).toThrow(/must be name=postgres/);
    expect(() => loadConfig({ replica: ['postgres://u:secret@h/1'] }, {})).not.toThrow(/secret/);
  });
});

describe('redaction and error classification', () => {
  it('removes passwords from URLs and from driver messages', () => {
    expect(redactUrl('postgres://app:s3cret@db:5432/x?sslpassword=k')).toBe('postgres://app:***@db:5432/x?sslpassword=***');
    expect(redactUrl('host=db password=s3cret user=app')).toBe('host=db password=*** user=app');
    expect(redactText('auth failed for s3cret', ['postgres://app:s3cret@db/x'])).toBe('auth failed for ***');
    expect(redactSecrets('connect postgresql://app:s3cret@db:5432/x and amqp://guest:gu:est@mq failed; host=db password=s3cret user=app')).toBe(
      'connect postgresql://app:***@db:5432/x and amqp://guest:***@mq failed; host=db password=*** user=app',
    );
  });

  it.each([
    [{ code: 'ECONNREFUSED' }, true],
    [{ code: '57P01' }, true],
    [{ code: '40001' }, true],
    [{ code: '08006' }, true],
    [{ code: '23505' }, false],
    [{ code: '42P01' }, false],
    [new Error('Connection terminated unexpectedly'), true],
    [new ConfigError('x'), false],
  ])('classifies %o as transient=%s by code, not text', (err, transient) => {
    expect(isTransient(err)).toBe(transient);
  });

  it('describes errors in one line', () => {
    expect(describeCause(Object.assign(new Error('boom\nstack'), { code: 'XX000' }))).toBe('boom [XX000]');
  });
});
