// A modal question in the page (a <dialog>): a title, an optional text and input fields;
// resolves to the fields' values on OK, null on Cancel or Escape.
import { t } from './i18n.js';
import { h } from './dom.js';

// fields: [{ name, label, value, type, min, options: [[value, label]], required }]; a
// checkbox answers true or false, and a required one keeps OK disabled until it is ticked.
// extra: nodes shown between the text and the fields.
export function ask({ title, text, extra = null, fields = [], ok = t('ok'), danger = false }) {
  return new Promise((resolve) => {
    const inputs = fields.map((f) => {
      const input = f.options
        ? h('select', { name: f.name, id: `dialog-${f.name}` },
          f.options.map(([v, label]) => h('option', { value: v }, label)))
        : h('input', { name: f.name, id: `dialog-${f.name}`, type: f.type || 'text', min: f.min, list: f.list });
      if (f.type === 'checkbox') input.checked = Boolean(f.value);
      else if (f.value !== undefined) input.value = String(f.value);
      return { f, input };
    });
    const value = ({ f, input }) => (f.type === 'checkbox' ? input.checked : input.value);
    const okButton = h(`button.${danger ? 'danger' : 'primary'}`, { type: 'submit', id: 'dialog-ok' }, ok);
    const required = inputs.filter(({ f }) => f.type === 'checkbox' && f.required);
    const gate = () => { okButton.disabled = required.some(({ input }) => !input.checked); };
    for (const { input } of required) input.addEventListener('change', gate);
    gate();
    let answered = false;
    const finish = (value) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    const form = h('form.dialog-form', { method: 'dialog', onsubmit: (e) => {
      e.preventDefault();
      if (okButton.disabled) return;
      finish(Object.fromEntries(inputs.map((i) => [i.f.name, value(i)])));
    } },
    h('h2', title),
    text ? h('p', text) : null,
    extra,
    inputs.map(({ f, input }) => (f.type === 'checkbox'
      ? h('label.check', input, h('span', f.label))
      : h('label', h('span', f.label), input))),
    h('div.dialog-buttons',
      h('button', { type: 'button', id: 'dialog-cancel', onclick: () => finish(null) }, t('cancel')),
      okButton));
    const dialog = h('dialog.ask', { oncancel: () => finish(null) }, form);
    document.body.append(dialog);
    dialog.showModal();
    (inputs[0] ? inputs[0].input : dialog.querySelector('#dialog-ok')).focus();
  });
}
