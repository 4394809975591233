#!/usr/bin/env bash
# End-to-end: real `mini server` + two `mini agent`s, each in its own network namespace with its
# own managed containerd, running real containers from a locally built image (no registry), driven
# by kubectl: join refusals, a Deployment across both nodes, logs -f, exec (exit codes, stdin),
# port-forward, cp, top, probes, volumes and env, image pull failures, an agent killed and
# restarted without restarting its containers, and the server stopped for 60 s.
# Needs root (namespaces, containerd).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-agent.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a node-b)
SERVER_NODE_ARGS=(--node-name server --resolv-conf "$WORK/resolv.conf")

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-agent-logs}"
  kill_node_processes "$WORK/server" "$SERVER_NS"
  cleanup_nodes "${NODES[@]}" bad
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the node suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi


# pod_on NODE LABEL: name of a pod with the label running on NODE.
pod_on() {
  k get pods -l "$2" -o jsonpath="{range .items[?(@.spec.nodeName==\"$1\")]}{.metadata.name}{\"\\n\"}{end}" | head -n 1
}

step_start() {
  setup_network "${NODES[@]}" bad
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  # the server runs this machine's node too (the default), next to two agents
  echo "# no upstream nameservers in the e2e network" >"$WORK/resolv.conf"
  mkdir -p "$WORK/server/agent/images"
  cp "$WORK/busybox.tar" "$WORK/server/agent/images/"
  start_node_server "$WORK/server" "${SERVER_NODE_ARGS[@]}"
  local i=1 n
  for n in "${NODES[@]}"; do
    mkdir -p "$WORK/$n/agent/images"
    cp "$WORK/busybox.tar" "$WORK/$n/agent/images/"
    start_agent "$n" "$(node_ip $i)" "$WORK/$n"
    i=$((i + 1))
  done
  wait_for "agents_join_nodes_ready" 120 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready ') -eq $((${#NODES[@]} + 1)) ]" || {
    tail -40 "$WORK/node-a/agent.log"
    return 1
  }
  expect "node_reports_runtime_and_capacity" "containerd://.*110" \
    k get node node-a -o jsonpath='{.status.nodeInfo.containerRuntimeVersion} {.status.capacity.pods}'
  expect "node_lease_renewed" "node-a" k get lease -n kube-node-lease node-a -o jsonpath='{.spec.holderIdentity}'
  expect "server_node_is_control_plane" "control-plane" k get node server --show-labels
  check_for "default_serviceaccount_created" 20 k get sa default -n default
}

step_join_refusals() {
  local bad_hash bad_secret out rc
  bad_hash="K10$(printf '0%.0s' $(seq 1 64))::server:${JOIN_TOKEN##*::server:}"
  out=$(timeout 30 nsenter --net="$(ns_path "$E2E_NS-bad")" "$MINI_BIN" agent --server "https://$SERVER_IP:$API_PORT" \
    --token "$bad_hash" --data-dir "$WORK/bad" --node-name bad --node-ip "$(node_ip 3)" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -ne 0 ] && grep -qi "ca" <<<"$out"; then ok "join_wrong_ca_hash_refused"; else not_ok "join_wrong_ca_hash_refused" "rc=$rc $out"; fi
  bad_secret="${JOIN_TOKEN%%::server:*}::server:not-the-secret"
  out=$(timeout 30 nsenter --net="$(ns_path "$E2E_NS-bad")" "$MINI_BIN" agent --server "https://$SERVER_IP:$API_PORT" \
    --token "$bad_secret" --data-dir "$WORK/bad" --node-name bad --node-ip "$(node_ip 3)" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -ne 0 ] && grep -Eqi "token|unauthori[sz]ed|401" <<<"$out"; then ok "join_wrong_secret_refused"; else not_ok "join_wrong_secret_refused" "rc=$rc $out"; fi
  expect_fail "refused_node_not_registered" "NotFound" k get node bad
}

