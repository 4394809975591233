// Load tests (`loadtest.mini.dev/v1` LoadTests): the runs of the namespace live through a
// watch, a form to start one, a run's page with live charts (requests/s, latency percentiles,
// errors, CPU and memory of the target's pods and nodes) polled from the results endpoint
// while it runs, its threshold verdicts, cancel, delete and exports, and runs compared side by
// side. Routes below /console/loadtests: `new`, `<ns>/<name>`, `compare/<ns>/<name>/<ns>/<name>…`.
import { get, post, patch, request, watchList, can } from './api.js';
import { t } from './i18n.js';
import { h, mount, age } from './dom.js';
import { liveTable } from './table.js';
import { ask } from './dialog.js';
import { enc, failure, when } from './kube.js';
import { lineChart, alignTables, shortNumber } from './chart.js';

export const GROUP = 'loadtest.mini.dev';
const API = `/apis/${GROUP}/v1`;
const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const TERMINAL = ['Succeeded', 'Failed', 'Cancelled'];
const EXPORTS = ['html', 'json', 'csv', 'hdr'];

export const ltPath = (ns, name) =>
  `${API}/namespaces/${enc(ns)}/loadtests${name === undefined ? '' : `/${enc(name)}`}`;
const listPath = (ns) => (ns ? ltPath(ns) : `${API}/loadtests`);
export const resultsPath = (ns, name, format, since) =>
  `/loadtest/v1/namespaces/${enc(ns)}/loadtests/${enc(name)}/results?format=${format}${since === undefined ? '' : `&since=${since}`}`;
const runLink = (ns, name) => `/console/loadtests/${enc(ns)}/${enc(name)}`;

const ms = (n) => (Number.isFinite(n) ? `${shortNumber(n)} ms` : '—');
const rate = (n) => (Number.isFinite(n) ? `${shortNumber(n)}/s` : '—');
const count = (n) => (Number.isFinite(n) ? String(n) : '—');
// millicores as cores ("1.95") or millicores ("250m"); `digits` when axis ticks need more
const mcores = (n, digits) => {
  if (!Number.isFinite(n)) return '—';
  return n >= 1000 ? `${+(n / 1000).toFixed(digits === undefined ? 2 : digits + 1)}` : `${+n.toFixed(digits === undefined ? 0 : digits - 1)}m`;
};
const mem = (n, digits) => {
  if (!Number.isFinite(n)) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  if (digits !== undefined && i > 0) return `${+n.toFixed(digits)} ${u[i]}`;
  return `${n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)} ${u[i]}`;
};

function model(spec) {
  if (spec.users) return t('lt.users', { n: spec.users });
  return t('lt.rate', { n: spec.rate || 10 });
}

function phaseBadge(phase) {
  const p = phase || 'Pending';
  const cls = { Succeeded: 'ok', Running: 'ok', Failed: 'bad', Cancelled: 'warn' }[p] || 'warn';
  return h(`span.badge.${cls}.phase`, p);
}

// Passed or failed, for a run that sent requests (a run refused before it started has none).
function verdictBadge(status) {
  if (!status || status.passed === undefined || status.passed === null || !status.startTime) return h('span.verdict.muted', '—');
  return status.passed
    ? h('span.badge.ok.verdict', t('lt.passed'))
    : h('span.badge.bad.verdict', t('lt.failed'));
}

function errorText(requests, errors) {
  if (!Number.isFinite(errors)) return '—';
  const pct = requests ? ` (${+(errors * 100 / requests).toFixed(2)}%)` : '';
  return `${errors}${pct}`;
}

// Permissions on LoadTests of `ns` for the signed-in person.
function permissions(ns) {
  const o = { group: GROUP, namespace: ns };
  return Promise.all([can('create', 'loadtests', o), can('patch', 'loadtests', o), can('delete', 'loadtests', o)])
    .then(([create, patchOk, del]) => ({ create, patch: patchOk, delete: del }));
}

async function cancelRun(ctx, ns, name) {
  try {
    await patch(ltPath(ns, name), { spec: { cancel: true } });
    ctx.notify(t('lt.cancelled', { name }), 'info');
  } catch (e) {
    ctx.notify(failure(e, t('lt.action.cancel', { name: `${ns}/${name}` })));
  }
}

