/**
 * The terminal view of a snapshot copy: one bar for all tables, with rows,
 * bytes, rate and ETA. On a terminal it redraws in place; otherwise (logs,
 * CI) it prints a line every two seconds.
 */
import cliProgress from 'cli-progress';
import type { TableProgress } from './copy';

export function snapshotProgressBar(out: NodeJS.WriteStream = process.stdout) {
  const bar = new cliProgress.SingleBar(
    {
      format: 'copy |{bar}| {percentage}% · {rows} rows · {mb} MB · {rate} rows/s · ETA {eta_formatted} · tables {done}/{tables}',
      stream: out,
      noTTYOutput: true,
      notTTYSchedule: 2000,
      etaBuffer: 50,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  let begun = false;
  return {
    update(tables: TableProgress[]) {
      const rows = tables.reduce((n, t) => n + t.rows, 0);
      const estimate = tables.reduce((n, t) => n + (t.done ? t.rows : Math.max(t.estimatedRows, t.rows)), 0);
      const payload = {
        rows,
        mb: (tables.reduce((n, t) => n + t.bytes, 0) / 1e6).toFixed(1),
        rate: Math.round(rows / Math.max(0.001, (Date.now() - started) / 1000)),
        done: tables.filter((t) => t.done).length,
        tables: tables.length,
      };
      if (!begun) {
        bar.start(Math.max(1, estimate), rows, payload);
        begun = true;
      } else {
        bar.setTotal(Math.max(1, estimate));
        bar.update(rows, payload);
      }
    },
    stop() {
      if (begun) bar.stop();
    },
  };
}
