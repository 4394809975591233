// One generic list/detail/create module for the plain resource pages (Services, Ingresses,
// ConfigMaps, Secrets, Namespaces, Events), configured per kind in KINDS: live lists through
// watches with the columns kubectl shows, a detail view, create and edit through the YAML
// editor (server-side validation errors shown), delete after a confirmation. Only what the
// person may do is offered; a refused request shows the API's message. Secret values are never
// rendered in lists; on a Secret's page each value stays hidden until its "Reveal" is pressed.
// Routes below /console/<kind>: `new`, `<ns>/<name>` (or `<name>` for cluster-scoped kinds).
import { watchList, can, request } from './api.js';
import { t } from './i18n.js';
import { h, mount, age } from './dom.js';
import { liveTable } from './table.js';
import { ask } from './dialog.js';
import { enc, failure, when } from './kube.js';
import { yamlSection, toYaml, statusText } from './yamledit.js';

const yaml = () => import('./vendor/js-yaml-4.1.0.mjs');

// --- what kubectl prints, per kind ---------------------------------------------------------

function servicePorts(o) {
  return ((o.spec && o.spec.ports) || []).map((p) =>
    `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol || 'TCP'}`).join(', ');
}

function serviceExternal(o) {
  const lb = ((o.status && o.status.loadBalancer && o.status.loadBalancer.ingress) || [])
    .map((i) => i.ip || i.hostname);
  const ext = (o.spec && o.spec.externalIPs) || [];
  const all = [...lb, ...ext];
  return all.length ? all.join(', ') : (o.spec && o.spec.type === 'LoadBalancer' ? '<pending>' : '<none>');
}

// "ready/total" addresses of a Service's Endpoints.
function endpointsReady(ep) {
  if (!ep) return '0/0';
  let ready = 0;
  let total = 0;
  for (const s of ep.subsets || []) {
    ready += (s.addresses || []).length;
    total += (s.addresses || []).length + (s.notReadyAddresses || []).length;
  }
  return `${ready}/${total}`;
}

function endpointAddresses(ep) {
  const out = [];
  for (const s of (ep && ep.subsets) || []) {
    const ports = (s.ports || []).map((p) => p.port);
    for (const a of s.addresses || []) out.push(...(ports.length ? ports : ['']).map((p) => `${a.ip}${p ? `:${p}` : ''}`));
    for (const a of s.notReadyAddresses || []) out.push(`${a.ip} (${t('svc.notReady')})`);
  }
  return out;
}

function ingressHosts(o) {
  const hosts = ((o.spec && o.spec.rules) || []).map((r) => r.host || '*');
  return hosts.length ? [...new Set(hosts)].join(', ') : '*';
}

function backendText(b) {
  if (!b) return '';
  if (b.service) return `${b.service.name}:${b.service.port ? (b.service.port.number || b.service.port.name) : ''}`;
  if (b.resource) return `${b.resource.kind}/${b.resource.name}`;
  return '';
}

// "host/path → service:port" per rule path, and the default backend.
function ingressRoutes(o) {
  const spec = o.spec || {};
  const out = [];
  for (const r of spec.rules || []) {
    for (const p of (r.http && r.http.paths) || []) out.push(`${r.host || '*'}${p.path || '/'} → ${backendText(p.backend)}`);
  }
  if (spec.defaultBackend) out.push(`* → ${backendText(spec.defaultBackend)}`);
  return out;
}

function ingressAddresses(o) {
  return ((o.status && o.status.loadBalancer && o.status.loadBalancer.ingress) || [])
    .map((i) => i.ip || i.hostname).join(', ');
}

function dataKeys(o) {
  return [...Object.keys(o.data || {}), ...Object.keys(o.binaryData || {})].sort();
}

const lastSeen = (e) => e.lastTimestamp || (e.series && e.series.lastObservedTime) || e.eventTime
  || e.firstTimestamp || e.metadata.creationTimestamp;

function involved(e) {
  const o = e.involvedObject || e.regarding || {};
  return `${(o.kind || '').toLowerCase()}/${o.name || ''}`;
}

