/**
 * The architecture as facts a test can check (issue 16): imports run one way,
 * each concern has one owner, functions stay short. Each rule names what it
 * guards; a failure lists the offending files.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '../..');

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...files(rel));
    else if (e.name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

const sources = [...files('src'), ...files('activities'), ...files('workflows')];
const text = new Map(sources.map((f) => [f, fs.readFileSync(path.join(root, f), 'utf8')]));

/** A file's code without its comments (block and line comments alike), its strings kept: the file printed back by the compiler, which drops them. */
const printer = ts.createPrinter({ removeComments: true });
const codeCache = new Map<string, string>();
function codeOf(file: string): string {
  let code = codeCache.get(file);
  if (code === undefined) {
    code = printer.printFile(ts.createSourceFile(file, text.get(file)!, ts.ScriptTarget.Latest, true));
    codeCache.set(file, code);
  }
  return code;
}

interface Import {
  from: string;
  /** Repository path of the imported module (relative imports), or the package name. */
  to: string;
  typeOnly: boolean;
}

function importsOf(file: string): Import[] {
  const out: Import[] = [];
  const re = /^(?:import|export)(\s+type)?\s[^;]*?from\s+'([^']+)'/gms;
  for (const m of text.get(file)!.matchAll(re)) {
    const spec = m[2];
    let to = spec;
    if (spec.startsWith('.')) {
      to = path.normalize(path.join(path.dirname(file), spec));
      if (fs.existsSync(path.join(root, to)) && fs.statSync(path.join(root, to)).isDirectory()) to = path.join(to, 'index');
    }
    out.push({ from: file, to, typeOnly: Boolean(m[1]) });
  }
  return out;
}

const allImports = sources.flatMap(importsOf);
const under = (p: string, dir: string) => p === dir || p.startsWith(`${dir}/`);
const offenders = (pred: (i: Import) => boolean) => [...new Set(allImports.filter(pred).map((i) => `${i.from} → ${i.to}`))].sort();

describe('imports run one way', () => {
  it('only the composition roots (src/app) import activities/', () => {
    expect(offenders((i) => under(i.to, 'activities') && under(i.from, 'src') && !under(i.from, 'src/app'))).toEqual([]);
  });

  it('nothing outside the CLI imports src/cli', () => {
    expect(offenders((i) => under(i.to, 'src/cli') && !under(i.from, 'src/cli'))).toEqual([]);
  });

  it('only the CLI and the package entry import the composition roots', () => {
    expect(offenders((i) => under(i.to, 'src/app') && !under(i.from, 'src/app') && !under(i.from, 'src/cli') && i.from !== 'src/index.ts')).toEqual([]);
  });

  it('activities do not reach up into the composition roots or the CLI', () => {
    expect(offenders((i) => under(i.from, 'activities') && (under(i.to, 'src/app') || under(i.to, 'src/cli')))).toEqual([]);
  });

  it('workflows import activities and src/ as types only (the pure error names excepted)', () => {
    const allowed = ['src/errors'];
    expect(
      offenders((i) => under(i.from, 'workflows') && !i.typeOnly && (under(i.to, 'activities') || (under(i.to, 'src') && !allowed.includes(i.to)))),
    ).toEqual([]);
  });

  it('the metric instruments are a leaf: no value imports from src/', () => {
    expect(offenders((i) => i.from === 'src/metrics/instruments.ts' && !i.typeOnly && i.to.startsWith('src'))).toEqual([]);
  });

  it('no two folders of src/ import each other', () => {
    const folder = (p: string) => p.split('/').slice(0, 2).join('/').replace(/\.ts$/, '');
    const edges = new Set(allImports.filter((i) => !i.typeOnly && under(i.from, 'src') && under(i.to, 'src')).map((i) => `${folder(i.from)}|${folder(i.to)}`));
    const cycles = [...edges].filter((e) => {
      const [a, b] = e.split('|');
      return a !== b && a < b && edges.has(`${b}|${a}`);
    });
    expect(cycles).toEqual([]);
  });
});

describe('one owner per concern', () => {
  const mentions = (re: RegExp) => sources.filter((f) => re.test(text.get(f)!)).sort();
  const inCode = (re: RegExp) => sources.filter((f) => re.test(codeOf(f))).sort();

  it('the configured capture mode is read in one module', () => {
    expect(mentions(/source\.mode\b/).filter((f) => f !== 'src/config.ts' && f !== 'src/settings.ts')).toEqual(['src/capture/mode.ts']);
  });

  it('the checkpoint table is named in code by one module', () => {
    // Comments may mention pgferry.progress; only ProgressStore's statements (and its PROGRESS_TABLE) may.
    expect(inCode(/pgferry\.progress\b/)).toEqual(['src/apply/progress-store.ts']);
  });

  it('queries live in TypeScript: loadSql is called only by src/migrations.ts and the demo', () => {
    // src/sql.ts defines it; the demo (src/app/demo.ts) loads sql/demo/schema.sql.
    expect(inCode(/\bloadSql\s*\(/).filter((f) => f !== 'src/sql.ts')).toEqual(['src/app/demo.ts', 'src/migrations.ts']);
  });

  it('sql/ holds only migrations/ and demo/', () => {
    expect(fs.readdirSync(path.join(root, 'sql')).sort()).toEqual(['demo', 'migrations']);
  });

  it('SQLSTATE literals live in one module', () => {
    // A quoted five-character SQLSTATE (class and subclass), e.g. '42501' or '57P01'.
    expect(mentions(/'(?:0[0-9A-Z]|[1-5][0-9A-Z]|XX|HV|P0|F0)[0-9A-Z]{3}'/)).toEqual(['src/errors.ts']);
  });

  it('each capture mode lives in its own folder and nothing else imports a mode directly', () => {
    expect(offenders((i) => (under(i.to, 'src/capture/wal') || under(i.to, 'src/capture/trigger')) && !under(i.from, 'src/capture'))).toEqual([
      // status shows the slot's health with its type
      'src/cli/status.ts → src/capture/wal/slot-health',
    ]);
  });
});

describe('small functions', () => {
  it('no function in src/, activities/ or workflows/ is over 120 lines', () => {
    const long: string[] = [];
    for (const f of sources) {
      const sf = ts.createSourceFile(f, text.get(f)!, ts.ScriptTarget.Latest, true);
      const visit = (n: ts.Node) => {
        if (ts.isFunctionLike(n) && 'body' in n && n.body) {
          const lines = sf.getLineAndCharacterOfPosition(n.end).line - sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1;
          if (lines > 120) long.push(`${f}:${sf.getLineAndCharacterOfPosition(n.getStart(sf)).line + 1} (${lines} lines)`);
        }
        ts.forEachChild(n, visit);
      };
      visit(sf);
    }
    expect(long).toEqual([]);
  });
});
