// The browser half of scripts/bench_console.sh: logs in as `bench`, then times reloads of
// /console/ until the Overview shows NODES ready nodes; prints JSON fields (no braces).
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
await browser.close();
console.log(`"login_page_ms":${loginMs},"overview_live_ms_median":${times[Math.floor(times.length / 2)]},"overview_live_ms":[${times}]`);