// A Secret value as text when it is UTF-8, else a note of its size.
export function decodeSecret(b64) {
  let bytes;
  try {
    bytes = Uint8Array.from(atob(b64 || ''), (c) => c.charCodeAt(0));
  } catch (_) {
    return t('secrets.undecodable');
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (_) {
    return t('secrets.binary', { n: bytes.length });
  }
}

const list = (items) => (items.length ? items.join(', ') : '<none>');

// --- the kinds -------------------------------------------------------------------------------

// path: the console route and the API's plural; group/version: the API; namespaced;
// related: another resource joined by namespace/name (a Service's Endpoints);
// columns(rel): the list's columns after the name (and namespace); facts(o, rel): the detail's
// [label, value] pairs; sections(ctx, o, rel): more cards on the detail page;
// template(ns): what a new object starts as; create/edit: whether offered at all.
export const KINDS = {
  services: {
    kind: 'Service', title: 'nav.services', group: '', version: 'v1', namespaced: true, create: true, edit: true,
    related: { plural: 'endpoints' },
    columns: (rel) => [
      { title: t('col.type'), text: (o) => (o.spec && o.spec.type) || 'ClusterIP' },
      { title: t('svc.clusterIP'), text: (o) => (o.spec && o.spec.clusterIP) || '' },
      { title: t('svc.external'), text: serviceExternal },
      { title: t('svc.ports'), text: servicePorts },
      { title: t('svc.endpoints'), cls: 'num endpoints', text: (o) => endpointsReady(rel(o)) },
    ],
    facts: (o, rel) => [
      [t('col.type'), (o.spec && o.spec.type) || 'ClusterIP'],
      [t('svc.clusterIP'), (o.spec && o.spec.clusterIP) || ''],
      [t('svc.external'), serviceExternal(o)],
      [t('svc.ports'), servicePorts(o)],
      [t('svc.selector'), Object.entries((o.spec && o.spec.selector) || {}).map(([k, v]) => `${k}=${v}`).join(', ') || '<none>'],
      [t('svc.endpoints'), endpointsReady(rel(o))],
      [t('svc.addresses'), list(endpointAddresses(rel(o)))],
    ],
    template: (ns) => ({
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'my-service', namespace: ns },
      spec: { selector: { app: 'my-app' }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] },
    }),
  },
  ingresses: {
    kind: 'Ingress', title: 'nav.ingresses', group: 'networking.k8s.io', version: 'v1', namespaced: true, create: true, edit: true,
    columns: () => [
      { title: t('ing.class'), text: (o) => (o.spec && o.spec.ingressClassName) || '<none>' },
      { title: t('ing.hosts'), text: ingressHosts },
      { title: t('ing.routes'), cls: 'routes', text: (o) => ingressRoutes(o).join('\n') },
      { title: t('ing.addresses'), text: ingressAddresses },
    ],
    facts: (o) => [
      [t('ing.class'), (o.spec && o.spec.ingressClassName) || '<none>'],
      [t('ing.hosts'), ingressHosts(o)],
      [t('ing.routes'), list(ingressRoutes(o))],
      [t('ing.tls'), list(((o.spec && o.spec.tls) || []).map((x) => `${(x.hosts || []).join(', ')} (${x.secretName || ''})`))],
      [t('ing.addresses'), ingressAddresses(o) || '<none>'],
    ],
    template: (ns) => ({
      apiVersion: 'networking.k8s.io/v1', kind: 'Ingress', metadata: { name: 'my-ingress', namespace: ns },
      spec: { rules: [{ host: 'app.example.com', http: { paths: [{ path: '/', pathType: 'Prefix',
        backend: { service: { name: 'my-service', port: { number: 80 } } } }] } }] },
    }),
  },
  configmaps: {
    kind: 'ConfigMap', title: 'nav.configmaps', group: '', version: 'v1', namespaced: true, create: true, edit: true,
    columns: () => [
      { title: t('cm.data'), cls: 'num', text: (o) => dataKeys(o).length },
      { title: t('cm.keys'), cls: 'keys', text: (o) => dataKeys(o).join(', ') },
    ],
    facts: (o) => [[t('cm.keys'), list(dataKeys(o))]],
    sections: (ctx, o) => [h('section.card', h('h2', t('cm.data')),
      dataKeys(o).length ? h('dl#cm-data.values', Object.entries(o.data || {}).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [
        h('dt', k), h('dd', h('pre.value', v)),
      ]), Object.keys(o.binaryData || {}).sort().map((k) => [h('dt', k), h('dd.muted', t('cm.binary'))]))
        : h('p.muted', t('cm.empty')))],
    template: (ns) => ({
      apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'my-config', namespace: ns },
      data: { 'app.properties': 'color=blue\n' },
    }),
  },
  secrets: {
    kind: 'Secret', title: 'nav.secrets', group: '', version: 'v1', namespaced: true, create: true, edit: true,
    // the YAML holds every value (base64): shown only when asked
    hiddenYaml: true,
    columns: () => [
      { title: t('col.type'), text: (o) => o.type || 'Opaque' },
      { title: t('cm.data'), cls: 'num', text: (o) => Object.keys(o.data || {}).length },
      { title: t('cm.keys'), cls: 'keys', text: (o) => Object.keys(o.data || {}).sort().join(', ') },
    ],
    facts: (o) => [[t('col.type'), o.type || 'Opaque'], [t('cm.keys'), list(Object.keys(o.data || {}).sort())]],
    sections: (ctx, o) => [secretValues(o)],
    template: (ns) => ({
      apiVersion: 'v1', kind: 'Secret', metadata: { name: 'my-secret', namespace: ns },
      type: 'Opaque', stringData: { password: 'change-me' },
    }),
  },
  namespaces: {
    kind: 'Namespace', title: 'nav.namespaces', group: '', version: 'v1', namespaced: false, create: true, edit: true,
    deleteText: 'ns.deleteText',
    columns: () => [
      { title: t('col.status'), cell: (o) => { const p = (o.status && o.status.phase) || 'Active'; return h(`span.badge.${p === 'Active' ? 'ok' : 'warn'}`, p); } },
      { title: t('ns.labels'), cls: 'keys', text: (o) => Object.entries(o.metadata.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ') },
    ],
    facts: (o) => [
      [t('col.status'), (o.status && o.status.phase) || 'Active'],
      [t('ns.labels'), list(Object.entries(o.metadata.labels || {}).map(([k, v]) => `${k}=${v}`))],
    ],
    template: () => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'my-namespace' } }),
  },
  events: {
    kind: 'Event', title: 'nav.events', group: '', version: 'v1', namespaced: true, create: false, edit: false,
    // newest first, as people read them
    sort: (a, b) => String(lastSeen(b)).localeCompare(String(lastSeen(a))),
    rowAttrs: (o) => ({ 'data-type': o.type || 'Normal' }),
    columns: () => [
      { title: t('col.type'), cell: (o) => h(`span.badge.${o.type === 'Warning' ? 'bad' : 'ok'}`, o.type || 'Normal') },
      { title: t('col.reason'), text: (o) => o.reason || '' },
      { title: t('col.object'), text: involved },
      { title: t('col.message'), cls: 'event-message', text: (o) => o.message || o.note || '' },
      { title: t('ev.count'), cls: 'num', text: (o) => o.count || (o.series && o.series.count) || 1 },
      { title: t('ev.lastSeen'), text: (o) => age(lastSeen(o)) },
    ],
    facts: (o) => [
      [t('col.type'), o.type || 'Normal'],
      [t('col.reason'), o.reason || ''],
      [t('col.object'), involved(o)],
      [t('col.message'), o.message || o.note || ''],
      [t('ev.source'), [(o.source && o.source.component) || o.reportingController || '', (o.source && o.source.host) || ''].filter(Boolean).join(', ')],
      [t('ev.count'), String(o.count || (o.series && o.series.count) || 1)],
      [t('ev.firstSeen'), when(o.firstTimestamp || o.eventTime || o.metadata.creationTimestamp)],
      [t('ev.lastSeen'), when(lastSeen(o))],
    ],
  },
};

