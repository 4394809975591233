#!/usr/bin/env bash
# End-to-end: the embedded image registry on a real cluster (a `mini server` and two agents with
# their own containerd, each in a network namespace). Real clients push and pull (skopeo, podman,
# ctr, `mini images`); nodes pull through their containerd's hosts.toml; mirror mode runs
# `image: busybox` with nothing but the registry; a deployment rolls out and back while GC and
# retention keep what the old ReplicaSet needs; RBAC decides who may push; a pod rescheduled off
# a dead node pulls on the other node; `mini commit` snapshots a container that then runs
# elsewhere; a node's image tarball lands in the registry. Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=${E2E_NS:-minireg}
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-reg.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
NODES=(node-a node-b)
REG=$SERVER_IP:$API_PORT
CERTS=$WORK/certs
PODMAN_ROOT=$WORK/podman

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-reg-logs}"
  cleanup_nodes "${NODES[@]}"
  unmount_under "$PODMAN_ROOT"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the registry suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi
for tool in skopeo podman ctr; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "not ok - registry_clients_installed ($tool is missing: apt-get install skopeo podman containerd)"
    echo "0 passed, 1 failed"
    exit 1
  fi
done

# mini_in_server ARGS...: the mini CLI from the server's namespace with the admin kubeconfig.
mini_in_server() { in_ns "$SERVER_NS" "$MINI_BIN" "$@"; }
sk() { in_ns "$SERVER_NS" skopeo "$@"; }
pm() {
  in_ns "$SERVER_NS" podman --root "$PODMAN_ROOT/root" --runroot "$PODMAN_ROOT/run" \
    --storage-driver vfs --cgroup-manager cgroupfs --events-backend none "$@"
}

# build_image OUT NAME [TEXT]: tests/e2e/build_image.py, with an extra /etc/version file.
build_image() {
  BUILD_IMAGE_VERSION=${3:-} python3 "$HERE/build_image.py" "$1" "$2"
}

pod_phase() { k get pod "$1" -o jsonpath='{.status.phase}'; }

step_start() {
  setup_network "${NODES[@]}"
  start_node_server "$WORK/server" --disable-agent --registry-gc-interval 2s --registry-gc-grace 30s \
    --registry-keep-tags 3 || return 1
  local i=1 n
  for n in "${NODES[@]}"; do
    start_agent "$n" "$(node_ip $i)" "$WORK/$n"
    i=$((i + 1))
  done
  wait_for "two_nodes_ready" 120 bash -c \
    "out=\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get nodes --no-headers 2>&1); [ \$(grep -c ' Ready ' <<<\"\$out\") -eq 2 ] || { echo \"\$out\"; exit 1; }" || return 1
  wait_for "default_serviceaccount_created" 30 k get sa default -n default || return 1
  # the admin's client certificate as a cert dir for skopeo and podman
  mkdir -p "$CERTS/admin" "$CERTS/ca-only"
  cp "$WORK/server/server/tls/ca.crt" "$CERTS/admin/ca.crt"
  cp "$WORK/server/server/tls/ca.crt" "$CERTS/ca-only/ca.crt"
  k config view --raw -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$CERTS/admin/client.cert"
  k config view --raw -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$CERTS/admin/client.key"
  mkdir -p "$PODMAN_ROOT"
}

step_v2_endpoint() {
  expect "registry_v2_with_client_cert_answers_200" '^200$' in_ns "$SERVER_NS" curl -s -o /dev/null -w '%{http_code}' \
    --cacert "$CERTS/admin/ca.crt" --cert "$CERTS/admin/client.cert" --key "$CERTS/admin/client.key" "https://$REG/v2/"
  expect "registry_v2_anonymous_answers_401_with_challenge" 'www-authenticate: Basic' in_ns "$SERVER_NS" curl -si \
    --cacert "$CERTS/admin/ca.crt" "https://$REG/v2/default/app/tags/list"
}

step_mirror_busybox() {
  build_image "$WORK/busybox.tar" "busybox:latest"
  expect "mini_images_push_tarball_lands_in_mirror_repository" 'docker.io/library/busybox:latest' \
    mini_in_server images push "$WORK/busybox.tar"
  expect "kubectl_get_repositories_shows_mirrored_busybox" 'docker.io.library.busybox' k get repositories -A
  expect "kubectl_get_imagetags_shows_size_and_digest" 'latest' k get imagetags -A
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: plain-busybox}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: Always, command: [sleep, "3600"]}
EOF
  check_for "pod_with_image_busybox_runs_from_the_mirror" 120 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod plain-busybox -o jsonpath='{.status.phase}')\" = Running ]"
}

