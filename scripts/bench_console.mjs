// The browser half of scripts/bench_console.sh: logs in as `bench`, then times reloads of
// /console/ until the Overview shows NODES ready nodes; then opens the Pods page of namespace
// `bench` (PODS pods) until every row is drawn, and deletes 100 pods (one DeleteCollection
// request through kubectl, not kubectl's 100 DELETEs one after another; timed from its start) until
// their rows are gone, and patches 100 other pods' phase until their rows show it; prints JSON
// fields (no braces) on stdout and the pod figures side by side on stderr.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.NODE_PATH, 'x.js'));
const { chromium } = require('playwright-core');
const URL = process.env.CONSOLE_URL;
const NODES = process.env.NODES;
const SAMPLES = Number(process.env.SAMPLES || 5);

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true });
// CONSOLE_ASSETS=DIR: the console's scripts and styles come from DIR (a checkout's
// pkg/console/assets) instead of the binary, to time a change of the page against the same server
if (process.env.CONSOLE_ASSETS) {
  await context.route(/\/console\/v\/[^/]+\/[^/]+\.(js|css)$/, (route) => {
    const file = path.join(process.env.CONSOLE_ASSETS, path.basename(new globalThis.URL(route.request().url()).pathname));
    route.fulfill({ path: file, contentType: file.endsWith('.css') ? 'text/css' : 'text/javascript' });
  });
}
const page = await context.newPage();
let started = Date.now();
await page.goto(`${URL}/console/`);
await page.waitForSelector('#login-name');
const loginMs = Date.now() - started;
await page.fill('#login-name', 'bench');
await page.fill('#login-password', 'bench-password');
await page.click('#login-submit');
await page.waitForFunction((n) => document.querySelector('#nodes-ready')?.textContent === n, NODES);
const times = [];
for (let i = 0; i < SAMPLES; i++) {
  started = Date.now();
  await page.reload();
  await page.waitForFunction((n) => document.querySelector('#nodes-ready')?.textContent === n, NODES);
  times.push(Date.now() - started);
}
times.sort((a, b) => a - b);
const PODS = Number(process.env.PODS || 0);
let podsFields = '';
if (PODS > 0) {
  await page.evaluate(() => localStorage.setItem('mini.namespace', 'bench'));
  await page.reload();
  await page.waitForSelector('nav.side a[data-path="pods"]');
  started = Date.now();
  await page.click('nav.side a[data-path="pods"]');
  await page.waitForFunction((n) => document.querySelectorAll('#pods-table tbody tr').length === n, PODS, { timeout: 120000 });
  const renderMs = Date.now() - started;
  // where the time goes: when the API server answered the DeleteCollection, and when the page
  // took away the first and the last of the rows (wall clock of this machine, page and node alike)
  await page.evaluate(() => {
    window.benchGone = [];
    new MutationObserver((records) => {
      if (records.some((r) => r.removedNodes.length)) window.benchGone.push(Date.now());
    }).observe(document.querySelector('#pods-table tbody'), { childList: true });
  });
  started = Date.now();
  execFileSync('kubectl', ['delete', '--raw', '/api/v1/namespaces/bench/pods?labelSelector=batch%3D0&gracePeriodSeconds=0']);
  const answeredMs = Date.now() - started;
  await page.waitForFunction((n) => document.querySelectorAll('#pods-table tbody tr').length === n, PODS - 100, { timeout: 120000 });
  const updateMs = Date.now() - started;
  const gone = await page.evaluate(() => window.benchGone);
  const firstGoneMs = gone.length ? gone[0] - started : -1;
  const removals = gone.length;
  // 100 other pods change phase (status patched to Succeeded, 100 requests in parallel from
  // the page, as the console's own API module sends them), timed from the first request until
  // every one of their rows shows it
  const names = Array.from({ length: 100 }, (_, i) => `p-${String(100 + i).padStart(5, '0')}`);
  started = Date.now();
  await page.evaluate(async (list) => {
    const src = document.querySelector('script[type="module"]').src;
    const { patch } = await import(src.replace(/app\.js$/, 'api.js'));
    await Promise.all(list.map((n) => patch(`/api/v1/namespaces/bench/pods/${n}/status`, { status: { phase: 'Succeeded' } })));
  }, names);
  const patchedMs = Date.now() - started;
  await page.waitForFunction((list) => list.every((n) => document.querySelector(`#pods-table tr[data-pod="bench/${n}"] .status`)?.textContent === 'Succeeded'), names, { timeout: 120000 });
  const modifyMs = Date.now() - started;
  podsFields = `,"pods":${PODS},"pods_list_render_ms":${renderMs},"pods_list_update_100_deleted_ms":${updateMs}`
    + `,"pods_delete_collection_answered_ms":${answeredMs},"pods_list_first_deleted_row_gone_ms":${firstGoneMs},"pods_list_row_removal_batches":${removals}`
    + `,"pods_list_update_100_modified_ms":${modifyMs},"pods_status_patches_answered_ms":${patchedMs}`;
  console.error(`pods page, ${PODS} pods (goal: within 1500 ms): drawn ${renderMs} ms | 100 deleted gone ${updateMs} ms`
    + ` (DeleteCollection answered ${answeredMs} ms, first row gone ${firstGoneMs} ms, ${removals} redraws) | 100 changed phase shown ${modifyMs} ms (the 100 PATCHes answered ${patchedMs} ms)`);
}
await browser.close();
console.log(`"login_page_ms":${loginMs},"overview_live_ms_median":${times[Math.floor(times.length / 2)]},"overview_live_ms":[${times}]${podsFields}`);
