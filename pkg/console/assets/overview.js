// Overview: nodes ready of total, cluster CPU and memory used against allocatable over time,
// pods by phase and the latest Warning events, all live.
import { watchList, can } from './api.js';
import { t } from './i18n.js';
import { h, mount, age, quantity } from './dom.js';
import { usagePanel, rangePicker, mayReadNodeMetrics } from './nodemetrics.js';

const PHASES = ['Running', 'Pending', 'Succeeded', 'Failed', 'Unknown'];

export function nodeReady(node) {
  const c = (node.status && node.status.conditions || []).find((x) => x.type === 'Ready');
  return Boolean(c && c.status === 'True');
}

function forbidden(err) {
  return err.status === 403 ? t('error.forbiddenList') : t('error.generic', { message: err.message });
}

export function overviewPage(ctx) {
  const ns = ctx.namespace;
  const nodesBody = h('div.stat', { id: 'overview-nodes' }, t('loading'));
  const podsBody = h('div', { id: 'overview-pods' }, t('loading'));
  const eventsBody = h('div', { id: 'overview-events' }, t('loading'));
  const nodesCard = h('section.card', h('h2', t('overview.nodes')), nodesBody);
  const usageSlot = h('div');
  const el = h('div.overview',
    h('h1', t('nav.overview')),
    h('div.cards',
      nodesCard,
      h('section.card', h('h2', ns ? t('overview.podsIn', { ns }) : t('overview.pods')), podsBody)),
    usageSlot,
    h('section.card', h('h2', t('overview.warnings')), eventsBody));
  let allNodes = [];
  let usage = null; // the cluster usage panel, once shown
  let drawnAllocatable = ''; // the allocatable figures it was last drawn against

  const stops = [];
  let stopped = false;
  // nodes are cluster-scoped: shown only to those who may list them
  can('list', 'nodes').then((ok) => {
    if (stopped) return;
    if (!ok) { nodesCard.remove(); return; }
    stops.push(watchList('/api/v1/nodes', {
      onChange: (nodes) => {
        allNodes = nodes;
        // nodes change every few seconds (heartbeats): the charts only when allocatable did
        const allocatable = JSON.stringify(nodes.map((n) => n.status && n.status.allocatable));
        if (usage && allocatable !== drawnAllocatable) usage.redraw();
        drawnAllocatable = allocatable;
        const ready = nodes.filter(nodeReady).length;
        mount(nodesBody,
          h('span.big', { id: 'nodes-ready' }, String(ready)),
          h('span.of', ` / ${nodes.length}`),
          h('span.label', t('overview.ready')));
      },
      onError: (e) => mount(nodesBody, h('p.muted', forbidden(e))),
    }));
  });

  // cluster totals: usage summed over the nodes' samples, against the sum of their allocatable
  Promise.all([can('list', 'nodes'), mayReadNodeMetrics()]).then(([list, metrics]) => {
    if (stopped || !list || !metrics) return;
    const sum = (key) => allNodes.reduce((acc, n) => acc + (quantity(n.status && n.status.allocatable && n.status.allocatable[key]) || 0), 0);
    const panel = usagePanel({ id: 'cluster-usage', node: '', allocatable: () => ({ cpu: sum('cpu'), memory: sum('memory') }) });
    usage = panel;
    const picker = rangePicker('overview-range', '1h', (key) => panel.setRange(key));
    mount(usageSlot, h('section.card', { id: 'overview-usage' }, h('div.title-row', h('h2', t('overview.usage')), picker), panel.el));
    stops.push(() => panel.stop());
  });

  const base = ns ? `/api/v1/namespaces/${encodeURIComponent(ns)}` : '/api/v1';
  stops.push(watchList(`${base}/pods`, {
    onChange: (pods) => {
      const counts = Object.fromEntries(PHASES.map((p) => [p, 0]));
      for (const p of pods) {
        const phase = (p.status && p.status.phase) || 'Unknown';
        counts[phase] = (counts[phase] || 0) + 1;
      }
      const total = pods.length || 1;
      mount(podsBody,
        h('p.total', t('overview.podsTotal', { n: pods.length })),
        h('ul.phases', PHASES.map((phase) => {
          const bar = h(`span.bar.phase-${phase.toLowerCase()}`);
          bar.style.width = `${(100 * counts[phase]) / total}%`;
          return h('li', { 'data-phase': phase },
            h('span.name', t(`phase.${phase}`)),
            h('span.track', bar),
            h('span.count', String(counts[phase])));
        })));
    },
    onError: (e) => mount(podsBody, h('p.muted', forbidden(e))),
  }));

  stops.push(watchList(`${base}/events`, {
    onChange: (events) => {
      const when = (e) => e.lastTimestamp || e.eventTime || e.firstTimestamp || e.metadata.creationTimestamp;
      const warnings = events.filter((e) => e.type === 'Warning')
        .sort((a, b) => Date.parse(when(b)) - Date.parse(when(a)))
        .slice(0, 12);
      if (!warnings.length) { mount(eventsBody, h('p.muted', t('overview.noWarnings'))); return; }
      mount(eventsBody, h('table.list',
        h('thead', h('tr', h('th', t('col.age')), h('th', t('col.object')), h('th', t('col.reason')), h('th', t('col.message')))),
        h('tbody', warnings.map((e) => h('tr',
          h('td', age(when(e))),
          h('td', `${ns ? '' : `${e.metadata.namespace}: `}${(e.involvedObject && e.involvedObject.kind) || ''}/${(e.involvedObject && e.involvedObject.name) || ''}`),
          h('td', e.reason || ''),
          h('td.event-message', e.message || ''))))));
    },
    onError: (e) => mount(eventsBody, h('p.muted', forbidden(e))),
  }));

  return { el, stop: () => { stopped = true; stops.forEach((s) => s()); } };
}
