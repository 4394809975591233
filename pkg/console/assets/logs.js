// Logs of one pod's container, or of all pods of an application merged by time: the API's
// `pods/log` with timestamps, streamed with `follow=true` (or the previous container's log),
// the last N lines first; search (lines not matching are hidden), wrap, timestamps on/off,
// and download of what is shown. Pods of an application that appear later join the stream.
import { get, watchList } from './api.js';
import { t } from './i18n.js';
import { h, mount } from './dom.js';
import { enc, workloadPath, selectorString, failure } from './kube.js';

const MAX_LINES = 20000;

// "2024-05-01T10:00:00.5Z rest" -> ["2024-05-01T10:00:00.500000000Z", "rest"]; the time
// padded to nanoseconds so times compare as strings.
export function splitTimestamp(line) {
  const space = line.indexOf(' ');
  const head = space > 0 ? line.slice(0, space) : '';
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$/.exec(head);
  if (!m) return ['', line];
  const frac = (m[2] || '.').padEnd(10, '0').slice(0, 10);
  return [`${m[1]}${frac}${m[3]}`, line.slice(space + 1)];
}

// Where a line with time `ts` goes in `lines` (sorted by ts): after every line not later.
export function insertionIndex(lines, ts) {
  let lo = 0;
  let hi = lines.length;
  if (!hi || lines[hi - 1].ts <= ts) return hi;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (lines[mid].ts <= ts) lo = mid + 1; else hi = mid;
  }
  return lo;
}

