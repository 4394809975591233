// Applications: Deployments, StatefulSets and DaemonSets of the namespace (or all) in one live
// table, with scale, restart and delete where allowed and the Deploy button for those who
// may create Deployments. Routes below /console/apps: `new` (the deploy form),
// `<kind>/<ns>/<name>` (one application) and `<kind>/<ns>/<name>/logs` (its pods' logs merged).
import { watchList, can } from './api.js';
import { t } from './i18n.js';
import { h, mount, age } from './dom.js';
import { liveTable } from './table.js';
import { KINDS, enc, listPath, readiness, settled, templateImages, failure } from './kube.js';
import { deployPage } from './deploy.js';
import { workloadPage, permissions, scaleWorkload, restartWorkload, deleteWorkload } from './workload.js';
import { logsPage } from './logs.js';

function listPage(ctx) {
  const ns = ctx.namespace;
  const toolbar = h('div.actions');
  const note = h('div');
  const perms = new Map(); // `${plural}/${namespace}` -> permissions, or a pending Promise
  const objects = new Map(); // plural -> items
  let table = null;

  const allowed = (plural, namespace) => {
    const key = `${plural}/${namespace}`;
    const p = perms.get(key);
    if (p && !(p instanceof Promise)) return p;
    if (!p) {
      perms.set(key, permissions(plural, namespace).then((x) => { perms.set(key, x); if (table) table.refresh(); }));
    }
    return { patch: false, scale: false, delete: false };
  };

  const actions = (o) => {
    const p = allowed(o.plural, o.metadata.namespace);
    return [
      p.scale ? h('button.scale', { type: 'button', onclick: () => scaleWorkload(ctx, o.plural, o) }, t('apps.scale')) : null,
      p.patch ? h('button.restart', { type: 'button', onclick: () => restartWorkload(ctx, o.plural, o) }, t('apps.restart')) : null,
      p.delete ? h('button.delete.danger', { type: 'button', onclick: () => deleteWorkload(ctx, o.plural, o) }, t('delete')) : null,
    ];
  };

  table = liveTable({
    id: 'apps-table',
    empty: t('apps.none'),
    key: (o) => `${o.plural}/${o.metadata.namespace}/${o.metadata.name}`,
    rowAttrs: (o) => ({ 'data-app': `${o.plural}/${o.metadata.namespace}/${o.metadata.name}` }),
    columns: [
      { title: t('col.name'), cls: 'name', cell: (o) => h('a', { href: `/console/apps/${o.plural}/${enc(o.metadata.namespace)}/${enc(o.metadata.name)}`, 'data-link': '' }, o.metadata.name) },
      ns ? null : { title: t('namespace'), text: (o) => o.metadata.namespace },
      { title: t('col.kind'), text: (o) => KINDS[o.plural].kind },
      { title: t('col.ready'), cell: (o) => h(`span.badge.${settled(o.plural, o) ? 'ok' : 'warn'}.ready`, readiness(o.plural, o)) },
      { title: t('col.images'), cls: 'images', text: (o) => templateImages(o.spec && o.spec.template) },
      { title: t('col.age'), text: (o) => age(o.metadata.creationTimestamp) },
      { title: t('col.actions'), cls: 'row-actions', cell: actions },
    ].filter(Boolean),
  });

  const draw = () => {
    const all = [];
    for (const plural of Object.keys(KINDS)) all.push(...(objects.get(plural) || []));
    all.sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}/${a.plural}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}/${b.plural}`));
    table.update(all);
  };

  const stops = Object.keys(KINDS).map((plural) => watchList(listPath(plural, ns), {
    onChange: (items) => {
      // the kind travels with each object (the table's key and links need it)
      objects.set(plural, items.map((o) => Object.assign(o, { plural })));
      draw();
    },
    onError: (e) => note.append(h('p.muted', `${KINDS[plural].kind}: ${failure(e, t('action.listApps'))}`)),
  }));
  const ages = setInterval(() => table.refresh(), 30000);

  can('create', 'deployments', { group: 'apps', namespace: ns }).then((ok) => {
    if (ok) mount(toolbar, h('a.button.primary', { href: '/console/apps/new', 'data-link': '', id: 'apps-deploy' }, t('apps.deploy')));
  });
  const el = h('div.apps', h('div.title-row', h('h1', t('nav.apps')), toolbar), note, h('section.card', table.el));
  return { el, stop: () => { clearInterval(ages); stops.forEach((s) => s()); } };
}

export function appsPage(ctx) {
  const [first, ns, name, rest] = ctx.params || [];
  if (!first) return listPage(ctx);
  if (first === 'new' && !ns) return deployPage(ctx);
  if (KINDS[first] && ns && name && rest === 'logs') return logsPage(ctx, { workload: { plural: first, namespace: ns, name } });
  if (KINDS[first] && ns && name && !rest) return workloadPage(ctx, first, ns, name);
  return { el: h('section.card', h('h1', t('notfound.title')), h('p', t('notfound.text'))), stop: () => {} };
}