async function deleteRun(ctx, ns, name, after) {
  const yes = await ask({ title: t('lt.deleteTitle', { name }), text: t('lt.deleteText'), ok: t('delete'), danger: true });
  if (!yes) return;
  try {
    await request('DELETE', ltPath(ns, name));
    ctx.notify(t('lt.deleted', { name }), 'info');
    if (after) after();
  } catch (e) {
    ctx.notify(failure(e, t('lt.action.delete', { name: `${ns}/${name}` })));
  }
}

// --- the list ---------------------------------------------------------------------------------

function listPage(ctx) {
  const ns = ctx.namespace;
  const toolbar = h('div.actions');
  const note = h('div');
  const picked = new Set(); // `${ns}/${name}`
  const perms = new Map();
  let table = null;
  const compare = h('button#lt-compare', { type: 'button', disabled: true, onclick: () => {
    const parts = [...picked].flatMap((k) => k.split('/').map(enc));
    ctx.navigate(`loadtests/compare/${parts.join('/')}`);
  } }, t('lt.compare'));
  const syncCompare = () => {
    compare.disabled = picked.size < 2;
    compare.textContent = picked.size ? `${t('lt.compare')} (${picked.size})` : t('lt.compare');
  };

  const allowed = (namespace) => {
    const p = perms.get(namespace);
    if (p && !(p instanceof Promise)) return p;
    if (!p) perms.set(namespace, permissions(namespace).then((x) => { perms.set(namespace, x); table.refresh(); }));
    return { create: false, patch: false, delete: false };
  };

  const actions = (o) => {
    const p = allowed(o.metadata.namespace);
    const { namespace, name } = o.metadata;
    const phase = (o.status && o.status.phase) || 'Pending';
    return [
      p.patch && !TERMINAL.includes(phase) && !o.spec.cancel
        ? h('button.cancel', { type: 'button', onclick: () => cancelRun(ctx, namespace, name) }, t('lt.cancel')) : null,
      p.delete ? h('button.delete.danger', { type: 'button', onclick: () => deleteRun(ctx, namespace, name) }, t('delete')) : null,
    ];
  };

  const pick = (o) => {
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
    return h('input.pick', { type: 'checkbox', 'aria-label': t('lt.pick', { name: o.metadata.name }), checked: picked.has(key), onchange: (e) => {
      if (e.target.checked) picked.add(key); else picked.delete(key);
      syncCompare();
    } });
  };

  const s = (o) => o.status || {};
  table = liveTable({
    id: 'lt-table',
    empty: t('lt.none'),
    rowAttrs: (o) => ({ 'data-run': `${o.metadata.namespace}/${o.metadata.name}`, 'data-phase': s(o).phase || 'Pending' }),
    columns: [
      { title: '', cls: 'pick', cell: pick },
      { title: t('col.name'), cls: 'name', cell: (o) => h('a', { href: runLink(o.metadata.namespace, o.metadata.name), 'data-link': '' }, o.metadata.name) },
      ns ? null : { title: t('namespace'), text: (o) => o.metadata.namespace },
      { title: t('lt.target'), cls: 'target', text: (o) => o.spec.target },
      { title: t('lt.load'), text: (o) => model(o.spec) },
      { title: t('lt.phase'), cell: (o) => phaseBadge(s(o).phase) },
      { title: t('lt.requests'), cls: 'num requests', text: (o) => count(s(o).requests) },
      { title: t('lt.achieved'), cls: 'num achieved', text: (o) => rate(s(o).achievedRate) },
      { title: 'p99', cls: 'num p99', text: (o) => ms(s(o).latency && s(o).latency.p99) },
      { title: t('lt.errors'), cls: 'num errors', text: (o) => count(s(o).errors) },
      { title: t('lt.verdict'), cell: (o) => verdictBadge(s(o)) },
      { title: t('col.age'), text: (o) => age(o.metadata.creationTimestamp) },
      { title: t('col.actions'), cls: 'row-actions', cell: actions },
    ].filter(Boolean),
  });

  const stop = watchList(listPath(ns), {
    onChange: (items) => {
      const keys = new Set(items.map((o) => `${o.metadata.namespace}/${o.metadata.name}`));
      for (const k of [...picked]) if (!keys.has(k)) picked.delete(k);
      syncCompare();
      items.sort((a, b) => String(b.metadata.creationTimestamp).localeCompare(String(a.metadata.creationTimestamp)));
      table.update(items);
    },
    onError: (e) => mount(note, h('p.muted', failure(e, t('lt.action.list')))),
  });
  const ages = setInterval(() => table.refresh(), 30000);

  permissions(ns || 'default').then((p) => {
    mount(toolbar,
      p.create ? h('a.button.primary', { href: '/console/loadtests/new', 'data-link': '', id: 'lt-new' }, t('lt.new')) : null,
      compare);
  });
  mount(toolbar, compare);
  const el = h('div.loadtests', h('div.title-row', h('h1', t('nav.loadtests')), toolbar), note,
    h('section.card', h('p.hint.muted', t('lt.pickHint')), table.el));
  return { el, stop: () => { clearInterval(ages); stop(); } };
}

