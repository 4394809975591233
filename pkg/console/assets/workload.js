// One application (Deployment, StatefulSet or DaemonSet): its state and pods (live), upgrade
// of a container's image (a rolling update by the controller), scale, restart, delete, the
// release history with rollback (history.js) and the YAML editor (yamledit.js). The actions
// are exported for the Applications list too.
import { request, watchList, can } from './api.js';
import { t } from './i18n.js';
import { h, mount, age } from './dom.js';
import { ask } from './dialog.js';
import { liveTable } from './table.js';
import { KINDS, enc, workloadPath, readiness, settled, selectorString, failure, templateImages } from './kube.js';
import { podStatus, podReady, podRestarts, statusClass } from './kube.js';
import { historySection } from './history.js';
import { yamlSection } from './yamledit.js';
import { imagePicker } from './deploy.js';

const SMP = 'application/strategic-merge-patch+json';
const MERGE = 'application/merge-patch+json';

function ref(plural, o) {
  return `${KINDS[plural].kind} ${o.metadata.namespace}/${o.metadata.name}`;
}

// What the signed-in person may do with `plural` in `ns`.
export async function permissions(plural, ns) {
  const o = { group: 'apps', namespace: ns };
  const [patch, update, scale, del] = await Promise.all([
    can('patch', plural, o),
    can('update', plural, o),
    KINDS[plural].scalable ? can('patch', plural, { ...o, subresource: 'scale' }) : false,
    can('delete', plural, o),
  ]);
  return { patch, update, scale, delete: del };
}

export async function scaleWorkload(ctx, plural, o) {
  const current = (o.spec && o.spec.replicas !== undefined) ? o.spec.replicas : 1;
  const answer = await ask({
    title: t('apps.scaleTitle', { name: o.metadata.name }),
    fields: [{ name: 'replicas', label: t('apps.replicas'), type: 'number', min: 0, value: current }],
    ok: t('apps.scale'),
  });
  if (!answer) return;
  const replicas = Number(answer.replicas);
  if (!Number.isInteger(replicas) || replicas < 0) { ctx.notify(t('apps.badReplicas')); return; }
  try {
    await request('PATCH', `${workloadPath(plural, o.metadata.namespace, o.metadata.name)}/scale`,
      { spec: { replicas } }, { contentType: MERGE });
    ctx.notify(t('apps.scaled', { name: o.metadata.name, n: replicas }), 'info');
  } catch (e) {
    ctx.notify(failure(e, t('action.scale', { name: ref(plural, o) })));
  }
}