function apiBase(k) {
  return k.group ? `/apis/${k.group}/${k.version}` : `/api/${k.version}`;
}

// The collection path of `plural` (in `ns`, or across namespaces), or of one object.
export function resourcePath(plural, ns, name) {
  const k = KINDS[plural] || { group: '', version: 'v1', namespaced: true };
  const base = `${apiBase(k)}${k.namespaced && ns ? `/namespaces/${enc(ns)}` : ''}/${plural}`;
  return name === undefined ? base : `${base}/${enc(name)}`;
}

function relatedPath(k, ns, name) {
  const base = `/api/v1${ns ? `/namespaces/${enc(ns)}` : ''}/${k.related.plural}`;
  return name === undefined ? base : `${base}?fieldSelector=${enc(`metadata.name=${name}`)}`;
}

const label = (k, o) => `${k.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;

function detailHref(plural, o) {
  const k = KINDS[plural];
  return k.namespaced
    ? `/console/${plural}/${enc(o.metadata.namespace)}/${enc(o.metadata.name)}`
    : `/console/${plural}/${enc(o.metadata.name)}`;
}

function access(plural, verb, ns) {
  const k = KINDS[plural];
  return can(verb, plural, { group: k.group, namespace: k.namespaced ? ns : '' });
}

// The navigation's check: may the person list this kind here.
export function mayList(plural, ns) { return access(plural, 'list', ns); }

async function deleteObject(ctx, plural, o, after) {
  const k = KINDS[plural];
  const answer = await ask({
    title: t('res.deleteTitle', { kind: k.kind, name: o.metadata.name }),
    text: k.deleteText ? t(k.deleteText) : undefined,
    ok: t('delete'),
    danger: true,
  });
  if (!answer) return;
  try {
    await request('DELETE', resourcePath(plural, o.metadata.namespace, o.metadata.name),
      { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' });
    ctx.notify(t('res.deleted', { kind: k.kind, name: o.metadata.name }), 'info');
    if (after) after();
  } catch (e) {
    ctx.notify(failure(e, t('action.delete', { name: label(k, o) })));
  }
}

function secretValues(o) {
  const keys = Object.keys(o.data || {}).sort();
  if (!keys.length) return h('section.card', h('h2', t('secrets.values')), h('p.muted', t('cm.empty')));
  return h('section.card', h('h2', t('secrets.values')),
    h('table#secret-values.list', h('tbody', keys.map((key) => {
      const value = h('span.secret-value.muted', '••••••••');
      const button = h('button.reveal', { type: 'button', 'data-key': key }, t('secrets.reveal'));
      let shown = false;
      button.onclick = () => {
        shown = !shown;
        if (shown) {
          mount(value, h('pre.value', decodeSecret(o.data[key])));
          value.classList.remove('muted');
        } else {
          mount(value, '••••••••');
          value.classList.add('muted');
        }
        button.textContent = shown ? t('secrets.hide') : t('secrets.reveal');
      };
      return h('tr', { 'data-key': key }, h('td.name', key), h('td.value-cell', value), h('td.row-actions', button));
    }))));
}

// --- pages -----------------------------------------------------------------------------------

function listPage(ctx, plural) {
  const k = KINDS[plural];
  const ns = k.namespaced ? ctx.namespace : '';
  const toolbar = h('div.actions');
  const note = h('div');
  const count = h(`span#${plural}-count.muted`);
  const related = new Map();
  const rel = (o) => related.get(`${o.metadata.namespace || ''}/${o.metadata.name}`);
  const perms = new Map(); // namespace -> may delete, or a pending Promise
  let table = null;

  const mayDelete = (namespace) => {
    const p = perms.get(namespace);
    if (p === true || p === false) return p;
    if (!p) perms.set(namespace, access(plural, 'delete', namespace).then((x) => { perms.set(namespace, x); if (table) table.refresh(); }));
    return false;
  };

  table = liveTable({
    id: `${plural}-table`,
    empty: t('res.none'),
    rowAttrs: (o) => ({ 'data-name': `${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`, ...(k.rowAttrs ? k.rowAttrs(o) : {}) }),
    columns: [
      { title: t('col.name'), cls: 'name', cell: (o) => h('a', { href: detailHref(plural, o), 'data-link': '' }, o.metadata.name) },
      k.namespaced && !ns ? { title: t('namespace'), text: (o) => o.metadata.namespace } : null,
      ...k.columns(rel),
      plural === 'events' ? null : { title: t('col.age'), text: (o) => age(o.metadata.creationTimestamp) },
      { title: t('col.actions'), cls: 'row-actions', cell: (o) => (mayDelete(o.metadata.namespace || '')
        ? h('button.delete.danger', { type: 'button', onclick: () => deleteObject(ctx, plural, o) }, t('delete')) : null) },
    ].filter(Boolean),
  });

  let items = [];
  const draw = () => table.update(items);
  const stops = [watchList(resourcePath(plural, ns), {
    onChange: (list) => {
      items = k.sort ? list.sort(k.sort) : list;
      count.textContent = t('res.count', { n: list.length });
      draw();
    },
    onError: (e) => mount(note, h('p.muted', failure(e, t('res.actionList', { kind: k.kind })))),
  })];
  if (k.related) {
    stops.push(watchList(relatedPath(k, ns), {
      onChange: (list) => {
        related.clear();
        for (const o of list) related.set(`${o.metadata.namespace || ''}/${o.metadata.name}`, o);
        table.refresh();
      },
    }));
  }
  const ages = setInterval(() => table.refresh(), 30000);
  if (k.create) {
    access(plural, 'create', ns || (k.namespaced ? 'default' : '')).then((ok) => {
      if (ok) mount(toolbar, h('a.button.primary', { href: `/console/${plural}/new`, 'data-link': '', id: `${plural}-create` }, t('res.create', { kind: k.kind })));
    });
  }
  const el = h(`div.resources.${plural}`, h('div.title-row', h('h1', t(k.title)), count, toolbar), note,
    h('section.card', table.el));
  return { el, stop: () => { clearInterval(ages); stops.forEach((s) => s()); } };
}

