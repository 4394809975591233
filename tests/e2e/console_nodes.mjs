// The browser half of tests/e2e/console_nodes.sh: drives Debian's chromium through
// playwright-core against CONSOLE_URL (a real server with the agent node node-a running two pods
// of the Deployment `web` under the PodDisruptionBudget `web`, minAvailable 2) and prints
// `ok - name` / `not ok - name` lines. Fails on any browser console error, page error or CSP
// violation. Screenshots go to SHOTS.
import { check, assert, kubectl, sleep, watchProblems, newContext, shot, login, runSuite } from './console_lib.mjs';

const NODE = 'node-a';
const LONG = { timeout: 120000 };

// Polls `fn` until it returns a truthy value (or throws after `seconds`).
async function until(what, seconds, fn) {
  const deadline = Date.now() + seconds * 1000;
  let last;
  for (;;) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e.message; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await sleep(1000);
  }
}

// the web pods on node-a (not yet gone)
function webPodsOnNode() {
  const out = kubectl('get', 'pods', '-n', 'default', '-l', 'app=web', '--field-selector', `spec.nodeName=${NODE}`, '-o', 'name');
  return out ? out.split('\n') : [];
}

const unschedulable = () => kubectl('get', 'node', NODE, '-o', 'jsonpath={.spec.unschedulable}') === 'true';

// Chromium logs failed loads as console errors: the 401 of "who am I" before login and the 429s
// of evictions a PodDisruptionBudget refuses are expected, and for the read-only account the 403s
// of the cluster-wide lists of the Overview; everything else counts.
const EXPECTED = /^Failed to load resource: the server responded with a status of (401|429)/;
const EXPECTED_VIEWER = /^Failed to load resource: the server responded with a status of (401|403)/;

// The number of points a chart (figure.chart) holds, and its current figures' text.
async function points(page, id) {
  return Number(await page.getAttribute(`#${id}`, 'data-points').catch(() => '0')) || 0;
}

const row = `tr[data-node="${NODE}"]`;
const drainCard = `section.drain[data-drain="${NODE}"]`;

