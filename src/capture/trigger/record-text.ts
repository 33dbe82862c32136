/**
 * Parse PostgreSQL's text form of a row (`ROW(...)::text`, as `NEW::text`
 * prints it) into its fields, each still in its own text form, or null.
 * Follows record_out: fields separated by commas inside parentheses; an
 * empty unquoted field is NULL; a field may be double-quoted, with `""`
 * and backslash escapes for quotes and backslashes inside. `fieldCount`:
 * how many fields the row has, when the caller knows. Pure.
 */
export function parseRecordText(text: string, fieldCount?: number): (string | null)[] {
  if (text[0] !== '(' || text[text.length - 1] !== ')') throw new Error(`not a row literal: ${text.slice(0, 40)}`);
  const fields: (string | null)[] = [];
  let i = 1;
  const end = text.length - 1;
  // "()" is one NULL field — or no field at all, the row of a table with no columns (only its shape tells).
  if (end === 1) return fieldCount === 0 ? [] : [null];
  for (;;) {
    let value = '';
    let quoted = false;
    let any = false;
    while (i < end) {
      const ch = text[i];
      if (ch === '"') {
        any = true;
        if (quoted && text[i + 1] === '"') {
          value += '"';
          i += 2;
          continue;
        }
        quoted = !quoted;
        i += 1;
      } else if (ch === '\\') {
        any = true;
        value += text[i + 1] ?? '';
        i += 2;
      } else if (!quoted && ch === ',') {
        break;
      } else {
        any = true;
        value += ch;
        i += 1;
      }
    }
    fields.push(any ? value : null);
    if (i >= end) return fields;
    i += 1; // the comma
  }
}
