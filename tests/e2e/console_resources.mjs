// The browser half of tests/e2e/console_resources.sh: drives Debian's chromium through
// playwright-core against CONSOLE_URL (a real server with an agent) and prints `ok - name` /
// `not ok - name` lines. Fails on any browser console error, page error or CSP violation.
// Screenshots go to SHOTS.
import { URL, check, assert, kubectl, watchProblems, newContext, shot, login, runSuite } from './console_lib.mjs';

const LONG = { timeout: 90000 };
const SECRET_VALUE = 'hunter2-only-when-asked';

// Chromium logs failed loads as console errors: the 401 of "who am I" before login and of the
// wrong password, the 403 of forced requests and of the refused grant, and the 422 of the
// refused create are expected; everything else counts.
const EXPECTED = /^Failed to load resource: the server responded with a status of (401|403|422)/;

async function logout(page) {
  await page.click('#logout');
  await page.waitForSelector('#login-name');
}

// Opens a page from the navigation (no reload).
async function nav(page, pathName) {
  await page.click(`nav.side a[data-path="${pathName}"]`);
  await page.waitForSelector(`nav.side a.active[data-path="${pathName}"]`);
}

async function main(browser) {
  const context = await newContext(browser, { viewport: { width: 1360, height: 860 } });
  const page = await context.newPage();
  watchProblems(page, 'admin', EXPECTED);
  let navigations = 0;
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations++; });

  await check('admin_logs_in_and_sees_resource_pages', async () => {
    await login(page, 'boss', 'boss-password');
    for (const p of ['services', 'ingresses', 'configmaps', 'secrets', 'namespaces', 'events', 'logsearch', 'registry', 'accounts']) {
      await page.waitForSelector(`nav.side a[data-path="${p}"]`);
    }
    await page.selectOption('#namespace', 'default');
  });

  await check('configmap_made_by_kubectl_appears_without_reload', async () => {
    await nav(page, 'configmaps');
    await page.waitForSelector('#configmaps-table');
    const before = navigations;
    kubectl(['create', 'configmap', 'from-kubectl', '--from-literal=color=blue', '--from-literal=size=large']);
    await page.waitForSelector('#configmaps-table tr[data-name="default/from-kubectl"]');
    const keys = await page.textContent('#configmaps-table tr[data-name="default/from-kubectl"] td.keys');
    assert(keys === 'color, size', `keys: ${keys}`);
    assert(navigations === before, 'the page did not reload');
    await shot(page, 'configmaps');
  });

  await check('configmap_create_refused_shows_server_message', async () => {
    await page.click('#configmaps-create');
    await page.waitForFunction(() => /kind: ConfigMap/.test(document.querySelector('#create-text')?.value || ''));
    await page.fill('#create-text', 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Valid_Name\ndata:\n  a: b\n');
    await page.click('#create-submit');
    await page.waitForFunction(() => document.querySelector('#create-error')?.textContent.length > 0);
    const error = await page.textContent('#create-error');
    assert(/422|invalid/i.test(error) && error.includes('Not_A_Valid_Name'), `error: ${error}`);
    await shot(page, 'configmap-create-refused');
  });

  await check('configmap_created_in_console', async () => {
    await page.fill('#create-text', 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: made-in-console\ndata:\n  greeting: hello\n');
    await page.click('#create-submit');
    await page.waitForSelector('#cm-data');
    assert(page.url().endsWith('/console/configmaps/default/made-in-console'), `url ${page.url()}`);
    assert(kubectl(['get', 'configmap', 'made-in-console', '-o', 'jsonpath={.data.greeting}']) === 'hello', 'stored');
  });

  await check('configmap_edited_through_yaml', async () => {
    await page.waitForFunction(() => /greeting: hello/.test(document.querySelector('#yaml-text')?.value || ''));
    const text = await page.inputValue('#yaml-text');
    await page.fill('#yaml-text', text.replace('greeting: hello', 'greeting: bonjour'));
    await page.click('#yaml-save');
    await page.waitForSelector('.message.info');
    assert(kubectl(['get', 'configmap', 'made-in-console', '-o', 'jsonpath={.data.greeting}']) === 'bonjour', 'edited');
    // the detail view follows the change through its watch
    await page.waitForFunction(() => document.querySelector('#cm-data')?.textContent.includes('bonjour'));
    await shot(page, 'configmap-detail');
  });

  await check('configmap_deleted_after_confirmation', async () => {
    await nav(page, 'configmaps');
    await page.click('#configmaps-table tr[data-name="default/made-in-console"] button.delete');
    await page.click('#dialog-ok');
    await page.waitForSelector('#configmaps-table tr[data-name="default/made-in-console"]', { state: 'detached' });
  });

  await check('secret_values_hidden_until_revealed', async () => {
    kubectl(['create', 'secret', 'generic', 'db-login', '--from-literal=user=admin', `--from-literal=password=${SECRET_VALUE}`]);
    await nav(page, 'secrets');
    await page.waitForSelector('#secrets-table tr[data-name="default/db-login"]');
    const row = await page.textContent('#secrets-table tr[data-name="default/db-login"]');
    assert(row.includes('Opaque') && row.includes('password, user'), `row: ${row}`);
    assert(!(await page.content()).includes(SECRET_VALUE), 'the list shows no value');
    await shot(page, 'secrets');
    await page.click('#secrets-table tr[data-name="default/db-login"] td.name a');
    await page.waitForSelector('#secret-values tr[data-key="password"]');
    await page.waitForSelector('#yaml-show');
    assert(!(await page.content()).includes(SECRET_VALUE), 'the detail shows no value before asked');
    assert(!(await page.$('#yaml-text')), 'no YAML before asked');
    await page.click('#secret-values tr[data-key="password"] button.reveal');
    await page.waitForFunction((v) => document.querySelector('#secret-values tr[data-key="password"] .secret-value')?.textContent === v, SECRET_VALUE);
    const user = await page.textContent('#secret-values tr[data-key="user"] .secret-value');
    assert(!user.includes('admin'), 'the other key stays hidden');
    await shot(page, 'secret-revealed');
  });

  await check('service_lists_type_ports_and_ready_endpoints', async () => {
    await nav(page, 'services');
    await page.waitForFunction(() => document.querySelector('#services-table tr[data-name="default/logger"] td.endpoints')?.textContent === '1/1', null, LONG);
    const row = await page.textContent('#services-table tr[data-name="default/logger"]');
    assert(row.includes('ClusterIP') && row.includes('80/TCP'), `row: ${row}`);
    await page.click('#services-table tr[data-name="default/logger"] td.name a');
    await page.waitForFunction(() => /:8080/.test(document.querySelector('#resource-summary')?.textContent || ''));
    await shot(page, 'services');
  });

  await check('ingress_made_by_kubectl_shows_hosts_and_backends', async () => {
    await nav(page, 'ingresses');
    await page.waitForSelector('#ingresses-table');
    kubectl(['create', '-f', '-'], JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'Ingress', metadata: { name: 'shop', namespace: 'default' },
      spec: { rules: [{ host: 'shop.example.com', http: { paths: [{ path: '/cart', pathType: 'Prefix',
        backend: { service: { name: 'logger', port: { number: 80 } } } }] } }] },
    }));
    await page.waitForSelector('#ingresses-table tr[data-name="default/shop"]');
    const routes = await page.textContent('#ingresses-table tr[data-name="default/shop"] td.routes');
    assert(routes === 'shop.example.com/cart → logger:80', `routes: ${routes}`);
    await shot(page, 'ingresses');
  });

  await check('namespace_created_and_deleted_in_console', async () => {
    await nav(page, 'namespaces');
    await page.waitForSelector('#namespaces-table tr[data-name="default"]');
    await page.click('#namespaces-create');
    await page.waitForFunction(() => /kind: Namespace/.test(document.querySelector('#create-text')?.value || ''));
    await page.fill('#create-text', 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: made-here\n  labels:\n    team: web\n');
    await page.click('#create-submit');
    await page.waitForFunction(() => /team=web/.test(document.querySelector('#resource-summary')?.textContent || ''));
    await shot(page, 'namespace-detail');
    await page.click('#resource-delete');
    await page.click('#dialog-ok');
    await page.waitForSelector('#namespaces-table');
    // deleting, then gone
    await page.waitForSelector('#namespaces-table tr[data-name="made-here"]', { state: 'detached', ...LONG });
    await shot(page, 'namespaces');
  });

  await check('warning_event_appears_live_highlighted', async () => {
    await nav(page, 'events');
    await page.waitForSelector('#events-table');
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    kubectl(['create', '-f', '-'], JSON.stringify({
      apiVersion: 'v1', kind: 'Event', type: 'Warning', reason: 'ResourcesCheck',
      message: 'a warning the events page shows without reload',
      metadata: { name: 'resources-check', namespace: 'default' },
      involvedObject: { kind: 'ConfigMap', name: 'from-kubectl', namespace: 'default' },
      firstTimestamp: now, lastTimestamp: now, count: 3, source: { component: 'console-e2e' },
    }));
    await page.waitForSelector('#events-table tr[data-name="default/resources-check"][data-type="Warning"]');
    const row = await page.textContent('#events-table tr[data-name="default/resources-check"]');
    assert(row.includes('ResourcesCheck') && row.includes('configmap/from-kubectl') && row.includes('3'), `row: ${row}`);
    await shot(page, 'events');
  });

  await check('log_search_finds_the_pod_line', async () => {
    await nav(page, 'logsearch');
    await page.fill('#search-text', 'console-res-marker');
    await page.fill('#search-labels', 'app=logger');
    // the node ships lines every few seconds: search until the first ones are stored
    const end = Date.now() + 90000;
    for (;;) {
      await page.click('#search-submit');
      await page.waitForFunction(() => !/Loading/.test(document.querySelector('#search-status')?.textContent || 'Loading'));
      if (await page.$('#search-results .line')) break;
      assert(Date.now() < end, `no line found: ${await page.textContent('#search-status')}`);
      await page.waitForTimeout(2000);
    }
    const first = await page.textContent('#search-results .line');
    assert(/\[default\/logger-[^/]+\/app\] console-res-marker line \d+/.test(first), `line: ${first}`);
    await shot(page, 'logsearch');
  });

  await check('log_search_pages_by_cursor', async () => {
    // at least 12 lines stored, then pages of 10. Polled here, not with waitForFunction: that
    // takes the Promise an async predicate returns for a truthy answer and did not wait at all
    // (the page then searched 9 stored lines and rightly offered no "More").
    const stored = () => page.evaluate(async () => {
      const r = await fetch(`/v1-mini/logs/search?query=${encodeURIComponent('{app="logger"} |= "console-res-marker"')}&since=1h&limit=12`);
      return ((await r.json()).records || []).length;
    });
    const deadline = Date.now() + LONG.timeout;
    for (let n = await stored(); n < 12; n = await stored()) {
      assert(Date.now() < deadline, `only ${n} lines stored`);
      await page.waitForTimeout(1000);
    }
    await page.selectOption('#search-limit', '10');
    await page.click('#search-submit');
    await page.waitForSelector('#search-more:not([hidden])', LONG)
      .catch(async (e) => { throw new Error(`${e.message}; status: ${await page.textContent('#search-status')}; lines shown: ${(await page.$$('#search-results .line')).length}`); });
    assert((await page.$$('#search-results .line')).length === 10, 'first page of 10');
    await page.click('#search-more');
    await page.waitForFunction(() => document.querySelectorAll('#search-results .line').length > 10, null, LONG)
      .catch(async (e) => { throw new Error(`${e.message}; status: ${await page.textContent('#search-status')}; lines: ${await page.textContent('#search-results')}`); });
    const numbers = await page.$$eval('#search-results .line', (l) => l.map((x) => Number(x.textContent.split(' line ')[1])));
    assert(new Set(numbers).size === numbers.length, `no line twice: ${numbers}`);
    assert(numbers.every((n, i) => i === 0 || n < numbers[i - 1]), `newest first across pages: ${numbers}`);
    await page.selectOption('#search-limit', '200');
  });

  await check('log_search_regex_and_oldest_first', async () => {
    await page.fill('#search-text', 'marker line [12]$');
    await page.check('#search-regex');
    await page.selectOption('#search-order', 'forward');
    await page.click('#search-submit');
    await page.waitForFunction(() => /console-res-marker line 1$/.test(document.querySelector('#search-results .line')?.textContent || ''), null, LONG);
    const lines = await page.$$eval('#search-results .line', (l) => l.map((x) => x.textContent));
    assert(lines.length === 2 && lines[1].endsWith('console-res-marker line 2'), `lines: ${lines}`);
  });

  await check('log_search_live_tail_follows', async () => {
    await page.uncheck('#search-regex');
    await page.fill('#search-text', 'console-res-marker');
    await page.selectOption('#search-order', 'backward');
    await page.check('#search-live');
    await page.waitForFunction(() => /Following/.test(document.querySelector('#search-status')?.textContent || ''), null, LONG);
    const top = await page.textContent('#search-results .line');
    await page.waitForFunction((old) => {
      const first = document.querySelector('#search-results .line');
      return first && first.textContent !== old;
    }, top, LONG);
    await page.uncheck('#search-live');
  });

  await check('registry_lists_pushed_image_and_deletes_a_tag', async () => {
    await nav(page, 'registry');
    await page.waitForSelector('#registry-repos tr[data-repo="default/app"]');
    const cells = await page.$$eval('#registry-repos tr[data-repo="default/app"] td', (tds) => tds.map((td) => td.textContent));
    assert(cells[1] === 'default' && cells[2] === '2' && /(KiB|MiB)$/.test(cells[3]), `cells: ${cells}`);
    await page.click('#registry-repos tr[data-repo="default/app"] button.repo');
    await page.waitForSelector('#registry-tags tr[data-tag="default/app:v2"]');
    await page.waitForSelector('#registry-tags tr[data-tag="default/app:v1"]');
    await shot(page, 'registry');
    await page.click('#registry-tags tr[data-tag="default/app:v2"] button.delete');
    await page.click('#dialog-ok');
    await page.waitForSelector('#registry-tags tr[data-tag="default/app:v2"]', { state: 'detached' });
    await page.waitForSelector('#registry-tags tr[data-tag="default/app:v1"]');
  });

  await check('admin_adds_view_account', async () => {
    await nav(page, 'accounts');
    await page.waitForSelector('#accounts-table tr[data-account="viewer"]');
    await page.click('#accounts-add');
    await page.fill('#dialog-name', 'reader');
    await page.fill('#dialog-password', 'reader-password');
    await page.selectOption('#dialog-role', 'view');
    await page.fill('#dialog-namespaces', 'default');
    await page.click('#dialog-ok');
    await page.waitForFunction(() => document.querySelector('#accounts-table tr[data-account="reader"] td.roles')?.textContent === 'view@default');
    await shot(page, 'accounts');
  });

  await check('admin_changes_a_password_and_removes_an_account', async () => {
    await page.click('#accounts-table tr[data-account="reader"] button.passwd');
    await page.fill('#dialog-password', 'reader-new-password');
    await page.click('#dialog-ok');
    await page.waitForSelector('.message.info:has-text("password of reader is changed")');
    await page.click('#accounts-table tr[data-account="viewer"] button.delete');
    await page.click('#dialog-ok');
    await page.waitForSelector('#accounts-table tr[data-account="viewer"]', { state: 'detached' });
    assert(!(await page.$('#accounts-table tr[data-account="boss"] button.delete')), 'no remove button for oneself');
  });

  await check('chinese_resource_pages_render', async () => {
    await page.click('#lang');
    await page.waitForFunction(() => document.querySelector('nav.side a[data-path="configmaps"]')?.textContent === '配置项');
    await nav(page, 'secrets');
    await page.waitForSelector('#secrets-table tr[data-name="default/db-login"]');
    await shot(page, 'secrets-zh');
    await nav(page, 'logsearch');
    await page.waitForFunction(() => document.querySelector('#search-submit')?.textContent === '搜索');
    await page.click('#lang');
    await page.waitForFunction(() => document.querySelector('nav.side a[data-path="configmaps"]')?.textContent === 'ConfigMaps');
  });

  await check('added_view_account_logs_in_read_only', async () => {
    await logout(page);
    await login(page, 'reader', 'reader-new-password');
    await page.goto(`${URL}/console/configmaps`);
    await page.waitForSelector('#configmaps-table tr[data-name="default/from-kubectl"]');
    await page.waitForTimeout(800);
    assert(!(await page.$('#configmaps-create')), 'no create button');
    assert(!(await page.$('button.delete')), 'no delete button');
    // `view` does not read Secrets (as upstream), so the page is not offered
    assert(!(await page.$('nav.side a[data-path="secrets"]')), 'no Secrets page');
    assert(!(await page.$('nav.side a[data-path="accounts"]')), 'no Accounts page');
    await page.click('#configmaps-table tr[data-name="default/from-kubectl"] td.name a');
    await page.waitForSelector('#yaml-text');
    assert(!(await page.$('#yaml-save')) && !(await page.$('#resource-delete')), 'no save or delete');
    await shot(page, 'viewer-configmaps');
  });

  await check('viewer_forced_delete_shows_403_message', async () => {
    await page.route('**/selfsubjectaccessreviews', async (route) => {
      const body = JSON.parse(route.request().postData());
      body.status = { allowed: true };
      await route.fulfill({ status: 201, contentType: 'application/json', body: JSON.stringify(body) });
    });
    await page.goto(`${URL}/console/configmaps`);
    await page.click('#configmaps-table tr[data-name="default/from-kubectl"] button.delete');
    await page.click('#dialog-ok');
    await page.waitForSelector('.message.error');
    const text = await page.textContent('.message.error');
    assert(text.includes('You may not delete ConfigMap default/from-kubectl'), `message: ${text}`);
    await shot(page, 'viewer-forbidden-delete');
    await page.unroute('**/selfsubjectaccessreviews');
    assert(kubectl(['get', 'configmap', 'from-kubectl', '-o', 'name']) === 'configmap/from-kubectl', 'still there');
  });

  await check('namespace_admin_cannot_grant_cluster_admin', async () => {
    await logout(page);
    await page.evaluate(() => localStorage.setItem('mini.namespace', 'default'));
    await login(page, 'keeper', 'keeper-password');
    await nav(page, 'accounts');
    await page.click('#accounts-add');
    await page.fill('#dialog-name', 'climber');
    await page.fill('#dialog-password', 'climber-password');
    await page.selectOption('#dialog-role', 'cluster-admin');
    await page.fill('#dialog-namespaces', '');
    await page.click('#dialog-ok');
    await page.waitForSelector('.message.error');
    const text = await page.textContent('.message.error');
    assert(/refused/.test(text) && /forbidden|cannot|escalat/i.test(text), `message: ${text}`);
    await shot(page, 'accounts-escalation-refused');
  });
}

await runSuite(main);
