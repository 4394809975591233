// Accounts and roles, for admins: the accounts the person may see with their role bindings,
// add (name, password, role, namespaces), change a password, remove — through
// `/v1-mini/accounts`, the API `mini user` uses. The server makes the bindings as the
// signed-in person, so RBAC's escalation check refuses a grant beyond their own rights; its
// message is shown.
import { get, request, can } from './api.js';
import { t } from './i18n.js';
import { h, mount, age } from './dom.js';
import { liveTable } from './table.js';
import { ask } from './dialog.js';
import { enc } from './kube.js';

const RBAC = 'rbac.authorization.k8s.io';
const ROLES = ['view', 'edit', 'admin', 'cluster-admin'];

// Whether the page is offered: to those who may bind roles (here, or cluster-wide).
export function mayManageAccounts(ns) {
  return can('create', ns ? 'rolebindings' : 'clusterrolebindings', { group: RBAC, namespace: ns });
}

export function rolesText(roles) {
  return (roles || []).map((r) => (r.namespace ? `${r.role}@${r.namespace}` : r.role)).join(', ') || '—';
}

function refused(e) {
  return e.status === 403 ? t('accounts.refused', { message: e.message }) : t('error.generic', { message: e.message });
}

export function accountsPage(ctx) {
  const note = h('div');
  const toolbar = h('div.actions');
  const count = h('span#accounts-count.muted');
  let stopped = false;

  const table = liveTable({
    id: 'accounts-table',
    empty: t('accounts.none'),
    key: (a) => a.name,
    rowAttrs: (a) => ({ 'data-account': a.name }),
    columns: [
      { title: t('col.name'), cls: 'name', text: (a) => a.name },
      { title: t('col.roles'), cls: 'roles', text: (a) => rolesText(a.roles) },
      { title: t('accounts.createdBy'), text: (a) => a.createdBy },
      { title: t('col.age'), text: (a) => age(a.created) },
      { title: t('col.actions'), cls: 'row-actions', cell: (a) => [
        h('button.passwd', { type: 'button', onclick: () => passwd(a) }, t('accounts.passwd')),
        a.name === ctx.user.user ? null : h('button.delete.danger', { type: 'button', onclick: () => remove(a) }, t('delete')),
      ] },
    ],
  });

  async function load() {
    try {
      const list = await get('/v1-mini/accounts');
      if (stopped) return;
      // the table redraws a row when this changes (accounts have no resourceVersion)
      const items = (list.items || []).map((a) => ({ ...a, metadata: { name: a.name, resourceVersion: JSON.stringify(a) } }));
      table.update(items);
      count.textContent = t('res.count', { n: items.length });
      mount(note);
    } catch (e) {
      if (!stopped) mount(note, h('p.muted', refused(e)));
    }
  }

  async function add() {
    const answer = await ask({
      title: t('accounts.addTitle'),
      text: t('accounts.addText'),
      fields: [
        { name: 'name', label: t('col.name') },
        { name: 'password', label: t('login.password'), type: 'password' },
        { name: 'role', label: t('accounts.role'), options: ROLES.map((r) => [r, t(`accounts.role.${r}`)]), value: 'view' },
        { name: 'namespaces', label: t('accounts.namespaces'), value: ctx.namespace || '' },
      ],
      ok: t('accounts.add'),
    });
    if (!answer) return;
    const namespaces = answer.namespaces.split(/[\s,]+/).filter(Boolean);
    try {
      await request('POST', '/v1-mini/accounts', { name: answer.name.trim(), password: answer.password, role: answer.role, namespaces });
      ctx.notify(t('accounts.added', { name: answer.name.trim() }), 'info');
    } catch (e) {
      ctx.notify(refused(e));
    }
    load();
  }

  async function passwd(a) {
    const own = a.name === ctx.user.user;
    const answer = await ask({
      title: t('accounts.passwdTitle', { name: a.name }),
      text: own ? t('accounts.passwdOwn') : t('accounts.passwdText'),
      fields: [
        own ? { name: 'current', label: t('accounts.current'), type: 'password' } : null,
        { name: 'password', label: t('accounts.newPassword'), type: 'password' },
      ].filter(Boolean),
      ok: t('accounts.passwd'),
    });
    if (!answer) return;
    try {
      await request('PUT', `/v1-mini/accounts/${enc(a.name)}/password`,
        { password: answer.password, ...(own ? { currentPassword: answer.current } : {}) });
      ctx.notify(t('accounts.passwdDone', { name: a.name }), 'info');
    } catch (e) {
      ctx.notify(refused(e));
    }
  }

  async function remove(a) {
    const answer = await ask({ title: t('accounts.removeTitle', { name: a.name }), text: t('accounts.removeText'), ok: t('delete'), danger: true });
    if (!answer) return;
    try {
      await request('DELETE', `/v1-mini/accounts/${enc(a.name)}`);
      ctx.notify(t('accounts.removed', { name: a.name }), 'info');
    } catch (e) {
      ctx.notify(refused(e));
    }
    load();
  }

  mayManageAccounts(ctx.namespace).then((ok) => {
    if (ok && !stopped) mount(toolbar, h('button.primary', { type: 'button', id: 'accounts-add', onclick: add }, t('accounts.add')));
  });
  load();
  const timer = setInterval(load, 15000);
  const el = h('div.accounts', h('div.title-row', h('h1', t('nav.accounts')), count, toolbar),
    h('p.muted.hint', t('accounts.hint')), note, h('section.card', table.el));
  return { el, stop: () => { stopped = true; clearInterval(timer); } };
}
