// Node CPU and memory, used against allocatable, over time: one node (the Nodes page's row
// details) or the whole cluster (Overview), read from the server's Prometheus query API
// (/prometheus/api/v1/query_range), with a range picker and refreshed while shown.
import { get, can } from './api.js';
import { t } from './i18n.js';
import { h, mount, bytes, cores } from './dom.js';
import { lineChart, shortNumber } from './chart.js';

const REFRESH_MS = 15000;

// Ranges offered: seconds covered, the query step and the rate() window (≥ 2 samples of 10 s).
export const RANGES = [
  { key: '1h', seconds: 3600, step: 30, window: '1m' },
  { key: '6h', seconds: 6 * 3600, step: 120, window: '5m' },
  { key: '24h', seconds: 24 * 3600, step: 600, window: '10m' },
  { key: '7d', seconds: 7 * 86400, step: 3600, window: '1h' },
];

export function rangeOf(key) { return RANGES.find((r) => r.key === key) || RANGES[0]; }

// Whether node figures may be read: the server asks for `get nodes/metrics`.
export function mayReadNodeMetrics() { return can('get', 'nodes', { subresource: 'metrics' }); }

// The range picker: a <select> calling `onChange(key)`.
export function rangePicker(id, value, onChange) {
  const select = h('select.range', { id, 'aria-label': t('metrics.range'), onchange: () => onChange(select.value) },
    RANGES.map((r) => h('option', { value: r.key }, t(`metrics.range.${r.key}`))));
  select.value = value;
  return select;
}

// PromQL label matcher value: quotes and backslashes escaped.
const quoted = (s) => `"${String(s).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

// The queries: used cores and used bytes, of one node (`node`) or summed over all.
export function queries(node, range) {
  const sel = node ? `node=${quoted(node)}` : '';
  const cpuSel = `{${[sel, 'mode!="idle"', 'mode!="iowait"', 'mode!="steal"'].filter(Boolean).join(',')}}`;
  const memSel = node ? `{${sel}}` : '';
  return {
    cpu: `sum(rate(node_cpu_seconds_total${cpuSel}[${range.window}]))`,
    memory: `sum(node_memory_MemTotal_bytes${memSel} - node_memory_MemAvailable_bytes${memSel})`,
  };
}

async function queryRange(expr, range, end) {
  const start = end - range.seconds;
  const params = new URLSearchParams({ query: expr, start: String(start), end: String(end), step: String(range.step) });
  const body = await get(`/prometheus/api/v1/query_range?${params}`);
  const series = (body && body.data && body.data.result) || [];
  const values = series.length ? series[0].values || [] : [];
  return values.map(([x, y]) => [Number(x), Number(y)]);
}

const timeText = (x) => new Date(x * 1000).toLocaleString([], { month: 'numeric', day: 'numeric', hour: '2-digit', minute: '2-digit' });

// A panel of two charts (CPU cores, memory bytes: used and allocatable) and the current figures.
//   id: prefix of element ids; node: a node's name, or '' for the cluster;
//   allocatable(): { cpu, memory } (numbers, cores and bytes) now; range: a RANGES key.
// Returns { el, setRange(key), refresh(), redraw() (after allocatable() changed), stop() }.
export function usagePanel({ id, node, allocatable, range = '1h' }) {
  let current = rangeOf(range);
  const now = h('p.usage-now', { id: `${id}-now` }, t('loading'));
  const cpu = lineChart({
    id: `${id}-cpu`, title: t('metrics.cpu'), time: true, xValue: timeText, xLabel: t('metrics.time'),
    series: [{ label: t('metrics.used') }, { label: t('metrics.allocatable') }],
    value: (n, d) => (Number.isFinite(n) ? `${shortNumber(n, '', d)} ${t('metrics.cores')}` : '—'),
  });
  const memory = lineChart({
    id: `${id}-memory`, title: t('metrics.memory'), time: true, xValue: timeText, xLabel: t('metrics.time'),
    series: [{ label: t('metrics.used') }, { label: t('metrics.allocatable') }],
    value: (n) => bytes(n),
  });
  const el = h('div.usage', { id }, now, h('div.usage-charts', cpu.el, memory.el));
  let stopped = false;
  let timer = null;
  let generation = 0;

  // the last points fetched, drawn again when the allocatable figures change (the nodes
  // arrive after the first query, or a node joins)
  let fetched = null;

  function draw() {
    if (!fetched) return;
    const { c, m } = fetched;
    const known = (v) => (Number.isFinite(v) && v > 0 ? v : NaN);
    const a = allocatable();
    const alloc = { cpu: known(a.cpu), memory: known(a.memory) };
    const finite = (v) => (Number.isFinite(v) ? v : null);
    const plot = (chart, points, total) => chart.set(points.map(([x]) => x), [points.map(([, y]) => finite(y)), points.map(() => finite(total))]);
    plot(cpu, c, alloc.cpu);
    plot(memory, m, alloc.memory);
    const last = (points) => (points.length ? points[points.length - 1][1] : NaN);
    const lc = last(c);
    const lm = last(m);
    mount(now,
      h('span.figure', { id: `${id}-cpu-now` }, t('metrics.cpuNow', { used: cores(lc), alloc: cores(alloc.cpu), pct: pct(lc, alloc.cpu) })),
      h('span.figure', { id: `${id}-memory-now` }, t('metrics.memoryNow', { used: bytes(lm), alloc: bytes(alloc.memory), pct: pct(lm, alloc.memory) })));
  }

  async function refresh() {
    const mine = ++generation;
    clearTimeout(timer);
    const end = Math.floor(Date.now() / 1000);
    const q = queries(node, current);
    try {
      const [c, m] = await Promise.all([queryRange(q.cpu, current, end), queryRange(q.memory, current, end)]);
      if (stopped || mine !== generation) return;
      fetched = { c, m };
      draw();
    } catch (e) {
      if (stopped || mine !== generation) return;
      mount(now, h('span.muted', e.status === 403 ? t('metrics.forbidden') : t('error.generic', { message: e.message })));
    }
    if (!stopped && mine === generation) timer = setTimeout(refresh, REFRESH_MS);
  }

  function setRange(key) { current = rangeOf(key); refresh(); }

  function stop() {
    stopped = true;
    clearTimeout(timer);
    cpu.stop();
    memory.stop();
  }

  refresh();
  return { el, setRange, refresh, redraw: draw, stop };
}

function pct(used, alloc) {
  if (!Number.isFinite(used) || !Number.isFinite(alloc) || alloc <= 0) return '—';
  return String(Math.round((100 * used) / alloc));
}
