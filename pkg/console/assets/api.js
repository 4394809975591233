// Talking to the API server as the signed-in person: the session cookie goes along by itself,
// writes carry the X-CSRF-Token of the session (the browser adds the Origin header to every
// non-GET request), failures become ApiError with the Kubernetes Status message.
let csrfToken = '';
let sessionLost = () => {};

export class ApiError extends Error {
  constructor(status, message, reason, retryAfter) {
    super(message);
    this.status = status;
    this.reason = reason || '';
    this.retryAfter = retryAfter || 0;
  }
}

export function setCsrfToken(token) { csrfToken = token || ''; }

// `fn` runs when a request answers 401: the session expired or was ended elsewhere.
export function onSessionLost(fn) { sessionLost = fn; }

async function failure(res) {
  let message = res.statusText || `HTTP ${res.status}`;
  let reason = '';
  let retry = Number(res.headers.get('Retry-After')) || 0;
  try {
    const body = await res.json();
    if (body && body.message) message = body.message;
    if (body && body.reason) reason = body.reason;
    if (body && body.details && body.details.retryAfterSeconds) retry = body.details.retryAfterSeconds;
  } catch (_) { /* not JSON */ }
  return new ApiError(res.status, message, reason, retry);
}

// One request; resolves to the parsed JSON body (or null), rejects with ApiError.
export async function request(method, path, body, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrfToken;
  if (body !== undefined) headers['Content-Type'] = opts.contentType || 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    signal: opts.signal,
  });
  if (!res.ok) {
    const err = await failure(res);
    if (res.status === 401 && !opts.noSessionCheck) sessionLost();
    throw err;
  }
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, opts) => request('GET', path, undefined, opts);
export const post = (path, body, opts) => request('POST', path, body, opts);
export const patch = (path, body) =>
  request('PATCH', path, body, { contentType: 'application/merge-patch+json' });

// Whether the signed-in person may `verb` the `resource` (SelfSubjectAccessReview), cached
// for the session.
const reviews = new Map();
export function can(verb, resource, { group = '', namespace = '', subresource = '' } = {}) {
  const key = [verb, group, resource, subresource, namespace].join('/');
  if (!reviews.has(key)) {
    const review = {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SelfSubjectAccessReview',
      spec: { resourceAttributes: { verb, group, resource, subresource, namespace } },
    };
    reviews.set(key, post('/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', review)
      .then((r) => Boolean(r && r.status && r.status.allowed))
      .catch(() => false));
  }
  return reviews.get(key);
}

export function forgetReviews() { reviews.clear(); }

const keyOf = (o) => `${o.metadata.namespace || ''}/${o.metadata.name}`;
// The order lists are drawn in: localeCompare's, with one collator instead of one per comparison.
const collate = new Intl.Collator();

// A live list: LIST `path`, then WATCH from its resourceVersion over a streamed fetch;
// reconnects where it left off, lists again when the version is gone (410). `onChange`
// gets the current items (sorted by namespace/name) after the list and then at most once per
// animation frame while events arrive; `onError` an
// ApiError when listing fails (403 stops the watch). Returns a function that stops it.
export function watchList(path, { onChange, onError = () => {} }) {
  const items = new Map();
  const abort = new AbortController();
  let version = '';
  let stopped = false;
  let delay = 500;
  // The sorted keys, kept until a key comes or goes (a MODIFIED event does not reorder).
  let order = null;
  const emit = () => {
    if (!order) order = [...items.keys()].sort(collate.compare);
    onChange(order.map((k) => items.get(k)));
  };
  // Watch events are applied to `items` as they arrive but drawn at most once per animation
  // frame: a DeleteCollection of 100 pods is 100 events, and sorting and diffing 2,000 rows
  // per event kept the page busy for seconds. A hidden tab (no frames) still draws within 250 ms.
  let pending = null;
  const flush = () => {
    if (!pending) return;
    cancelAnimationFrame(pending.frame);
    clearTimeout(pending.timer);
    pending = null;
    if (!stopped) emit();
  };
  const schedule = () => {
    if (!pending) pending = { frame: requestAnimationFrame(flush), timer: setTimeout(flush, 250) };
  };
  const sep = path.includes('?') ? '&' : '?';

  async function list() {
    const body = await get(path, { signal: abort.signal });
    items.clear();
    for (const o of body.items || []) items.set(keyOf(o), o);
    version = body.metadata.resourceVersion;
    order = null;
    pending = null;
    emit();
  }

  async function watch() {
    const url = `${path}${sep}watch=1&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(version)}`;
    const res = await fetch(url, { headers: { Accept: 'application/json' }, credentials: 'same-origin', signal: abort.signal });
    if (!res.ok) {
      const err = await failure(res);
      if (res.status === 401) sessionLost();
      throw err;
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      delay = 500;
      buffer += value;
      let changed = false;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        const o = event.object;
        if (event.type === 'ERROR') {
          throw new ApiError(o.code || 500, o.message || 'watch failed', o.reason);
        }
        if (o && o.metadata && o.metadata.resourceVersion) version = o.metadata.resourceVersion;
        if (event.type === 'ADDED' || event.type === 'MODIFIED') {
          const k = keyOf(o);
          if (!items.has(k)) order = null;
          items.set(k, o);
          changed = true;
        } else if (event.type === 'DELETED') {
          if (items.delete(keyOf(o))) order = null;
          changed = true;
        }
      }
      if (changed) schedule();
    }
  }

  (async () => {
    let needList = true;
    while (!stopped) {
      try {
        if (needList) { await list(); needList = false; }
        await watch();
      } catch (e) {
        if (stopped || e.name === 'AbortError') return;
        if (e.status === 410) { needList = true; continue; }
        if (e.status === 401 || e.status === 403 || (needList && e.status === 404)) { onError(e); return; }
        if (needList) onError(e);
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10000);
      }
    }
  })();

  return () => { stopped = true; abort.abort(); if (pending) { cancelAnimationFrame(pending.frame); clearTimeout(pending.timer); pending = null; } };
}
