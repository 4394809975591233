// Nodes: status, roles, kubelet version, allocatable CPU and memory, pods per node, live;
// per node CPU and memory used against allocatable over time (row details); cordon, uncordon,
// drain (evictions that respect PodDisruptionBudgets, cancellable; as kubectl, DaemonSet pods stay
// and pods no controller manages go only when the person ticks that they may) and remove for
// those allowed;
// the join command with a fresh bootstrap token for those allowed to create Secrets in kube-system.
import { watchList, patch, post, get, request, can, ApiError } from './api.js';
import { t } from './i18n.js';
import { h, mount, age, quantity, bytes, cores } from './dom.js';
import { nodeReady } from './overview.js';
import { ask } from './dialog.js';
import { usagePanel, rangePicker, mayReadNodeMetrics } from './nodemetrics.js';

const TOKEN_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
const TOKEN_TTL_HOURS = 24;

function roles(node) {
  const r = Object.keys(node.metadata.labels || {})
    .filter((k) => k.startsWith('node-role.kubernetes.io/'))
    .map((k) => k.slice('node-role.kubernetes.io/'.length))
    .filter(Boolean);
  return r.length ? r.join(', ') : '—';
}

function randomString(n) {
  const out = [];
  const buf = new Uint8Array(n * 2);
  while (out.length < n) {
    crypto.getRandomValues(buf);
    for (const b of buf) {
      if (b < 252 && out.length < n) out.push(TOKEN_ALPHABET[b % 36]);
    }
  }
  return out.join('');
}

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// As `mini token create`: a bootstrap-token Secret in kube-system, then the CA-pinned token.
export async function createJoinToken() {
  const caRes = await fetch('/cacerts', { credentials: 'same-origin' });
  if (!caRes.ok) throw new ApiError(caRes.status, `fetching /cacerts: HTTP ${caRes.status}`);
  const ca = await caRes.text();
  const expiration = new Date(Date.now() + TOKEN_TTL_HOURS * 3600 * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
  for (let attempt = 0; ; attempt++) {
    const id = randomString(6);
    const secret = randomString(16);
    const body = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: `bootstrap-token-${id}`, namespace: 'kube-system' },
      type: 'bootstrap.kubernetes.io/token',
      stringData: {
        'token-id': id,
        'token-secret': secret,
        expiration,
        description: 'created in the web console',
        'usage-bootstrap-authentication': 'true',
        'usage-bootstrap-signing': 'true',
      },
    };
    try {
      await post('/api/v1/namespaces/kube-system/secrets', body);
    } catch (e) {
      if (e.status === 409 && attempt < 4) continue;
      throw e;
    }
    return { token: `K10${await sha256Hex(ca)}::${id}.${secret}`, expiration };
  }
}

export function joinCommand(host, token) {
  return `curl -sfLk https://${host}/install.sh | sudo MINI_URL=https://${host} MINI_TOKEN=${token} sh -`;
}

function joinSection(ctx) {
  const out = h('div.join-out', { id: 'join-out' });
  const button = h('button.primary', { type: 'button', id: 'join-create', onclick: async () => {
    button.disabled = true;
    try {
      const { token, expiration } = await createJoinToken();
      const cmd = joinCommand(location.host, token);
      const copy = h('button', { type: 'button', onclick: async () => {
        try { await navigator.clipboard.writeText(cmd); ctx.notify(t('copied'), 'info'); } catch (_) { /* no clipboard */ }
      } }, t('copy'));
      mount(out,
        h('pre.command', { id: 'join-command' }, cmd),
        h('p.muted', t('nodes.joinExpires', { when: new Date(expiration).toLocaleString() })),
        copy);
    } catch (e) {
      ctx.notify(e.status === 403 ? t('error.forbidden', { action: t('action.createToken') }) : t('error.generic', { message: e.message }));
    } finally {
      button.disabled = false;
    }
  } }, t('nodes.joinCreate'));
  return h('section.card', { id: 'join' }, h('h2', t('nodes.join')), h('p', t('nodes.joinText')), button, out);
}

// Pods a drain leaves alone, as `kubectl drain --ignore-daemonsets`: mirror pods (the node's
// static pods) and those of DaemonSets (their controller would put them back at once).
export function drainSkips(pod) {
  const annotations = pod.metadata.annotations || {};
  if (annotations['kubernetes.io/config.mirror']) return true;
  return (pod.metadata.ownerReferences || []).some((o) => o.controller && o.kind === 'DaemonSet');
}

