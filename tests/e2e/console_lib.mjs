// What the console browser suites (tests/e2e/console*.mjs) share: Debian's chromium through the
// pinned playwright-core (NODE_PATH, see console_lib.sh), `ok - name` / `not ok - name` lines
// and their counts, kubectl, a page whose console errors, page errors, CSP violations and 5xx
// answers are collected as problems, screenshots into SHOTS, login, and the suite's end.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.env.NODE_PATH, 'x.js'));
const { chromium } = require('playwright-core');

export const URL = process.env.CONSOLE_URL;
export const SHOTS = process.env.SHOTS;
export const results = { pass: 0, fail: 0 };
export const problems = [];

export function ok(name) { results.pass++; console.log(`ok - ${name}`); }

export function notOk(name, detail) {
  results.fail++;
  console.log(`not ok - ${name}`);
  if (detail) console.log(String(detail).split('\n').slice(0, 15).map((l) => `    ${l}`).join('\n'));
}

export async function check(name, fn) {
  try { await fn(); ok(name); } catch (e) { notOk(name, e && e.stack ? e.stack : e); }
}

export function assert(cond, message) { if (!cond) throw new Error(message); }

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// kubectl('get', 'pods', …) or kubectl([...args], stdin) or kubectl(..., { input }): its
// trimmed output; a failure throws with kubectl's stderr in the message.
export function kubectl(...args) {
  let input;
  if (Array.isArray(args[0])) [args, input] = args;
  else if (args.length && typeof args[args.length - 1] === 'object') input = args.pop().input;
  return execFileSync('kubectl', ['--request-timeout=20s', ...args],
    { encoding: 'utf8', input, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] }).trim();
}

export function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

// A browser context in English (ignoring the test CA) in which every CSP violation is also
// logged as a console error; `options` are more context options (viewport, downloads).
export async function newContext(browser, options = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, locale: 'en-US', ...options });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  return context;
}

// Collects what `page` does wrong into `problems`: console errors except those `expected`
// matches (chromium logs the failed loads the suite causes on purpose) or `allow(msg)` accepts,
// page errors, and 5xx answers.
export function watchProblems(page, label, expected, allow = () => false) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error' || (expected && expected.test(msg.text())) || allow(msg)) return;
    problems.push(`${label} console: ${msg.text()} ${msg.location().url || ''}`);
  });
  page.on('pageerror', (err) => problems.push(`${label} page error: ${err.message}`));
  page.on('response', (res) => {
    if (res.status() >= 500) problems.push(`${label} HTTP ${res.status()} ${res.url()}`);
  });
}

export async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

// Opens the console, signs in and waits for the signed-in page.
export async function login(page, name, password) {
  await page.goto(`${URL}/console/`);
  await page.waitForSelector('#login-name');
  await page.fill('#login-name', name);
  await page.fill('#login-password', password);
  await page.click('#login-submit');
  await page.waitForSelector('#logout');
}

// Runs the suite's `main(browser)` in a fresh chromium, checks that no problem was collected,
// closes the browser (also after a failure), runs `cleanup` and exits 1 if any check failed.
export async function runSuite(main, cleanup = () => {}) {
  let browser = null;
  try {
    browser = await launch();
    await main(browser);
    await check('no_console_errors_or_csp_violations', async () => {
      assert(problems.length === 0, problems.join('\n'));
    });
  } catch (e) {
    notOk('browser_suite', e && e.stack ? e.stack : e);
  } finally {
    if (browser) await browser.close().catch(() => {});
    cleanup();
  }
  console.log(`${results.pass} passed, ${results.fail} failed`);
  process.exit(results.fail ? 1 : 0);
}