step_deployment() {
  k create deployment web --image="$IMAGE" --replicas=4 -- httpd -f -p 80 -h /var/www >/dev/null
  k set env deployment/web GREETING=hi >/dev/null
  if ! wait_for "deployment_available" 120 k rollout status deployment/web --timeout=5s ||
    ! wait_for "old_replicaset_pods_gone" 60 bash -c \
      "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l app=web --no-headers | wc -l) -eq 4 ]"; then
    k get pods -o wide
    k describe pods | tail -40
    return 1
  fi
  expect "pods_on_both_nodes" "node-a.*node-b|node-b.*node-a" \
    bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName}{\" \"}{end}' | tr ' ' '\n' | sort -u | tr '\n' ' '"
  expect "pods_wide_show_ips" "10\.42\.[0-9]+\.[0-9]+ +node-" k get pods -l app=web -o wide
  WEB_A=$(pod_on node-a app=web)
  WEB_B=$(pod_on node-b app=web)
  local ip_a
  ip_a=$(k get pod "$WEB_A" -o jsonpath='{.status.podIP}')
  expect "pod_ip_serves_http_on_its_node" "hello from mini" \
    in_ns "$E2E_NS-node-a" curl -s --max-time 5 "http://$ip_a/index.html"
  expect "pod_status_ready_and_started" "true true" \
    k get pod "$WEB_A" -o jsonpath='{.status.containerStatuses[0].ready} {.status.containerStatuses[0].started}'
  expect "pod_status_container_id_and_image_id" "containerd://[0-9a-f]+ .*sha256:" \
    k get pod "$WEB_A" -o jsonpath='{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].imageID}'
}

step_exec_logs_cp() {
  expect_eq "exec_prints_env" "hi" k exec "$WEB_A" -- sh -c 'echo $GREETING'
  local rc
  k exec "$WEB_B" -- sh -c 'exit 3' >/dev/null 2>&1 && rc=0 || rc=$?
  if [ "$rc" -eq 3 ]; then ok "exec_exit_code_propagated"; else not_ok "exec_exit_code_propagated" "rc=$rc"; fi
  expect_eq "exec_stdin_reaches_command" "3" bash -c "printf 'a\nb\nc\n' | nsenter --net=$(ns_path "$SERVER_NS") kubectl exec -i $WEB_A -- wc -l | tr -d ' '"
  expect_eq "exec_tty_mode_runs" "tty-ok" bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl exec -t $WEB_A -- echo tty-ok | tr -d '\r'"

  k run logger --image="$IMAGE" --restart=Never -- sh -c 'for i in 1 2 3 4 5; do echo line-$i; sleep 1; done; echo done-logging' >/dev/null
  check_for "logger_running" 60 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod logger -o jsonpath='{.status.phase}' | grep -Eq 'Running|Succeeded'"
  expect "logs_follow_streams_until_exit" "line-1.*line-5.*done-logging" \
    bash -c "timeout 30 nsenter --net=$(ns_path "$SERVER_NS") kubectl logs -f logger | tr '\n' ' '"
  expect_eq "logs_tail" "done-logging" k logs logger --tail=1
  expect "logs_timestamps" "^20[0-9-]+T[0-9:.]+Z line-1" k logs logger --timestamps
  expect "logs_since_keeps_recent_lines" "done-logging" k logs logger --since=1h
  sleep 2
  expect_eq "logs_since_drops_older_lines" "" k logs logger --since=1s
  expect "logs_deployment" "" k logs deploy/web
  k run ticker --image="$IMAGE" -- sh -c 'while true; do echo tick; sleep 1; done' >/dev/null
  check_for "ticker_running" 60 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod ticker -o jsonpath='{.status.phase}' | grep -qx Running"
  expect "attach_streams_output" "tick" bash -c "timeout 8 nsenter --net=$(ns_path "$SERVER_NS") kubectl attach ticker 2>/dev/null | head -n 2"
  expect_fail "logs_unknown_container_rejected" "container|not found|not valid" k logs logger -c nope

  echo "copied content" >"$WORK/cp-src.txt"
  k cp "$WORK/cp-src.txt" "default/$WEB_A:/tmp/copied.txt" >/dev/null 2>&1 || true
  expect_eq "cp_to_pod" "copied content" k exec "$WEB_A" -- cat /tmp/copied.txt
  k cp "default/$WEB_A:/tmp/copied.txt" "$WORK/cp-back.txt" >/dev/null 2>&1 || true
  expect_eq "cp_from_pod" "copied content" cat "$WORK/cp-back.txt"
}

