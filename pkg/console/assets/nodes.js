// Nodes: status, roles, kubelet version, allocatable CPU and memory, pods per node, live;
// cordon and uncordon for those allowed to patch nodes; the join command with a fresh
// bootstrap token for those allowed to create Secrets in kube-system.
import { watchList, patch, post, can, ApiError } from './api.js';
import { t } from './i18n.js';
import { h, mount, age, quantity, bytes, cores } from './dom.js';
import { nodeReady } from './overview.js';

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

export function nodesPage(ctx) {
  const body = h('div', { id: 'nodes-table' }, t('loading'));
  const joinSlot = h('div');
  const el = h('div.nodes', h('h1', t('nav.nodes')), h('section.card', body), joinSlot);
  let nodes = [];
  let podsPerNode = null;
  let mayPatch = false;

  async function cordon(node, on) {
    try {
      await patch(`/api/v1/nodes/${encodeURIComponent(node.metadata.name)}`, { spec: { unschedulable: on ? true : null } });
      ctx.notify(t(on ? 'nodes.cordoned' : 'nodes.uncordoned', { name: node.metadata.name }), 'info');
    } catch (e) {
      ctx.notify(e.status === 403
        ? t('error.forbidden', { action: t(on ? 'action.cordon' : 'action.uncordon', { name: node.metadata.name }) })
        : t('error.generic', { message: e.message }));
    }
  }

  function draw() {
    if (!nodes.length) { mount(body, h('p.muted', t('nodes.none'))); return; }
    mount(body, h('table.list',
      h('thead', h('tr',
        h('th', t('col.name')), h('th', t('col.status')), h('th', t('col.roles')), h('th', t('col.version')),
        h('th.num', t('col.cpu')), h('th.num', t('col.memory')), h('th.num', t('col.pods')), h('th', t('col.age')),
        mayPatch ? h('th', t('col.actions')) : null)),
      h('tbody', nodes.map((n) => {
        const name = n.metadata.name;
        const ready = nodeReady(n);
        const cordoned = Boolean(n.spec && n.spec.unschedulable);
        const alloc = (n.status && n.status.allocatable) || {};
        const pods = podsPerNode ? (podsPerNode.get(name) || 0) : '—';
        return h('tr', { 'data-node': name },
          h('td.name', name),
          h('td', h(`span.badge.${ready ? 'ok' : 'bad'}`, ready ? t('status.ready') : t('status.notReady')),
            cordoned ? h('span.badge.warn', t('status.cordoned')) : null),
          h('td', roles(n)),
          h('td', (n.status && n.status.nodeInfo && n.status.nodeInfo.kubeletVersion) || ''),
          h('td.num', cores(quantity(alloc.cpu))),
          h('td.num', bytes(quantity(alloc.memory))),
          h('td.num', `${pods} / ${alloc.pods || '—'}`),
          h('td', age(n.metadata.creationTimestamp)),
          mayPatch ? h('td', h('button', {
            type: 'button', class: 'cordon', 'data-action': cordoned ? 'uncordon' : 'cordon',
            onclick: () => cordon(n, !cordoned),
          }, cordoned ? t('nodes.uncordon') : t('nodes.cordon'))) : null);
      }))));
  }

  const stops = [];
  let stopped = false;
  stops.push(watchList('/api/v1/nodes', {
    onChange: (items) => { nodes = items; draw(); },
    onError: (e) => mount(body, h('p.muted', e.status === 403 ? t('error.forbiddenList') : t('error.generic', { message: e.message }))),
  }));
  can('patch', 'nodes').then((ok) => { mayPatch = ok; if (nodes.length) draw(); });
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
  return { el, stop: () => { stopped = true; stops.forEach((s) => s()); } };
}