// As `kubectl rollout restart`: a new restartedAt annotation on the pod template.
export async function restartWorkload(ctx, plural, o) {
  const at = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  try {
    await request('PATCH', workloadPath(plural, o.metadata.namespace, o.metadata.name),
      { spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': at } } } } },
      { contentType: MERGE });
    ctx.notify(t('apps.restarted', { name: o.metadata.name }), 'info');
  } catch (e) {
    ctx.notify(failure(e, t('action.restart', { name: ref(plural, o) })));
  }
}

export async function deleteWorkload(ctx, plural, o, after) {
  const answer = await ask({
    title: t('apps.deleteTitle', { name: o.metadata.name }),
    text: t('apps.deleteText'),
    ok: t('delete'),
    danger: true,
  });
  if (!answer) return;
  try {
    await request('DELETE', workloadPath(plural, o.metadata.namespace, o.metadata.name),
      { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background' });
    ctx.notify(t('apps.deleted', { name: o.metadata.name }), 'info');
    if (after) after();
  } catch (e) {
    ctx.notify(failure(e, t('action.delete', { name: ref(plural, o) })));
  }
}

// The upgrade dialog: one container's new image, applied as a strategic merge patch of that
// container (the controller rolls the pods over).
async function upgradeWorkload(ctx, plural, o) {
  const containers = ((o.spec.template.spec || {}).containers || []);
  const ns = o.metadata.namespace;
  const picker = imagePicker(ns, containers[0] ? containers[0].image : '');
  const select = h('select#upgrade-container', containers.map((c) => h('option', { value: c.name }, c.name)));
  select.onchange = () => {
    const c = containers.find((x) => x.name === select.value);
    if (c) picker.set(c.image);
  };
  const done = new Promise((resolve) => {
    const finish = (v) => { dialog.close(); dialog.remove(); resolve(v); };
    const form = h('form.dialog-form', { onsubmit: (e) => { e.preventDefault(); finish({ container: select.value, image: picker.value() }); } },
      h('h2', t('apps.upgradeTitle', { name: o.metadata.name })),
      h('label', h('span', t('apps.container')), select),
      picker.el,
      h('div.dialog-buttons',
        h('button', { type: 'button', id: 'dialog-cancel', onclick: () => finish(null) }, t('cancel')),
        h('button.primary', { type: 'submit', id: 'dialog-ok' }, t('apps.upgrade'))));
    const dialog = h('dialog.ask.wide', { oncancel: () => finish(null) }, form);
    document.body.append(dialog);
    dialog.showModal();
  });
  const answer = await done;
  if (!answer || !answer.image) return;
  try {
    await request('PATCH', workloadPath(plural, ns, o.metadata.name),
      { spec: { template: { spec: { containers: [{ name: answer.container, image: answer.image }] } } } },
      { contentType: SMP });
    ctx.notify(t('apps.upgraded', { name: o.metadata.name, image: answer.image }), 'info');
  } catch (e) {
    ctx.notify(failure(e, t('action.upgrade', { name: ref(plural, o) })));
  }
}

export function workloadPage(ctx, plural, ns, name) {
  if (!KINDS[plural]) {
    return { el: h('section.card', h('h1', t('notfound.title')), h('p', t('notfound.text'))), stop: () => {} };
  }
  const path = workloadPath(plural, ns, name);
  const summary = h('div#workload-summary', t('loading'));
  const actions = h('div#workload-actions.actions');
  const podsSlot = h('div');
  const historySlot = h('div');
  const yamlSlot = h('div');
  const el = h('div.workload',
    h('p.crumbs', h('a', { href: '/console/apps', 'data-link': '' }, t('nav.apps')), ` / ${KINDS[plural].kind}`),
    h('h1', name, h('span.muted.sub', ` ${ns}`)),
    actions,
    h('section.card', summary),
    podsSlot, historySlot, yamlSlot);
  const stops = [];
  let stopped = false;
  let current = null;
  let perms = { patch: false, update: false, scale: false, delete: false };

  function drawActions() {
    if (!current) return;
    mount(actions,
      h('a.button', { href: `/console/apps/${plural}/${enc(ns)}/${enc(name)}/logs`, 'data-link': '', id: 'workload-logs' }, t('apps.logs')),
      perms.patch ? h('button', { type: 'button', id: 'workload-upgrade', onclick: () => upgradeWorkload(ctx, plural, current) }, t('apps.upgrade')) : null,
      perms.scale ? h('button', { type: 'button', id: 'workload-scale', onclick: () => scaleWorkload(ctx, plural, current) }, t('apps.scale')) : null,
      perms.patch ? h('button', { type: 'button', id: 'workload-restart', onclick: () => restartWorkload(ctx, plural, current) }, t('apps.restart')) : null,
      perms.delete ? h('button.danger', { type: 'button', id: 'workload-delete', onclick: () => deleteWorkload(ctx, plural, current, () => ctx.navigate('apps')) }, t('delete')) : null);
  }

  function drawSummary(o) {
    const spec = o.spec || {};
    const strategy = (spec.strategy && spec.strategy.type) || (spec.updateStrategy && spec.updateStrategy.type) || '';
    mount(summary, h('dl.facts',
      h('dt', t('col.kind')), h('dd', KINDS[plural].kind),
      h('dt', t('col.ready')), h('dd#workload-ready', readiness(plural, o)),
      h('dt', t('col.status')), h('dd', h(`span#workload-state.badge.${settled(plural, o) ? 'ok' : 'warn'}`,
        settled(plural, o) ? t('apps.settled') : t('apps.progressing'))),
      h('dt', t('col.images')), h('dd#workload-images', templateImages(spec.template)),
      h('dt', t('apps.strategy')), h('dd', strategy),
      h('dt', t('apps.selector')), h('dd', selectorString(spec.selector)),
      h('dt', t('col.age')), h('dd', age(o.metadata.creationTimestamp))));
  }

  let podsWatch = null;
  function watchPods(o) {
    if (podsWatch || stopped) return;
    const table = liveTable({
      id: 'workload-pods',
      empty: t('pods.none'),
      rowAttrs: (p) => ({ 'data-pod': p.metadata.name }),
      columns: [
        { title: t('col.name'), cls: 'name', cell: (p) => h('a', { href: `/console/pods/${enc(ns)}/${enc(p.metadata.name)}`, 'data-link': '' }, p.metadata.name) },
        { title: t('col.status'), cell: (p) => { const s = podStatus(p); return h(`span.badge.${statusClass(s)}`, s); } },
        { title: t('col.ready'), text: podReady },
        { title: t('col.restarts'), cls: 'num', text: podRestarts },
        { title: t('col.node'), text: (p) => (p.spec && p.spec.nodeName) || '' },
        { title: t('col.images'), text: (p) => templateImages(p) },
        { title: t('col.age'), text: (p) => age(p.metadata.creationTimestamp) },
      ],
    });
    mount(podsSlot, h('section.card', h('h2', t('nav.pods')), table.el));
    const sel = selectorString(o.spec.selector);
    podsWatch = watchList(`/api/v1/namespaces/${enc(ns)}/pods?labelSelector=${enc(sel)}`, {
      onChange: (pods) => table.update(pods),
      onError: (e) => mount(podsSlot, h('p.muted', failure(e, t('action.listPods')))),
    });
    stops.push(podsWatch);
  }

  let history = null;
  stops.push(watchList(`${workloadPath(plural, ns)}?fieldSelector=${enc(`metadata.name=${name}`)}`, {
    onChange: (items) => {
      const o = items.find((x) => x.metadata.name === name);
      if (!o) { current = null; mount(summary, h('p.muted', t('apps.gone'))); mount(actions); return; }
      current = o;
      drawSummary(o);
      drawActions();
      watchPods(o);
      if (!history) {
        history = historySection(ctx, plural, o, perms);
        mount(historySlot, history.el);
        stops.push(history.stop);
      }
      history.owner(o);
    },
    onError: (e) => mount(summary, h('p.muted', failure(e, t('action.read', { name: `${KINDS[plural].kind} ${ns}/${name}` })))),
  }));
  permissions(plural, ns).then((p) => {
    if (stopped) return;
    perms = p;
    drawActions();
    if (history) history.allow(p);
    mount(yamlSlot, yamlSection(ctx, { path, label: `${KINDS[plural].kind} ${ns}/${name}`, editable: p.update }));
  });
  return { el, stop: () => { stopped = true; stops.forEach((s) => s()); } };
}
