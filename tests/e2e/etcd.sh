#!/usr/bin/env bash
# End-to-end: `mini server` on a real 3-member etcd cluster on loopback (Debian's etcd-server)
# driven by kubectl: create, get, list, watch, apply and delete; a server restart keeps the data
# and resourceVersions keep increasing; with one member killed everything still works; with two
# killed a write fails at once with ServiceUnavailable while an open watch stays open; once the
# members are back writes work again without restarting mini and the watch sees them; a wrong
# endpoint fails the start with one line naming it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
# shellcheck source=tests/e2e/etcd_lib.sh
. "$HERE/etcd_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
WORK=$(mktemp -d /tmp/mini-e2e-etcd.XXXXXX)
PORT=$(free_port)
export HOME=$WORK/home KUBECONFIG=$WORK/data/server/admin.kubeconfig
mkdir -p "$HOME"
WATCH_PID=""

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-etcd-logs}"
  if [ -n "$WATCH_PID" ]; then kill "$WATCH_PID" 2>/dev/null || true; fi
  stop_server KILL
  etcd_stop
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -x /usr/bin/etcd ]; then
  echo "skipped: /usr/bin/etcd is missing (apt-get install etcd-server)"
  echo "0 passed, 0 failed"
  exit 0
fi

k() { kubectl --request-timeout=20s "$@"; }

# start_etcd_server: mini server on the suite's etcd cluster, waits until /readyz answers.
start_etcd_server() {
  mkdir -p "$WORK/data"
  "$MINI_BIN" server --data-dir "$WORK/data" --bind-address 127.0.0.1 --https-listen-port "$PORT" \
    --disable-agent --datastore-endpoint "$ETCD_ENDPOINTS" >>"$WORK/data/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if curl -sk "https://127.0.0.1:$PORT/readyz" 2>/dev/null | grep -q ok; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "mini server exited:"; tail -20 "$WORK/data/server.log"; return 1; fi
    sleep 0.1
  done
  echo "mini server did not become ready"; tail -20 "$WORK/data/server.log"; return 1
}

# eventually NAME SECONDS CMD...: CMD must succeed within SECONDS (retried every half second).
eventually() {
  local name=$1 secs=$2 out=""
  shift 2
  for _ in $(seq 1 $((secs * 2))); do
    if out=$("$@" 2>&1); then ok "$name"; return 0; fi
    sleep 0.5
  done
  not_ok "$name" "$out"
}

# rv KIND/NAME: the object's resourceVersion.
rv() { k get "$1" -n e2e -o jsonpath='{.metadata.resourceVersion}'; }

step_start() {
  etcd_start "$WORK/etcd"
  if start_etcd_server; then ok "server_starts_on_etcd"; else not_ok "server_starts_on_etcd"; exit 1; fi
  expect "readyz_ok" "ok" curl -sk "https://127.0.0.1:$PORT/readyz"
  expect "kube_system_namespace_exists" "kube-system +Active" k get ns
}

step_crud() {
  expect "create_namespace" "namespace/e2e created" k create ns e2e
  expect "create_configmap" "configmap/one created" k create cm one -n e2e --from-literal=a=1
  expect_eq "get_configmap_value" "1" k get cm one -n e2e -o jsonpath='{.data.a}'
  for i in 1 2 3 4 5; do k create cm "many-$i" -n e2e --from-literal=i="$i" >/dev/null; done
  expect_eq "list_configmaps" "5" bash -c "kubectl get cm -n e2e -o name | grep -c many-"
  expect_eq "list_paginates_with_chunk_size" "5" bash -c "kubectl get cm -n e2e --chunk-size=2 -o name | grep -c many-"
  cat >"$WORK/applied.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
  namespace: e2e
data:
  color: blue
YAML
  expect "apply_creates" "configmap/applied created" k apply -f "$WORK/applied.yaml"
  sed -i 's/blue/green/' "$WORK/applied.yaml"
  expect "apply_updates" "configmap/applied configured" k apply -f "$WORK/applied.yaml"
  expect_eq "apply_value_changed" "green" k get cm applied -n e2e -o jsonpath='{.data.color}'
  expect_fail "create_existing_conflicts" "AlreadyExists|already exists" k create cm one -n e2e
  expect "delete_configmap" 'configmap "many-5" deleted' k delete cm many-5 -n e2e
  expect_fail "deleted_is_gone" "NotFound|not found" k get cm many-5 -n e2e
  expect "deployment_created" "deployment.apps/web created" k create deployment web -n e2e --image=nginx --replicas=2
  eventually "controllers_make_replicaset" 30 bash -c "kubectl get rs -n e2e -o name | grep -q web"
}