function detailPage(ctx, plural, ns, name) {
  const k = KINDS[plural];
  const path = resourcePath(plural, ns, name);
  const what = `${k.kind} ${ns ? `${ns}/` : ''}${name}`;
  const actions = h('div#resource-actions.actions');
  const summary = h('div#resource-summary', t('loading'));
  const extra = h('div');
  const yamlSlot = h('div');
  const el = h(`div.resource.${plural}`,
    h('p.crumbs', h('a', { href: `/console/${plural}`, 'data-link': '' }, t(k.title)), ` / ${k.kind}`),
    h('h1', name, ns ? h('span.muted.sub', ` ${ns}`) : null),
    actions, h('section.card', summary), extra, yamlSlot);
  let current = null;
  let related = null;
  let stopped = false;
  let perms = { update: false, delete: false };
  const rel = () => related;

  const draw = () => {
    if (!current) return;
    mount(summary, h('dl.facts',
      k.facts(current, rel).map(([label, value]) => [h('dt', label), h('dd', value)]),
      h('dt', t('col.age')), h('dd', age(current.metadata.creationTimestamp))));
    if (k.sections) mount(extra, k.sections(ctx, current, rel));
  };
  const drawActions = () => {
    if (!current) { mount(actions); return; }
    mount(actions,
      perms.delete ? h('button.danger', { type: 'button', id: 'resource-delete',
        onclick: () => deleteObject(ctx, plural, current, () => ctx.navigate(plural)) }, t('delete')) : null);
  };

  const base = resourcePath(plural, ns);
  const stops = [watchList(`${base}?fieldSelector=${enc(`metadata.name=${name}`)}`, {
    onChange: (items) => {
      current = items.find((x) => x.metadata.name === name) || null;
      if (!current) { mount(summary, h('p.muted', t('res.gone'))); mount(extra); }
      draw();
      drawActions();
    },
    onError: (e) => mount(summary, h('p.muted', failure(e, t('action.read', { name: what })))),
  })];
  if (k.related) {
    stops.push(watchList(relatedPath(k, ns, name), {
      onChange: (items) => { related = items[0] || null; draw(); },
    }));
  }
  Promise.all([k.edit ? access(plural, 'update', ns) : false, access(plural, 'delete', ns)]).then(([update, del]) => {
    if (stopped) return;
    perms = { update, delete: del };
    drawActions();
    const show = () => mount(yamlSlot, yamlSection(ctx, { path, label: what, editable: update }));
    if (k.hiddenYaml) {
      mount(yamlSlot, h('section.card', h('h2', t('apps.yaml')), h('p.muted', t('secrets.yamlHidden')),
        h('div.actions', h('button', { type: 'button', id: 'yaml-show', onclick: show }, update ? t('secrets.yamlEdit') : t('secrets.yamlShow')))));
    } else {
      show();
    }
  });
  const ages = setInterval(draw, 30000);
  return { el, stop: () => { stopped = true; clearInterval(ages); stops.forEach((s) => s()); } };
}

