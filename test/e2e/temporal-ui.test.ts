import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { chromium, Browser, Page } from 'playwright-core';
import { Client, Connection } from '@temporalio/client';
import type { Proc } from '../helpers/procs';
import { cli, createWorld, startUp, waitForEqual, World } from '../helpers/fixture';
import { waitFor } from '../helpers/wait';
import { captureWorkflowId, replicaWorkflowId } from '../../src/names';
import { replicaStatusQuery } from '../../workflows/messages';

/**
 * The Temporal Web UI path, as an operator clicks it (issue 28), in headless
 * Chromium (Debian's chromium, driven by playwright-core; no browser
 * download) against a real dev server and a real pipeline: the workflow
 * list, the PgferryState filter, starting a stopped replica from the Start
 * Workflow form with the one-field input {"replica": "b"}, b running and
 * equal to the source, then pausing it with the setPaused update from the
 * workflow's page. Each step leaves a screenshot: in a temporary directory,
 * or in test/e2e/temporal-ui (the README's pictures) with
 * PGFERRY_UPDATE_SCREENSHOTS=1.
 */
const SCHEMA = `CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL, note text)`;
const SHOTS = process.env.PGFERRY_UPDATE_SCREENSHOTS ? path.resolve(__dirname, 'temporal-ui') : fs.mkdtempSync(path.join(os.tmpdir(), 'pgferry-ui-'));

function chromiumPath(): string {
  for (const name of ['chromium', 'chromium-browser']) {
    try {
      return execFileSync('which', [name], { encoding: 'utf8' }).trim();
    } catch {
      // next
    }
  }
  throw new Error("no chromium on PATH: run npm run setup (it installs Debian's chromium package)");
}