step_watch() {
  kubectl get cm -n e2e --watch-only -o name >"$WORK/watch.out" 2>&1 &
  WATCH_PID=$!
  sleep 2
  k create cm watched -n e2e --from-literal=v=1 >/dev/null
  k patch cm watched -n e2e -p '{"data":{"v":"2"}}' >/dev/null
  k delete cm watched -n e2e >/dev/null
  # one line per event: added, modified, deleted
  eventually "watch_sees_add_update_delete" 20 bash -c "[ \$(grep -c '^configmap/watched\$' '$WORK/watch.out') -ge 3 ]"
}

step_restart() {
  local before after
  before=$(rv cm/applied)
  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=""
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  local stopped=no
  for _ in $(seq 1 40); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then stopped=yes; break; fi
    sleep 0.5
  done
  if [ "$stopped" = yes ]; then ok "server_stops_on_term"; else not_ok "server_stops_on_term" "still running 20s after TERM"; fi
  stop_server KILL
  if start_etcd_server; then ok "server_restarts_on_etcd"; else not_ok "server_restarts_on_etcd"; return; fi
  expect_eq "data_survives_restart" "green" k get cm applied -n e2e -o jsonpath='{.data.color}'
  k create cm after-restart -n e2e >/dev/null
  after=$(rv cm/after-restart)
  if [ "$after" -gt "$before" ]; then ok "resource_versions_keep_increasing ($before < $after)"; else not_ok "resource_versions_keep_increasing" "$before then $after"; fi
}

step_one_member_down() {
  etcd_member_kill 0
  eventually "write_with_one_member_down" 30 kubectl --request-timeout=10s create cm one-down -n e2e
  expect_eq "read_with_one_member_down" "1" k get cm one -n e2e -o jsonpath='{.data.a}'
}

step_quorum_loss() {
  kubectl get cm -n e2e --watch-only -o name >"$WORK/watch2.out" 2>&1 &
  WATCH_PID=$!
  sleep 2
  etcd_member_kill 1
  sleep 2
  expect_fail "write_without_quorum_is_service_unavailable" "ServiceUnavailable|unavailable" \
    timeout 60 kubectl --request-timeout=30s create cm no-quorum -n e2e
  # reads are served from the live member's own copy meanwhile
  expect_eq "read_without_quorum_is_served" "1" k get cm one -n e2e -o jsonpath='{.data.a}'
  expect_fail "readyz_not_ready_without_quorum" "etcd failed" k get --raw /readyz
  expect_eq "list_without_quorum_is_served" "configmap/one" sh -c "kubectl --request-timeout=20s get cm -n e2e -o name | grep -x configmap/one"
  if kill -0 "$WATCH_PID" 2>/dev/null; then ok "open_watch_survives_quorum_loss"; else not_ok "open_watch_survives_quorum_loss" "$(cat "$WORK/watch2.out")"; fi
}

step_recover() {
  etcd_member_start 0
  etcd_member_start 1
  etcd_wait_healthy 30 || true
  eventually "writes_work_again_after_quorum_returns" 60 kubectl --request-timeout=10s create cm recovered -n e2e
  if kill -0 "$SERVER_PID" 2>/dev/null; then ok "same_server_process_recovered"; else not_ok "same_server_process_recovered"; fi
  eventually "open_watch_sees_write_after_recovery" 30 grep -q "^configmap/recovered$" "$WORK/watch2.out"
  kill "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  WATCH_PID=""
}

step_wrong_endpoint() {
  local bad out rc
  bad="http://127.0.0.1:$(free_port)"
  out=$(timeout 60 "$MINI_BIN" server --data-dir "$WORK/bad" --bind-address 127.0.0.1 --https-listen-port 0 \
    --disable-agent --datastore-endpoint "$bad" 2>&1 >/dev/null) && rc=0 || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; then ok "wrong_endpoint_fails_start"; else not_ok "wrong_endpoint_fails_start" "rc=$rc $out"; fi
  local errors
  errors=$(grep -c '^mini: ' <<<"$out" || true)
  if [ "$errors" -eq 1 ] && grep -q "^mini: .*$bad" <<<"$out"; then ok "wrong_endpoint_one_line_names_it"; else not_ok "wrong_endpoint_one_line_names_it" "$out"; fi
}

step_start
step_crud
step_watch
step_restart
step_one_member_down
step_quorum_loss
step_recover
step_wrong_endpoint
summary
