// The login page: name and password to POST /v1-mini/session/login; failures shown in place
// (429 with the seconds to wait).
import { post, ApiError } from './api.js';
import { t, lang, setLang } from './i18n.js';
import { h } from './dom.js';

export function loginPage({ onLogin }) {
  const name = h('input', { id: 'login-name', name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p.form-error', { id: 'login-error', role: 'alert' });
  const submit = h('button.primary', { type: 'submit', id: 'login-submit' }, t('login.submit'));
  const form = h('form.login', { onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      const session = await post('/v1-mini/session/login', { name: name.value, password: password.value }, { noSessionCheck: true });
      onLogin(session);
    } catch (err) {
      if (err instanceof ApiError && err.status === 429) error.textContent = t('login.tooMany', { n: err.retryAfter || 1 });
      else if (err instanceof ApiError && err.status === 401) error.textContent = t('login.invalid');
      else error.textContent = t('error.generic', { message: err.message });
      password.value = '';
      password.focus();
    } finally {
      submit.disabled = false;
    }
  } },
  h('div.login-head', h('span.logo', 'mini'), h('h1', t('login.title'))),
  h('label', h('span', t('login.name')), name),
  h('label', h('span', t('login.password')), password),
  error,
  submit,
  h('button.link', { type: 'button', id: 'lang', onclick: () => { setLang(lang() === 'zh' ? 'en' : 'zh'); location.reload(); } },
    lang() === 'zh' ? 'English' : '中文'));
  return h('div.login-page', form);
}
