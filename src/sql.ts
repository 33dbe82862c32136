/**
 * The `sql/` directory: the DDL pgferry installs (sql/migrations, see
 * migrations.ts) and the demo's schema (sql/demo, see app/demo.ts), loaded
 * from there — nothing else. Queries are not files: each is a typed function
 * (or a const SQL string used by one) in the module that owns it
 * (test/unit/layers.test.ts checks). Found relative to this file both in the
 * TypeScript tree and in `dist/`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const cache = new Map<string, string>();

export function sqlDir(): string {
  for (const dir of [path.resolve(__dirname, '../sql'), path.resolve(__dirname, '../../sql')]) {
    if (fs.existsSync(path.join(dir, 'migrations'))) return dir;
  }
  throw new Error(`pgferry's sql/ directory was not found next to ${__dirname}; reinstall pgferry`);
}

export function loadSql(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = fs.readFileSync(path.join(sqlDir(), name), 'utf8');
    cache.set(name, text);
  }
  return text;
}