async function main(browser) {
  const context = await newContext(browser, { viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  watchProblems(page, 'admin', EXPECTED);

  await check('admin_logs_in_and_sees_nodes', async () => {
    await login(page, 'boss', 'boss-password');
    await page.click('nav.side a[data-path="nodes"]');
    await page.waitForSelector(row);
  });

  await check('node_usage_charts_show_samples', async () => {
    await page.click(`${row} button.details`);
    await page.waitForSelector(`tr[data-details="${NODE}"] #usage-${NODE}-cpu`);
    // the agent samples every 10 s and the panel refreshes while shown
    await until('cpu and memory points', 120, async () => (await points(page, `usage-${NODE}-cpu`)) >= 2
      && (await points(page, `usage-${NODE}-memory`)) >= 2);
    await page.waitForSelector(`#usage-${NODE} canvas`);
    const cpuNow = await page.textContent(`#usage-${NODE}-cpu-now`);
    const memNow = await page.textContent(`#usage-${NODE}-memory-now`);
    assert(/^CPU: [0-9.]+m? of [0-9.]+m? cores \(\d+%\)$/.test(cpuNow), `cpu figures: ${cpuNow}`);
    assert(/^Memory: [0-9.]+ [KMG]iB of [0-9.]+ [KMG]iB \(\d+%\)$/.test(memNow), `memory figures: ${memNow}`);
    await shot(page, 'node-usage');
  });

  await check('range_picker_asks_for_the_longer_range', async () => {
    const asked = page.waitForRequest((r) => r.url().includes('/prometheus/api/v1/query_range') && r.url().includes('step=120'), { timeout: 30000 });
    await page.selectOption('#nodes-range', '6h');
    const req = await asked;
    const start = Number(new globalThis.URL(req.url()).searchParams.get('start'));
    const end = Number(new globalThis.URL(req.url()).searchParams.get('end'));
    assert(end - start === 6 * 3600, `range ${end - start}s`);
    await until('points after the switch', 30, async () => (await points(page, `usage-${NODE}-cpu`)) >= 1);
  });

  await check('overview_shows_cluster_totals', async () => {
    // the node list answers 3 s late, after the first usage query: the figures must be drawn
    // again when the nodes arrive (well before the panel's own 15 s refresh)
    const lateNodes = async (route) => { await sleep(3000); await route.continue(); };
    const nodeList = (url) => url.pathname === '/api/v1/nodes' && !url.searchParams.has('watch');
    await page.route(nodeList, lateNodes);
    try {
      await page.click('nav.side a[data-path=""]');
      await page.waitForSelector('#overview-usage');
      await until('cluster points', 60, async () => (await points(page, 'cluster-usage-cpu')) >= 2
        && (await points(page, 'cluster-usage-memory')) >= 2);
      const figures = /^Memory: [0-9.]+ [KMG]iB of [0-9.]+ [KMG]iB \([0-9]+%\)/;
      await until('cluster memory figures', 8, async () => figures.test(await page.textContent('#cluster-usage-memory-now')));
    } finally {
      await page.unroute(nodeList, lateNodes);
    }
    await shot(page, 'overview-usage');
  });

  // as `kubectl drain` without --force: a pod no controller manages is listed, and the drain
  // is not offered until the person ticks that it may be deleted
  await check('drain_lists_unmanaged_pod_and_needs_the_choice', async () => {
    const image = kubectl('get', 'deployment', 'web', '-n', 'default', '-o', 'jsonpath={.spec.template.spec.containers[0].image}');
    kubectl('create', '-f', '-', { input: JSON.stringify({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'lonely', namespace: 'default' },
      spec: { nodeName: NODE, terminationGracePeriodSeconds: 1, containers: [{ name: 'c', image, command: ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 1; done'] }] },
    }) });
    await page.click('nav.side a[data-path="nodes"]');
    await page.click(`${row} button.drain`);
    await page.waitForSelector('dialog.ask #drain-unmanaged li[data-pod="default/lonely"]');
    const listed = await page.$$eval('#drain-unmanaged li', (l) => l.map((x) => x.dataset.pod));
    assert(listed.length === 1, `unmanaged pods listed: ${listed}`);
    assert(await page.isDisabled('#dialog-ok'), 'drain offered without the choice');
    await shot(page, 'drain-unmanaged');
    await page.click('#dialog-cancel');
    assert(!unschedulable(), 'node cordoned by a drain that was not confirmed');
  });

  await check('drain_blocked_by_pdb_shows_the_pod', async () => {
    await page.click(`${row} button.drain`);
    await page.waitForSelector('dialog.ask #dialog-force');
    await page.check('#dialog-force');
    await page.click('#dialog-ok');
    await page.waitForSelector(`${drainCard} li.blocked[data-pod^="default/web-"]`, LONG);
    const status = await page.textContent(`${drainCard} .drain-status`);
    assert(/pods left/.test(status), `drain status: ${status}`);
    assert(unschedulable(), 'node is not cordoned');
    assert(webPodsOnNode().length === 2, `web pods on the node: ${webPodsOnNode()}`);
    await shot(page, 'drain-blocked');
  });

  await check('drain_cancel_stops_evicting_node_stays_cordoned', async () => {
    await page.click(`${drainCard} button.drain-cancel`);
    await page.waitForSelector(`${drainCard} >> text=cancelled`);
    // the budget allows a disruption again: a drain still running would now evict
    kubectl('patch', 'pdb', 'web', '-n', 'default', '--type=merge', '-p', '{"spec":{"minAvailable":0}}');
    await until('budget allows disruptions', 60, () => Number(kubectl('get', 'pdb', 'web', '-n', 'default', '-o', 'jsonpath={.status.disruptionsAllowed}')) >= 2);
    await sleep(5000);
    const pods = webPodsOnNode();
    assert(pods.length === 2, `pods evicted after cancel: ${pods}`);
    assert(unschedulable(), 'node was uncordoned by cancel');
    await page.waitForSelector(`${row} .badge.warn`);
    await page.click(`${drainCard} button.drain-close`);
  });

  await check('drain_completes_after_pdb_relaxed', async () => {
    await page.click(`${row} button.drain`);
    await page.waitForSelector('dialog.ask #dialog-ok');
    // the first drain evicted the unmanaged pod already, unless it is still terminating
    if (await page.$('#dialog-force')) await page.check('#dialog-force');
    await page.click('#dialog-ok');
    await page.waitForSelector(`${drainCard} >> text=is drained`, LONG);
    assert(webPodsOnNode().length === 0, `web pods left: ${webPodsOnNode()}`);
    const lonely = kubectl('get', 'pods', '-n', 'default', '--field-selector', 'metadata.name=lonely', '-o', 'name');
    assert(lonely === '', `the unmanaged pod is still there: ${lonely}`);
    assert(unschedulable(), 'node is not cordoned after the drain');
    await shot(page, 'drain-done');
  });

  // a read-only account (may list nodes) is offered no cordon, drain or remove
  await check('viewer_sees_usage_but_no_node_actions', async () => {
    const vctx = await newContext(browser);
    const vpage = await vctx.newPage();
    watchProblems(vpage, 'viewer', EXPECTED_VIEWER);
    await login(vpage, 'viewer', 'viewer-password');
    await vpage.click('nav.side a[data-path="nodes"]');
    await vpage.waitForSelector(`${row} button.details`);
    assert(await vpage.locator(`${row} button.drain`).count() === 0, 'viewer offered drain');
    assert(await vpage.locator(`${row} button.remove`).count() === 0, 'viewer offered remove');
    assert(await vpage.locator(`${row} button.cordon`).count() === 0, 'viewer offered cordon');
    await vctx.close();
  });

  await check('remove_node_asks_and_deletes_it', async () => {
    const uid = kubectl('get', 'node', NODE, '-o', 'jsonpath={.metadata.uid}');
    await page.click(`${row} button.remove`);
    await page.waitForSelector(`dialog.ask >> text=Remove node ${NODE}?`);
    await page.click('#dialog-cancel');
    assert(kubectl('get', 'node', NODE, '-o', 'jsonpath={.metadata.uid}') === uid, 'cancel removed the node');
    await page.click(`${row} button.remove`);
    await shot(page, 'remove-confirm');
    await page.click('#dialog-ok');
    // the running agent registers its node again as a new object
    await until('node deleted', 60, () => {
      try { return kubectl('get', 'node', NODE, '-o', 'jsonpath={.metadata.uid}') !== uid; } catch (_) { return true; }
    });
  });
}

await runSuite(main);
