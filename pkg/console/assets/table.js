// A live table that updates in place: one <tr> per object key, rebuilt only when that
// object's resourceVersion changed, cells written only when their text changed, rows moved
// only when out of order. A watch event touching one pod of 2,000 costs one row, not a table.
import { h, mount } from './dom.js';

const keyOf = (o) => `${o.metadata.namespace || ''}/${o.metadata.name}`;

// key(o) names a row (namespace/name by default).
// columns: [{ title, cls, text(o) -> string | cell(o) -> Node }]; rowAttrs(o) -> attributes of
// the row; empty: the text shown without rows. Returns { el, update(items), refresh() }.
export function liveTable({ columns, rowAttrs = () => ({}), empty = '', id, key = keyOf }) {
  const tbody = h('tbody');
  const table = h('table.list', { id },
    h('thead', h('tr', columns.map((c) => h(c.cls ? `th.${c.cls}` : 'th', c.title)))), tbody);
  const emptyNote = h('p.muted.empty', empty);
  const el = h('div.live-table', table);
  const rows = new Map(); // key -> { tr, version, cells, obj }
  let last = [];

  function fill(row, o) {
    columns.forEach((c, i) => {
      const td = row.cells[i];
      if (c.cell) {
        mount(td, c.cell(o));
      } else {
        const text = String(c.text(o) ?? '');
        if (td.textContent !== text) td.textContent = text;
      }
    });
    for (const [k, v] of Object.entries(rowAttrs(o))) {
      if (v === undefined || v === null || v === false) row.tr.removeAttribute(k);
      else if (row.tr.getAttribute(k) !== String(v)) row.tr.setAttribute(k, String(v));
    }
    row.version = o.metadata.resourceVersion;
    row.obj = o;
  }

  function update(items) {
    last = items;
    const seen = new Set();
    for (const o of items) seen.add(key(o));
    for (const [k, row] of rows) {
      if (!seen.has(k)) { row.tr.remove(); rows.delete(k); }
    }
    let next = tbody.firstChild;
    for (const o of items) {
      const k = key(o);
      let row = rows.get(k);
      if (!row) {
        const cells = columns.map((c) => h(c.cls ? `td.${c.cls}` : 'td'));
        row = { tr: h('tr', cells), cells, version: null };
        rows.set(k, row);
      }
      if (row.version !== o.metadata.resourceVersion || !o.metadata.resourceVersion) fill(row, o);
      if (row.tr !== next) tbody.insertBefore(row.tr, next);
      else next = next.nextSibling;
    }
    if (!items.length && !emptyNote.isConnected) el.append(emptyNote);
    if (items.length && emptyNote.isConnected) emptyNote.remove();
  }

  // Redraws every row (times such as ages moved on, or a permission became known).
  function refresh() {
    for (const row of rows.values()) row.version = null;
    update(last);
  }

  return { el, update, refresh };
}