step_real_clients() {
  build_image "$WORK/app-v0.tar" "app:v0" v0
  build_image "$WORK/app-v1.tar" "app:v1" v1
  build_image "$WORK/app-v2.tar" "app:v2" v2
  build_image "$WORK/app-v3.tar" "app:v3" v3
  expect "skopeo_copy_pushes_with_client_cert" '' sk copy --quiet --dest-cert-dir "$CERTS/admin" \
    "oci-archive:$WORK/app-v0.tar" "docker://$REG/default/app:v0"
  # push times order retention (newest first, to the second)
  sleep 1.1
  expect "skopeo_copy_pushes_v1" '' sk copy --quiet --dest-cert-dir "$CERTS/admin" \
    "oci-archive:$WORK/app-v1.tar" "docker://$REG/default/app:v1"
  expect "skopeo_copy_pulls_back" '' sk copy --quiet --src-cert-dir "$CERTS/admin" \
    "docker://$REG/default/app:v1" "oci-archive:$WORK/app-v1-pulled.tar"
  expect "skopeo_inspect_lists_tags" '"v0"' sk inspect --cert-dir "$CERTS/admin" "docker://$REG/default/app:v1"
  # podman with a ServiceAccount token as the password
  k create serviceaccount pusher >/dev/null
  k create rolebinding pusher-edit --clusterrole=edit --serviceaccount=default:pusher >/dev/null
  k create serviceaccount viewer >/dev/null
  k create rolebinding viewer-view --clusterrole=view --serviceaccount=default:viewer >/dev/null
  PUSHER_TOKEN=$(k create token pusher)
  VIEWER_TOKEN=$(k create token viewer)
  sleep 1.1
  pm load -q -i "$WORK/app-v2.tar" >/dev/null
  pm tag app:v2 "$REG/default/app:v2"
  expect "podman_push_with_service_account_token_succeeds" '' pm push -q --cert-dir "$CERTS/ca-only" \
    --creds "pusher:$PUSHER_TOKEN" "$REG/default/app:v2"
  expect_fail "podman_push_without_push_rights_is_denied_403" '(403|denied|DENIED)' pm push -q --cert-dir "$CERTS/ca-only" \
    --creds "viewer:$VIEWER_TOKEN" "$REG/default/app:v2"
  expect "podman_pull_with_view_rights_succeeds" '' pm pull -q --cert-dir "$CERTS/ca-only" \
    --creds "viewer:$VIEWER_TOKEN" "$REG/default/app:v1"
  # ctr (containerd's client) against a throwaway containerd-free content path: pull then push
  local sock
  sock=$(find "$WORK/node-a" -maxdepth 4 -name containerd.sock | head -n 1)
  expect "ctr_pull_with_token_succeeds" '' in_ns "$E2E_NS-node-a" ctr --address "$sock" -n e2e images pull \
    --tlscacert "$CERTS/ca-only/ca.crt" --user "pusher:$PUSHER_TOKEN" "$REG/default/app:v1"
  sleep 1.1
  expect "ctr_push_with_token_succeeds" '' in_ns "$E2E_NS-node-a" ctr --address "$sock" -n e2e images push \
    --tlscacert "$CERTS/ca-only/ca.crt" --user "pusher:$PUSHER_TOKEN" "$REG/default/app:ctr" "$REG/default/app:v1"
  in_ns "$E2E_NS-node-a" ctr --address "$sock" -n e2e images rm "$REG/default/app:v1" >/dev/null 2>&1 || true
  # a wrong digest is refused with the spec's error code and nothing is stored
  expect "upload_with_wrong_digest_is_digest_invalid" 'DIGEST_INVALID' in_ns "$SERVER_NS" curl -s -X POST \
    --cacert "$CERTS/admin/ca.crt" --cert "$CERTS/admin/client.cert" --key "$CERTS/admin/client.key" \
    -H 'Content-Type: application/octet-stream' --data-binary 'hello' \
    "https://$REG/v2/default/app/blobs/uploads/?digest=sha256:$(printf 'other' | sha256sum | cut -d' ' -f1)"
  expect "anonymous_pull_is_refused_before_opt_in" '^401$' in_ns "$SERVER_NS" curl -s -o /dev/null -w '%{http_code}' \
    --cacert "$CERTS/admin/ca.crt" "https://$REG/v2/default/app/manifests/v1"
  k annotate namespace default registry.mini.dev/anonymous-pull=true >/dev/null
  expect "anonymous_pull_works_after_namespace_opt_in" '^200$' in_ns "$SERVER_NS" curl -s -o /dev/null -w '%{http_code}' \
    --cacert "$CERTS/admin/ca.crt" -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "https://$REG/v2/default/app/manifests/v1"
  k annotate namespace default registry.mini.dev/anonymous-pull- >/dev/null
}