describe('the Temporal Web UI (headless Chromium)', () => {
  let w: World;
  let up: Proc;
  let client: Client;
  let browser: Browser;
  let page: Page;
  let ui: string;
  let next = 1;

  const write = (n: number) =>
    w.source.withClient('app', async (c) => {
      await c.query(`INSERT INTO orders SELECT g, g * 2.5, 'row ' || g FROM generate_series($1::int, $2::int) g`, [next, next + n - 1]);
      next += n;
    });
  const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, name) });
  const stateOf = async (name: string) => (await client.workflow.getHandle(replicaWorkflowId(name)).query(replicaStatusQuery).catch(() => null))?.state;
  /** The list as the UI shows it for a query typed into its query box. */
  const filter = async (query: string, expectIds: string[], absentIds: string[] = []) => {
    await page.goto(`${ui}/namespaces/default/workflows`);
    await page.locator('[data-testid=toggle-manual-query]').click();
    const box = page.locator('#query');
    await box.fill(query);
    await box.press('Enter');
    // Visibility is eventually consistent: reload until the list shows what the query should find.
    await waitFor(`the UI's list for ${query} to show ${expectIds.join(', ')}`, async () => {
      const text = (await page.locator('main').innerText().catch(() => '')) ?? '';
      if (expectIds.every((id) => text.includes(id)) && absentIds.every((id) => !text.includes(id))) return true;
      await page.locator('[data-testid=manual-search-input]').press('Enter').catch(() => undefined);
      await page.waitForTimeout(1000);
      return false;
    }, 60_000, 200);
  };

  beforeAll(async () => {
    w = await createWorld({ replicas: ['a', 'b'], schema: SCHEMA });
    client = new Client({ connection: await Connection.connect({ address: w.temporal.address }) });
    ui = `http://127.0.0.1:${w.temporal.uiPort}`;
    up = await startUp(w);
    await write(100);
    await waitForEqual(w, 'a', ['orders']);
    await waitForEqual(w, 'b', ['orders']);
    // b's workflow is ended (as if someone terminated it in the UI); the UI starts it again below.
    const stop = await cli(w, ['replica', 'stop', 'b']);
    expect(stop.code, stop.stderr).toBe(0);
    await write(100); // b misses these until it runs again
    await waitForEqual(w, 'a', ['orders']);
    fs.mkdirSync(SHOTS, { recursive: true });
    browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1200, height: 720 } });
  });

  afterAll(async () => {
    await browser?.close();
    await up?.stop();
    await client?.connection.close();
    await w?.teardown();
  });

  it('lists and filters the workflows, starts replica b from the Start Workflow form with {"replica":"b"}, sees it running and equal, and pauses it with the setPaused update', async () => {
    const [a, b, capture] = [replicaWorkflowId('a'), replicaWorkflowId('b'), captureWorkflowId(w.sourceName)];

    // 1. The workflow list: capture and replica a running; b's workflow ended.
    await page.goto(`${ui}/namespaces/default/workflows`);
    await waitFor('the list to show pgferry workflows', async () => (await page.locator('main').innerText()).includes(a), 60_000);
    await shot('01-workflow-list.png');

    // 2. Filter by PgferryState, as typed into the list's query box.
    await filter(`PgferryState = "running"`, [a, capture], [b]);
    await shot('02-filter-running.png');

    // 3. Start Workflow: workflow ID, task queue, type, and the one-field input.
    await page.goto(`${ui}/namespaces/default/workflows`);
    await page.getByRole('button', { name: 'Start Workflow' }).or(page.getByRole('link', { name: 'Start Workflow' })).first().click();
    await page.locator('#workflowId').fill(b);
    await page.locator('#taskQueue').fill('pgferry-apply');
    await page.locator('#workflowType').fill('replicaWorkflow');
    const data = page.locator('.cm-content').first();
    await data.click();
    await page.keyboard.insertText('{"replica": "b"}');
    // Leave the editor first (it formats the JSON on blur, and a click that blurs it is taken by that).
    await page.locator('#workflowType').click();
    await shot('03-start-workflow-form.png');
    await page.getByRole('button', { name: 'Start Workflow' }).last().click();
    await waitFor("b's workflow to be started by the form", async () => (await client.workflow.getHandle(b).describe()).status.name === 'RUNNING', 30_000);

    // 4. b runs again from its checkpoint and catches up with the source.
    await waitFor('b to be running', async () => (await stateOf('b')) === 'running', 60_000);
    await write(50);
    await waitForEqual(w, 'b', ['orders']);
    await page.goto(`${ui}/namespaces/default/workflows/${b}`);
    await waitFor("b's page to show its one-field input", async () => /"replica":\s*"b"/.test(await page.locator('main').innerText()), 30_000);
    await shot('04-replica-running.png');

    // 5. Pause from the workflow's page: More Actions → Send an Update → setPaused {"paused": true}.
    await page.getByRole('button', { name: 'More Actions' }).first().click();
    await page.locator('[data-testid=update-button]:visible').click();
    // A workflow whose worker runs declares its updates: the UI offers them in a list (else a name field).
    const picker = page.locator('#update-select:visible');
    const field = page.locator('#update-name:visible');
    await waitFor('the update dialog', async () => (await picker.count()) + (await field.count()) > 0, 15_000);
    if (await picker.count()) {
      // The list's face is a disabled input inside its button: click where it is, as a person would.
      const box = (await picker.first().boundingBox())!;
      await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
      await page.locator(':is([role=option], [role=menuitem], li):visible', { hasText: 'setPaused' }).first().click();
    } else {
      await field.fill('setPaused');
    }
    const dialogData = page.locator('dialog .cm-content:visible, [role=dialog] .cm-content:visible').first();
    await dialogData.click();
    await page.keyboard.insertText('{"paused": true}');
    await page.locator('#update-id:visible').click(); // leave the editor (see the Start Workflow form)
    await shot('05-pause-update.png');
    await page.getByRole('button', { name: 'Submit' }).and(page.locator(':visible')).first().click();
    await waitFor('b to be paused', async () => (await stateOf('b')) === 'paused', 60_000);

    // 6. The list filtered by PgferryState = "paused" shows b.
    await filter(`PgferryState = "paused"`, [b], [a]);
    await shot('06-filter-paused.png');

    // Paused means nothing more is applied: a takes new rows, b keeps what it had.
    const bRows = async () => (await w.replicas.withClient('replica_b', (c) => c.query('SELECT count(*)::int AS n FROM orders'))).rows[0].n as number;
    const before = await bRows();
    await write(20);
    await waitForEqual(w, 'a', ['orders']);
    expect(await bRows()).toBe(before);
    for (const f of ['01-workflow-list.png', '02-filter-running.png', '03-start-workflow-form.png', '04-replica-running.png', '05-pause-update.png', '06-filter-paused.png']) {
      expect(fs.statSync(path.join(SHOTS, f)).size).toBeGreaterThan(10_000);
    }
  });
});
