// Pods: the live list (status, ready, restarts, node, age) updated row by row, and one pod's
// page: containers with their state, conditions and events (live), with links to its logs and
// terminal where allowed. Routes below /console/pods: `<ns>/<name>`, `<ns>/<name>/logs`,
// `<ns>/<name>/shell`.
import { watchList, can, request } from './api.js';
import { t } from './i18n.js';
import { h, mount, age } from './dom.js';
import { liveTable } from './table.js';
import { ask } from './dialog.js';
import { enc, podsPath, podStatus, podReady, podRestarts, statusClass, failure, when } from './kube.js';
import { logsPage } from './logs.js';
import { terminalPage } from './terminal.js';

function statusCell(p) {
  const s = podStatus(p);
  return h(`span.badge.${statusClass(s)}.status`, s);
}

function listPage(ctx) {
  const ns = ctx.namespace;
  const note = h('div');
  const count = h('span#pods-count.muted');
  const table = liveTable({
    id: 'pods-table',
    empty: t('pods.none'),
    rowAttrs: (p) => ({ 'data-pod': `${p.metadata.namespace}/${p.metadata.name}` }),
    columns: [
      { title: t('col.name'), cls: 'name', cell: (p) => h('a', { href: `/console/pods/${enc(p.metadata.namespace)}/${enc(p.metadata.name)}`, 'data-link': '' }, p.metadata.name) },
      ns ? null : { title: t('namespace'), text: (p) => p.metadata.namespace },
      { title: t('col.status'), cell: statusCell },
      { title: t('col.ready'), text: podReady },
      { title: t('col.restarts'), cls: 'num', text: podRestarts },
      { title: t('col.node'), text: (p) => (p.spec && p.spec.nodeName) || '' },
      { title: t('col.ip'), text: (p) => (p.status && p.status.podIP) || '' },
      { title: t('col.age'), text: (p) => age(p.metadata.creationTimestamp) },
    ].filter(Boolean),
  });
  const stop = watchList(podsPath(ns), {
    onChange: (pods) => {
      table.update(pods);
      count.textContent = t('overview.podsTotal', { n: pods.length });
    },
    onError: (e) => mount(note, h('p.muted', failure(e, t('action.listPods')))),
  });
  const ages = setInterval(() => table.refresh(), 30000);
  const el = h('div.pods', h('div.title-row', h('h1', t('nav.pods')), count), note, h('section.card', table.el));
  return { el, stop: () => { clearInterval(ages); stop(); } };
}

function containerState(s) {
  if (!s) return '';
  if (s.running) return t('pods.runningSince', { when: when(s.running.startedAt) });
  if (s.waiting) return `${s.waiting.reason || 'Waiting'}${s.waiting.message ? `: ${s.waiting.message}` : ''}`;
  if (s.terminated) return `${s.terminated.reason || 'Terminated'} (${s.terminated.exitCode})`;
  return '';
}

