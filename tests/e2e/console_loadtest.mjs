// The browser half of tests/e2e/console_loadtest.sh: drives Debian's chromium through
// playwright-core against CONSOLE_URL (a real server with an agent and a busybox httpd
// Service `web` in `default`) and prints `ok - name` / `not ok - name` lines. Fails on any
// browser console error, page error or CSP violation. Screenshots go to SHOTS, downloads to
// DOWNLOADS.
import fs from 'node:fs';
import path from 'node:path';
import { URL, check, assert, kubectl, watchProblems, newContext as consoleContext, shot, login, runSuite } from './console_lib.mjs';

const DOWNLOADS = process.env.DOWNLOADS;
const LONG = { timeout: 120000 };

const status = (name) => JSON.parse(kubectl('get', 'loadtest', name, '-o', 'json')).status || {};

// Chromium logs failed loads as console errors: the 401 of "who am I" before login, the 403
// of the forced request and the 409 of the duplicate name are expected; everything else counts.
const EXPECTED = /^Failed to load resource: the server responded with a status of (401|403|409)/;

// The library's context with downloads, in namespace `default`.
async function newContext(browser) {
  const context = await consoleContext(browser, { viewport: { width: 1360, height: 900 }, acceptDownloads: true });
  await context.addInitScript(() => {
    try { localStorage.setItem('mini.namespace', 'default'); } catch (_) { /* about:blank */ }
  });
  return context;
}

// Fills the load test form (on /console/loadtests/new) and submits it.
async function startRun(page, { name, rate, duration, thresholds = '' }) {
  await page.goto(`${URL}/console/loadtests/new`);
  await page.waitForSelector('#lt-target option[value="svc/web:80"]', { state: 'attached', timeout: 30000 });
  await page.selectOption('#lt-target', 'svc/web:80');
  await page.fill('#lt-path', '/index.html');
  await page.fill('#lt-name', name);
  await page.selectOption('#lt-model', 'rate');
  await page.fill('#lt-amount', String(rate));
  await page.fill('#lt-duration', duration);
  await page.fill('#lt-generators', '1');
  await page.fill('#lt-thresholds', thresholds);
  await page.click('#lt-submit');
}

const phaseOf = (page) => page.evaluate(() => document.querySelector('.lt-badges .phase')?.textContent || '');

async function waitPhase(page, phase) {
  await page.waitForFunction((p) => document.querySelector('.lt-badges .phase')?.textContent === p, phase, LONG)
    .catch(async () => { throw new Error(`phase ${await phaseOf(page)}, not ${phase}: ${await page.textContent('#lt-problem').catch(() => '')}`); });
}

