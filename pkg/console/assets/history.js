// Release history of an application, live: a Deployment's ReplicaSets (revision annotation),
// a StatefulSet's or DaemonSet's ControllerRevisions, each with its images and time. Rolling
// back does what `kubectl rollout undo --to-revision` does: a Deployment gets that
// ReplicaSet's pod template (without pod-template-hash) by JSON patch; the others get the
// revision's data applied as a strategic merge patch.
import { request, watchList } from './api.js';
import { t } from './i18n.js';
import { h, mount } from './dom.js';
import { ask } from './dialog.js';
import { KINDS, enc, workloadPath, templateImages, failure, when } from './kube.js';

const REVISION = 'deployment.kubernetes.io/revision';

function owned(o, uid) {
  return (o.metadata.ownerReferences || []).some((r) => r.uid === uid && r.controller);
}

// The revisions of `owner` among `items` (ReplicaSets or ControllerRevisions), newest first:
// [{ number, name, template, created }].
export function revisions(plural, owner, items) {
  const out = [];
  for (const o of items) {
    if (!owned(o, owner.metadata.uid)) continue;
    if (plural === 'deployments') {
      const number = Number((o.metadata.annotations || {})[REVISION]);
      if (!Number.isFinite(number)) continue;
      out.push({ number, name: o.metadata.name, template: o.spec && o.spec.template, created: o.metadata.creationTimestamp, object: o });
    } else {
      const template = o.data && o.data.spec && o.data.spec.template;
      out.push({ number: Number(o.revision) || 0, name: o.metadata.name, template, created: o.metadata.creationTimestamp, object: o });
    }
  }
  return out.sort((a, b) => b.number - a.number);
}

// The revision number the owner runs now.
export function currentRevision(plural, owner, list) {
  if (plural === 'deployments') {
    const n = Number((owner.metadata.annotations || {})[REVISION]);
    if (Number.isFinite(n) && n > 0) return n;
  }
  if (plural === 'statefulsets' && owner.status && owner.status.updateRevision) {
    const r = list.find((x) => x.name === owner.status.updateRevision);
    if (r) return r.number;
  }
  return list.length ? list[0].number : 0;
}

// The patch `kubectl rollout undo` sends for `revision`: [contentType, body].
export function rollbackPatch(plural, revision) {
  if (plural === 'deployments') {
    const template = JSON.parse(JSON.stringify(revision.template || {}));
    if (template.metadata && template.metadata.labels) delete template.metadata.labels['pod-template-hash'];
    return ['application/json-patch+json', [{ op: 'replace', path: '/spec/template', value: template }]];
  }
  return ['application/strategic-merge-patch+json', revision.object.data];
}

export function historySection(ctx, plural, first, initialPerms) {
  const ns = first.metadata.namespace;
  const body = h('div#history', t('loading'));
  const el = h('section.card', h('h2', t('apps.history')), body);
  let owner = first;
  let items = [];
  let perms = initialPerms;

  async function rollback(rev) {
    const answer = await ask({
      title: t('apps.rollbackTitle', { name: owner.metadata.name, n: rev.number }),
      text: t('apps.rollbackText', { images: templateImages(rev.template) }),
      ok: t('apps.rollback'),
    });
    if (!answer) return;
    const [type, patch] = rollbackPatch(plural, rev);
    try {
      await request('PATCH', workloadPath(plural, ns, owner.metadata.name), patch, { contentType: type });
      ctx.notify(t('apps.rolledBack', { name: owner.metadata.name, n: rev.number }), 'info');
    } catch (e) {
      ctx.notify(failure(e, t('action.rollback', { name: `${KINDS[plural].kind} ${ns}/${owner.metadata.name}` })));
    }
  }

  function draw() {
    const list = revisions(plural, owner, items);
    if (!list.length) { mount(body, h('p.muted', t('apps.noHistory'))); return; }
    const now = currentRevision(plural, owner, list);
    mount(body, h('table.list',
      h('thead', h('tr', h('th', t('col.revision')), h('th', t('col.images')), h('th', t('col.created')), h('th', ''))),
      h('tbody', list.map((r) => h('tr', { 'data-revision': r.number },
        h('td.name', String(r.number), r.number === now ? h('span.badge.ok', t('apps.current')) : null),
        h('td.rev-images', templateImages(r.template)),
        h('td', when(r.created)),
        h('td', perms.patch && r.number !== now
          ? h('button.rollback', { type: 'button', onclick: () => rollback(r) }, t('apps.rollback')) : null))))));
  }

  const path = plural === 'deployments'
    ? `/apis/apps/v1/namespaces/${enc(ns)}/replicasets`
    : `/apis/apps/v1/namespaces/${enc(ns)}/controllerrevisions`;
  const stop = watchList(path, {
    onChange: (list) => { items = list; draw(); },
    onError: (e) => mount(body, h('p.muted', failure(e, t('action.readHistory')))),
  });
  return {
    el,
    stop,
    owner: (o) => { owner = o; if (items.length) draw(); },
    allow: (p) => { perms = p; if (items.length) draw(); },
  };
}
