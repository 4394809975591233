// A terminal into a container: xterm.js (vendored, drawn by its canvas addon so no inline
// styles are needed) over a WebSocket to `pods/exec` with the `v5.channel.k8s.io` (else v4)
// subprotocol; the session cookie authenticates the upgrade and the server checks its Origin.
// Channel bytes: 0 stdin, 1 stdout, 2 stderr, 3 status (JSON), 4 resize ({Width, Height}).
// The shell is detected: bash first, and when it cannot start before anything was typed,
// sh. An empty stdin message every 30 s keeps idle connections open.
import { get } from './api.js';
import { t } from './i18n.js';
import { h, mount } from './dom.js';
import { enc, failure } from './kube.js';

const VENDOR = new URL('./vendor/', import.meta.url);
const SHELLS = [['bash'], ['sh']];
const KEEPALIVE_MS = 30000;
const loaded = new Map();

// Loads a vendored classic script (xterm's UMD bundles set globals) once.
function script(file) {
  if (!loaded.has(file)) {
    loaded.set(file, new Promise((resolve, reject) => {
      const s = h('script', { src: new URL(file, VENDOR).href });
      s.onload = resolve;
      s.onerror = () => reject(new Error(`loading ${file} failed`));
      document.head.append(s);
    }));
  }
  return loaded.get(file);
}

function stylesheet(file) {
  const href = new URL(file, VENDOR).href;
  if (!document.querySelector(`link[href="${href}"]`)) document.head.append(h('link', { rel: 'stylesheet', href }));
}

export function frame(channel, bytes) {
  const out = new Uint8Array(bytes.length + 1);
  out[0] = channel;
  out.set(bytes, 1);
  return out;
}

export function execUrl(host, ns, pod, container, command) {
  const q = new URLSearchParams({ container, stdin: 'true', stdout: 'true', stderr: 'true', tty: 'true' });
  for (const part of command) q.append('command', part);
  return `wss://${host}/api/v1/namespaces/${enc(ns)}/pods/${enc(pod)}/exec?${q}`;
}

export function terminalPage(ctx, ns, name) {
  const container = h('select#terminal-container');
  const reconnect = h('button#terminal-reconnect', { type: 'button' }, t('terminal.reconnect'));
  const status = h('span#terminal-status.muted', t('loading'));
  const box = h('div#terminal.terminal');
  const el = h('div.terminal-page',
    h('p.crumbs', h('a', { href: `/console/pods/${enc(ns)}/${enc(name)}`, 'data-link': '' }, name)),
    h('h1', t('terminal.title', { name })),
    h('div.log-tools', h('label', h('span', t('apps.container')), container), reconnect, status),
    box);
  const encoder = new TextEncoder();
  let term = null;
  let fit = null;
  let ws = null;
  let keepalive = null;
  let stopped = false;
  let session = 0;

  const send = (channel, bytes) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(frame(channel, bytes));
  };
  const sendSize = () => {
    if (term) send(4, encoder.encode(JSON.stringify({ Width: term.cols, Height: term.rows })));
  };

  function close() {
    clearInterval(keepalive);
    keepalive = null;
    if (ws) { ws.onclose = null; ws.close(); }
    ws = null;
  }

  // Runs shells[i]; falls back to the next when it ends unused with a failure.
  function connect(shells) {
    close();
    const id = ++session;
    const command = shells[0];
    let typed = false;
    let exitStatus = null;
    status.textContent = t('terminal.connecting', { shell: command.join(' ') });
    ws = new WebSocket(execUrl(location.host, ns, name, container.value, command), ['v5.channel.k8s.io', 'v4.channel.k8s.io']);
    ws.binaryType = 'arraybuffer';
    const socket = ws;
    socket.onopen = () => {
      status.textContent = t('terminal.connected', { shell: command.join(' '), protocol: socket.protocol });
      sendSize();
      keepalive = setInterval(() => send(0, new Uint8Array(0)), KEEPALIVE_MS);
      term.focus();
    };
    socket.onmessage = (ev) => {
      const data = new Uint8Array(ev.data);
      if (!data.length) return;
      const payload = data.subarray(1);
      if (data[0] === 1 || data[0] === 2) term.write(payload);
      else if (data[0] === 3) {
        try { exitStatus = JSON.parse(new TextDecoder().decode(payload)); } catch (_) { exitStatus = { status: 'Failure', message: 'bad status' }; }
      }
    };
    socket.onclose = (ev) => {
      if (id !== session) return;
      clearInterval(keepalive);
      const ok = exitStatus && exitStatus.status === 'Success';
      if (!ok && !typed && shells.length > 1 && !stopped) { connect(shells.slice(1)); return; }
      if (exitStatus && !ok) {
        status.textContent = t('terminal.failed', { message: exitStatus.message || exitStatus.reason || '' });
      } else if (!exitStatus && ev.code !== 1000) {
        status.textContent = t('terminal.refused', { code: ev.code });
        checkAccess();
      } else {
        status.textContent = t('terminal.ended');
      }
      term.write(`\r\n\x1b[2m${t('terminal.ended')}\x1b[0m\r\n`);
    };
    socket.markTyped = () => { typed = true; };
  }

  // A refused upgrade gives the browser no status: ask the API what the person may do.
  async function checkAccess() {
    try {
      await get(`/api/v1/namespaces/${enc(ns)}/pods/${enc(name)}`);
    } catch (e) {
      ctx.notify(failure(e, t('action.exec', { name: `${ns}/${name}` })));
    }
  }

  (async () => {
    try {
      const pod = await get(`/api/v1/namespaces/${enc(ns)}/pods/${enc(name)}`);
      mount(container, ((pod.spec && pod.spec.containers) || []).map((c) => h('option', { value: c.name }, c.name)));
      stylesheet('xterm-5.5.0.css');
      await script('xterm-5.5.0.js');
      await Promise.all([script('addon-canvas-0.7.0.js'), script('addon-fit-0.10.0.js')]);
      if (stopped) return;
      term = new window.Terminal({
        cursorBlink: true,
        scrollback: 5000,
        fontSize: 14,
        fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Noto Sans Mono", monospace',
      });
      fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
      // the canvas renderer replaces the DOM renderer, whose <style> elements the CSP refuses
      term.loadAddon(new window.CanvasAddon.CanvasAddon());
      term.open(box);
      box.xterm = term; // the live terminal, for whoever inspects the page (the e2e suite reads its buffer)
      fit.fit();
      term.onData((s) => { if (ws && ws.markTyped) ws.markTyped(); send(0, encoder.encode(s)); });
      term.onBinary((s) => send(0, Uint8Array.from(s, (c) => c.charCodeAt(0) & 255)));
      term.onResize(sendSize);
      connect(SHELLS);
    } catch (e) {
      status.textContent = failure(e, t('action.exec', { name: `${ns}/${name}` }));
    }
  })();

  const onResize = () => { if (fit) fit.fit(); };
  window.addEventListener('resize', onResize);
  reconnect.onclick = () => { if (term) { term.reset(); connect(SHELLS); } };
  container.onchange = reconnect.onclick;

  return {
    el,
    stop: () => {
      stopped = true;
      session++;
      window.removeEventListener('resize', onResize);
      close();
      if (term) term.dispose();
    },
  };
}
