// Deploying an application: kind, namespace, name, the image picked from the cluster registry
// (repositories and tags of `registry.mini.dev`, newest tag first) or typed, replicas, ports,
// environment, a command, CPU/memory requests and limits, and optionally a Service exposing
// the ports. The objects are built here and POSTed as the signed-in person.
import { get, post, can } from './api.js';
import { t } from './i18n.js';
import { h, mount, bytes } from './dom.js';
import { KINDS, enc, workloadPath, failure, clusterRegistryHost, imageReference } from './kube.js';

const REGISTRY = '/apis/registry.mini.dev/v1';
const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

// A registry list across namespaces when allowed, else the namespace's own.
async function registryList(resource, ns) {
  try {
    return (await get(`${REGISTRY}/${resource}`)).items || [];
  } catch (e) {
    if (e.status !== 403 || !ns) throw e;
    return (await get(`${REGISTRY}/namespaces/${enc(ns)}/${resource}`)).items || [];
  }
}

// Repository and tag pickers filling an editable image reference.
export function imagePicker(ns, initial = '') {
  const repo = h('select#image-repo', h('option', { value: '' }, t('loading')));
  const tag = h('select#image-tag', h('option', { value: '' }, '—'));
  const image = h('input#image', { name: 'image', required: true, placeholder: 'registry/namespace/app:tag', value: initial });
  const note = h('p#image-note.muted.hint');
  let host = location.host;
  let tags = [];
  const fillTags = () => {
    const mine = tags.filter((x) => x.spec.repository === repo.value)
      .sort((a, b) => String(b.status.pushed || '').localeCompare(String(a.status.pushed || '')));
    mount(tag, mine.length ? mine.map((x) => h('option', { value: x.spec.tag },
      `${x.spec.tag} (${bytes(x.status.size)})`)) : h('option', { value: '' }, '—'));
    if (mine.length) image.value = imageReference(host, repo.value, tag.value);
  };
  repo.onchange = fillTags;
  tag.onchange = () => { if (repo.value && tag.value) image.value = imageReference(host, repo.value, tag.value); };
  (async () => {
    try {
      host = await clusterRegistryHost();
      const [repos, allTags] = await Promise.all([registryList('repositories', ns), registryList('imagetags', ns)]);
      tags = allTags;
      mount(repo, h('option', { value: '' }, t('deploy.pickRepo')),
        repos.map((r) => h('option', { value: r.spec.repository }, r.spec.repository)));
      if (!repos.length) note.textContent = t('deploy.noImages');
    } catch (e) {
      mount(repo, h('option', { value: '' }, '—'));
      note.textContent = failure(e, t('action.listImages'));
    }
  })();
  const el = h('div.image-picker',
    h('div.row',
      h('label', h('span', t('deploy.repository')), repo),
      h('label', h('span', t('deploy.tag')), tag)),
    h('label', h('span', t('deploy.image')), image),
    note);
  return { el, value: () => image.value.trim(), set: (v) => { image.value = v; } };
}

// "8080, 53/UDP" -> [{ containerPort, protocol }]
export function parsePorts(text) {
  const out = [];
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const m = /^(\d{1,5})(?:\/(TCP|UDP|SCTP))?$/i.exec(part);
    if (!m || Number(m[1]) < 1 || Number(m[1]) > 65535) throw new Error(t('deploy.badPort', { port: part }));
    out.push({ containerPort: Number(m[1]), protocol: (m[2] || 'TCP').toUpperCase() });
  }
  return out;
}

// "A=1\nB=two" -> [{ name, value }]
export function parseEnv(text) {
  const out = [];
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf('=');
    if (at <= 0) throw new Error(t('deploy.badEnv', { line }));
    out.push({ name: line.slice(0, at).trim(), value: line.slice(at + 1) });
  }
  return out;
}

// The workload (and Service) objects of a filled-in form.
export function buildObjects(f) {
  const labels = { app: f.name };
  const container = { name: f.name, image: f.image };
  if (f.command) container.command = ['sh', '-c', f.command];
  if (f.ports.length) container.ports = f.ports;
  if (f.env.length) container.env = f.env;
  const requests = {};
  const limits = {};
  if (f.cpuRequest) requests.cpu = f.cpuRequest;
  if (f.memoryRequest) requests.memory = f.memoryRequest;
  if (f.cpuLimit) limits.cpu = f.cpuLimit;
  if (f.memoryLimit) limits.memory = f.memoryLimit;
  if (Object.keys(requests).length || Object.keys(limits).length) {
    container.resources = {};
    if (Object.keys(requests).length) container.resources.requests = requests;
    if (Object.keys(limits).length) container.resources.limits = limits;
  }
  const spec = {
    selector: { matchLabels: labels },
    template: { metadata: { labels }, spec: { containers: [container] } },
  };
  if (f.plural !== 'daemonsets') spec.replicas = f.replicas;
  if (f.plural === 'statefulsets') spec.serviceName = f.name;
  const workload = {
    apiVersion: 'apps/v1',
    kind: KINDS[f.plural].kind,
    metadata: { name: f.name, namespace: f.namespace, labels },
    spec,
  };
  let service = null;
  if (f.expose && f.ports.length) {
    service = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: f.name, namespace: f.namespace, labels },
      spec: {
        type: f.serviceType,
        selector: labels,
        ports: f.ports.map((p) => ({ name: `${p.protocol.toLowerCase()}-${p.containerPort}`, port: p.containerPort, targetPort: p.containerPort, protocol: p.protocol })),
      },
    };
  }
  return { workload, service };
}