function createPage(ctx, plural) {
  const k = KINDS[plural];
  const ns = k.namespaced ? (ctx.namespace || 'default') : '';
  const text = h('textarea#create-text.yaml', { spellcheck: 'false', 'aria-label': t('apps.yaml') });
  const error = h('pre#create-error.form-error', { role: 'alert' });
  const submit = h('button.primary', { type: 'submit', id: 'create-submit' }, t('res.createSubmit'));
  const el = h(`div.resource-new.${plural}`,
    h('p.crumbs', h('a', { href: `/console/${plural}`, 'data-link': '' }, t(k.title)), ` / ${t('res.new')}`),
    h('h1', t('res.create', { kind: k.kind })),
    h('form.create-form', { onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      let body;
      try {
        body = (await yaml()).load(text.value);
      } catch (err) {
        error.textContent = t('apps.yamlInvalid', { message: err.message });
        return;
      }
      if (!body || typeof body !== 'object' || !body.metadata) {
        error.textContent = t('res.needsMetadata');
        return;
      }
      const target = k.namespaced ? (body.metadata.namespace || ns) : '';
      submit.disabled = true;
      try {
        const made = await request('POST', resourcePath(plural, target), body);
        ctx.notify(t('res.created', { kind: k.kind, name: made.metadata.name }), 'info');
        ctx.navigate(k.namespaced ? `${plural}/${enc(target)}/${enc(made.metadata.name)}` : `${plural}/${enc(made.metadata.name)}`);
      } catch (err) {
        error.textContent = err.status === 403
          ? failure(err, t('action.deploy', { name: `${k.kind} ${body.metadata.name || ''}` }))
          : statusText(err);
      } finally {
        submit.disabled = false;
      }
    } },
    h('section.card', h('p.muted.hint', t('res.createHint')), text, error,
      h('div.actions', submit, h('a.button', { href: `/console/${plural}`, 'data-link': '' }, t('cancel'))))));
  toYaml(k.template(ns)).then((s) => { text.value = s; });
  return { el, stop: () => {} };
}

function notFound() {
  return { el: h('section.card', h('h1', t('notfound.title')), h('p', t('notfound.text'))), stop: () => {} };
}

// The page of `plural` for the route's parameters.
export function resourcePage(plural) {
  return (ctx) => {
    const k = KINDS[plural];
    const [a, b, c] = ctx.params || [];
    if (!a) return listPage(ctx, plural);
    if (a === 'new' && !b && k.create) return createPage(ctx, plural);
    if (k.namespaced && a && b && !c) return detailPage(ctx, plural, a, b);
    if (!k.namespaced && a && !b) return detailPage(ctx, plural, '', a);
    return notFound();
  };
}