// Pods `kubectl drain` refuses to evict without --force: running ones that no controller
// manages (nothing recreates them elsewhere), DaemonSet and static pods aside.
export function drainUnmanaged(pod) {
  if (drainSkips(pod)) return false;
  const phase = pod.status && pod.status.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return false;
  return !(pod.metadata.ownerReferences || []).some((o) => o.controller);
}

const podName = (p) => `${p.metadata.namespace}/${p.metadata.name}`;

export function podsOnNode(name) {
  return get(`/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${name}`)}`).then((l) => l.items || []);
}

const DRAIN_POLL_MS = 2000;

// Drains `name`: cordons it, then evicts its pods through the Eviction API until none is left.
// A 429 (a PodDisruptionBudget allows no disruption now) marks the pod blocked and is retried.
// Without `force` a pod no controller manages stops the drain before anything is evicted (before
// the cordon if it is there from the start), as `kubectl drain` without --force does.
// `onProgress({ left, blocked: Map(pod → message), done, error })`; returns { cancel() }:
// cancelling stops evicting (the node stays cordoned).
export function drainNode(name, onProgress, { force = false } = {}) {
  let cancelled = false;
  let wake = null;
  const sleep = (ms) => new Promise((r) => { const id = setTimeout(r, ms); wake = () => { clearTimeout(id); r(); }; });
  (async () => {
    try {
      let cordoned = false;
      for (;;) {
        if (cancelled) return;
        const all = await podsOnNode(name);
        const unmanaged = force ? [] : all.filter(drainUnmanaged);
        if (unmanaged.length) {
          throw new Error(t('nodes.drainNeedsForce', { n: unmanaged.length, pods: unmanaged.map(podName).join(', ') }));
        }
        if (!cordoned) {
          await patch(`/api/v1/nodes/${encodeURIComponent(name)}`, { spec: { unschedulable: true } });
          cordoned = true;
        }
        const pods = all.filter((p) => !drainSkips(p)
          && !(p.status && (p.status.phase === 'Succeeded' || p.status.phase === 'Failed') && p.metadata.deletionTimestamp));
        const blocked = new Map();
        for (const p of pods) {
          if (cancelled) return;
          if (p.metadata.deletionTimestamp) continue;
          const ns = p.metadata.namespace;
          const pod = p.metadata.name;
          try {
            await post(`/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(pod)}/eviction`, {
              apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name: pod, namespace: ns },
            });
          } catch (e) {
            if (e.status === 429) blocked.set(`${ns}/${pod}`, e.message);
            else if (e.status !== 404) throw e;
          }
        }
        if (cancelled) return;
        onProgress({ left: pods.length, blocked, done: pods.length === 0 });
        if (!pods.length) return;
        await sleep(DRAIN_POLL_MS);
      }
    } catch (e) {
      if (!cancelled) onProgress({ left: NaN, blocked: new Map(), done: true, error: e });
    }
  })();
  return { cancel: () => { cancelled = true; if (wake) wake(); } };
}

export function nodesPage(ctx) {
  const body = h('div', { id: 'nodes-table' }, t('loading'));
  const joinSlot = h('div');
  const drainsBox = h('div', { id: 'drains' });
  let range = '1h';
  const picker = h('span.range-slot');
  const el = h('div.nodes', h('div.title-row', h('h1', t('nav.nodes')), picker), drainsBox, h('section.card', body), joinSlot);
  let nodes = [];
  let podsPerNode = null;
  let mayPatch = false;
  let mayEvict = false;
  let mayDelete = false;
  let mayMetrics = false;
  // open row details (name → { row, panel }) and drains running or finished (name → state)
  const details = new Map();
  const drains = new Map();

  const forbiddenOr = (e, action) => (e.status === 403
    ? t('error.forbidden', { action })
    : t('error.generic', { message: e.message }));

  async function cordon(node, on) {
    try {
      await patch(`/api/v1/nodes/${encodeURIComponent(node.metadata.name)}`, { spec: { unschedulable: on ? true : null } });
      ctx.notify(t(on ? 'nodes.cordoned' : 'nodes.uncordoned', { name: node.metadata.name }), 'info');
    } catch (e) {
      ctx.notify(forbiddenOr(e, t(on ? 'action.cordon' : 'action.uncordon', { name: node.metadata.name })));
    }
  }

  function allocatableOf(name) {
    const n = nodes.find((x) => x.metadata.name === name);
    const alloc = (n && n.status && n.status.allocatable) || {};
    return { cpu: quantity(alloc.cpu), memory: quantity(alloc.memory) };
  }

  function toggleDetails(name) {
    const open = details.get(name);
    if (open) { open.panel.stop(); details.delete(name); draw(); return; }
    const panel = usagePanel({ id: `usage-${name.replace(/[^a-zA-Z0-9-]/g, '-')}`, node: name, allocatable: () => allocatableOf(name), range });
    const row = h('tr.details', { 'data-details': name }, h('td', { colspan: '10' }, panel.el));
    details.set(name, { row, panel });
    draw();
  }

  function drawDrain(name) {
    const d = drains.get(name);
    if (!d) return;
    const p = d.progress;
    const status = d.cancelled ? t('nodes.drainCancelled', { name })
      : p && p.error ? t('nodes.drainFailed', { name, message: p.error.message })
        : p && p.done ? t('nodes.drainDone', { name })
          : p ? t('nodes.drainLeft', { name, n: p.left }) : t('nodes.drainStarting', { name });
    const finished = Boolean(d.cancelled || (p && p.done));
    // the row's Drain button is offered again once this one is over
    if (d.finished !== finished) { d.finished = finished; if (nodes.length) draw(); }
    mount(d.el,
      h('p.drain-status', status),
      p && p.blocked && p.blocked.size && !finished
        ? h('ul.drain-blocked', [...p.blocked].map(([pod, msg]) => h('li.blocked', { 'data-pod': pod },
          h('strong', pod), ' ', t('nodes.drainBlocked'), h('span.muted', ` (${msg})`))))
        : null,
      finished
        ? h('button', { type: 'button', class: 'drain-close', onclick: () => { drains.delete(name); d.el.remove(); } }, t('close'))
        : h('button.danger', { type: 'button', class: 'drain-cancel', onclick: () => {
          d.cancelled = true; d.handle.cancel(); drawDrain(name);
        } }, t('cancel')));
  }

  async function drain(node) {
    const name = node.metadata.name;
    // as kubectl: DaemonSet and static pods stay; pods no controller manages go only when
    // the person ticks that they may (listed here, since nothing brings them back)
    let pods;
    try {
      pods = await podsOnNode(name);
    } catch (e) {
      ctx.notify(forbiddenOr(e, t('action.drain', { name })));
      return;
    }
    const unmanaged = pods.filter(drainUnmanaged);
    const skipped = pods.filter(drainSkips);
    const answer = await ask({
      title: t('nodes.drainTitle', { name }),
      text: t('nodes.drainText'),
      extra: [
        skipped.length ? h('p#drain-skipped.muted', t('nodes.drainSkipped', { n: skipped.length })) : null,
        unmanaged.length ? h('p', t('nodes.drainUnmanaged', { n: unmanaged.length })) : null,
        unmanaged.length ? h('ul#drain-unmanaged.drain-unmanaged', unmanaged.map((p) => h('li', { 'data-pod': podName(p) }, podName(p)))) : null,
      ],
      fields: unmanaged.length ? [{ name: 'force', label: t('nodes.drainForce'), type: 'checkbox', required: true }] : [],
      ok: t('nodes.drain'),
      danger: true,
    });
    if (!answer || stopped) return;
    const old = drains.get(name);
    if (old) { old.handle.cancel(); old.el.remove(); }
    const d = { el: h('section.card.drain', { 'data-drain': name }), progress: null, cancelled: false, finished: null, handle: null };
    drains.set(name, d);
    drainsBox.append(d.el);
    d.handle = drainNode(name, (progress) => {
      if (d.cancelled) return;
      d.progress = progress;
      if (progress.error) ctx.notify(forbiddenOr(progress.error, t('action.drain', { name })));
      drawDrain(name);
    }, { force: Boolean(answer.force) });
    drawDrain(name);
  }

  async function remove(node) {
    const name = node.metadata.name;
    const answer = await ask({ title: t('nodes.removeTitle', { name }), text: t('nodes.removeText'), ok: t('nodes.remove'), danger: true });
    if (!answer) return;
    try {
      await request('DELETE', `/api/v1/nodes/${encodeURIComponent(name)}`);
      ctx.notify(t('nodes.removed', { name }), 'info');
    } catch (e) {
      ctx.notify(forbiddenOr(e, t('action.removeNode', { name })));
    }
  }

  function actions(n, cordoned, ready) {
    const draining = drains.get(n.metadata.name);
    const busy = Boolean(draining && !draining.finished);
    return h('td.node-actions',
      mayMetrics ? h('button', { type: 'button', class: 'details', 'aria-expanded': details.has(n.metadata.name) ? 'true' : 'false',
        onclick: () => toggleDetails(n.metadata.name) }, details.has(n.metadata.name) ? t('nodes.hideUsage') : t('nodes.showUsage')) : null,
      mayPatch ? h('button', {
        type: 'button', class: 'cordon', 'data-action': cordoned ? 'uncordon' : 'cordon',
        onclick: () => cordon(n, !cordoned),
      }, cordoned ? t('nodes.uncordon') : t('nodes.cordon')) : null,
      mayPatch && mayEvict ? h('button', { type: 'button', class: 'drain', disabled: busy, onclick: () => drain(n) }, t('nodes.drain')) : null,
      mayDelete && (cordoned || !ready) ? h('button.danger', { type: 'button', class: 'remove', onclick: () => remove(n) }, t('nodes.remove')) : null);
  }

  function draw() {
    if (!nodes.length) { mount(body, h('p.muted', t('nodes.none'))); return; }
    const any = mayPatch || mayDelete || mayMetrics;
    const names = new Set(nodes.map((n) => n.metadata.name));
    for (const [name, open] of details) if (!names.has(name)) { open.panel.stop(); details.delete(name); }
    mount(body, h('table.list',
      h('thead', h('tr',
        h('th', t('col.name')), h('th', t('col.status')), h('th', t('col.roles')), h('th', t('col.version')),
        h('th.num', t('col.cpu')), h('th.num', t('col.memory')), h('th.num', t('col.pods')), h('th', t('col.age')),
        any ? h('th', t('col.actions')) : null)),
      h('tbody', nodes.map((n) => {
        const name = n.metadata.name;
        const ready = nodeReady(n);
        const cordoned = Boolean(n.spec && n.spec.unschedulable);
        const alloc = (n.status && n.status.allocatable) || {};
        const pods = podsPerNode ? (podsPerNode.get(name) || 0) : '—';
        const row = h('tr', { 'data-node': name },
          h('td.name', name),
          h('td', h(`span.badge.${ready ? 'ok' : 'bad'}`, ready ? t('status.ready') : t('status.notReady')),
            cordoned ? h('span.badge.warn', t('status.cordoned')) : null),
          h('td', roles(n)),
          h('td', (n.status && n.status.nodeInfo && n.status.nodeInfo.kubeletVersion) || ''),
          h('td.num', cores(quantity(alloc.cpu))),
          h('td.num', bytes(quantity(alloc.memory))),
          h('td.num', `${pods} / ${alloc.pods || '—'}`),
          h('td', age(n.metadata.creationTimestamp)),
          any ? actions(n, cordoned, ready) : null);
        const open = details.get(name);
        return open ? [row, open.row] : row;
      }))));
  }

  const stops = [];
  let stopped = false;
  stops.push(watchList('/api/v1/nodes', {
    onChange: (items) => { nodes = items; draw(); },
    onError: (e) => mount(body, h('p.muted', e.status === 403 ? t('error.forbiddenList') : t('error.generic', { message: e.message }))),
  }));
  Promise.all([can('patch', 'nodes'), can('create', 'pods', { subresource: 'eviction' }), can('list', 'pods'), can('delete', 'nodes'), mayReadNodeMetrics()])
    .then(([p, evict, list, del, metrics]) => {
      if (stopped) return;
      mayPatch = p;
      mayEvict = evict && list;
      mayDelete = del;
      mayMetrics = metrics;
      if (metrics) {
        mount(picker, rangePicker('nodes-range', range, (key) => {
          range = key;
          for (const open of details.values()) open.panel.setRange(key);
        }));
      }
      if (nodes.length) draw();
    });
  can('list', 'pods').then((ok) => {
    if (!ok || stopped) return;
    stops.push(watchList('/api/v1/pods', {
      onChange: (pods) => {
        podsPerNode = new Map();
        for (const p of pods) {
          const node = p.spec && p.spec.nodeName;
          const done = p.status && (p.status.phase === 'Succeeded' || p.status.phase === 'Failed');
          if (node && !done) podsPerNode.set(node, (podsPerNode.get(node) || 0) + 1);
        }
        if (nodes.length) draw();
      },
    }));
  });
  can('create', 'secrets', { namespace: 'kube-system' }).then((ok) => { if (ok) mount(joinSlot, joinSection(ctx)); });
  return {
    el,
    stop: () => {
      stopped = true;
      stops.forEach((s) => s());
      for (const open of details.values()) open.panel.stop();
      for (const d of drains.values()) d.handle.cancel();
    },
  };
}