step_deploy_rollback_gc() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 1
  revisionHistoryLimit: 5
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: app, image: $REG/default/app:v1, imagePullPolicy: Always, command: [sh, -c, "cat /etc/version; sleep 3600"]}
EOF
  check_for "deployment_v1_pulls_from_the_registry" 120 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl rollout status deploy/app --timeout=5s"
  k set image deploy/app "app=$REG/default/app:v2" >/dev/null
  check_for "deployment_rolls_to_v2" 120 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl rollout status deploy/app --timeout=5s"
  # with keep-tags 3 retention keeps v3, ctr and v2 and would drop v1 and v0; the old
  # ReplicaSet still names v1, so only v0 goes
  expect "skopeo_pushes_v3" '' sk copy --quiet --dest-cert-dir "$CERTS/admin" \
    "oci-archive:$WORK/app-v3.tar" "docker://$REG/default/app:v3"
  check_for "gc_retention_drops_unreferenced_old_tag" 30 bash -c \
    "! nsenter --net=$(ns_path "$SERVER_NS") skopeo inspect --cert-dir $CERTS/admin docker://$REG/default/app:v0 >/dev/null 2>&1"
  expect "gc_keeps_tag_the_old_replicaset_needs" 'Digest' sk inspect --cert-dir "$CERTS/admin" "docker://$REG/default/app:v1"
  expect "gc_keeps_newest_tags" 'Digest' sk inspect --cert-dir "$CERTS/admin" "docker://$REG/default/app:v3"
  k rollout undo deploy/app >/dev/null
  check_for "rollout_undo_to_v1_runs_again" 120 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl rollout status deploy/app --timeout=5s && [ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get deploy app -o jsonpath='{.spec.template.spec.containers[0].image}')\" = $REG/default/app:v1 ]"
  # the old ReplicaSet's pod may still be terminating when the rollout is done: kubectl logs
  # deploy/app can pick it and find it gone, so ask again until the running pod answers
  check_for "rolled_back_pod_runs_v1_content" 60 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl logs deploy/app 2>/dev/null | grep -q v1"
}

step_commit() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: patch-me}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: $REG/default/app:v1, command: [sleep, "3600"]}
EOF
  wait_for "commit_source_pod_running" 120 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod patch-me -o jsonpath='{.status.phase}')\" = Running ]" || return 0
  k exec patch-me -- sh -c 'echo patched-by-hand > /etc/patched' >/dev/null
  expect "mini_commit_pushes_the_container_diff" "default/app:patched@sha256:" mini_in_server commit patch-me -c c "default/app:patched"
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: patched}
spec:
  nodeName: node-b
  restartPolicy: Never
  containers:
  - {name: c, image: $REG/default/app:patched, command: [cat, /etc/patched]}
EOF
  check_for "committed_image_runs_on_another_node" 120 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod patched -o jsonpath='{.status.phase}')\" = Succeeded ]"
  expect "committed_image_has_the_change" 'patched-by-hand' k logs patched
}

step_node_tarball_lands_in_registry() {
  build_image "$WORK/tool.tar" "$REG/default/tool:1" tool
  cp "$WORK/tool.tar" "$WORK/node-b/agent/images/"
  check_for "node_image_tarball_is_pushed_to_the_registry" 90 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get imagetags -n default tool:1"
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: tool}
spec:
  nodeName: node-a
  restartPolicy: Never
  containers:
  - {name: c, image: $REG/default/tool:1, command: [cat, /etc/version]}
EOF
  check_for "other_node_runs_the_tarball_image" 120 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod tool -o jsonpath='{.status.phase}')\" = Succeeded ]"
}