function podPage(ctx, ns, name) {
  const base = `/console/pods/${enc(ns)}/${enc(name)}`;
  const actions = h('div#pod-actions.actions');
  const summary = h('div#pod-summary', t('loading'));
  const containers = h('div#pod-containers');
  const events = h('div#pod-events', t('loading'));
  const el = h('div.pod',
    h('p.crumbs', h('a', { href: '/console/pods', 'data-link': '' }, t('nav.pods'))),
    h('h1', name, h('span.muted.sub', ` ${ns}`)),
    actions,
    h('section.card', summary),
    h('section.card', h('h2', t('pods.containers')), containers),
    h('section.card', h('h2', t('pods.events')), events));
  let pod = null;
  let mayExec = false;
  let mayDelete = false;
  let mayLogs = false;

  function drawActions() {
    if (!pod) { mount(actions); return; }
    mount(actions,
      mayLogs ? h('a#pod-logs.button', { href: `${base}/logs`, 'data-link': '' }, t('apps.logs')) : null,
      mayExec ? h('a#pod-shell.button', { href: `${base}/shell`, 'data-link': '' }, t('pods.terminal')) : null,
      mayDelete ? h('button#pod-delete.danger', { type: 'button', onclick: async () => {
        if (!await ask({ title: t('pods.deleteTitle', { name }), ok: t('delete'), danger: true })) return;
        try {
          await request('DELETE', `/api/v1/namespaces/${enc(ns)}/pods/${enc(name)}`);
          ctx.notify(t('apps.deleted', { name }), 'info');
        } catch (e) {
          ctx.notify(failure(e, t('action.delete', { name: `Pod ${ns}/${name}` })));
        }
      } }, t('delete')) : null);
  }

  function draw() {
    if (!pod) { mount(summary, h('p.muted', t('pods.gone'))); mount(containers); return; }
    const st = pod.status || {};
    const owner = (pod.metadata.ownerReferences || []).find((r) => r.controller);
    mount(summary, h('dl.facts',
      h('dt', t('col.status')), h('dd', statusCell(pod)),
      h('dt', t('col.node')), h('dd', (pod.spec && pod.spec.nodeName) || '—'),
      h('dt', t('col.ip')), h('dd', st.podIP || '—'),
      h('dt', t('pods.owner')), h('dd', owner ? `${owner.kind}/${owner.name}` : '—'),
      h('dt', t('pods.started')), h('dd', when(st.startTime)),
      h('dt', t('pods.conditions')), h('dd', (st.conditions || []).map((c) =>
        h(`span.badge.${c.status === 'True' ? 'ok' : 'warn'}`, c.type)))));
    const statuses = new Map((st.containerStatuses || []).map((c) => [c.name, c]));
    mount(containers, h('table.list',
      h('thead', h('tr', h('th', t('col.name')), h('th', t('col.images')), h('th', t('col.state')), h('th', t('col.ready')), h('th.num', t('col.restarts')))),
      h('tbody', ((pod.spec && pod.spec.containers) || []).map((c) => {
        const s = statuses.get(c.name) || {};
        return h('tr', { 'data-container': c.name },
          h('td.name', c.name), h('td', c.image), h('td', containerState(s.state)),
          h('td', s.ready ? '✓' : '—'), h('td.num', String(s.restartCount || 0)));
      }))));
  }

  const stops = [];
  stops.push(watchList(`/api/v1/namespaces/${enc(ns)}/pods?fieldSelector=${enc(`metadata.name=${name}`)}`, {
    onChange: (items) => { pod = items.find((p) => p.metadata.name === name) || null; draw(); drawActions(); },
    onError: (e) => mount(summary, h('p.muted', failure(e, t('action.read', { name: `Pod ${ns}/${name}` })))),
  }));
  stops.push(watchList(`/api/v1/namespaces/${enc(ns)}/events?fieldSelector=${enc(`involvedObject.kind=Pod,involvedObject.name=${name}`)}`, {
    onChange: (items) => {
      const mine = items.filter((e) => e.involvedObject && e.involvedObject.kind === 'Pod' && e.involvedObject.name === name)
        .sort((a, b) => String(b.lastTimestamp || b.eventTime || '').localeCompare(String(a.lastTimestamp || a.eventTime || '')));
      if (!mine.length) { mount(events, h('p.muted', t('pods.noEvents'))); return; }
      mount(events, h('table.list',
        h('thead', h('tr', h('th', t('col.age')), h('th', t('col.type')), h('th', t('col.reason')), h('th', t('col.message')))),
        h('tbody', mine.map((e) => h('tr',
          h('td', age(e.lastTimestamp || e.eventTime || e.metadata.creationTimestamp)),
          h('td', h(`span.badge.${e.type === 'Warning' ? 'bad' : 'ok'}`, e.type || '')),
          h('td', e.reason || ''),
          h('td.event-message', `${e.message || ''}${e.count > 1 ? ` (×${e.count})` : ''}`))))));
    },
    onError: (e) => mount(events, h('p.muted', failure(e, t('action.listEvents')))),
  }));
  Promise.all([
    can('create', 'pods', { namespace: ns, subresource: 'exec' }),
    can('delete', 'pods', { namespace: ns }),
    can('get', 'pods', { namespace: ns, subresource: 'log' }),
  ]).then(([x, d, l]) => { mayExec = x; mayDelete = d; mayLogs = l; drawActions(); });
  return { el, stop: () => stops.forEach((s) => s()) };
}

export function podsPage(ctx) {
  const [ns, name, rest] = ctx.params || [];
  if (!ns) return listPage(ctx);
  if (name && !rest) return podPage(ctx, ns, name);
  if (name && rest === 'logs') return logsPage(ctx, { pod: { namespace: ns, name } });
  if (name && rest === 'shell') return terminalPage(ctx, ns, name);
  return { el: h('section.card', h('h1', t('notfound.title')), h('p', t('notfound.text'))), stop: () => {} };
}
