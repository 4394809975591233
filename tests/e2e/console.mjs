// The browser half of tests/e2e/console.sh: drives Debian's chromium through playwright-core
// against CONSOLE_URL and prints `ok - name` / `not ok - name` lines. Fails on any browser
// console error, page error or CSP violation. Screenshots go to SHOTS.
import { spawn, execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { URL, check, assert, watchProblems, newContext, shot, runSuite } from './console_lib.mjs';

let sim = null;

// Console errors the app causes on purpose: the 401 of "who am I" before login and of wrong
// passwords, the 403 of a forced request and the 429 of too many logins are logged by chromium
// as failed loads; everything else counts.
const EXPECTED = /^Failed to load resource: the server responded with a status of (401|403|429)/;

async function submitLogin(page, name, password) {
  await page.fill('#login-name', name);
  await page.fill('#login-password', password);
  await page.click('#login-submit');
}

async function main(browser) {
  const context = await newContext(browser, { viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  watchProblems(page, 'admin', EXPECTED);
  let navigations = 0;
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations++; });

  await check('login_page_shown', async () => {
    const started = Date.now();
    await page.goto(`${URL}/console/`);
    await page.waitForSelector('#login-name');
    console.log(`# login page usable after ${Date.now() - started} ms`);
    await shot(page, 'login');
  });

  await check('login_wrong_password_shows_error', async () => {
    await submitLogin(page, 'boss', 'not-the-password');
    await page.waitForFunction(() => document.querySelector('#login-error').textContent.includes('Invalid name or password'));
  });

  await check('login_admin_shows_overview_with_nodes', async () => {
    const started = Date.now();
    await submitLogin(page, 'boss', 'boss-password');
    await page.waitForFunction(() => document.querySelector('#nodes-ready')?.textContent === '2');
    console.log(`# overview with live data ${Date.now() - started} ms after submitting the login`);
    assert((await page.textContent('#user')) === 'boss', 'top bar names the user');
  });

  await check('overview_pods_by_phase', async () => {
    await page.waitForFunction(() => document.querySelector('#overview-pods li[data-phase="Running"] .count')?.textContent === '5');
    await shot(page, 'overview');
  });

  await check('overview_warning_event_appears_live', async () => {
    const event = {
      apiVersion: 'v1', kind: 'Event', type: 'Warning', reason: 'ConsoleCheck',
      message: 'a warning the console shows without reload',
      metadata: { name: 'console-check', namespace: 'default' },
      involvedObject: { kind: 'Deployment', name: 'web', namespace: 'default' },
      firstTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      lastTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      count: 1, source: { component: 'console-e2e' },
    };
    execFileSync('kubectl', ['create', '-f', '-'], { input: JSON.stringify(event), stdio: ['pipe', 'ignore', 'inherit'] });
    await page.waitForFunction(() => document.querySelector('#overview-events')?.textContent.includes('ConsoleCheck'));
    await shot(page, 'overview');
  });

  await check('overview_first_load_usable', async () => {
    const started = Date.now();
    await page.reload();
    await page.waitForFunction(() => document.querySelector('#nodes-ready')?.textContent === '2');
    console.log(`# overview reloaded and live after ${Date.now() - started} ms`);
  });

  await check('nodes_page_lists_nodes', async () => {
    await page.click('nav.side a[data-path="nodes"]');
    await page.waitForSelector('tr[data-node="sim-a-1"]');
    const version = await page.textContent('tr[data-node="sim-a-0"] td:nth-child(4)');
    assert(version.trim().length > 0, 'kubelet version shown');
    await page.waitForSelector('tr[data-node="sim-a-0"] button.cordon');
  });

  await check('node_joining_appears_without_reload', async () => {
    const before = navigations;
    sim = spawn(process.env.MINI_BIN, ['sim', 'nodes', '--kubeconfig', process.env.KUBECONFIG,
      '--lease-interval', '2', '--count', '1', '--prefix', 'sim-b-'], { stdio: 'ignore' });
    writeFileSync(process.env.SIM_LOG.replace(/\.log$/, '.pid'), String(sim.pid));
    await page.waitForSelector('tr[data-node="sim-b-0"] .badge.ok', { timeout: 60000 });
    assert(navigations === before, 'the page did not reload');
  });

  await check('cordon_and_uncordon_update_live', async () => {
    await page.click('tr[data-node="sim-a-0"] button[data-action="cordon"]');
    await page.waitForSelector('tr[data-node="sim-a-0"] .badge.warn');
    await shot(page, 'nodes-cordoned');
    await page.click('tr[data-node="sim-a-0"] button[data-action="uncordon"]');
    await page.waitForSelector('tr[data-node="sim-a-0"] button[data-action="cordon"]');
    assert(!(await page.$('tr[data-node="sim-a-0"] .badge.warn')), 'cordoned badge gone');
  });

  await check('join_command_has_fresh_token', async () => {
    await page.click('#join-create');
    await page.waitForSelector('#join-command');
    const cmd = await page.textContent('#join-command');
    const host = new globalThis.URL(URL).host;
    const want = new RegExp(`^curl -sfLk https://${host}/install\\.sh \\| sudo MINI_URL=https://${host} MINI_TOKEN=K10[0-9a-f]{64}::[a-z0-9]{6}\\.[a-z0-9]{16} sh -$`);
    assert(want.test(cmd.trim()), `join command: ${cmd}`);
    await shot(page, 'nodes');
  });

  await check('language_switch_shows_chinese', async () => {
    await page.click('#lang');
    await page.waitForFunction(() => document.querySelector('nav.side a[data-path="nodes"]')?.textContent === '节点');
    assert((await page.textContent('#logout')) === '退出登录', 'logout button in Chinese');
    await page.reload();
    await page.waitForFunction(() => document.querySelector('nav.side a[data-path=""]')?.textContent === '概览');
    await page.waitForSelector('tr[data-node="sim-b-0"]');
    await shot(page, 'nodes-zh');
    await page.click('#lang');
    await page.waitForFunction(() => document.querySelector('nav.side a[data-path="nodes"]')?.textContent === 'Nodes');
  });

  await check('logout_returns_to_login', async () => {
    await page.click('#logout');
    await page.waitForSelector('#login-name');
    const who = await page.evaluate(async () => (await fetch('/v1-mini/session')).status);
    assert(who === 401, `session after logout answers ${who}`);
  });

  await check('viewer_sees_nodes_without_cordon_or_join', async () => {
    await submitLogin(page, 'viewer', 'viewer-password');
    await page.waitForSelector('nav.side a[data-path="nodes"]');
    await page.click('nav.side a[data-path="nodes"]');
    await page.waitForSelector('tr[data-node="sim-a-0"]');
    await page.waitForTimeout(500);
    assert(!(await page.$('button.cordon')), 'no cordon button');
    assert(!(await page.$('#join-create')), 'no join command button');
  });

  await check('viewer_forced_cordon_shows_403_message', async () => {
    // pretend the access review allowed it: the real PATCH must still be refused
    await page.route('**/selfsubjectaccessreviews', async (route) => {
      const body = JSON.parse(route.request().postData());
      body.status = { allowed: true };
      await route.fulfill({ status: 201, contentType: 'application/json', body: JSON.stringify(body) });
    });
    await page.reload();
    await page.click('tr[data-node="sim-a-0"] button[data-action="cordon"]');
    await page.waitForSelector('.message.error');
    const text = await page.textContent('.message.error');
    assert(text.includes('You may not cordon node sim-a-0'), `message: ${text}`);
    await shot(page, 'viewer-forbidden');
    await page.unroute('**/selfsubjectaccessreviews');
  });

  await check('namespace_editor_gets_own_namespace_and_no_nodes_page', async () => {
    await page.click('#logout');
    await page.waitForSelector('#login-name');
    await page.evaluate(() => localStorage.removeItem('mini.namespace'));
    await submitLogin(page, 'clerk', 'clerk-password');
    await page.waitForFunction(() => document.querySelector('#namespace')?.value === 'shop');
    const options = await page.$$eval('#namespace option', (os) => os.map((o) => o.value));
    assert(options.join(',') === 'shop', `namespace choices: ${options}`);
    await page.waitForFunction(() => document.querySelector('#overview-pods li[data-phase="Running"] .count')?.textContent === '2');
    await page.waitForSelector('nav.side a[data-path=""]');
    assert(!(await page.$('nav.side a[data-path="nodes"]')), 'no Nodes link for a namespace editor');
    assert(!(await page.$('#overview-nodes')), 'no nodes card for a namespace editor');
    await shot(page, 'overview-namespace-editor');
  });

  await check('session_expiry_returns_to_login', async () => {
    await context.clearCookies();
    await page.click('nav.side a[data-path=""]');
    await page.waitForSelector('#login-name');
  });

  await check('login_rate_limited_shows_retry_seconds', async () => {
    // five failures a minute per name or address: the next attempt answers 429
    let text = '';
    for (let i = 0; i < 8 && !/Too many attempts, retry in \d+ s/.test(text); i++) {
      await submitLogin(page, 'nobody', 'wrong-password');
      await page.waitForFunction(() => document.querySelector('#login-error').textContent !== ''
        && !document.querySelector('#login-submit').disabled);
      text = await page.textContent('#login-error');
    }
    assert(/Too many attempts, retry in \d+ s/.test(text), `last message: ${text}`);
    await shot(page, 'login-rate-limited');
  });
}

await runSuite(main, () => { if (sim) sim.kill(); });
