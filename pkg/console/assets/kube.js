// Kubernetes helpers the application and pod pages share: the workload kinds and their API
// paths, readiness and status texts as kubectl prints them, label selectors, the registry
// host nodes pull from, and turning a failed request into a message (403 named as such).
import { get } from './api.js';
import { t } from './i18n.js';

// The workload kinds of the Applications page, by the path segment naming them.
export const KINDS = {
  deployments: { kind: 'Deployment', plural: 'deployments', scalable: true },
  statefulsets: { kind: 'StatefulSet', plural: 'statefulsets', scalable: true },
  daemonsets: { kind: 'DaemonSet', plural: 'daemonsets', scalable: false },
};

export const enc = encodeURIComponent;

export function workloadPath(plural, ns, name) {
  const base = `/apis/apps/v1/namespaces/${enc(ns)}/${plural}`;
  return name === undefined ? base : `${base}/${enc(name)}`;
}

export function listPath(plural, ns) {
  return ns ? workloadPath(plural, ns) : `/apis/apps/v1/${plural}`;
}

export function podsPath(ns) {
  return ns ? `/api/v1/namespaces/${enc(ns)}/pods` : '/api/v1/pods';
}

// "ready/desired" of a workload.
export function readiness(plural, o) {
  const s = o.status || {};
  if (plural === 'daemonsets') return `${s.numberReady || 0}/${s.desiredNumberScheduled || 0}`;
  const want = (o.spec && o.spec.replicas !== undefined) ? o.spec.replicas : 1;
  return `${s.readyReplicas || 0}/${want}`;
}

// Whether every wanted replica runs the current template and is ready.
export function settled(plural, o) {
  const s = o.status || {};
  if ((s.observedGeneration || 0) < (o.metadata.generation || 0)) return false;
  if (plural === 'daemonsets') {
    return (s.updatedNumberScheduled || 0) === (s.desiredNumberScheduled || 0)
      && (s.numberReady || 0) === (s.desiredNumberScheduled || 0);
  }
  const want = (o.spec && o.spec.replicas !== undefined) ? o.spec.replicas : 1;
  return (s.updatedReplicas || 0) === want && (s.readyReplicas || 0) === want
    && (s.replicas || 0) === want;
}

export function templateImages(template) {
  const spec = (template && template.spec) || {};
  return (spec.containers || []).map((c) => c.image).join(', ');
}

// matchLabels (and matchExpressions with In/NotIn/Exists/DoesNotExist) as a labelSelector.
export function selectorString(selector) {
  if (!selector) return '';
  const parts = Object.entries(selector.matchLabels || {}).map(([k, v]) => `${k}=${v}`);
  for (const e of selector.matchExpressions || []) {
    if (e.operator === 'In') parts.push(`${e.key} in (${(e.values || []).join(',')})`);
    else if (e.operator === 'NotIn') parts.push(`${e.key} notin (${(e.values || []).join(',')})`);
    else if (e.operator === 'Exists') parts.push(e.key);
    else if (e.operator === 'DoesNotExist') parts.push(`!${e.key}`);
  }
  return parts.join(',');
}

// The pod's status as `kubectl get pods` prints it.
export function podStatus(p) {
  if (p.metadata.deletionTimestamp) return 'Terminating';
  const st = p.status || {};
  let reason = st.reason || st.phase || 'Unknown';
  for (const c of [...(st.initContainerStatuses || [])]) {
    const s = c.state || {};
    if (s.terminated && s.terminated.exitCode === 0) continue;
    if (s.waiting && s.waiting.reason && s.waiting.reason !== 'PodInitializing') return `Init:${s.waiting.reason}`;
    if (s.terminated) return `Init:${s.terminated.reason || 'Error'}`;
  }
  for (const c of st.containerStatuses || []) {
    const s = c.state || {};
    if (s.waiting && s.waiting.reason) reason = s.waiting.reason;
    else if (s.terminated && s.terminated.reason) reason = s.terminated.reason;
  }
  return reason;
}

export function podReady(p) {
  const cs = (p.status && p.status.containerStatuses) || [];
  const total = ((p.spec && p.spec.containers) || []).length;
  return `${cs.filter((c) => c.ready).length}/${total}`;
}

export function podRestarts(p) {
  const cs = (p.status && p.status.containerStatuses) || [];
  return cs.reduce((n, c) => n + (c.restartCount || 0), 0);
}

export function statusClass(text) {
  if (['Running', 'Succeeded', 'Completed'].includes(text)) return 'ok';
  if (['Pending', 'ContainerCreating', 'Terminating', 'PodInitializing'].includes(text)) return 'warn';
  return 'bad';
}

// The message for a failed action: a 403 says what may not be done, anything else the
// API's own message.
export function failure(e, action) {
  return e && e.status === 403
    ? t('error.forbidden', { action })
    : t('error.generic', { message: (e && e.message) || String(e) });
}

// The host:port nodes pull cluster-registry images from: the API server's advertised
// address (the `kubernetes` Endpoints), else the address this page was loaded from.
let registryHost = null;
export async function clusterRegistryHost() {
  if (registryHost) return registryHost;
  try {
    const ep = await get('/api/v1/namespaces/default/endpoints/kubernetes');
    const subset = (ep.subsets || [])[0] || {};
    const ip = ((subset.addresses || [])[0] || {}).ip;
    const port = ((subset.ports || [])[0] || {}).port;
    registryHost = ip && port ? `${ip.includes(':') ? `[${ip}]` : ip}:${port}` : location.host;
  } catch (_) {
    registryHost = location.host;
  }
  return registryHost;
}

// The image reference of a registry repository and tag: a namespaced repository lives on the
// cluster registry's host, a mirrored one (`docker.io/library/busybox`) keeps its own name.
export function imageReference(host, repository, tag) {
  const first = repository.split('/')[0];
  const mirrored = first.includes('.') || first.includes(':') || first === 'localhost';
  return `${mirrored ? repository : `${host}/${repository}`}:${tag}`;
}

export function when(ts) {
  return ts ? new Date(ts).toLocaleString() : '';
}