export function logsPage(ctx, target) {
  const ns = target.pod ? target.pod.namespace : target.workload.namespace;
  const title = target.pod ? target.pod.name : target.workload.name;
  const merged = Boolean(target.workload);
  const container = h('select#log-container');
  const follow = h('input#log-follow', { type: 'checkbox', checked: true });
  const previous = h('input#log-previous', { type: 'checkbox' });
  const stamps = h('input#log-timestamps', { type: 'checkbox' });
  const wrap = h('input#log-wrap', { type: 'checkbox', checked: true });
  const tail = h('select#log-tail', ['100', '500', '2000', 'all'].map((n) => h('option', { value: n }, n === 'all' ? t('logs.all') : n)));
  tail.value = '500';
  const search = h('input#log-search', { type: 'search', placeholder: t('logs.search') });
  const download = h('button#log-download', { type: 'button' }, t('logs.download'));
  const status = h('span#log-status.muted');
  const view = h('div#log-lines.log-view.wrap', { role: 'log', 'aria-live': 'off' });
  const back = target.pod
    ? `/console/pods/${enc(ns)}/${enc(title)}`
    : `/console/apps/${target.workload.plural}/${enc(ns)}/${enc(title)}`;
  const el = h('div.logs',
    h('p.crumbs', h('a', { href: back, 'data-link': '' }, title)),
    h('h1', merged ? t('logs.titleApp', { name: title }) : t('logs.title', { name: title })),
    h('div.log-tools',
      h('label', h('span', t('apps.container')), container),
      h('label', h('span', t('logs.tail')), tail),
      h('label.check', follow, h('span', t('logs.follow'))),
      h('label.check', previous, h('span', t('logs.previous'))),
      h('label.check', stamps, h('span', t('logs.timestamps'))),
      h('label.check', wrap, h('span', t('logs.wrap'))),
      search, download, status),
    view);

  let lines = []; // { ts, text, source, el }
  let query = '';
  let sources = new Map(); // source -> AbortController, while it streams
  let opened = new Set(); // sources streamed since the last restart
  let generation = 0;
  let stopped = false;
  let stopPods = null;
  let pods = [];

  const matches = (l) => !query || l.text.toLowerCase().includes(query) || l.source.toLowerCase().includes(query);

  function lineEl(l) {
    const div = h('div.line', h('span.ts', l.ts), merged ? h('span.src', `[${l.source}] `) : null, l.text);
    if (!matches(l)) div.classList.add('hidden');
    return div;
  }

  function add(batch) {
    const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 40;
    const frag = document.createDocumentFragment();
    for (const l of batch) {
      l.el = lineEl(l);
      const at = insertionIndex(lines, l.ts);
      if (at === lines.length) {
        lines.push(l);
        frag.append(l.el);
      } else {
        if (frag.childNodes.length) view.append(frag);
        view.insertBefore(l.el, lines[at].el);
        lines.splice(at, 0, l);
      }
    }
    if (frag.childNodes.length) view.append(frag);
    if (lines.length > MAX_LINES) {
      for (const l of lines.splice(0, lines.length - MAX_LINES)) l.el.remove();
    }
    if (atBottom && follow.checked) view.scrollTop = view.scrollHeight;
  }

  function showStatus() {
    const n = sources.size;
    status.textContent = n ? t(follow.checked && !previous.checked ? 'logs.following' : 'logs.streams', { n }) : '';
  }

  async function stream(pod, gen) {
    const c = container.value;
    const key = merged ? pod : `${pod}/${c}`;
    if (opened.has(key)) return;
    opened.add(key);
    let failed = false;
    const abort = new AbortController();
    sources.set(key, abort);
    showStatus();
    const q = new URLSearchParams({ container: c, timestamps: 'true' });
    if (tail.value !== 'all') q.set('tailLines', tail.value);
    if (previous.checked) q.set('previous', 'true');
    else if (follow.checked) q.set('follow', 'true');
    try {
      const res = await fetch(`/api/v1/namespaces/${enc(ns)}/pods/${enc(pod)}/log?${q}`,
        { credentials: 'same-origin', signal: abort.signal });
      if (!res.ok) {
        let message = `HTTP ${res.status}`;
        try { message = (await res.json()).message || message; } catch (_) { /* not JSON */ }
        if (gen === generation) status.textContent = failure({ status: res.status, message }, t('action.readLogs', { name: pod }));
        failed = true;
        return;
      }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== generation) break;
        buffer += value;
        const cut = buffer.lastIndexOf('\n');
        if (cut < 0) continue;
        const batch = buffer.slice(0, cut).split('\n').map((line) => {
          const [ts, text] = splitTimestamp(line);
          return { ts, text, source: pod };
        });
        buffer = buffer.slice(cut + 1);
        add(batch);
      }
      if (buffer && gen === generation) {
        const [ts, text] = splitTimestamp(buffer);
        add([{ ts, text, source: pod }]);
      }
    } catch (e) {
      if (e.name !== 'AbortError' && gen === generation) { failed = true; status.textContent = t('error.generic', { message: e.message }); }
    } finally {
      if (sources.get(key) === abort) sources.delete(key);
      if (gen === generation && !failed) showStatus();
    }
  }

  function restart() {
    generation++;
    for (const a of sources.values()) a.abort();
    sources = new Map();
    opened = new Set();
    lines = [];
    view.replaceChildren();
    status.textContent = '';
    const gen = generation;
    if (merged) {
      for (const p of pods) if (started(p)) stream(p.metadata.name, gen);
    } else {
      stream(title, gen);
    }
  }

  const started = (p) => ((p.status && p.status.containerStatuses) || [])
    .some((s) => s.state && (s.state.running || s.state.terminated));

  function fillContainers(names) {
    const keep = container.value;
    mount(container, names.map((n) => h('option', { value: n }, n)));
    if (names.includes(keep)) container.value = keep;
  }

  for (const input of [container, follow, previous, tail]) input.onchange = restart;
  stamps.onchange = () => view.classList.toggle('stamps', stamps.checked);
  wrap.onchange = () => view.classList.toggle('wrap', wrap.checked);
  search.oninput = () => {
    query = search.value.trim().toLowerCase();
    for (const l of lines) l.el.classList.toggle('hidden', !matches(l));
  };
  download.onclick = () => {
    const text = lines.filter(matches)
      .map((l) => `${stamps.checked && l.ts ? `${l.ts} ` : ''}${merged ? `[${l.source}] ` : ''}${l.text}\n`).join('');
    const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
    const a = h('a', { href: url, download: `${title}.log` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  };

  (async () => {
    try {
      if (target.pod) {
        const pod = await get(`/api/v1/namespaces/${enc(ns)}/pods/${enc(title)}`);
        fillContainers(((pod.spec && pod.spec.containers) || []).map((c) => c.name));
        if (!stopped) restart();
      } else {
        const w = await get(workloadPath(target.workload.plural, ns, title));
        fillContainers(((w.spec.template.spec || {}).containers || []).map((c) => c.name));
        const sel = selectorString(w.spec.selector);
        if (stopped) return;
        stopPods = watchList(`/api/v1/namespaces/${enc(ns)}/pods?labelSelector=${enc(sel)}`, {
          onChange: (items) => {
            pods = items;
            if (previous.checked) return;
            for (const p of items) if (started(p)) stream(p.metadata.name, generation);
          },
          onError: (e) => { status.textContent = failure(e, t('action.listPods')); },
        });
      }
    } catch (e) {
      status.textContent = failure(e, t('action.read', { name: title }));
    }
  })();

  return {
    el,
    stop: () => {
      stopped = true;
      generation++;
      for (const a of sources.values()) a.abort();
      if (stopPods) stopPods();
    },
  };
}