export function deployPage(ctx) {
  const ns = h('input#deploy-namespace', { name: 'namespace', required: true, value: ctx.namespace || 'default', list: 'deploy-namespaces' });
  const nsList = h('datalist#deploy-namespaces');
  const kind = h('select#deploy-kind', Object.entries(KINDS).map(([p, k]) => h('option', { value: p }, k.kind)));
  const name = h('input#deploy-name', { name: 'name', required: true, placeholder: 'web' });
  let picker = imagePicker(ns.value);
  const pickerSlot = h('div', picker.el);
  ns.onchange = () => { picker = imagePicker(ns.value.trim(), picker.value()); mount(pickerSlot, picker.el); };
  const replicas = h('input#deploy-replicas', { type: 'number', min: 0, value: 1 });
  const ports = h('input#deploy-ports', { placeholder: '8080, 53/UDP' });
  const env = h('textarea#deploy-env', { rows: 3, placeholder: 'KEY=value' });
  const command = h('input#deploy-command', { placeholder: t('deploy.commandHint') });
  const cpuRequest = h('input#deploy-cpu-request', { placeholder: '100m' });
  const memoryRequest = h('input#deploy-memory-request', { placeholder: '64Mi' });
  const cpuLimit = h('input#deploy-cpu-limit', { placeholder: '500m' });
  const memoryLimit = h('input#deploy-memory-limit', { placeholder: '256Mi' });
  const expose = h('input#deploy-expose', { type: 'checkbox' });
  const serviceType = h('select#deploy-service-type', ['ClusterIP', 'NodePort'].map((x) => h('option', { value: x }, x)));
  const error = h('pre#deploy-error.form-error', { role: 'alert' });
  const submit = h('button#deploy-submit.primary', { type: 'submit' }, t('deploy.submit'));
  const replicasLabel = h('label', h('span', t('apps.replicas')), replicas);
  kind.onchange = () => { replicasLabel.hidden = kind.value === 'daemonsets'; };

  const form = h('form.deploy-form', { onsubmit: async (e) => {
    e.preventDefault();
    error.textContent = '';
    let f;
    try {
      f = {
        plural: kind.value,
        namespace: ns.value.trim(),
        name: name.value.trim(),
        image: picker.value(),
        replicas: Number(replicas.value),
        ports: parsePorts(ports.value),
        env: parseEnv(env.value),
        command: command.value.trim(),
        cpuRequest: cpuRequest.value.trim(),
        memoryRequest: memoryRequest.value.trim(),
        cpuLimit: cpuLimit.value.trim(),
        memoryLimit: memoryLimit.value.trim(),
        expose: expose.checked,
        serviceType: serviceType.value,
      };
      if (!NAME_RE.test(f.name)) throw new Error(t('deploy.badName'));
      if (!f.image) throw new Error(t('deploy.noImage'));
      if (!Number.isInteger(f.replicas) || f.replicas < 0) throw new Error(t('apps.badReplicas'));
      if (f.expose && !f.ports.length) throw new Error(t('deploy.exposeNeedsPorts'));
    } catch (err) {
      error.textContent = err.message;
      return;
    }
    const { workload, service } = buildObjects(f);
    submit.disabled = true;
    try {
      await post(workloadPath(f.plural, f.namespace), workload);
    } catch (err) {
      error.textContent = failure(err, t('action.deploy', { name: `${workload.kind} ${f.namespace}/${f.name}` }));
      submit.disabled = false;
      return;
    }
    if (service) {
      try {
        await post(`/api/v1/namespaces/${enc(f.namespace)}/services`, service);
      } catch (err) {
        ctx.notify(failure(err, t('action.expose', { name: `${f.namespace}/${f.name}` })));
      }
    }
    ctx.notify(t('deploy.done', { name: f.name }), 'info');
    ctx.navigate(`apps/${f.plural}/${enc(f.namespace)}/${enc(f.name)}`);
  } },
  h('section.card',
    h('div.row',
      h('label', h('span', t('col.kind')), kind),
      h('label', h('span', t('namespace')), ns, nsList),
      h('label', h('span', t('col.name')), name)),
    pickerSlot,
    h('div.row', replicasLabel, h('label', h('span', t('deploy.ports')), ports)),
    h('label', h('span', t('deploy.command')), command),
    h('label', h('span', t('deploy.env')), env),
    h('div.row',
      h('label', h('span', t('deploy.cpuRequest')), cpuRequest),
      h('label', h('span', t('deploy.memoryRequest')), memoryRequest),
      h('label', h('span', t('deploy.cpuLimit')), cpuLimit),
      h('label', h('span', t('deploy.memoryLimit')), memoryLimit)),
    h('div.row',
      h('label.check', expose, h('span', t('deploy.expose'))),
      h('label', h('span', t('deploy.serviceType')), serviceType))),
  error,
  submit);
  const el = h('div.deploy',
    h('p.crumbs', h('a', { href: '/console/apps', 'data-link': '' }, t('nav.apps'))),
    h('h1', t('deploy.title')), form);
  can('list', 'namespaces').then((ok) => {
    if (!ok) return;
    get('/api/v1/namespaces').then((list) => mount(nsList, (list.items || []).map((n) => h('option', { value: n.metadata.name })))).catch(() => {});
  });
  return { el, stop: () => {} };
}
