// Time-series line charts for any page (load tests now, node CPU/memory later): uPlot
// (vendored) drawn on a canvas, coloured from the stylesheet's --chart-* variables, sized to
// its container and redrawn when that resizes, updated in place with new data. uPlot writes
// element.style through the CSSOM only, which the console's CSP (no inline styles) allows.
import { h } from './dom.js';

// uPlot is loaded with the first chart, not with the app.
let uPlot = null;
let loading = null;
function library() {
  if (!loading) loading = import('./vendor/uplot-1.6.32.mjs').then((m) => { uPlot = m.default; });
  return loading;
}

const CSS = new URL('./vendor/uplot-1.6.32.css', import.meta.url).href;

function stylesheet() {
  if (!document.querySelector(`link[href="${CSS}"]`)) document.head.append(h('link', { rel: 'stylesheet', href: CSS }));
}

// The theme: series colours and axis/grid colours from CSS custom properties.
function theme() {
  const css = getComputedStyle(document.documentElement);
  const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const palette = [];
  for (let i = 1; i <= 8; i++) palette.push(v(`--chart-${i}`, '#2457c5'));
  return { palette, text: v('--muted', '#667085'), grid: v('--line', '#e3e7ee') };
}

// Tick steps of an x axis in seconds from a start: whole seconds, then round minutes.
const XSTEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

// Axis value texts: 1.2k, 3.4M; `unit` appended.
// `digits` (decimals) is asked for by an axis whose ticks would otherwise read the same.
export function shortNumber(n, unit = '', digits) {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const a = Math.abs(n);
  const d = (x) => (digits === undefined ? x : digits);
  let text;
  if (a >= 1e9) text = `${+(n / 1e9).toFixed(d(1))}G`;
  else if (a >= 1e6) text = `${+(n / 1e6).toFixed(d(1))}M`;
  else if (a >= 1e4) text = `${+(n / 1e3).toFixed(d(1))}k`;
  else if (a >= 100) text = String(+n.toFixed(d(0)));
  else text = String(+n.toFixed(d(a >= 10 ? 1 : 2)));
  return unit ? `${text} ${unit}` : text;
}

// Tick texts of a y axis: more decimals when the usual ones would repeat a text.
function ticks(value, ys) {
  let texts = ys.map((y) => value(y));
  for (let digits = 2; digits <= 4 && new Set(texts).size < texts.length; digits++) {
    texts = ys.map((y) => value(y, digits));
  }
  return texts;
}

// Seconds on the x axis as m:ss.
export function clock(s) {
  if (!Number.isFinite(s)) return '';
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

// Labels of a time axis (x in Unix seconds), one line each, in the viewer's time zone: h:mm:ss
// when ticks are seconds apart, h:mm when minutes or hours apart, M/D when days apart (uPlot's
// own two-line labels put the date under the first tick and under each new minute, and two
// such neighbours overlap on a narrow chart).
function timeTicks(u, xs, axisIdx, space, incr) {
  return xs.map((x) => {
    const d = new Date(x * 1000);
    const hm = `${d.getHours()}:${String(d.getMinutes()).padStart(2, '0')}`;
    if (incr < 60) return `${hm}:${String(d.getSeconds()).padStart(2, '0')}`;
    if (incr < 86400) return hm;
    return `${d.getMonth() + 1}/${d.getDate()}`;
  });
}

// A line chart of series over a shared x.
//   title: the heading; id: the element's id; series: [{ label, right }] (`right`: on a second
//   y axis at the right, for values of another magnitude); height (px);
//   value(n, digits): formats a y value (axis and legend; `digits` when ticks need more); xValue(x): formats an x value;
//   time: x is a Unix time in seconds (default: seconds from a start, shown m:ss);
//   xLabel: what x is, in the legend.
// Returns { el, set(xs, ys), setSeries(series, xs, ys), stop() }: `ys` is one array per series,
// aligned with `xs` (null where there is no value). Nothing is drawn while the element is not
// laid out; it draws when it gets a width.
export function lineChart({ title, id, series, height = 200, value = (n, digits) => shortNumber(n, '', digits), xValue = clock, time = false, xLabel = 'x' }) {
  stylesheet();
  library();
  const plotBox = h('div.chart-plot');
  const el = h('figure.chart', { id }, h('figcaption', title), plotBox);
  let labels = series.map((s) => s.label);
  let scales = series.map((s) => (s.right ? 'right' : 'y'));
  let data = [[], ...labels.map(() => [])];
  let plot = null;
  let stopped = false;

  const width = () => Math.max(0, Math.floor(plotBox.clientWidth));

  function options(w) {
    const th = theme();
    return {
      width: w,
      height,
      scales: { x: { time }, ...(scales.includes('right') ? { right: { auto: true } } : {}) },
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      series: [
        { label: xLabel, value: (u, x) => (x === null || x === undefined ? '—' : xValue(x)) },
        ...labels.map((label, i) => ({
          label,
          scale: scales[i] || 'y',
          stroke: th.palette[i % th.palette.length],
          width: 1.5,
          spanGaps: true,
          points: { show: false },
          value: (u, y) => value(y),
        })),
      ],
      axes: [
        { stroke: th.text, grid: { stroke: th.grid, width: 1 }, ticks: { stroke: th.grid }, values: time ? timeTicks : (u, xs) => xs.map(xValue), incrs: time ? undefined : XSTEPS, space: 60 },
        { stroke: th.text, grid: { stroke: th.grid, width: 1 }, ticks: { stroke: th.grid }, size: 72, values: (u, ys) => ticks(value, ys) },
        // series on the `right` scale (much smaller or larger than the others) get their own axis
        scales.includes('right')
          ? { scale: 'right', side: 1, stroke: th.text, grid: { show: false }, ticks: { stroke: th.grid }, size: 72, values: (u, ys) => ticks(value, ys) }
          : null,
      ].filter(Boolean),
    };
  }

  function draw() {
    const w = width();
    if (!w || stopped) return;
    if (!uPlot) { library().then(draw); return; }
    if (!plot) {
      plot = new uPlot(options(w), data, plotBox);
      return;
    }
    if (plot.width !== w) plot.setSize({ width: w, height });
    plot.setData(data);
  }

  const observer = new ResizeObserver(() => {
    const w = width();
    if (!plot) draw();
    else if (w && w !== plot.width) plot.setSize({ width: w, height });
  });
  observer.observe(plotBox);

  function set(xs, ys) {
    data = [xs, ...ys];
    el.dataset.points = String(xs.length);
    draw();
  }

  // New series (a run added to a comparison, a pod that appeared): the chart is rebuilt.
  function setSeries(next, xs, ys) {
    labels = next.map((s) => s.label);
    scales = next.map((s) => (s.right ? 'right' : 'y'));
    data = [xs, ...ys];
    el.dataset.points = String(xs.length);
    el.dataset.series = String(labels.length);
    if (plot) { plot.destroy(); plot = null; }
    draw();
  }

  function stop() {
    stopped = true;
    observer.disconnect();
    if (plot) { plot.destroy(); plot = null; }
  }

  return { el, set, setSeries, stop };
}

// Several [xs, ys] tables (runs with their own seconds) on one shared x: the union of the
// xs, sorted, with null where a table has no value.
export function alignTables(tables) {
  const xs = [...new Set(tables.flatMap(([x]) => x))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = tables.map(([x, y]) => {
    const out = new Array(xs.length).fill(null);
    x.forEach((xv, i) => { out[at.get(xv)] = y[i]; });
    return out;
  });
  return { xs, ys };
}
