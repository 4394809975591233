// The cluster registry: its repositories (tags, size, last push) and one repository's tags
// (digest, size, pushed), through the `registry.mini.dev` resources of the API, with delete of
// a tag or of a whole repository where RBAC allows. The registry cannot be watched, so the
// lists are read again every 15 s and after every change.
import { get, request, can } from './api.js';
import { t } from './i18n.js';
import { h, mount, age, bytes } from './dom.js';
import { liveTable } from './table.js';
import { ask } from './dialog.js';
import { enc, failure, clusterRegistryHost, imageReference } from './kube.js';

const GROUP = 'registry.mini.dev';
const API = `/apis/${GROUP}/v1`;

function path(plural, ns, name) {
  const base = `${API}${ns ? `/namespaces/${enc(ns)}` : ''}/${plural}`;
  return name === undefined ? base : `${base}/${enc(name)}`;
}

export function mayListImages(ns) {
  return can('list', 'repositories', { group: GROUP, namespace: ns });
}

export function registryPage(ctx) {
  const ns = ctx.namespace;
  const note = h('div');
  const tagsSlot = h('div');
  const tagsTitle = h('h2#registry-tags-title');
  const count = h('span#registry-count.muted');
  const perms = new Map(); // namespace -> may delete, or a pending Promise
  let repos = [];
  let selected = null; // spec.repository of the repository whose tags are shown
  let host = '';
  let stopped = false;

  const mayDelete = (namespace, redraw) => {
    const p = perms.get(namespace);
    if (p === true || p === false) return p;
    if (!p) {
      perms.set(namespace, can('delete', 'imagetags', { group: GROUP, namespace })
        .then((x) => { perms.set(namespace, x); redraw(); }));
    }
    return false;
  };

  const repoTable = liveTable({
    id: 'registry-repos',
    empty: t('registry.none'),
    rowAttrs: (o) => ({ 'data-repo': o.spec.repository, class: o.spec.repository === selected ? 'selected' : null }),
    columns: [
      { title: t('registry.repository'), cls: 'name', cell: (o) => h('button.link.repo', { type: 'button', onclick: () => select(o.spec.repository) }, o.spec.repository) },
      { title: t('namespace'), text: (o) => o.metadata.namespace || t('registry.mirror') },
      { title: t('registry.tags'), cls: 'num', text: (o) => o.status.tags },
      { title: t('registry.size'), cls: 'num', text: (o) => bytes(o.status.size) },
      { title: t('registry.lastPush'), text: (o) => age(o.status.lastPush) },
      { title: t('col.actions'), cls: 'row-actions', cell: (o) => (mayDelete(o.metadata.namespace || '', () => repoTable.refresh())
        ? h('button.delete.danger', { type: 'button', onclick: () => deleteRepo(o) }, t('delete')) : null) },
    ],
  });

  const tagTable = liveTable({
    id: 'registry-tags',
    empty: t('registry.noTags'),
    rowAttrs: (o) => ({ 'data-tag': `${o.spec.repository}:${o.spec.tag}` }),
    columns: [
      { title: t('registry.tag'), cls: 'name', text: (o) => o.spec.tag },
      { title: t('registry.image'), cls: 'images', text: (o) => imageReference(host, o.spec.repository, o.spec.tag) },
      { title: t('registry.digest'), cls: 'digest', text: (o) => (o.status.digest || '').replace(/^(sha256:[0-9a-f]{12}).*$/, '$1…') },
      { title: t('registry.size'), cls: 'num', text: (o) => bytes(o.status.size) },
      { title: t('registry.pushed'), text: (o) => age(o.status.pushed) },
      { title: t('col.actions'), cls: 'row-actions', cell: (o) => (mayDelete(o.metadata.namespace || '', () => tagTable.refresh())
        ? h('button.delete.danger', { type: 'button', onclick: () => deleteTag(o) }, t('delete')) : null) },
    ],
  });

  async function loadTags() {
    if (!selected) { mount(tagsSlot); return; }
    const repo = repos.find((r) => r.spec.repository === selected);
    if (!repo) { selected = null; mount(tagsSlot); return; }
    if (!tagTable.el.isConnected) mount(tagsSlot, h('section.card', tagsTitle, tagTable.el));
    tagsTitle.textContent = t('registry.tagsOf', { name: selected });
    try {
      const list = await get(path('imagetags', repo.metadata.namespace));
      if (stopped) return;
      tagTable.update((list.items || []).filter((x) => x.spec.repository === selected)
        .sort((a, b) => String(b.status.pushed).localeCompare(String(a.status.pushed))));
    } catch (e) {
      mount(tagsSlot, h('p.muted', failure(e, t('action.listImages'))));
    }
  }

  async function load() {
    try {
      const list = await get(path('repositories', ns));
      if (stopped) return;
      repos = list.items || [];
      mount(note);
      count.textContent = t('res.count', { n: repos.length });
      repoTable.update(repos);
      await loadTags();
    } catch (e) {
      if (!stopped) mount(note, h('p.muted', failure(e, t('action.listImages'))));
    }
  }

  function select(repository) {
    selected = repository;
    repoTable.refresh();
    tagTable.update([]);
    loadTags();
  }

  async function deleteRepo(o) {
    const answer = await ask({
      title: t('registry.deleteRepoTitle', { name: o.spec.repository }),
      text: t('registry.deleteRepoText', { n: o.status.tags }),
      ok: t('delete'),
      danger: true,
    });
    if (!answer) return;
    try {
      await request('DELETE', path('repositories', o.metadata.namespace, o.metadata.name));
      ctx.notify(t('registry.deleted', { name: o.spec.repository }), 'info');
    } catch (e) {
      ctx.notify(failure(e, t('action.delete', { name: o.spec.repository })));
    }
    load();
  }

  async function deleteTag(o) {
    const name = `${o.spec.repository}:${o.spec.tag}`;
    const answer = await ask({ title: t('registry.deleteTagTitle', { name }), text: t('registry.deleteTagText'), ok: t('delete'), danger: true });
    if (!answer) return;
    try {
      await request('DELETE', path('imagetags', o.metadata.namespace, o.metadata.name));
      ctx.notify(t('registry.deleted', { name }), 'info');
    } catch (e) {
      ctx.notify(failure(e, t('action.delete', { name })));
    }
    load();
  }

  clusterRegistryHost().then((x) => { host = x; tagTable.refresh(); });
  load();
  const timer = setInterval(load, 15000);
  const el = h('div.registry',
    h('div.title-row', h('h1', t('nav.registry')), count,
      h('button#registry-reload', { type: 'button', onclick: load }, t('reload'))),
    h('p.muted.hint', t('registry.pushHint')),
    note, h('section.card', repoTable.el), tagsSlot);
  return { el, stop: () => { stopped = true; clearInterval(timer); } };
}