async function main(browser) {
  const context = await newContext(browser);
  const page = await context.newPage();
  watchProblems(page, 'admin', EXPECTED);

  await check('admin_sees_load_tests_page', async () => {
    await login(page, 'boss', 'boss-password');
    await page.click('nav.side a[data-path="loadtests"]');
    await page.waitForSelector('#lt-table');
    await page.waitForSelector('#lt-new');
  });

  await check('form_offers_the_namespace_services', async () => {
    await page.click('#lt-new');
    await page.waitForSelector('#lt-target option[value="svc/web:80"]', { state: 'attached', timeout: 30000 });
    await page.selectOption('#lt-target', '');
    assert(await page.isVisible('#lt-url'), 'the URL field shows for a URL target');
    await page.selectOption('#lt-target', 'svc/web:80');
    assert(!(await page.isVisible('#lt-url')), 'no URL field for a Service');
    await shot(page, 'loadtest-form');
  });

  await check('form_starts_a_run', async () => {
    await startRun(page, { name: 'first', rate: 20, duration: '12s', thresholds: 'p99<5s\nerrors<1%' });
    await page.waitForURL('**/console/loadtests/default/first');
    await page.waitForSelector('#chart-rps');
  });

  await check('live_charts_update_while_running', async () => {
    await page.waitForSelector('#lt-live[data-state="live"]', LONG);
    await page.waitForFunction(() => Number(document.querySelector('#chart-rps')?.dataset.points) >= 1, null, LONG);
    const before = await page.evaluate(() => ({
      points: Number(document.querySelector('#chart-rps').dataset.points),
      requests: document.querySelector('#lt-requests').textContent,
    }));
    // more seconds drawn and a new request count, all while the run is still Running
    await page.waitForFunction((b) => document.querySelector('.lt-badges .phase')?.textContent === 'Running'
      && Number(document.querySelector('#chart-rps').dataset.points) >= b.points + 2
      && Number(document.querySelector('#chart-latency').dataset.points) >= b.points + 2
      && document.querySelector('#lt-requests').textContent !== b.requests, before, { timeout: 30000 });
    assert(await page.$('#chart-rps canvas'), 'the requests chart is drawn');
    const legend = await page.textContent('#chart-latency .u-legend');
    for (const p of ['p50', 'p90', 'p99', 'p99.9']) assert(legend.includes(p), `latency legend has ${p}: ${legend}`);
    await shot(page, 'loadtest-live');
  });

  await check('run_completes_with_verdicts', async () => {
    await waitPhase(page, 'Succeeded');
    await page.waitForSelector('.lt-badges .verdict.ok');
    await page.waitForSelector('#lt-verdicts tr[data-threshold="p99<5s"] .badge.ok');
    await page.waitForSelector('#lt-verdicts tr[data-threshold="errors<1%"] .badge.ok');
    await page.waitForSelector('#lt-live[data-state="done"]');
    const want = String(status('first').requests);
    await page.waitForFunction((w) => document.querySelector('#lt-requests')?.textContent === w, want)
      .catch(async () => { throw new Error(`requests ${await page.textContent('#lt-requests')} vs status ${want}`); });
    assert(!(await page.$('#lt-cancel')), 'no cancel for a finished run');
    await shot(page, 'loadtest-done');
  });

  await check('charts_follow_the_window_size', async () => {
    // the chart is as wide as its box, whatever the window does to the grid
    const sizes = () => page.evaluate(() => ({
      chart: document.querySelector('#chart-rps .uplot').getBoundingClientRect().width,
      box: document.querySelector('#chart-rps .chart-plot').clientWidth,
    }));
    const fits = (w) => Math.abs(document.querySelector('#chart-rps .uplot').getBoundingClientRect().width
      - document.querySelector('#chart-rps .chart-plot').clientWidth) < 2
      && document.querySelector('#chart-rps .uplot').getBoundingClientRect().width !== w;
    const before = await sizes();
    for (const width of [700, 1360]) {
      const was = (await sizes()).chart;
      await page.setViewportSize({ width, height: 900 });
      await page.waitForFunction(fits, was)
        .catch(async () => { throw new Error(`at ${width} px: ${JSON.stringify(await sizes())}, was ${was}`); });
    }
    const after = await sizes();
    assert(Math.abs(after.chart - before.chart) < 2, `back to ${before.chart}: ${after.chart}`);
  });

  await check('resource_charts_have_samples', async () => {
    await page.waitForFunction(() => Number(document.querySelector('#chart-cpu')?.dataset.points) > 0
      && Number(document.querySelector('#chart-memory')?.dataset.points) > 0, null, { timeout: 10000 });
  });

  await check('list_shows_the_run_live', async () => {
    await page.click('nav.side a[data-path="loadtests"]');
    await page.waitForSelector('tr[data-run="default/first"][data-phase="Succeeded"] .verdict.ok');
    const p99 = await page.textContent('tr[data-run="default/first"] td.p99');
    assert(/ms$/.test(p99), `p99 cell: ${p99}`);
  });

  await check('duplicate_name_shows_api_error', async () => {
    await startRun(page, { name: 'first', rate: 20, duration: '5s' });
    await page.waitForFunction(() => /already exists/.test(document.querySelector('#lt-error')?.textContent || ''));
    await shot(page, 'loadtest-form-error');
  });

  await check('spec_the_controller_rejects_shows_its_reason', async () => {
    await startRun(page, { name: 'bad', rate: 10, duration: '5s', thresholds: 'p99<fast' });
    await page.waitForURL('**/console/loadtests/default/bad');
    await waitPhase(page, 'Failed');
    await page.waitForSelector('#lt-problem.form-error');
    const text = await page.textContent('#lt-problem');
    assert(text.startsWith('InvalidSpec: spec.thresholds'), `reason shown: ${text}`);
    await page.waitForSelector('#lt-live[data-state="done"]', { state: 'attached' });
    assert(await page.isHidden('#chart-rps'), 'no empty charts for a run that never started');
    assert(!(await page.$('#lt-export-json')), 'no exports without results');
    await shot(page, 'loadtest-invalid');
  });

  await check('second_run_completes', async () => {
    await startRun(page, { name: 'second', rate: 40, duration: '6s' });
    await page.waitForURL('**/console/loadtests/default/second');
    await waitPhase(page, 'Succeeded');
    await page.waitForSelector('#lt-live[data-state="done"]');
  });

  await check('compare_two_runs', async () => {
    await page.click('nav.side a[data-path="loadtests"]');
    await page.waitForSelector('tr[data-run="default/second"][data-phase="Succeeded"]');
    assert(await page.isDisabled('#lt-compare'), 'compare needs two runs');
    await page.check('tr[data-run="default/first"] input.pick');
    await page.check('tr[data-run="default/second"] input.pick');
    await page.click('#lt-compare');
    await page.waitForURL('**/console/loadtests/compare/default/first/default/second');
    await page.waitForSelector('#compare-table th[data-run="default/second"]');
    await page.waitForSelector('#compare-rps[data-series="2"]');
    await page.waitForSelector('#compare-p99[data-series="2"]');
    await page.waitForSelector('#compare-rps canvas');
    const requests = await page.$$eval('#compare-table .cmp-requests', (els) => els.map((e) => e.textContent));
    const want = [String(status('first').requests), String(status('second').requests)];
    assert(JSON.stringify(requests) === JSON.stringify(want), `requests side by side ${requests} vs ${want}`);
    const legend = await page.textContent('#compare-p99 .u-legend');
    assert(legend.includes('first') && legend.includes('second'), `overlay legend: ${legend}`);
    await shot(page, 'loadtest-compare');
  });

  await check('json_export_agrees_with_status', async () => {
    await page.goto(`${URL}/console/loadtests/default/first`);
    await page.waitForSelector('#lt-export-json');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#lt-export-json')]);
    fs.mkdirSync(DOWNLOADS, { recursive: true });
    const file = path.join(DOWNLOADS, 'first.json');
    await download.saveAs(file);
    const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
    const st = status('first');
    assert(doc.name === 'first' && doc.phase === 'Succeeded', `name/phase ${doc.name} ${doc.phase}`);
    assert(doc.summary.requests === st.requests, `requests ${doc.summary.requests} vs ${st.requests}`);
    assert(doc.summary.errors === st.errors, `errors ${doc.summary.errors} vs ${st.errors}`);
    assert(Math.abs(doc.summary.latency.p99 - st.latency.p99) < 1e-6, `p99 ${doc.summary.latency.p99} vs ${st.latency.p99}`);
    assert(Math.abs(doc.summary.achievedRate - st.achievedRate) < 0.01, `rate ${doc.summary.achievedRate} vs ${st.achievedRate}`);
    assert(JSON.stringify(doc.thresholds.map((v) => v.passed)) === JSON.stringify(st.thresholds.map((v) => v.passed)), 'verdicts');
    assert(doc.seconds.reduce((n, s) => n + s.requests, 0) === st.requests, 'the seconds add up to the requests');
  });

  await check('other_exports_download_with_the_session', async () => {
    for (const [format, test] of [['html', (b) => b.startsWith('<!DOCTYPE html>')], ['csv', (b) => b.split('\n').filter(Boolean).length > 2], ['hdr', (b) => b.length > 0]]) {
      const href = await page.getAttribute(`#lt-export-${format}`, 'href');
      const res = await page.request.get(`${URL}${href}`);
      const body = await res.text();
      assert(res.status() === 200 && test(body), `${format}: HTTP ${res.status()} ${body.slice(0, 80)}`);
    }
  });

  await check('cancel_and_delete_a_run', async () => {
    await startRun(page, { name: 'third', rate: 10, duration: '120s' });
    await page.waitForURL('**/console/loadtests/default/third');
    await waitPhase(page, 'Running');
    await page.click('#lt-cancel');
    await waitPhase(page, 'Cancelled');
    await shot(page, 'loadtest-cancelled');
    await page.click('#lt-delete');
    await page.click('#dialog-ok');
    await page.waitForURL('**/console/loadtests');
    await page.waitForSelector('tr[data-run="default/first"]');
    await page.waitForFunction(() => !document.querySelector('tr[data-run="default/third"]'));
  });

  await check('chinese_page_renders', async () => {
    await page.click('#lang');
    await page.waitForFunction(() => document.querySelector('nav.side a[data-path="loadtests"]')?.textContent === '压力测试');
    await page.goto(`${URL}/console/loadtests/default/first`);
    await page.waitForFunction(() => document.querySelector('#chart-rps figcaption')?.textContent === '每秒请求数');
    await shot(page, 'loadtest-zh');
    await page.click('#lang');
    await page.waitForFunction(() => document.querySelector('nav.side a[data-path="loadtests"]')?.textContent === 'Load tests');
  });

  // a read-only account: sees the runs and their results, is offered no form, cancel or delete
  const viewerContext = await newContext(browser);
  const viewer = await viewerContext.newPage();
  watchProblems(viewer, 'viewer', EXPECTED);

  await check('viewer_sees_runs_but_no_form', async () => {
    await login(viewer, 'viewer', 'viewer-password');
    await viewer.click('nav.side a[data-path="loadtests"]');
    await viewer.waitForSelector('tr[data-run="default/first"]');
    await viewer.waitForTimeout(800);
    assert(!(await viewer.$('#lt-new')), 'no New button');
    assert(!(await viewer.$('tr[data-run] button.delete')), 'no delete buttons');
    await viewer.goto(`${URL}/console/loadtests/default/first`);
    await viewer.waitForSelector('#lt-live[data-state="done"]');
    await viewer.waitForSelector('#lt-export-json');
    assert(!(await viewer.$('#lt-delete')) && !(await viewer.$('#lt-cancel')), 'no delete or cancel');
    const res = await viewer.request.get(`${URL}/loadtest/v1/namespaces/default/loadtests/first/results?format=json&since=3`);
    assert(res.status() === 200, `results as the viewer: HTTP ${res.status()}`);
    await viewer.goto(`${URL}/console/loadtests/new`);
    await viewer.waitForSelector('#lt-forbidden');
    assert(!(await viewer.$('#lt-submit')), 'no form');
  });

  await check('viewer_forced_start_shows_403_message', async () => {
    await viewer.route('**/selfsubjectaccessreviews', async (route) => {
      const body = JSON.parse(route.request().postData());
      body.status = { allowed: true };
      await route.fulfill({ status: 201, contentType: 'application/json', body: JSON.stringify(body) });
    });
    await startRun(viewer, { name: 'sneaky', rate: 10, duration: '5s' });
    await viewer.waitForFunction(() => /You may not start the load test default\/sneaky/.test(document.querySelector('#lt-error')?.textContent || ''));
    await shot(viewer, 'loadtest-viewer-forbidden');
    await viewer.unroute('**/selfsubjectaccessreviews');
    const left = kubectl('get', 'loadtests', '-o', 'name');
    assert(!left.includes('sneaky'), `no run made: ${left}`);
  });
}

await runSuite(main);
