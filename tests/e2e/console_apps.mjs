// The browser half of tests/e2e/console_apps.sh: drives Debian's chromium through
// playwright-core against CONSOLE_URL (a real server with an agent) and prints `ok - name` /
// `not ok - name` lines. Fails on any browser console error, page error or CSP violation.
// Screenshots go to SHOTS.
import { URL, check, assert, kubectl, watchProblems, newContext, shot, login, runSuite } from './console_lib.mjs';

const HOST = new globalThis.URL(URL).host;
const LONG = { timeout: 120000 };

// Chromium logs failed loads as console errors: the 401 of "who am I" before login, the 403 of
// forced requests, the 422 of the refused YAML edit, and the 400 of asking for the previous
// container's log when there is none are expected; everything else counts.
const EXPECTED = /^Failed to load resource: the server responded with a status of (401|403|422)/;
const EXPECTED_PREVIOUS = /^Failed to load resource: the server responded with a status of 4\d\d/;
// the failed load of a previous container's log that does not exist
const previousLogs = (msg) => EXPECTED_PREVIOUS.test(msg.text()) && (msg.location().url || '').includes('previous=true');

// The lines of the xterm.js buffer of the terminal page.
async function terminalLines(page) {
  return page.evaluate(() => {
    const term = document.querySelector('#terminal').xterm;
    if (!term) return [];
    const b = term.buffer.active;
    const out = [];
    for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
    return out;
  });
}

