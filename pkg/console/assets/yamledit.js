// YAML view and edit of one object: GET it, show it as YAML (js-yaml, vendored) without
// managedFields; Save parses the text and PUTs it back (its resourceVersion makes a
// concurrent change a conflict). The server validates; its message (422 with the field
// causes, 409, 403) is shown under the editor.
import { get, request } from './api.js';
import { t } from './i18n.js';
import { h, mount } from './dom.js';
import { failure } from './kube.js';

// js-yaml is loaded with the first editor, not with the app.
const yaml = () => import('./vendor/js-yaml-4.1.0.mjs');

export async function toYaml(o) {
  const { dump } = await yaml();
  const copy = JSON.parse(JSON.stringify(o));
  if (copy.metadata) delete copy.metadata.managedFields;
  return dump(copy, { noRefs: true, lineWidth: -1 });
}

// A refused write as text: the Status message names the field and the rule (422), the
// conflict (409) or the malformed body (400).
export function statusText(e) {
  return t('apps.saveRefused', { code: e.status || '', message: e.message });
}

export function yamlSection(ctx, { path, label, editable }) {
  const text = h('textarea#yaml-text.yaml', { spellcheck: 'false', readonly: !editable, 'aria-label': t('apps.yaml') });
  const error = h('pre#yaml-error.form-error', { role: 'alert' });
  const save = editable ? h('button.primary', { type: 'button', id: 'yaml-save' }, t('save')) : null;
  const reload = h('button', { type: 'button', id: 'yaml-reload' }, t('reload'));
  const el = h('section.card.yaml-card',
    h('h2', editable ? t('apps.yamlEdit') : t('apps.yaml')),
    text, error, h('div.actions', save, reload));

  async function fill() {
    error.textContent = '';
    try {
      text.value = await toYaml(await get(path));
    } catch (e) {
      error.textContent = failure(e, t('action.read', { name: label }));
    }
  }
  reload.onclick = fill;
  if (save) {
    save.onclick = async () => {
      error.textContent = '';
      let body;
      try {
        const { load } = await yaml();
        body = load(text.value);
      } catch (e) {
        error.textContent = t('apps.yamlInvalid', { message: e.message });
        return;
      }
      save.disabled = true;
      try {
        const stored = await request('PUT', path, body);
        text.value = await toYaml(stored);
        ctx.notify(t('apps.saved', { name: label }), 'info');
      } catch (e) {
        error.textContent = e.status === 403 ? failure(e, t('action.update', { name: label })) : statusText(e);
      } finally {
        save.disabled = false;
      }
    };
  }
  fill();
  return el;
}