step_node_death() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: survivor}
spec:
  replicas: 1
  selector: {matchLabels: {app: survivor}}
  template:
    metadata: {labels: {app: survivor}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference: {matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [node-a]}]}
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 1}
      containers:
      - {name: c, image: $REG/default/app:v3, command: [sleep, "3600"]}
EOF
  wait_for "survivor_runs_on_node_a" 120 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l app=survivor -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.phase}{\"\\n\"}{end}' | grep -q '^node-a Running'" || return 0
  # node-b has never pulled v3; node-a dies and the pod is evicted to node-b
  local pid_var=AGENT_PID_node_a
  kill -9 "${!pid_var}" 2>/dev/null || true
  kill_node_processes "$WORK/node-a" "$E2E_NS-node-a"
  check_for "pod_of_dead_node_runs_on_node_b_pulling_from_registry" 240 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l app=survivor -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.phase}{\"\\n\"}{end}' | grep -q '^node-b Running'"
}

# deleting a namespace deletes its repositories (like everything else in it) and finishes
step_namespace_deletion() {
  k create namespace scratch >/dev/null
  expect "push_into_scratch_namespace" '' sk copy --quiet --dest-cert-dir "$CERTS/admin" \
    "oci-archive:$WORK/app-v3.tar" "docker://$REG/scratch/tmp:1"
  expect "scratch_repository_listed" 'tmp' k get repositories -n scratch
  k delete namespace scratch --wait=false >/dev/null
  check_for "namespace_with_repository_is_deleted" 60 bash -c "! nsenter --net=$(ns_path "$SERVER_NS") kubectl get namespace scratch >/dev/null 2>&1"
  expect_fail "deleted_namespace_images_are_gone" '(manifest unknown|MANIFEST_UNKNOWN|not found|NAME_UNKNOWN)' \
    sk inspect --cert-dir "$CERTS/admin" "docker://$REG/scratch/tmp:1"
}

# kill -9 of the server in the middle of a push: after the restart the half-pushed image is not
# visible at all, what was there before still pulls, and the push succeeds when repeated
step_crash_during_push() {
  BUILD_IMAGE_RANDOM_MB=96 build_image "$WORK/big.tar" "big:1" big
  expect "image_before_crash_pulls" 'Digest' sk inspect --cert-dir "$CERTS/admin" "docker://$REG/default/app:v3"
  in_ns "$SERVER_NS" skopeo copy --quiet --dest-cert-dir "$CERTS/admin" "oci-archive:$WORK/big.tar" \
    "docker://$REG/default/big:1" >"$WORK/crash-push.log" 2>&1 &
  local push_pid=$!
  # the upload is under way once an upload session file exists
  local i
  for i in $(seq 1 100); do
    [ -n "$(find "$WORK/server/server/registry/uploads" -type f 2>/dev/null | head -n 1)" ] && break
    sleep 0.1
  done
  stop_server KILL
  wait "$push_pid" 2>/dev/null || true
  start_node_server "$WORK/server" --disable-agent --registry-gc-interval 2s --registry-gc-grace 30s \
    --registry-keep-tags 3 || { not_ok "server_restarts_after_kill_during_push" "see server.log"; return 0; }
  ok "server_restarts_after_kill_during_push"
  expect_fail "half_pushed_image_is_not_visible" '(manifest unknown|MANIFEST_UNKNOWN|not found|NAME_UNKNOWN)' \
    sk inspect --cert-dir "$CERTS/admin" "docker://$REG/default/big:1"
  expect "image_from_before_the_crash_still_pulls" '' sk copy --quiet --src-cert-dir "$CERTS/admin" \
    "docker://$REG/default/app:v3" "oci-archive:$WORK/after-crash.tar"
  expect "push_repeated_after_crash_succeeds" '' sk copy --quiet --dest-cert-dir "$CERTS/admin" \
    "oci-archive:$WORK/big.tar" "docker://$REG/default/big:1"
  expect "repeated_push_pulls_intact" '' sk copy --quiet --src-cert-dir "$CERTS/admin" \
    "docker://$REG/default/big:1" "oci-archive:$WORK/big-pulled.tar"
}

step_start || { summary; exit 1; }
step_v2_endpoint
step_mirror_busybox
step_real_clients
step_deploy_rollback_gc
step_namespace_deletion
step_commit
step_node_tarball_lands_in_registry
step_node_death
step_crash_during_push
summary