step_port_forward() {
  local port
  port=$(free_port)
  in_ns "$SERVER_NS" kubectl port-forward "pod/$WEB_B" "$port:80" >"$WORK/pf.log" 2>&1 &
  local pf=$!
  check_for "port_forward_listening" 20 bash -c "grep -q 'Forwarding from' $WORK/pf.log"
  expect "port_forward_reaches_httpd" "hello from mini" in_ns "$SERVER_NS" curl -s --max-time 10 "http://127.0.0.1:$port/index.html"
  expect "port_forward_second_connection" "hello from mini" in_ns "$SERVER_NS" curl -s --max-time 10 "http://127.0.0.1:$port/index.html"
  kill "$pf" 2>/dev/null || true
  wait "$pf" 2>/dev/null || true
}

step_top() {
  check_for "top_nodes" 90 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl top nodes --no-headers | grep -c node- | grep -qx 2"
  check_for "top_pods" 90 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl top pods --no-headers | grep -q web-"
}

step_probes() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: liveness}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: $IMAGE
    command: [sh, -c, "echo started-at-boot; touch /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {command: [sh, -c, "test -f /tmp/gone"]}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: readiness}
spec:
  containers:
  - name: app
    image: $IMAGE
    command: [sh, -c, "touch /tmp/ready; sleep 3600"]
    readinessProbe:
      exec: {command: [cat, /tmp/ready]}
      periodSeconds: 1
EOF
  check_for "liveness_failure_restarts_container" 60 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod liveness -o jsonpath='{.status.containerStatuses[0].restartCount}') -ge 2 ]"
  expect "logs_previous_container" "started-at-" k logs liveness -p
  check_for "liveness_restarts_back_off" 90 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get events --field-selector involvedObject.name=liveness,reason=BackOff -o name | grep -q ."
  check_for "readiness_ready_true" 60 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod readiness -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  k exec readiness -- rm /tmp/ready || true
  check_for "readiness_failure_flips_ready_false" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod readiness -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx False"
}

step_volumes_env() {
  k create configmap app-config --from-literal=color=blue --from-literal=size=L >/dev/null
  k create secret generic app-secret --from-literal=password=s3cret >/dev/null
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: volumes, labels: {team: core}}
spec:
  containers:
  - name: app
    image: $IMAGE
    command: [sleep, "3600"]
    env:
    - {name: COLOR, valueFrom: {configMapKeyRef: {name: app-config, key: color}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: app-secret, key: password}}}
    - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MEM_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    envFrom:
    - {configMapRef: {name: app-config}, prefix: CFG_}
    resources: {limits: {memory: 64Mi, cpu: 500m}}
    volumeMounts:
    - {name: config, mountPath: /etc/config}
    - {name: secret, mountPath: /etc/secret, readOnly: true}
    - {name: info, mountPath: /etc/podinfo}
    - {name: scratch, mountPath: /scratch}
    - {name: mem, mountPath: /mem}
  volumes:
  - {name: config, configMap: {name: app-config}}
  - {name: secret, secret: {secretName: app-secret}}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  - {name: scratch, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory}}
EOF
  check_for "volumes_pod_running" 60 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod volumes -o jsonpath='{.status.phase}' | grep -qx Running"
  expect_eq "env_from_configmap_secret_field_resource" "blue s3cret volumes 64 L" \
    k exec volumes -- sh -c 'echo $COLOR $PASSWORD $MY_POD $MEM_LIMIT $CFG_size'
  expect_eq "configmap_volume_contents" "blue" k exec volumes -- cat /etc/config/color
  expect_eq "secret_volume_contents" "s3cret" k exec volumes -- cat /etc/secret/password
  expect_eq "downward_api_volume_labels" 'team="core"' k exec volumes -- cat /etc/podinfo/labels
  expect "memory_emptydir_is_tmpfs" "tmpfs" k exec volumes -- sh -c 'grep " /mem " /proc/mounts'
  expect "service_account_token_mounted" "^ey" k exec volumes -- head -c 2 /var/run/secrets/kubernetes.io/serviceaccount/token
  expect "memory_limit_applied" "67108864" k exec volumes -- sh -c 'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes'
}

