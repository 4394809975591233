// The app shell: session check, the router (history API under /console/), the top bar (user,
// namespace, language, logout), the navigation and the message area; pages render into <main>.
import { get, post, setCsrfToken, onSessionLost, forgetReviews, can, watchList } from './api.js';
import { t, lang, setLang } from './i18n.js';
import { h, mount } from './dom.js';
import { loginPage } from './login.js';
import { overviewPage } from './overview.js';
import { nodesPage } from './nodes.js';
import { appsPage } from './apps.js';
import { podsPage } from './pods.js';
import { loadtestsPage, GROUP as LOADTEST_GROUP } from './loadtests.js';
import { resourcePage, mayList } from './resources.js';
import { logSearchPage } from './logsearch.js';
import { registryPage, mayListImages } from './registry.js';
import { accountsPage, mayManageAccounts } from './accounts.js';

const BASE = '/console/';
const root = document.getElementById('app');
const state = {
  user: null,
  namespace: localStorage.getItem('mini.namespace') || '',
  namespaces: [],
  // whether "all namespaces" is offered (not to those who may not list namespaces)
  allNamespaces: true,
  stopPage: null,
  stopShell: null,
};

// Pages: path below /console/, title key, module, and the check that decides whether to offer it.
const PAGES = [
  { path: '', title: 'nav.overview', page: overviewPage, allowed: () => true },
  { path: 'nodes', title: 'nav.nodes', page: nodesPage, allowed: () => can('list', 'nodes') },
  // these take sub-paths (apps/new, apps/<kind>/<ns>/<name>, pods/<ns>/<name>/logs, …) as ctx.params
  { path: 'apps', title: 'nav.apps', page: appsPage, allowed: () => can('list', 'deployments', { group: 'apps', namespace: state.namespace }) },
  { path: 'pods', title: 'nav.pods', page: podsPage, allowed: () => can('list', 'pods', { namespace: state.namespace }) },
  // loadtests/new, loadtests/<ns>/<name>, loadtests/compare/<ns>/<name>/<ns>/<name>…
  { path: 'loadtests', title: 'nav.loadtests', page: loadtestsPage, allowed: () => can('list', 'loadtests', { group: LOADTEST_GROUP, namespace: state.namespace }) },
  // resources.js: one generic list/detail/create module per kind (sub-paths new, <ns>/<name>)
  ...['services', 'ingresses', 'configmaps', 'secrets', 'namespaces', 'events'].map((plural) => ({
    path: plural, title: `nav.${plural}`, page: resourcePage(plural), allowed: () => mayList(plural, state.namespace),
  })),
  { path: 'logsearch', title: 'nav.logsearch', page: logSearchPage, allowed: () => can('get', 'pods', { namespace: state.namespace, subresource: 'log' }) },
  { path: 'registry', title: 'nav.registry', page: registryPage, allowed: () => mayListImages(state.namespace) },
  { path: 'accounts', title: 'nav.accounts', page: accountsPage, allowed: () => mayManageAccounts(state.namespace) },
];

function routePath() {
  const p = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : '';
  return p.replace(/\/+$/, '');
}

export function navigate(path) {
  history.pushState(null, '', BASE + path);
  render();
}

// Confirmations shown at once at most (older ones make way); errors stay until closed.
const MAX_PASSING_MESSAGES = 2;

function notify(message, kind = 'error') {
  const area = document.getElementById('messages');
  if (!area) return;
  const item = h(`div.message.${kind}`, { role: kind === 'error' ? 'alert' : 'status' },
    h('span', message),
    h('button.close', { type: 'button', 'aria-label': t('close'), onclick: () => item.remove() }, '×'));
  area.append(item);
  if (kind !== 'error') setTimeout(() => item.remove(), 6000);
  // a burst of confirmations does not pile up: the newest few stay, errors until closed
  const passing = [...area.querySelectorAll('.message:not(.error)')];
  for (const old of passing.slice(0, Math.max(0, passing.length - MAX_PASSING_MESSAGES))) old.remove();
}

function stopAll() {
  if (state.stopPage) state.stopPage();
  if (state.stopShell) state.stopShell();
  state.stopPage = state.stopShell = null;
}

function sessionEnded() {
  stopAll();
  state.user = null;
  state.allNamespaces = true;
  state.namespaces = [];
  setCsrfToken('');
  forgetReviews();
  if (routePath() !== 'login') history.replaceState(null, '', `${BASE}login`);
  render();
}

async function logout() {
  try { await post('/v1-mini/session/logout', {}); } catch (_) { /* already gone */ }
  sessionEnded();
}

