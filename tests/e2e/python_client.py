"""End-to-end test of a real `mini server` with the official Kubernetes Python client.

Starts `$MINI_BIN` (default `target/debug/mini`) on a free loopback port in a temporary data
directory, waits for `/readyz`, then drives namespaces, ConfigMaps, Deployments, watches,
patches, the scale subresource, a CRD with custom objects and error cases through the
`kubernetes` package. Prints `ok - name` / `not ok - name: reason` per check and one final
line `N passed, M failed`; exits non-zero when M > 0. Checks listed in KNOWN_SERVER_BUGS are
reported but not counted. The server is always killed by PID and its directory removed.

Run: `pip install kubernetes && python3 tests/e2e/python_client.py`
"""

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

# Checks that fail because of a server bug: name -> one-line description. Reported, not counted.
KNOWN_SERVER_BUGS: dict = {}

RESULTS = {"passed": 0, "failed": 0, "known": []}
STATE = {"proc": None, "dir": None, "log": None}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cleanup():
    """Kill the server we started (by PID) and remove its temporary directory."""
    proc = STATE.get("proc")
    if proc is not None and proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    STATE["proc"] = None
    log = STATE.get("log")
    if log is not None and not log.closed:
        log.close()
    d = STATE.get("dir")
    if d and os.path.isdir(d):
        shutil.rmtree(d, ignore_errors=True)
    STATE["dir"] = None


def server_log_tail(lines=30):
    d = STATE.get("dir")
    if not d:
        return ""
    try:
        with open(os.path.join(d, "server.log"), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def start_server():
    binary = os.environ.get("MINI_BIN", "target/debug/mini")
    if not os.path.exists(binary):
        raise RuntimeError(f"mini binary not found at {binary} (set MINI_BIN)")
    d = tempfile.mkdtemp(prefix="mini-e2e-")
    STATE["dir"] = d
    port = free_port()
    log = open(os.path.join(d, "server.log"), "wb")
    STATE["log"] = log
    data_dir = os.path.join(d, "data")
    proc = subprocess.Popen(
        [binary, "server", "--data-dir", data_dir, "--bind-address", "127.0.0.1",
         "--https-listen-port", str(port), "--disable-agent"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    STATE["proc"] = proc
    kubeconfig = os.path.join(data_dir, "server", "admin.kubeconfig")
    deadline = time.time() + 120
    last = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server_log_tail()}")
        if os.path.exists(kubeconfig):
            try:
                config.load_kube_config(config_file=kubeconfig)
                api = client.ApiClient()
                resp = api.call_api("GET", api.configuration.host + "/readyz",
                                    header_params={}, _request_timeout=5)
                body = resp.read().decode(errors="replace")
                if resp.status == 200:
                    return kubeconfig, port
                last = f"{resp.status} {body}"
            except Exception as e:  # not ready yet
                last = repr(e)
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after 120s: {last}\n{server_log_tail()}")


def check(name):
    """Runs the decorated function at once as one numbered check."""
    def run(fn):
        try:
            fn()
        except Exception as e:  # any failure, including AssertionError and ApiException
            reason = describe(e)
            if name in KNOWN_SERVER_BUGS:
                RESULTS["known"].append(name)
                print(f"not ok - {name}: {reason} # known server bug: {KNOWN_SERVER_BUGS[name]}")
            else:
                RESULTS["failed"] += 1
                print(f"not ok - {name}: {reason}")
        else:
            if name in KNOWN_SERVER_BUGS:
                print(f"ok - {name} # listed in KNOWN_SERVER_BUGS but passed; remove it")
            else:
                print(f"ok - {name}")
            RESULTS["passed"] += 1
        sys.stdout.flush()
        return fn
    return run


def describe(e):
    if isinstance(e, ApiException):
        return f"ApiException {e.status} {e.reason}: {(e.body or '')[:300]!s}".replace("\n", " ")
    if isinstance(e, AssertionError):
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return f"assertion failed at line {tb.lineno}: {e}".replace("\n", " ")
    return f"{type(e).__name__}: {e}".replace("\n", " ")


def expect_api_error(status, fn, *args, reason=None, **kwargs):
    """Calls fn and asserts it raises ApiException with `status` (and Status `reason`)."""
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status == status, f"expected {status}, got {e.status}: {e.body}"
        body = json.loads(e.body) if e.body else {}
        assert body.get("kind") == "Status", f"error body is not a Status: {e.body}"
        if reason is not None:
            assert body.get("reason") == reason, f"expected reason {reason}, got {body.get('reason')}"
        return body
    raise AssertionError(f"expected ApiException {status}, call succeeded")


def deployment_body(name, replicas):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "web", "image": "nginx:1.25"},
                    {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "3600"]},
                ]},
            },
        },
    }


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "gadgets.e2e.example.com"},
    "spec": {
        "group": "e2e.example.com", "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "size": {"type": "integer", "minimum": 0},
                    "color": {"type": "string"},
                }},
            }}},
        }],
    },
}