async function main(browser) {
  const context = await newContext(browser, { viewport: { width: 1360, height: 860 } });
  const page = await context.newPage();
  watchProblems(page, 'admin', EXPECTED, previousLogs);

  await check('admin_logs_in_and_sees_applications_and_pods', async () => {
    await page.evaluate(() => localStorage.setItem('mini.namespace', 'default')).catch(() => {});
    await login(page, 'boss', 'boss-password');
    await page.waitForSelector('nav.side a[data-path="apps"]');
    await page.waitForSelector('nav.side a[data-path="pods"]');
  });

  await check('deploy_form_picks_image_from_registry', async () => {
    await page.click('nav.side a[data-path="apps"]');
    await page.click('#apps-deploy');
    await page.waitForSelector('#image-repo option[value="default/app"]', { state: 'attached', timeout: 120000 });
    await page.selectOption('#image-repo', 'default/app');
    await page.selectOption('#image-tag', 'v1');
    const image = await page.inputValue('#image');
    assert(image === `${HOST}/default/app:v1`, `image reference: ${image}`);
    await page.fill('#deploy-namespace', 'default');
    await page.fill('#deploy-name', 'web');
    await page.fill('#deploy-replicas', '2');
    await page.fill('#deploy-ports', '8080');
    await page.fill('#deploy-command', 'httpd -p 8080 -h /var/www; while true; do echo "tick $(cat /etc/version) $(hostname)"; sleep 1; done');
    await page.fill('#deploy-env', 'GREETING=hello');
    await page.fill('#deploy-cpu-request', '10m');
    await page.fill('#deploy-memory-limit', '64Mi');
    await page.check('#deploy-expose');
    await shot(page, 'apps-deploy-form');
  });

  await check('deploy_creates_running_application', async () => {
    await page.click('#deploy-submit');
    await page.waitForSelector('#workload-summary');
    await page.waitForFunction(() => document.querySelector('#workload-ready')?.textContent === '2/2', null, LONG);
    await page.waitForFunction(() => document.querySelector('#workload-state')?.classList.contains('ok'), null, LONG);
    await page.waitForSelector('#history tr[data-revision="1"]');
    await shot(page, 'app-detail');
  });

  await check('applications_list_shows_it_live', async () => {
    await page.click('nav.side a[data-path="apps"]');
    await page.waitForFunction(() => document.querySelector('tr[data-app="deployments/default/web"] .ready')?.textContent === '2/2');
    await shot(page, 'apps');
  });

  const openApp = async () => {
    await page.click('tr[data-app="deployments/default/web"] td.name a');
    await page.waitForSelector('#workload-upgrade');
  };

  await check('upgrade_image_rolls_out_v2', async () => {
    await openApp();
    await page.click('#workload-upgrade');
    await page.waitForSelector('dialog #image-repo option[value="default/app"]', { state: 'attached', timeout: 120000 });
    await page.selectOption('dialog #image-repo', 'default/app');
    await page.selectOption('dialog #image-tag', 'v2');
    await shot(page, 'app-upgrade');
    await page.click('#dialog-ok');
    await page.waitForFunction(() => document.querySelector('#workload-images')?.textContent.endsWith(':v2'));
    await page.waitForFunction(() => document.querySelector('#workload-state')?.classList.contains('ok')
      && document.querySelector('#workload-ready')?.textContent === '2/2', null, LONG);
  });

  await check('history_lists_both_revisions_with_images_and_times', async () => {
    await page.waitForSelector('#history tr[data-revision="2"] .badge.ok');
    const v1 = await page.textContent('#history tr[data-revision="1"] .rev-images');
    const v2 = await page.textContent('#history tr[data-revision="2"] .rev-images');
    assert(v1.endsWith('/default/app:v1') && v2.endsWith('/default/app:v2'), `images: ${v1} / ${v2}`);
    const time = await page.textContent('#history tr[data-revision="1"] td:nth-child(3)');
    assert(/\d/.test(time), `time of revision 1: ${time}`);
    assert(!(await page.$('#history tr[data-revision="2"] button.rollback')), 'no rollback to the current revision');
    await shot(page, 'app-history');
  });

  await check('rollback_to_revision_1_runs_v1_again', async () => {
    await page.click('#history tr[data-revision="1"] button.rollback');
    await page.click('#dialog-ok');
    await page.waitForFunction(() => document.querySelector('#workload-images')?.textContent.endsWith(':v1'));
    // as upstream: the old ReplicaSet comes back as the newest revision
    await page.waitForSelector('#history tr[data-revision="3"] .badge.ok', LONG);
    await page.waitForFunction(() => document.querySelector('#workload-state')?.classList.contains('ok')
      && document.querySelector('#workload-ready')?.textContent === '2/2', null, LONG);
    const image = kubectl('get', 'deployment', 'web', '-o', 'jsonpath={.spec.template.spec.containers[0].image}');
    assert(image.endsWith('/default/app:v1'), `deployment image: ${image}`);
  });

  await check('scale_to_3', async () => {
    await page.click('#workload-scale');
    await page.fill('#dialog-replicas', '3');
    await page.click('#dialog-ok');
    await page.waitForFunction(() => document.querySelector('#workload-ready')?.textContent === '3/3', null, LONG);
  });

  await check('restart_sets_restartedAt', async () => {
    await page.click('#workload-restart');
    await page.waitForSelector('.message.info:has-text("restarts its pods")');
    const at = kubectl('get', 'deployment', 'web', '-o', 'jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}');
    assert(/^\d{4}-\d\d-\d\dT/.test(at), `restartedAt: ${at}`);
    await page.waitForFunction(() => document.querySelector('#workload-state')?.classList.contains('ok')
      && document.querySelector('#workload-ready')?.textContent === '3/3', null, LONG);
  });

  await check('yaml_edit_shows_server_validation_error', async () => {
    // the editor shows the object as loaded; reload it after the scale
    await page.click('#yaml-reload');
    await page.waitForFunction(() => /replicas: 3/.test(document.querySelector('#yaml-text')?.value || ''));
    const text = await page.inputValue('#yaml-text');
    await page.fill('#yaml-text', text.replace(/^  replicas: 3$/m, '  replicas: -1'));
    await page.click('#yaml-save');
    await page.waitForFunction(() => document.querySelector('#yaml-error')?.textContent.includes('replicas'));
    const error = await page.textContent('#yaml-error');
    assert(/422|invalid/i.test(error), `error: ${error}`);
    await shot(page, 'app-yaml-error');
  });

  await check('yaml_edit_saves_a_label', async () => {
    // the controllers may update the Deployment between the reload and the save: the API then
    // answers 409 (the editor shows it) and a person reloads and saves again, as done here
    for (let attempt = 1; ; attempt++) {
      // emptied first, so the wait below sees the reloaded text and not the refused one (whose
      // status.replicas line also reads "  replicas: 3")
      await page.fill('#yaml-text', '');
      await page.click('#yaml-reload');
      await page.waitForFunction(() => {
        const v = document.querySelector('#yaml-text')?.value || '';
        return /^  replicas: 3$/m.test(v) && !/replicas: -1/.test(v);
      });
      const text = await page.inputValue('#yaml-text');
      assert(/^  labels:\n    app: web$/m.test(text), `no app label to extend in: ${text.slice(0, 400)}`);
      await page.fill('#yaml-text', text.replace(/^  labels:\n    app: web$/m, '  labels:\n    app: web\n    edited: in-console'));
      // an earlier action's message may still show: marked seen, then wait for the save's own
      // (a new one), or its refusal
      await page.$$eval('.message', (l) => l.forEach((m) => { m.dataset.seen = '1'; }));
      await page.click('#yaml-save');
      await page.waitForFunction(() => [...document.querySelectorAll('.message.info:not([data-seen])')].some((m) => m.textContent.includes('is saved'))
        || (document.querySelector('#yaml-error')?.textContent || '') !== '');
      const refusal = await page.textContent('#yaml-error');
      if (!refusal) break;
      assert(attempt < 3 && /409/.test(refusal), `save refused: ${refusal}`);
    }
    const label = kubectl('get', 'deployment', 'web', '-o', 'jsonpath={.metadata.labels.edited}');
    assert(label === 'in-console', `label: ${label}`);
  });

  await check('merged_logs_of_all_pods_follow', async () => {
    await page.click('#workload-logs');
    await page.waitForFunction(() => {
      const sources = new Set([...document.querySelectorAll('#log-lines .src')].map((s) => s.textContent));
      return sources.size >= 3 && document.querySelector('#log-lines').textContent.includes('tick v1');
    }, null, LONG);
    const before = await page.$$eval('#log-lines .line', (l) => l.length);
    await page.waitForFunction((n) => document.querySelectorAll('#log-lines .line').length > n, before, LONG);
    await shot(page, 'logs-merged');
  });

  let podName = '';
  await check('pods_list_shows_status_restarts_node', async () => {
    await page.click('nav.side a[data-path="pods"]');
    await page.waitForSelector('#pods-table tr[data-pod^="default/web-"] .badge.ok', LONG);
    // a running one (pods replaced by the restart may still be terminating)
    const row = await page.$('#pods-table tr[data-pod^="default/web-"]:has(.badge.ok)');
    podName = (await row.getAttribute('data-pod')).split('/')[1];
    const cells = await row.$$eval('td', (tds) => tds.map((td) => td.textContent));
    assert(cells.includes('node-a'), `node column: ${cells}`);
    assert(cells.includes('0'), `restarts column: ${cells}`);
    await shot(page, 'pods');
  });

  await check('pod_detail_shows_containers_and_events', async () => {
    await page.click(`#pods-table tr[data-pod="default/${podName}"] td.name a`);
    await page.waitForSelector('#pod-containers tr[data-container="web"]');
    await page.waitForFunction(() => document.querySelector('#pod-events table'), null, LONG);
    await shot(page, 'pod-detail');
  });

  await check('pod_logs_follow_search_and_wrap', async () => {
    await page.click('#pod-logs');
    await page.waitForFunction(() => document.querySelector('#log-lines')?.textContent.includes('tick v1'), null, LONG);
    const before = await page.$$eval('#log-lines .line', (l) => l.length);
    await page.waitForFunction((n) => document.querySelectorAll('#log-lines .line').length > n, before, LONG);
    await page.fill('#log-search', 'no-such-text-anywhere');
    const hidden = await page.$$eval('#log-lines .line', (l) => l.every((x) => x.classList.contains('hidden')));
    assert(hidden, 'every line hidden by the search');
    await page.fill('#log-search', 'tick');
    await page.uncheck('#log-wrap');
    assert(!(await page.$eval('#log-lines', (v) => v.classList.contains('wrap'))), 'wrap off');
    await page.check('#log-timestamps');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#log-download')]);
    assert(download.suggestedFilename() === `${podName}.log`, `download name ${download.suggestedFilename()}`);
    await shot(page, 'logs');
  });

  await check('previous_container_without_restart_shows_the_api_message', async () => {
    await page.check('#log-previous');
    await page.waitForFunction(() => document.querySelector('#log-status')?.textContent.length > 0, null, LONG);
    await page.uncheck('#log-previous');
  });

  await check('terminal_runs_echo_6_times_7', async () => {
    await page.goto(`${URL}/console/pods/default/${podName}/shell`);
    // the image has no bash: the console falls back to sh
    await page.waitForFunction(() => /Connected: sh /.test(document.querySelector('#terminal-status')?.textContent || ''), null, LONG);
    await page.click('#terminal');
    await page.keyboard.type('echo $((6*7))');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => {
      const term = document.querySelector('#terminal').xterm;
      const b = term.buffer.active;
      for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true).trim() === '42') return true;
      return false;
    }, null, LONG);
    await shot(page, 'terminal');
  });

  await check('terminal_resize_reaches_the_tty', async () => {
    await page.setViewportSize({ width: 1000, height: 700 });
    await page.waitForTimeout(300);
    await page.keyboard.type('busybox stty size');
    await page.keyboard.press('Enter');
    const want = await page.evaluate(() => {
      const term = document.querySelector('#terminal').xterm;
      return `${term.rows} ${term.cols}`;
    });
    await page.waitForFunction((w) => {
      const b = document.querySelector('#terminal').xterm.buffer.active;
      for (let i = 0; i < b.length; i++) if (b.getLine(i).translateToString(true).trim() === w) return true;
      return false;
    }, want, LONG).catch(async () => { throw new Error(`no line "${want}" in ${(await terminalLines(page)).filter(Boolean).slice(-5)}`); });
    await page.setViewportSize({ width: 1360, height: 860 });
  });

  await check('chinese_pages_render', async () => {
    await page.click('#lang');
    await page.waitForFunction(() => document.querySelector('nav.side a[data-path="apps"]')?.textContent === '应用');
    await page.click('nav.side a[data-path="apps"]');
    await page.waitForSelector('tr[data-app="deployments/default/web"]');
    await shot(page, 'apps-zh');
    await page.click('#lang');
    await page.waitForFunction(() => document.querySelector('nav.side a[data-path="apps"]')?.textContent === 'Applications');
  });

  await check('viewer_sees_no_deploy_scale_or_terminal', async () => {
    await page.click('#logout');
    await page.waitForSelector('#login-name');
    await login(page, 'viewer', 'viewer-password');
    await page.goto(`${URL}/console/apps`);
    await page.waitForSelector('tr[data-app="deployments/default/web"]');
    await page.waitForTimeout(800);
    assert(!(await page.$('#apps-deploy')), 'no Deploy button');
    assert(!(await page.$('button.scale')), 'no scale button');
    assert(!(await page.$('button.delete')), 'no delete button');
    await page.click('tr[data-app="deployments/default/web"] td.name a');
    await page.waitForSelector('#workload-logs');
    // revision 1 came back as 3 with the rollback, the restart made 4
    await page.waitForSelector('#history tr[data-revision="3"]');
    await page.waitForTimeout(500);
    assert(!(await page.$('#workload-scale')) && !(await page.$('#workload-upgrade')), 'no scale or upgrade');
    assert(!(await page.$('button.rollback')), 'no rollback');
    assert(!(await page.$('#yaml-save')), 'no YAML save');
    await page.goto(`${URL}/console/pods/default/${podName}`);
    await page.waitForSelector('#pod-logs');
    assert(!(await page.$('#pod-shell')), 'no terminal link');
    await shot(page, 'viewer-app');
  });

  await check('viewer_forced_scale_shows_403_message', async () => {
    await page.route('**/selfsubjectaccessreviews', async (route) => {
      const body = JSON.parse(route.request().postData());
      body.status = { allowed: true };
      await route.fulfill({ status: 201, contentType: 'application/json', body: JSON.stringify(body) });
    });
    await page.goto(`${URL}/console/apps`);
    await page.click('tr[data-app="deployments/default/web"] button.scale');
    await page.fill('#dialog-replicas', '5');
    await page.click('#dialog-ok');
    await page.waitForSelector('.message.error');
    const text = await page.textContent('.message.error');
    assert(text.includes('You may not scale Deployment default/web'), `message: ${text}`);
    await shot(page, 'viewer-forbidden-scale');
    await page.unroute('**/selfsubjectaccessreviews');
    assert(kubectl('get', 'deployment', 'web', '-o', 'jsonpath={.spec.replicas}') === '3', 'still 3 replicas');
  });
}

await runSuite(main);
