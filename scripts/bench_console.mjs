// The browser half of scripts/bench_console.sh: logs in as `bench`, then times reloads of
// /console/ until the Overview shows NODES ready nodes; then opens the Pods page of namespace
// `bench` (PODS pods) until every row is drawn, and deletes 100 pods (one DeleteCollection
// request through kubectl, not kubectl's 100 DELETEs one after another; timed from its start) until
// their rows are gone; prints JSON fields (no braces).
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
const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
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
  started = Date.now();
  execFileSync('kubectl', ['delete', '--raw', '/api/v1/namespaces/bench/pods?labelSelector=batch%3D0&gracePeriodSeconds=0']);
  await page.waitForFunction((n) => document.querySelectorAll('#pods-table tbody tr').length === n, PODS - 100, { timeout: 120000 });
  const updateMs = Date.now() - started;
  podsFields = `,"pods":${PODS},"pods_list_render_ms":${renderMs},"pods_list_update_100_deleted_ms":${updateMs}`;
}
await browser.close();
console.log(`"login_page_ms":${loginMs},"overview_live_ms_median":${times[Math.floor(times.length / 2)]},"overview_live_ms":[${times}]${podsFields}`);