// --- the form ---------------------------------------------------------------------------------

// Target choices of a namespace: every port of every Service, as `svc/NAME:PORT`.
async function serviceTargets(ns) {
  const list = await get(`/api/v1/namespaces/${enc(ns)}/services`);
  const out = [];
  for (const svc of list.items || []) {
    for (const p of (svc.spec && svc.spec.ports) || []) {
      if ((p.protocol || 'TCP') !== 'TCP') continue;
      out.push({ value: `svc/${svc.metadata.name}:${p.port}`, label: `${svc.metadata.name}:${p.port}${p.name ? ` (${p.name})` : ''}` });
    }
  }
  return out;
}

// "Name: value" lines -> { Name: value }
export function parseHeaders(text) {
  const out = {};
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf(':');
    if (at <= 0) throw new Error(t('lt.badHeader', { line }));
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

// The LoadTest of a filled-in form.
export function buildLoadTest(f) {
  const spec = { target: f.target, method: f.method, duration: f.duration, generators: f.generators };
  if (f.model === 'users') spec.users = f.amount; else spec.rate = f.amount;
  if (f.rampUp) spec.rampUp = f.rampUp;
  if (f.timeout) spec.timeout = f.timeout;
  if (Object.keys(f.headers).length) spec.headers = f.headers;
  if (f.body) spec.body = f.body;
  if (f.thresholds.length) spec.thresholds = f.thresholds;
  const metadata = { namespace: f.namespace };
  if (f.name) metadata.name = f.name; else metadata.generateName = 'loadtest-';
  return { apiVersion: `${GROUP}/v1`, kind: 'LoadTest', metadata, spec };
}

function newPage(ctx) {
  const el = h('div.lt-new',
    h('p.crumbs', h('a', { href: '/console/loadtests', 'data-link': '' }, t('nav.loadtests'))),
    h('h1', t('lt.newTitle')));
  const slot = h('div', h('p.muted', t('loading')));
  el.append(slot);
  const ns = h('input#lt-namespace', { name: 'namespace', required: true, value: ctx.namespace || 'default' });
  const name = h('input#lt-name', { name: 'name', placeholder: t('lt.nameHint') });
  const target = h('select#lt-target');
  const url = h('input#lt-url', { placeholder: 'http://web.default.svc/index.html' });
  const path = h('input#lt-path', { placeholder: '/index.html' });
  const urlLabel = h('label', h('span', t('lt.url')), url);
  const pathLabel = h('label', h('span', t('lt.path')), path);
  const targetNote = h('p#lt-target-note.muted.hint');
  const method = h('select#lt-method', ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'].map((m) => h('option', { value: m }, m)));
  const modelSel = h('select#lt-model',
    h('option', { value: 'rate' }, t('lt.modelRate')),
    h('option', { value: 'users' }, t('lt.modelUsers')));
  const amount = h('input#lt-amount', { type: 'number', min: 1, value: 100 });
  const duration = h('input#lt-duration', { value: '30s' });
  const rampUp = h('input#lt-rampup', { placeholder: '10s' });
  const generators = h('input#lt-generators', { type: 'number', min: 1, value: 1 });
  const timeout = h('input#lt-timeout', { placeholder: '10s' });
  const thresholds = h('textarea#lt-thresholds', { rows: 3, placeholder: 'p99<200ms\nerrors<1%' });
  const headers = h('textarea#lt-headers', { rows: 2, placeholder: 'Accept: text/html' });
  const body = h('textarea#lt-body', { rows: 2 });
  const error = h('pre#lt-error.form-error', { role: 'alert' });
  const submit = h('button#lt-submit.primary', { type: 'submit' }, t('lt.start'));
  const amountLabel = h('span', t('lt.requestsPerSecond'));
  modelSel.onchange = () => { amountLabel.textContent = modelSel.value === 'users' ? t('lt.usersCount') : t('lt.requestsPerSecond'); };

  const syncTarget = () => {
    const isUrl = target.value === '';
    urlLabel.hidden = !isUrl;
    pathLabel.hidden = isUrl;
  };
  target.onchange = syncTarget;
  const loadTargets = async () => {
    mount(target, h('option', { value: '' }, t('lt.targetUrl')));
    targetNote.textContent = '';
    try {
      const choices = await serviceTargets(ns.value.trim());
      mount(target, choices.map((c) => h('option', { value: c.value }, c.label)), h('option', { value: '' }, t('lt.targetUrl')));
      if (!choices.length) targetNote.textContent = t('lt.noServices');
    } catch (e) {
      targetNote.textContent = failure(e, t('lt.action.listServices'));
    }
    syncTarget();
  };
  ns.onchange = loadTargets;

  const form = h('form.deploy-form.lt-form', { onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = '';
    let f;
    try {
      let tgt = target.value;
      if (!tgt) {
        tgt = url.value.trim();
        if (!tgt) throw new Error(t('lt.noTarget'));
      } else if (path.value.trim() && path.value.trim() !== '/') {
        tgt += path.value.trim().startsWith('/') ? path.value.trim() : `/${path.value.trim()}`;
      }
      f = {
        namespace: ns.value.trim(),
        name: name.value.trim(),
        target: tgt,
        method: method.value,
        model: modelSel.value,
        amount: Number(amount.value),
        duration: duration.value.trim() || '30s',
        rampUp: rampUp.value.trim(),
        timeout: timeout.value.trim(),
        generators: Number(generators.value),
        thresholds: thresholds.value.split('\n').map((l) => l.trim()).filter(Boolean),
        headers: parseHeaders(headers.value),
        body: body.value,
      };
      if (f.name && !NAME_RE.test(f.name)) throw new Error(t('deploy.badName'));
      if (!Number.isInteger(f.amount) || f.amount < 1) throw new Error(t('lt.badAmount'));
      if (!Number.isInteger(f.generators) || f.generators < 1) throw new Error(t('lt.badGenerators'));
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    submit.disabled = true;
    let made;
    try {
      made = await post(ltPath(f.namespace), buildLoadTest(f));
    } catch (err) {
      error.textContent = failure(err, t('lt.action.create', { name: `${f.namespace}/${f.name || 'loadtest-…'}` }));
      submit.disabled = false;
      return;
    }
    ctx.notify(t('lt.startedRun', { name: made.metadata.name }), 'info');
    ctx.navigate(`loadtests/${enc(made.metadata.namespace)}/${enc(made.metadata.name)}`);
  } },
  h('section.card',
    h('div.row',
      h('label', h('span', t('namespace')), ns),
      h('label', h('span', t('col.name')), name)),
    h('div.row',
      h('label', h('span', t('lt.target')), target),
      pathLabel, urlLabel,
      h('label', h('span', t('lt.method')), method)),
    targetNote,
    h('div.row',
      h('label', h('span', t('lt.model')), modelSel),
      h('label', amountLabel, amount),
      h('label', h('span', t('lt.generators')), generators)),
    h('div.row',
      h('label', h('span', t('lt.duration')), duration),
      h('label', h('span', t('lt.rampUp')), rampUp),
      h('label', h('span', t('lt.timeout')), timeout)),
    h('label', h('span', t('lt.thresholds')), thresholds, h('span.hint', t('lt.thresholdsHint'))),
    h('div.row',
      h('label', h('span', t('lt.headers')), headers),
      h('label', h('span', t('lt.body')), body))),
  error,
  submit);

  permissions(ns.value).then((p) => {
    if (!p.create) {
      mount(slot, h('section.card', h('p#lt-forbidden.muted', t('lt.mayNotCreate'))));
      return;
    }
    mount(slot, form);
    loadTargets();
  });
  return { el, stop: () => {} };
}

// --- one run ----------------------------------------------------------------------------------

// The series a run's results give the charts, by second.
export function seriesOf(seconds, resources) {
  const xs = seconds.map((r) => r.second);
  const lat = (k) => seconds.map((r) => (r.requests > r.errors || r.latency[k] ? r.latency[k] : null));
  const rx = resources.map((r) => r.second);
  // no sample of pods (or nodes) that second: no point, rather than a false zero
  const sum = (list, k) => (list && list.length ? list.reduce((a, u) => a + (u[k] || 0), 0) : null);
  return {
    xs,
    requests: seconds.map((r) => r.requests),
    errors: seconds.map((r) => r.errors),
    p50: lat('p50'),
    p90: lat('p90'),
    p99: lat('p99'),
    p999: lat('p999'),
    rx,
    podCpu: resources.map((r) => sum(r.pods, 'cpuMillicores')),
    nodeCpu: resources.map((r) => sum(r.nodes, 'cpuMillicores')),
    podMem: resources.map((r) => sum(r.pods, 'memoryBytes')),
    nodeMem: resources.map((r) => sum(r.nodes, 'memoryBytes')),
  };
}

function summaryFacts(o, summary, liveRate) {
  const spec = o.spec || {};
  const st = o.status || {};
  const lat = (summary && summary.latency) || st.latency || {};
  const requests = summary ? summary.requests : st.requests;
  const errors = summary ? summary.errors : st.errors;
  // while running, the summary's rate is over the whole duration: the seconds so far instead
  const achieved = liveRate !== undefined ? liveRate : summary ? summary.achievedRate : st.achievedRate;
  const stat = (id, label, value) => h('div.lt-stat', h('span.label', label), h(`span#${id}.value`, value));
  return h('div.lt-stats',
    stat('lt-requests', t('lt.requests'), count(requests)),
    stat('lt-errors', t('lt.errors'), errorText(requests, errors)),
    stat('lt-achieved', t('lt.achieved'), `${rate(achieved)}${spec.rate ? ` / ${rate(spec.rate)}` : ''}`),
    stat('lt-p50', 'p50', ms(lat.p50)),
    stat('lt-p90', 'p90', ms(lat.p90)),
    stat('lt-p99', 'p99', ms(lat.p99)),
    stat('lt-p999', 'p99.9', ms(lat.p999)),
    stat('lt-max', 'max', ms(lat.max)));
}

function verdictTable(list) {
  if (!list || !list.length) return h('p#lt-verdicts.muted', t('lt.noThresholds'));
  return h('table#lt-verdicts.list',
    h('thead', h('tr', h('th', t('lt.threshold')), h('th.num', t('lt.actual')), h('th', t('lt.verdict')))),
    h('tbody', list.map((v) => h('tr', { 'data-threshold': v.threshold },
      h('td', v.threshold),
      h('td.num', shortNumber(v.actual, /^errors/.test(v.threshold) ? '%' : 'ms')),
      h('td', v.passed ? h('span.badge.ok', t('lt.passed')) : h('span.badge.bad', t('lt.failed')))))));
}

// The charts of one run, fed from results documents.
function runCharts() {
  const charts = {
    rps: lineChart({ xLabel: t('lt.time'), id: 'chart-rps', title: t('lt.chartRps'), series: [{ label: t('lt.requests') }], value: (n, d) => shortNumber(n, '/s', d) }),
    latency: lineChart({ xLabel: t('lt.time'), id: 'chart-latency', title: t('lt.chartLatency'), series: ['p50', 'p90', 'p99', 'p99.9'].map((label) => ({ label })), value: (n, d) => shortNumber(n, 'ms', d) }),
    errors: lineChart({ xLabel: t('lt.time'), id: 'chart-errors', title: t('lt.chartErrors'), series: [{ label: t('lt.errors') }], value: (n, d) => shortNumber(n, '/s', d) }),
    cpu: lineChart({ xLabel: t('lt.time'), id: 'chart-cpu', title: t('lt.chartCpu'), series: [{ label: t('lt.pods') }, { label: t('lt.nodesRight'), right: true }], value: mcores }),
    memory: lineChart({ xLabel: t('lt.time'), id: 'chart-memory', title: t('lt.chartMemory'), series: [{ label: t('lt.pods') }, { label: t('lt.nodesRight'), right: true }], value: mem }),
  };
  const el = h('div.chart-grid', Object.values(charts).map((c) => c.el));
  const draw = (seconds, resources) => {
    const s = seriesOf(seconds, resources);
    charts.rps.set(s.xs, [s.requests]);
    charts.latency.set(s.xs, [s.p50, s.p90, s.p99, s.p999]);
    charts.errors.set(s.xs, [s.errors]);
    charts.cpu.set(s.rx, [s.podCpu, s.nodeCpu]);
    charts.memory.set(s.rx, [s.podMem, s.nodeMem]);
  };
  return { el, draw, stop: () => Object.values(charts).forEach((c) => c.stop()) };
}

function runPage(ctx, ns, name) {
  const head = h('div.title-row', h('h1', name, ' ', h('span.sub.muted', ns)));
  const badges = h('span.lt-badges');
  head.append(badges);
  const toolbar = h('div#lt-actions.actions');
  const facts = h('dl#lt-facts.facts');
  const problem = h('p#lt-problem.form-error', { role: 'status' });
  const stats = h('div');
  const verdicts = h('div');
  const charts = runCharts();
  const live = h('p#lt-live.muted.hint');
  const el = h('div.lt-run',
    h('p.crumbs', h('a', { href: '/console/loadtests', 'data-link': '' }, t('nav.loadtests'))),
    head, toolbar,
    h('section.card', facts, problem),
    h('section.card', h('h2', t('lt.summary')), stats),
    h('section.card', h('h2', t('lt.charts')), live, charts.el),
    h('section.card', h('h2', t('lt.thresholds')), verdicts));
  // a run that ended before it started (invalid, no target) has only its reason to show
  const sections = [...el.querySelectorAll('section.card')].slice(1);

  let obj = null;
  let perms = { create: false, patch: false, delete: false };
  let results = null;
  const rows = new Map();
  const samples = new Map();
  let timer = null;
  let stopped = false;
  let inflight = false;
  let queued = null;
  let final = false;

  const drawToolbar = () => {
    if (!obj) return;
    const phase = (obj.status && obj.status.phase) || 'Pending';
    mount(toolbar,
      perms.patch && !TERMINAL.includes(phase) && !obj.spec.cancel
        ? h('button#lt-cancel', { type: 'button', onclick: () => cancelRun(ctx, ns, name) }, t('lt.cancel')) : null,
      perms.delete ? h('button#lt-delete.danger', { type: 'button', onclick: () => deleteRun(ctx, ns, name, () => ctx.navigate('loadtests')) }, t('delete')) : null,
      results ? h('span.export-label.muted', t('lt.export')) : null,
      results ? EXPORTS.map((f) => h(`a#lt-export-${f}.button.export`, {
        href: resultsPath(ns, name, f),
        download: `${name}.${f}`,
      }, f.toUpperCase())) : null);
  };

  const drawObject = () => {
    const spec = obj.spec || {};
    const st = obj.status || {};
    mount(badges, phaseBadge(st.phase), verdictBadge(st));
    const fact = (k, v) => (v === undefined || v === null || v === '' ? null : [h('dt', k), h('dd', v)]);
    mount(facts,
      fact(t('lt.target'), spec.target),
      fact(t('lt.url'), st.url),
      fact(t('lt.method'), spec.method || 'GET'),
      fact(t('lt.load'), model(spec)),
      fact(t('lt.generators'), String(spec.generators || 1)),
      fact(t('lt.duration'), spec.duration || '30s'),
      fact(t('lt.rampUp'), spec.rampUp),
      fact(t('lt.started'), when(st.startTime)),
      fact(t('lt.completed'), when(st.completionTime)));
    // why a run failed or was cancelled; how a live one is doing, as a plain note
    const bad = ['Failed', 'Cancelled'].includes(st.phase);
    const neverRan = TERMINAL.includes(st.phase) && !st.startTime;
    for (const section of sections) section.hidden = neverRan;
    problem.className = bad ? 'form-error' : 'muted';
    problem.textContent = st.reason || st.message ? `${st.reason || ''}${st.reason && st.message ? ': ' : ''}${st.message || ''}` : '';
    const running = st.phase === 'Running' && results && rows.size;
    const liveRate = running ? results.summary.requests / (lastSecond() + 1) : undefined;
    mount(stats, summaryFacts(obj, results && results.summary, liveRate));
    mount(verdicts, verdictTable((st.thresholds && st.thresholds.length ? st.thresholds : results && results.thresholds) || []));
    drawToolbar();
  };

  // GET the results from `since` on, merge them into what is drawn.
  const poll = async (since) => {
    if (inflight) { queued = queued === null ? since : Math.min(queued, since); return; }
    inflight = true;
    try {
      const doc = await get(resultsPath(ns, name, 'json', since));
      if (stopped) return;
      for (const r of doc.seconds || []) rows.set(r.second, r);
      for (const r of doc.resources || []) samples.set(r.second, r);
      results = doc;
      const seconds = [...rows.values()].sort((a, b) => a.second - b.second);
      const resources = [...samples.values()].sort((a, b) => a.second - b.second);
      charts.draw(seconds, resources);
      live.textContent = t('lt.liveSeconds', { n: seconds.length });
      live.dataset.seconds = String(seconds.length);
      if (obj) drawObject();
    } catch (e) {
      if (!stopped && e.status !== 404) live.textContent = failure(e, t('lt.action.results'));
    } finally {
      inflight = false;
      // a read asked for meanwhile (the run just ended: everything once more)
      if (queued !== null && !stopped) { const q = queued; queued = null; poll(q); }
    }
  };

  const lastSecond = () => (rows.size ? Math.max(...rows.keys()) : 0);

  const schedule = () => {
    if (stopped || timer) return;
    const phase = obj && obj.status && obj.status.phase;
    if (phase === 'Running') {
      // the last seconds again: a generator's report for them may have come since
      timer = setTimeout(async () => { timer = null; await poll(Math.max(0, lastSecond() - 2)); schedule(); }, 1000);
    }
  };

  const follow = () => {
    const st = obj.status || {};
    if (st.phase === 'Running') {
      live.dataset.state = 'live';
      if (!rows.size && !inflight) poll(0);
      schedule();
    } else if (TERMINAL.includes(st.phase) && !final) {
      final = true;
      live.dataset.state = 'done';
      if (timer) { clearTimeout(timer); timer = null; }
      if (st.startTime) poll(0); else live.textContent = t('lt.noResults');
    } else if (!st.phase || st.phase === 'Pending') {
      live.textContent = t('lt.waiting');
    }
  };

  const stopWatch = watchList(ltPath(ns), {
    onChange: (items) => {
      const found = items.find((o) => o.metadata.name === name);
      if (!found) {
        if (obj) { obj = null; mount(toolbar); problem.textContent = t('lt.gone'); }
        return;
      }
      obj = found;
      drawObject();
      follow();
    },
    onError: (e) => { problem.textContent = failure(e, t('lt.action.read', { name: `${ns}/${name}` })); },
  });
  permissions(ns).then((p) => { perms = p; drawToolbar(); });

  return {
    el,
    stop: () => { stopped = true; if (timer) clearTimeout(timer); stopWatch(); charts.stop(); },
  };
}

// --- comparing runs ---------------------------------------------------------------------------

function comparePage(ctx, pairs) {
  const runs = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) runs.push({ ns: pairs[i], name: pairs[i + 1] });
  const labels = runs.map((r) => ({ label: r.name }));
  const charts = {
    rps: lineChart({ xLabel: t('lt.time'), id: 'compare-rps', title: t('lt.chartRps'), series: labels, value: (n, d) => shortNumber(n, '/s', d) }),
    p50: lineChart({ xLabel: t('lt.time'), id: 'compare-p50', title: t('lt.chartP50'), series: labels, value: (n, d) => shortNumber(n, 'ms', d) }),
    p99: lineChart({ xLabel: t('lt.time'), id: 'compare-p99', title: t('lt.chartP99'), series: labels, value: (n, d) => shortNumber(n, 'ms', d) }),
    errors: lineChart({ xLabel: t('lt.time'), id: 'compare-errors', title: t('lt.chartErrors'), series: labels, value: (n, d) => shortNumber(n, '/s', d) }),
  };
  const table = h('div#compare-table', h('p.muted', t('loading')));
  const note = h('div');
  const el = h('div.lt-compare',
    h('p.crumbs', h('a', { href: '/console/loadtests', 'data-link': '' }, t('nav.loadtests'))),
    h('h1', t('lt.compareTitle')),
    note,
    h('section.card', h('h2', t('lt.summary')), table),
    h('section.card', h('h2', t('lt.charts')), h('div.chart-grid', Object.values(charts).map((c) => c.el))));

  (async () => {
    const loaded = await Promise.all(runs.map(async (r) => {
      try {
        const [o, doc] = await Promise.all([get(ltPath(r.ns, r.name)), get(resultsPath(r.ns, r.name, 'json', 0))]);
        return { ...r, o, doc };
      } catch (e) {
        note.append(h('p.form-error', `${r.ns}/${r.name}: ${failure(e, t('lt.action.results'))}`));
        return { ...r, o: null, doc: null };
      }
    }));
    const ok = loaded.filter((r) => r.doc);
    const row = (label, f) => h('tr', h('th', label), ok.map((r) => h('td', f(r))));
    const sm = (r) => r.doc.summary || {};
    const lat = (r) => sm(r).latency || {};
    mount(table, h('table.list.compare',
      h('thead', h('tr', h('th', ''), ok.map((r) => h('th', { 'data-run': `${r.ns}/${r.name}` },
        h('a', { href: runLink(r.ns, r.name), 'data-link': '' }, r.name))))),
      h('tbody',
        row(t('lt.target'), (r) => r.o.spec.target),
        row(t('lt.load'), (r) => model(r.o.spec)),
        row(t('lt.generators'), (r) => String(r.doc.generators)),
        row(t('lt.duration'), (r) => `${r.doc.durationSeconds}s`),
        row(t('lt.phase'), (r) => phaseBadge(r.doc.phase || (r.o.status || {}).phase)),
        row(t('lt.requests'), (r) => h('span.cmp-requests', count(sm(r).requests))),
        row(t('lt.errors'), (r) => errorText(sm(r).requests, sm(r).errors)),
        row(t('lt.achieved'), (r) => h('span.cmp-achieved', rate(sm(r).achievedRate))),
        row('p50', (r) => ms(lat(r).p50)),
        row('p90', (r) => ms(lat(r).p90)),
        row('p99', (r) => h('span.cmp-p99', ms(lat(r).p99))),
        row('p99.9', (r) => ms(lat(r).p999)),
        row('max', (r) => ms(lat(r).max)),
        row(t('lt.verdict'), (r) => verdictBadge(r.o.status)))));
    const per = ok.map((r) => ({ r, s: seriesOf(r.doc.seconds || [], r.doc.resources || []) }));
    const series = ok.map((r) => ({ label: r.name }));
    const overlay = (chart, key) => {
      const { xs, ys } = alignTables(per.map(({ s }) => [s.xs, s[key]]));
      chart.setSeries(series, xs, ys);
    };
    overlay(charts.rps, 'requests');
    overlay(charts.p50, 'p50');
    overlay(charts.p99, 'p99');
    overlay(charts.errors, 'errors');
  })();
  return { el, stop: () => Object.values(charts).forEach((c) => c.stop()) };
}

export function loadtestsPage(ctx) {
  const [first, ...rest] = ctx.params || [];
  if (!first) return listPage(ctx);
  if (first === 'new' && !rest.length) return newPage(ctx);
  if (first === 'compare' && rest.length >= 2 && rest.length % 2 === 0) return comparePage(ctx, rest);
  if (first !== 'compare' && rest.length === 1) return runPage(ctx, first, rest[0]);
  return { el: h('section.card', h('h1', t('notfound.title')), h('p', t('notfound.text'))), stop: () => {} };
}
