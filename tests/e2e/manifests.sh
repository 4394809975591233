#!/usr/bin/env bash
# End-to-end: auto-deployed manifests with a real `mini server` (no node of its own) and kubectl.
# A file in <data-dir>/server/manifests appears (its ConfigMap and Deployment appear), changes
# (updated, field manager mini), turns broken (a Warning Event names the file and line, the
# other documents still apply, nothing is pruned, the server stays healthy), loses an object
# (pruned) and disappears (its objects go). The bundled IngressClass `mini` and StorageClass
# `local-path` exist on a default start; `--disable local-storage` removes the StorageClass and
# its file. No root needed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-manifests.XXXXXX)
DATA=$WORK/server
DIR=$DATA/server/manifests
export HOME=$WORK/home
export KUBECONFIG=$DATA/server/admin.kubeconfig
mkdir -p "$HOME"

cleanup() {
  stop_server
  if [ "$FAIL" -gt 0 ] && [ -f "$DATA/server.log" ]; then
    echo "--- server log (last 40 lines)"
    tail -40 "$DATA/server.log"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# a port of the manifests suite's range (24000-24999) that is free now
pick_port() {
  local p
  for p in $(seq 24443 24499); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  free_port
}
PORT=$(pick_port)

# start ARGS...: mini server on the suite's data dir with extra ARGS, until /readyz answers.
start() {
  mkdir -p "$DATA"
  "$MINI_BIN" server --data-dir "$DATA" --bind-address 127.0.0.1 --https-listen-port "$PORT" \
    --disable-agent "$@" >>"$DATA/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if curl -sk "https://127.0.0.1:$PORT/readyz" 2>/dev/null | grep -q ok; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "mini server exited:"; cat "$DATA/server.log"; return 1; fi
    sleep 0.1
  done
  echo "mini server did not become ready"; cat "$DATA/server.log"; return 1
}

# eventually NAME CMD...: CMD succeeds within 60 s (the deployer polls every 2 s).
eventually() {
  local name=$1 out=""
  shift
  for _ in $(seq 1 120); do
    if out=$("$@" 2>&1); then ok "$name"; return 0; fi
    sleep 0.5
  done
  not_ok "$name" "last output: $out"
}

k() { kubectl --request-timeout=20s "$@"; }
absent() { ! k get "$@" >/dev/null 2>&1; }
cm_colour() { [ "$(k get configmap app-config -o jsonpath='{.data.colour}')" = "$1" ]; }
warning_names() {
  k get events -n kube-system -o jsonpath='{range .items[?(@.type=="Warning")]}{.reason} {.message}{"\n"}{end}' |
    grep -E "^ApplyManifestFailed $DIR/$1:$2: "
}

CM='apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  colour: blue'
DEPLOY='apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers: [{name: app, image: busybox}]'

step_start() {
  start
  ok "server_starts"
}

step_bundled() {
  eventually "bundled_ingressclass_mini" k get ingressclass mini
  eventually "bundled_storageclass_local_path" k get storageclass local-path
  expect "addons_listed_with_columns" "SOURCE +CHECKSUM +OBJECTS +AGE" k get addons -n kube-system
  expect "addon_local_storage_source" "local-storage.yaml" \
    k get addon local-storage -n kube-system -o jsonpath='{.spec.source}'
}

step_file_appears() {
  printf '%s\n---\n%s\n' "$CM" "$DEPLOY" >"$DIR/app.yaml"
  eventually "file_appears_configmap" cm_colour blue
  eventually "file_appears_deployment" k get deployment app
  expect "applied_by_field_manager_mini" "(^| )mini( |$)" \
    k get configmap app-config -o jsonpath='{.metadata.managedFields[*].manager}'
  eventually "addon_counts_objects" \
    bash -c '[ "$(kubectl get addon app -n kube-system -o jsonpath="{.status.objectCount}")" = 2 ]'
}

step_file_changes() {
  printf '%s\n---\n%s\n' "${CM/blue/green}" "$DEPLOY" >"$DIR/app.yaml"
  eventually "file_changes_configmap_updated" cm_colour green
}

step_broken_file() {
  # line 10 of broken.yaml is the syntax error; the Widget document starts on line 12
  cat >"$DIR/broken.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: survivor}
data: {a: b}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: bad
   oops: [
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
EOF
  eventually "broken_file_other_documents_apply" k get configmap survivor
  eventually "broken_file_event_names_file_and_line" warning_names broken.yaml 10
  eventually "unknown_kind_event_names_file_and_line" warning_names broken.yaml 12
  expect "events_selectable_by_reason" "broken.yaml:10: invalid YAML" \
    k get events -n kube-system --field-selector reason=ApplyManifestFailed -o wide
  expect "server_healthy_after_broken_file" "ok" curl -sk "https://127.0.0.1:$PORT/readyz"
  expect "broken_addon_records_last_error" "invalid YAML" \
    k get addon broken -n kube-system -o jsonpath='{.status.lastError}'
}

step_broken_keeps_previous() {
  # the Deployment's document breaks: nothing is pruned, the ConfigMap still updates
  printf '%s\n---\n%s\n  : [\n' "${CM/blue/red}" "$DEPLOY" >"$DIR/app.yaml"
  eventually "broken_version_still_applies_good_documents" cm_colour red
  expect "broken_version_prunes_nothing" "app" k get deployment app -o name
}

step_object_removed() {
  printf '%s\n' "${CM/blue/red}" >"$DIR/app.yaml"
  eventually "object_removed_from_file_is_pruned" absent deployment app
  expect "remaining_object_stays" "red" k get configmap app-config -o jsonpath='{.data.colour}'
}

step_file_deleted() {
  rm "$DIR/app.yaml" "$DIR/broken.yaml"
  eventually "file_deleted_objects_removed" absent configmap app-config
  eventually "file_deleted_other_file_objects_removed" absent configmap survivor
  eventually "file_deleted_addon_removed" absent addon app -n kube-system
}

step_disable_local_storage() {
  stop_server
  start --disable local-storage
  eventually "disable_local_storage_removes_storageclass" absent storageclass local-path
  expect_fail "disable_local_storage_removes_file" "No such file" ls "$DIR/local-storage.yaml"
  expect "ingressclass_stays" "mini" k get ingressclass mini -o name
  stop_server
  start
  eventually "default_start_restores_storageclass" k get storageclass local-path
}

step_start
step_bundled
step_file_appears
step_file_changes
step_broken_file
step_broken_keeps_previous
step_object_removed
step_file_deleted
step_disable_local_storage
summary