function namespacePicker() {
  const select = h('select#namespace', { 'aria-label': t('namespace'), onchange: () => {
    state.namespace = select.value;
    localStorage.setItem('mini.namespace', state.namespace);
    drawNav();
    renderPage();
  } });
  const fill = () => {
    const names = new Set(state.namespaces);
    if (state.namespace) names.add(state.namespace);
    mount(select,
      state.allNamespaces ? h('option', { value: '' }, t('ns.all')) : null,
      [...names].sort().map((n) => h('option', { value: n }, n)));
    select.value = state.namespace;
  };
  fill();
  const stop = watchList('/api/v1/namespaces', {
    onChange: (items) => { state.namespaces = items.map((n) => n.metadata.name); fill(); },
    onError: () => ownNamespaces().then((names) => {
      state.allNamespaces = false;
      state.namespaces = names;
      if (!state.namespace && names.length) {
        state.namespace = names[0];
        fill();
        drawNav();
        renderPage();
      } else {
        fill();
      }
    }),
  });
  return { el: select, stop };
}

// For someone who may not list namespaces: the namespaces their account's roles are bound in.
async function ownNamespaces() {
  try {
    const list = await get('/v1-mini/accounts');
    const me = (list.items || []).find((a) => a.name === state.user.user);
    const names = [...new Set(((me && me.roles) || []).map((r) => r.namespace).filter(Boolean))];
    return names.length ? names.sort() : ['default'];
  } catch (_) {
    return ['default'];
  }
}

function shell() {
  const picker = namespacePicker();
  const nav = h('nav.side', { 'aria-label': t('nav.label') });
  const main = h('main#page');
  const top = h('header.top',
    h('a.brand', { href: BASE, 'data-link': '' }, h('span.logo', 'mini'), h('span', t('console'))),
    h('label.ns', h('span', t('namespace')), picker.el),
    h('span.spacer'),
    h('button.lang', { type: 'button', id: 'lang', onclick: () => { setLang(lang() === 'zh' ? 'en' : 'zh'); stopAll(); render(); } },
      lang() === 'zh' ? 'English' : '中文'),
    h('span.user', { id: 'user' }, state.user.user),
    h('a.button', { href: '/v1-mini/session/kubeconfig', download: `${state.user.user}.kubeconfig` }, t('kubeconfig')),
    h('button', { type: 'button', id: 'logout', onclick: logout }, t('logout')));
  mount(root, top, h('div.body', nav, h('div.content', h('div#messages.messages'), main)));
  state.stopShell = picker.stop;
  drawNav();
}

// The pages offered: asked again when the namespace changes (rights may be per namespace).
function drawNav() {
  const nav = document.querySelector('nav.side');
  const ns = state.namespace;
  if (!nav) return;
  Promise.all(PAGES.map((p) => p.allowed())).then((allowed) => {
    if (!nav.isConnected || ns !== state.namespace) return;
    mount(nav, PAGES.filter((_, i) => allowed[i]).map((p) =>
      h('a', { href: BASE + p.path, 'data-link': '', 'data-path': p.path }, t(p.title))));
    markNav();
  });
}

function markNav() {
  const path = routePath().split('/')[0];
  for (const a of document.querySelectorAll('nav.side a')) {
    a.classList.toggle('active', a.dataset.path === path);
  }
}

function renderPage() {
  if (state.stopPage) state.stopPage();
  state.stopPage = null;
  const main = document.getElementById('page');
  const [head, ...params] = routePath().split('/');
  const entry = PAGES.find((p) => p.path === head);
  markNav();
  if (!entry) {
    mount(main, h('section.card', h('h1', t('notfound.title')), h('p', t('notfound.text')),
      h('a', { href: BASE, 'data-link': '' }, t('nav.overview'))));
    return;
  }
  document.title = `${t(entry.title)} · mini`;
  let decoded;
  try { decoded = params.map(decodeURIComponent); } catch (_) { decoded = params; }
  const ctx = { namespace: state.namespace, user: state.user, notify, navigate, params: decoded };
  const page = entry.page(ctx);
  mount(main, page.el);
  state.stopPage = page.stop;
}

function render() {
  document.documentElement.lang = lang() === 'zh' ? 'zh-CN' : 'en';
  if (!state.user) {
    stopAll();
    document.title = `${t('login.title')} · mini`;
    mount(root, loginPage({ onLogin: (session) => {
      state.user = session;
      setCsrfToken(session.csrfToken);
      history.replaceState(null, '', BASE);
      render();
    } }));
    return;
  }
  if (routePath() === 'login') history.replaceState(null, '', BASE);
  if (!state.stopShell) shell();
  renderPage();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-link]');
  if (!a || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
  e.preventDefault();
  navigate(a.getAttribute('href').slice(BASE.length));
});
window.addEventListener('popstate', () => render());
onSessionLost(() => { if (state.user) { sessionEnded(); } });

(async () => {
  try {
    const session = await get('/v1-mini/session', { noSessionCheck: true });
    state.user = session;
    setCsrfToken(session.csrfToken);
  } catch (_) {
    state.user = null;
  }
  render();
})();
