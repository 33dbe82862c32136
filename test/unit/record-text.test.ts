import { describe, expect, it } from 'vitest';
import { parseRecordText } from '../../src/capture/trigger/record-text';

describe('row text parsing (trigger capture)', () => {
  it('splits fields, with NULLs, empty strings, quotes, backslashes, commas and nested rows', () => {
    expect(parseRecordText('(1,abc,,"")')).toEqual(['1', 'abc', null, '']);
    expect(parseRecordText('("a,b","say ""hi""","back\\\\slash")')).toEqual(['a,b', 'say "hi"', 'back\\slash']);
    expect(parseRecordText('(1,"(2,""x, y"")","{1,2,NULL}","{""a,b"",c}")')).toEqual(['1', '(2,"x, y")', '{1,2,NULL}', '{"a,b",c}']);
    expect(parseRecordText('(,)')).toEqual([null, null]);
    expect(parseRecordText('()')).toEqual([null]);
    expect(parseRecordText('()', 1)).toEqual([null]);
    expect(parseRecordText('()', 0)).toEqual([]); // the row of a table with no columns
    expect(parseRecordText('("2026-01-02 03:04:05.123456+00","line1\nline2")')).toEqual(['2026-01-02 03:04:05.123456+00', 'line1\nline2']);
  });
});
