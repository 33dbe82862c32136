import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from '@temporalio/worker';

/**
 * Determinism guard: histories recorded from released workflow code must
 * replay on the current code. A change that breaks replay of a running
 * workflow fails here; version it with patched() instead.
 * Re-record (only for a new release of a workflow): PGFERRY_RECORD_HISTORIES=1 npx vitest run test/workflow
 */
const DIR = path.join(__dirname, 'histories');

describe('workflow replay', () => {
  const files = fs.existsSync(DIR) ? fs.readdirSync(DIR).filter((f) => f.endsWith('.json')) : [];

  it('has recorded histories to replay', () => {
    expect(files.length).toBeGreaterThanOrEqual(3);
  });

  it.each(files)('replays %s', async (file) => {
    const history = JSON.parse(fs.readFileSync(path.join(DIR, file), 'utf8'));
    await Worker.runReplayHistory({ workflowsPath: path.resolve(__dirname, '../../workflows/index.ts') }, history, file);
  });
});
