// Cluster log search: the server's stored container logs (also of pods and nodes that are gone)
// through `/v1-mini/logs/search` — time range, namespace, pod, container, pod labels, text as a
// substring or a regular expression, newest or oldest first, pages by the API's cursor — and a
// live tail through `/v1-mini/logs/tail`. The API answers only from namespaces whose logs the
// person may read.
import { get } from './api.js';
import { t } from './i18n.js';
import { h, mount } from './dom.js';
import { enc, failure } from './kube.js';

const RANGES = ['15m', '1h', '6h', '24h', '3d', '7d'];
const PAGES = [10, 50, 200, 1000];
const MAX_SHOWN = 5000;

const quoted = (v) => JSON.stringify(v);

// The LogQL query of the form, as `mini logs search` builds it from its options. Throws an
// Error naming the field for a label that is not key=value.
export function logql({ namespace, pod, container, labels, text, regex }) {
  const pattern = (v) => /[*|]/.test(v) || v.includes('.*');
  const matchers = [];
  for (const [label, value] of [['namespace', namespace], ['pod', pod], ['container', container]]) {
    const v = (value || '').trim();
    if (v) matchers.push(`${label}${pattern(v) ? '=~' : '='}${quoted(v)}`);
  }
  for (const part of (labels || '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(t('search.badLabel', { label: part }));
    matchers.push(`${part.slice(0, eq).trim()}=${quoted(part.slice(eq + 1).trim())}`);
  }
  if (!matchers.length) matchers.push('namespace=~".+"');
  const filter = text ? ` ${regex ? '|~' : '|='} ${quoted(text)}` : '';
  return `{${matchers.join(', ')}}${filter}`;
}

function localToIso(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

export function logSearchPage(ctx) {
  const field = (id, attrs = {}) => h(`input#${id}`, { type: 'text', ...attrs });
  const namespace = field('search-namespace', { value: ctx.namespace || '', placeholder: t('ns.all') });
  const pod = field('search-pod', { placeholder: t('search.podHint') });
  const container = field('search-container');
  const labels = field('search-labels', { placeholder: 'app=web, tier=front' });
  const text = h('input#search-text', { type: 'search', placeholder: t('search.textHint') });
  const regex = h('input#search-regex', { type: 'checkbox' });
  const range = h('select#search-range',
    RANGES.map((r) => h('option', { value: r }, t(`search.last.${r}`))),
    h('option', { value: 'custom' }, t('search.custom')));
  range.value = '1h';
  const from = h('input#search-from', { type: 'datetime-local', step: 1 });
  const to = h('input#search-to', { type: 'datetime-local', step: 1 });
  const custom = h('span.custom-range', { hidden: true },
    h('label', h('span', t('search.from')), from), h('label', h('span', t('search.to')), to));
  range.onchange = () => { custom.hidden = range.value !== 'custom'; };
  const order = h('select#search-order',
    h('option', { value: 'backward' }, t('search.newest')), h('option', { value: 'forward' }, t('search.oldest')));
  const limit = h('select#search-limit', PAGES.map((n) => h('option', { value: String(n) }, String(n))));
  limit.value = '200';
  const live = h('input#search-live', { type: 'checkbox' });
  const submit = h('button.primary', { type: 'submit', id: 'search-submit' }, t('search.submit'));
  const more = h('button#search-more', { type: 'button', hidden: true }, t('search.more'));
  const status = h('p#search-status.muted');
  const view = h('div#search-results.log-view.wrap.stamps', { role: 'log', 'aria-live': 'off' });

  let shown = 0;
  let cursor = null;
  let params = null;
  let tail = null; // AbortController of the live tail
  let generation = 0;

  const lineEl = (r) => {
    const l = r.labels || {};
    return h('div.line', h('span.ts', r.time), h('span.src', `[${l.namespace || ''}/${l.pod || ''}/${l.container || ''}] `), r.line);
  };

  // records in the order they came (a page, or tailed lines oldest first); atTop puts the
  // newest on top.
  function add(records, atTop) {
    const nodes = records.map(lineEl);
    if (atTop) view.prepend(...nodes.reverse()); else view.append(...nodes);
    shown += records.length;
    while (shown > MAX_SHOWN) {
      (atTop ? view.lastChild : view.firstChild).remove();
      shown--;
    }
  }

  function stopTail() {
    if (tail) tail.abort();
    tail = null;
  }

  async function startTail(query) {
    stopTail();
    const abort = new AbortController();
    tail = abort;
    const url = `/v1-mini/logs/tail?query=${enc(query)}&start=${enc(new Date().toISOString())}`;
    try {
      const res = await fetch(url, { headers: { Accept: 'application/x-ndjson' }, credentials: 'same-origin', signal: abort.signal });
      if (!res.ok) {
        let message = res.statusText;
        try { message = (await res.json()).message || message; } catch (_) { /* not JSON */ }
        throw Object.assign(new Error(message), { status: res.status });
      }
      status.textContent = t('search.tailing');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const records = [];
        let nl;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (line) records.push(JSON.parse(line));
        }
        // new lines go where the newest are: on top when newest first
        if (records.length) add(records, order.value === 'backward');
      }
      if (tail === abort) status.textContent = t('search.tailEnded');
    } catch (e) {
      if (e.name === 'AbortError') return;
      status.textContent = failure(e, t('action.searchLogs'));
    } finally {
      if (tail === abort) { tail = null; live.checked = false; }
    }
  }

  async function page(first) {
    const mine = generation;
    const q = new URLSearchParams(params);
    q.set('limit', limit.value);
    if (cursor && !first) q.set('cursor', cursor);
    more.disabled = true;
    try {
      const body = await get(`/v1-mini/logs/search?${q}`);
      if (mine !== generation) return;
      const records = body.records || [];
      add(records, false);
      cursor = body.nextCursor || null;
      more.hidden = !cursor;
      status.textContent = shown
        ? t('search.found', { n: shown }) + (body.truncatedByTimeBudget ? ` ${t('search.truncated')}` : '')
        : t('search.none');
    } catch (e) {
      if (mine !== generation) return;
      status.textContent = e.status === 400 ? t('error.generic', { message: e.message }) : failure(e, t('action.searchLogs'));
    } finally {
      more.disabled = false;
    }
  }

  async function search() {
    generation++;
    stopTail();
    let query;
    try {
      query = logql({ namespace: namespace.value, pod: pod.value, container: container.value,
        labels: labels.value, text: text.value, regex: regex.checked });
    } catch (e) {
      status.textContent = e.message;
      return;
    }
    params = { query, direction: order.value };
    if (range.value === 'custom') {
      const start = localToIso(from.value);
      const end = localToIso(to.value);
      if (!start) { status.textContent = t('search.needFrom'); return; }
      params.start = start;
      if (end) params.end = end;
    } else {
      params.since = range.value;
    }
    mount(view);
    shown = 0;
    cursor = null;
    more.hidden = true;
    status.textContent = t('loading');
    await page(true);
    if (live.checked) startTail(query);
  }

  more.onclick = () => page(false);
  // turning the tail on searches again with the form as it is now, then follows
  live.onchange = () => {
    if (live.checked) { search(); return; }
    stopTail();
    status.textContent = shown ? t('search.found', { n: shown }) : '';
  };

  const form = h('form.search-form', { onsubmit: (e) => { e.preventDefault(); search(); } },
    h('div.row',
      h('label', h('span', t('namespace')), namespace),
      h('label', h('span', t('search.pod')), pod),
      h('label', h('span', t('apps.container')), container),
      h('label', h('span', t('search.labels')), labels)),
    h('div.row',
      h('label.grow', h('span', t('search.text')), text),
      h('label.check', regex, h('span', t('search.regex')))),
    h('div.row',
      h('label', h('span', t('search.range')), range), custom,
      h('label', h('span', t('search.order')), order),
      h('label', h('span', t('search.limit')), limit),
      h('label.check', live, h('span', t('search.live'))),
      submit));
  const el = h('div.log-search',
    h('h1', t('nav.logsearch')),
    h('section.card', form),
    status, view, h('div.actions', more));
  return { el, stop: () => { generation++; stopTail(); } };
}