def main():
    start_server()
    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    ext = client.ApiextensionsV1Api()
    custom = client.CustomObjectsApi()
    ns = "e2e-" + uuid.uuid4().hex[:8]
    ctx = {}

    @check("server_reports_version")
    def _():
        v = client.VersionApi().get_code()
        assert v.major == "1" and v.git_version.startswith("v1."), v

    @check("create_namespace")
    def _():
        out = core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "yes"}}})
        assert out.metadata.name == ns
        assert out.status.phase == "Active", out.status
        names = [n.metadata.name for n in core.list_namespace(label_selector="e2e=yes").items]
        assert names == [ns], names

    @check("create_configmap")
    def _():
        out = core.create_namespaced_config_map(ns, {
            "metadata": {"name": "cfg", "labels": {"app": "e2e"}}, "data": {"k": "v"}})
        assert out.data == {"k": "v"}, out.data
        assert out.metadata.resource_version, "resourceVersion"
        assert out.metadata.uid, "uid"
        ctx["cm_rv"] = out.metadata.resource_version
        got = core.read_namespaced_config_map("cfg", ns)
        assert got.metadata.resource_version == out.metadata.resource_version

    @check("create_duplicate_configmap_returns_409_already_exists")
    def _():
        expect_api_error(409, core.create_namespaced_config_map, ns,
                         {"metadata": {"name": "cfg"}}, reason="AlreadyExists")

    @check("read_missing_configmap_returns_404_not_found")
    def _():
        body = expect_api_error(404, core.read_namespaced_config_map, "nope", ns, reason="NotFound")
        assert body.get("message") == 'configmaps "nope" not found', body

    @check("replace_configmap_with_stale_resource_version_returns_409_conflict")
    def _():
        core.create_namespaced_config_map(ns, {"metadata": {"name": "stale"}, "data": {"k": "1"}})
        old = core.read_namespaced_config_map("stale", ns)
        core.patch_namespaced_config_map("stale", ns, {"data": {"k": "2"}})
        old.data = {"k": "3"}
        expect_api_error(409, core.replace_namespaced_config_map, "stale", ns, old, reason="Conflict")
        assert core.read_namespaced_config_map("stale", ns).data == {"k": "2"}

    @check("list_configmaps_with_label_selector")
    def _():
        core.create_namespaced_config_map(ns, {"metadata": {"name": "other", "labels": {"app": "other"}}})
        names = sorted(c.metadata.name for c in
                       core.list_namespaced_config_map(ns, label_selector="app=e2e").items)
        assert names == ["cfg"], names
        names = sorted(c.metadata.name for c in
                       core.list_namespaced_config_map(ns, label_selector="app in (e2e,other)").items)
        assert names == ["cfg", "other"], names
        lst = core.list_namespaced_config_map(ns, field_selector="metadata.name=other")
        assert [c.metadata.name for c in lst.items] == ["other"]
        assert lst.metadata.resource_version, "list resourceVersion"

    @check("list_configmaps_paginates_with_limit_and_continue")
    def _():
        total = len(core.list_namespaced_config_map(ns).items)
        seen, token, pages = [], None, 0
        while True:
            kw = {"limit": 1}
            if token:
                kw["_continue"] = token
            page = core.list_namespaced_config_map(ns, **kw)
            pages += 1
            assert len(page.items) <= 1
            seen += [c.metadata.name for c in page.items]
            token = page.metadata.var_continue
            if not token or pages > 20:
                break
        # the root CA publisher adds kube-root-ca.crt to every namespace, as upstream
        assert sorted(n for n in seen if n != "kube-root-ca.crt") == ["cfg", "other", "stale"], seen
        ctx["pages"] = pages
        ctx["items"] = total

    @check("list_last_page_has_no_continue_token")
    def _():
        # N items, limit=1: upstream answers exactly N pages, the last without `continue`.
        assert ctx.get("pages") == ctx.get("items"), f"{ctx.get('pages')} pages for {ctx.get('items')} items with limit=1"

    @check("watch_receives_modified_event_after_patch")
    def _():
        rv = core.list_namespaced_config_map(ns).metadata.resource_version
        patched = {}

        def do_patch():
            out = core.patch_namespaced_config_map("cfg", ns, {"data": {"k": "watched"}})
            patched["rv"] = out.metadata.resource_version

        timer = threading.Timer(1.0, do_patch)
        timer.start()
        w = watch.Watch()
        got = None
        try:
            for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv,
                               timeout_seconds=10):
                obj = ev["object"]
                if ev["type"] == "MODIFIED" and obj.metadata.name == "cfg":
                    got = obj
                    w.stop()
                    break
        finally:
            timer.join()
        assert got is not None, "no MODIFIED event within 10s"
        assert got.data == {"k": "watched"}, got.data
        assert got.metadata.resource_version == patched["rv"], (got.metadata.resource_version, patched)

    @check("watch_replays_added_and_deleted_from_resource_version")
    def _():
        rv = core.list_namespaced_config_map(ns).metadata.resource_version
        created = core.create_namespaced_config_map(ns, {"metadata": {"name": "ephemeral"}})
        core.delete_namespaced_config_map("ephemeral", ns)
        events = []
        for ev in watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=rv,
                                       timeout_seconds=2):
            if ev["object"].metadata.name == "ephemeral":
                events.append((ev["type"], ev["object"].metadata.resource_version))
        assert [t for t, _ in events] == ["ADDED", "DELETED"], events
        assert events[0][1] == created.metadata.resource_version, events
        assert int(events[1][1]) > int(events[0][1]), events

    @check("create_deployment")
    def _():
        out = apps.create_namespaced_deployment(ns, deployment_body("web", 1))
        assert out.spec.replicas == 1
        assert out.metadata.generation == 1
        assert out.spec.strategy.type == "RollingUpdate", out.spec.strategy

    @check("create_deployment_with_negative_replicas_returns_422_invalid")
    def _():
        body = expect_api_error(422, apps.create_namespaced_deployment, ns,
                                deployment_body("bad", -1), reason="Invalid")
        causes = (body.get("details") or {}).get("causes") or []
        assert any(c.get("field") == "spec.replicas" for c in causes), causes

    @check("strategic_merge_patch_deployment_image")
    def _():
        out = apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {
            "containers": [{"name": "web", "image": "nginx:1.27"}]}}}})
        images = {c.name: c.image for c in out.spec.template.spec.containers}
        assert images == {"web": "nginx:1.27", "sidecar": "busybox:1.36"}, images
        assert out.metadata.generation == 2, out.metadata.generation

    @check("patch_deployment_scale")
    def _():
        out = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
        assert out.spec.replicas == 3, out.spec
        scale = apps.read_namespaced_deployment_scale("web", ns)
        assert scale.spec.replicas == 3
        assert scale.status.selector == "app=web", scale.status
        assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3

    @check("list_deployments_with_label_selector")
    def _():
        names = [d.metadata.name for d in
                 apps.list_namespaced_deployment(ns, label_selector="app=web").items]
        assert names == ["web"], names
        assert apps.list_namespaced_deployment(ns, label_selector="app=none").items == []

    @check("create_crd")
    def _():
        ext.create_custom_resource_definition(CRD)
        for _ in range(50):
            crd = ext.read_custom_resource_definition(CRD["metadata"]["name"])
            conds = (crd.status and crd.status.conditions) or []
            if any(c.type == "Established" and c.status == "True" for c in conds):
                return
            time.sleep(0.1)
        raise AssertionError("CRD never Established")

    @check("custom_object_crud")
    def _():
        g, v, p = "e2e.example.com", "v1", "gadgets"
        body = {"apiVersion": f"{g}/{v}", "kind": "Gadget",
                "metadata": {"name": "g1"}, "spec": {"size": 2, "color": "red"}}
        out = custom.create_namespaced_custom_object(g, v, ns, p, body)
        assert out["spec"] == {"size": 2, "color": "red"}, out
        got = custom.get_namespaced_custom_object(g, v, ns, p, "g1")
        assert got["metadata"]["resourceVersion"] == out["metadata"]["resourceVersion"]
        lst = custom.list_namespaced_custom_object(g, v, ns, p)
        assert [i["metadata"]["name"] for i in lst["items"]] == ["g1"], lst
        patched = custom.patch_namespaced_custom_object(g, v, ns, p, "g1", {"spec": {"size": 5}})
        assert patched["spec"] == {"size": 5, "color": "red"}, patched
        custom.delete_namespaced_custom_object(g, v, ns, p, "g1")
        expect_api_error(404, custom.get_namespaced_custom_object, g, v, ns, p, "g1",
                         reason="NotFound")

    @check("custom_object_schema_violation_returns_422")
    def _():
        body = {"apiVersion": "e2e.example.com/v1", "kind": "Gadget",
                "metadata": {"name": "neg"}, "spec": {"size": -4}}
        expect_api_error(422, custom.create_namespaced_custom_object,
                         "e2e.example.com", "v1", ns, "gadgets", body, reason="Invalid")

    @check("strategic_merge_patch_new_container_goes_after_existing_ones")
    def _():
        out = apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {
            "containers": [{"name": "extra", "image": "busybox:9"}]}}}})
        names = [c.name for c in out.spec.template.spec.containers]
        assert names == ["web", "sidecar", "extra"], names

    @check("delete_deployment")
    def _():
        apps.delete_namespaced_deployment("web", ns)
        expect_api_error(404, apps.read_namespaced_deployment, "web", ns, reason="NotFound")

    @check("delete_service_returns_the_service")
    def _():
        core.create_namespaced_service(ns, {"apiVersion": "v1", "kind": "Service",
                                            "metadata": {"name": "gone"},
                                            "spec": {"ports": [{"port": 80}]}})
        out = core.delete_namespaced_service("gone", ns)
        assert out.kind == "Service" and out.metadata.name == "gone", out
        expect_api_error(404, core.read_namespaced_service, "gone", ns, reason="NotFound")

    @check("delete_configmap")
    def _():
        core.delete_namespaced_config_map("cfg", ns)
        expect_api_error(404, core.read_namespaced_config_map, "cfg", ns, reason="NotFound")
        expect_api_error(404, core.delete_namespaced_config_map, "cfg", ns, reason="NotFound")

    @check("delete_crd")
    def _():
        ext.delete_custom_resource_definition(CRD["metadata"]["name"])
        for _ in range(50):
            try:
                ext.read_custom_resource_definition(CRD["metadata"]["name"])
            except ApiException as e:
                if e.status == 404:
                    return
                raise
            time.sleep(0.1)
        raise AssertionError("CRD still present 5s after delete")

    @check("delete_namespace")
    def _():
        core.delete_namespace(ns)
        try:
            got = core.read_namespace(ns)
        except ApiException as e:
            assert e.status == 404, e.status
            return
        # Upstream: Terminating until the namespace controller finalizes it.
        assert got.metadata.deletion_timestamp is not None, got.metadata
        assert got.status.phase == "Terminating", got.status


def run():
    atexit.register(cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(130))
    try:
        main()
    except Exception as e:
        RESULTS["failed"] += 1
        print(f"not ok - setup: {describe(e)}")
        tail = server_log_tail()
        if tail:
            print("# server log tail:\n# " + tail.replace("\n", "\n# "))
    finally:
        cleanup()
    if RESULTS["known"]:
        print("# known server bugs (not counted):")
        for name in RESULTS["known"]:
            print(f"#   {name}: {KNOWN_SERVER_BUGS[name]}")
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(run())