step_image_import() {
  python3 "$HERE/build_image.py" "$WORK/busybox2.tar" mini.local/busybox:2.0
  expect "images_import_command" "imported mini.local/busybox:2.0" \
    in_ns "$E2E_NS-node-b" "$MINI_BIN" images import --local "$WORK/busybox2.tar" --data-dir "$WORK/node-b"
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: imported}
spec:
  nodeName: node-b
  containers:
  - {name: app, image: mini.local/busybox:2.0, imagePullPolicy: Never, command: [sleep, "3600"]}
EOF
  check_for "imported_image_runs_without_a_registry" 60 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod imported -o jsonpath='{.status.phase}' | grep -qx Running"
}

step_image_errors() {
  k run missing --image=registry.invalid/nothing:1.0 >/dev/null
  check_for "unknown_image_err_image_pull_quickly" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod missing -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}' | grep -Eq 'ErrImagePull|ImagePullBackOff'"
  check_for "unknown_image_back_off" 60 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod missing -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}' | grep -qx ImagePullBackOff"
  expect "image_pull_message_names_image" "registry.invalid/nothing" \
    k get pod missing -o jsonpath='{.status.containerStatuses[0].state.waiting.message}'
}

# container_ids POD...: the pods' container IDs and restart counts, one line.
container_ids() {
  local p
  for p in "$@"; do
    k get pod "$p" -o jsonpath='{.status.containerStatuses[*].containerID}/{.status.containerStatuses[*].restartCount} '
  done
}

step_agent_killed() {
  local before after ip_a
  before=$(container_ids "$WEB_A" volumes)
  ip_a=$(k get pod "$WEB_A" -o jsonpath='{.status.podIP}')
  kill -9 "$AGENT_PID_node_a"
  sleep 2
  if kill -0 "$AGENT_PID_node_a" 2>/dev/null; then not_ok "agent_killed" "pid $AGENT_PID_node_a still alive"; fi
  expect "killed_agent_containers_keep_serving" "hello from mini" in_ns "$E2E_NS-node-a" curl -s --max-time 5 "http://$ip_a/index.html"
  check_for "killed_agent_node_not_ready" 90 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get node node-a --no-headers | grep -q NotReady"
  start_agent node-a "$(node_ip 1)" "$WORK/node-a"
  check_for "restarted_agent_node_ready" 90 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get node node-a --no-headers | grep -q ' Ready '"
  sleep 5
  after=$(container_ids "$WEB_A" volumes)
  if [ "$before" = "$after" ]; then ok "restarted_agent_keeps_containers"; else not_ok "restarted_agent_keeps_containers" "before=$before after=$after"; fi
  expect "restarted_agent_serves_exec" "ok" k exec "$WEB_A" -- echo ok
}

step_server_stopped() {
  local before after ip_b
  before=$(container_ids "$WEB_A" "$WEB_B")
  ip_b=$(k get pod "$WEB_B" -o jsonpath='{.status.podIP}')
  stop_server TERM
  if in_ns "$SERVER_NS" curl -sk --max-time 2 "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1; then
    not_ok "server_stopped" "the API server still answers"
  fi
  sleep 60
  expect "server_down_pods_keep_serving" "hello from mini" in_ns "$E2E_NS-node-b" curl -s --max-time 5 "http://$ip_b/index.html"
  start_node_server "$WORK/server" "${SERVER_NODE_ARGS[@]}"
  check_for "server_back_nodes_ready" 60 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready ') -eq $((${#NODES[@]} + 1)) ]"
  sleep 5
  after=$(container_ids "$WEB_A" "$WEB_B")
  if [ "$before" = "$after" ]; then ok "server_outage_restarts_nothing"; else not_ok "server_outage_restarts_nothing" "before=$before after=$after"; fi
}

main() {
  step_start || { summary; exit 1; }
  step_join_refusals
  step_deployment || { summary; exit 1; }
  step_exec_logs_cp
  step_port_forward
  step_probes
  step_volumes_env
  step_image_errors
  step_image_import
  step_top
  step_agent_killed
  step_server_stopped
  summary
}
main
