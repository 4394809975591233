#!/usr/bin/env bash
# End-to-end: `mini killall --data-dir X` after a real `mini server` (with its in-process agent,
# its own containerd and a Deployment of two pods) ran in a network namespace of its own.
# Checks that every process, mount, interface, nftables table, pod network namespace and pod
# cgroup of that data dir is gone, and that what the test started outside it (another mini of
# another data dir, a process posing as another containerd's shim, a plain process) still runs.
# Needs root (namespaces, containerd).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=minikill
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-killall.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
DATA=$WORK/server
OTHER=$WORK/other
OTHER_PID=""
SHIM_CANARY_PID=""
SLEEP_CANARY_PID=""
# recorded before killall
OUR_PIDS=()
POD_NETNS=()
TASK_IDS=()

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-killall-logs}"
  local pid
  for pid in "$OTHER_PID" "$SHIM_CANARY_PID" "$SLEEP_CANARY_PID"; do
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  kill_node_processes "$DATA" "$SERVER_NS"
  cleanup_nodes
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the killall suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

step_start() {
  setup_network
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  echo "# no upstream nameservers in the e2e network" >"$WORK/resolv.conf"
  mkdir -p "$DATA/agent/images"
  cp "$WORK/busybox.tar" "$DATA/agent/images/"
  start_node_server "$DATA" --node-name server --resolv-conf "$WORK/resolv.conf"
  wait_for "server_node_ready" 120 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get node server --no-headers 2>/dev/null | grep -q ' Ready '"
}

step_deployment() {
  k create deployment sleeper --image="$IMAGE" --replicas=2 -- sleep 100000 >/dev/null
  wait_for "deployment_two_pods_running" 120 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l app=sleeper --no-headers 2>/dev/null | grep -c ' Running ') -eq 2 ]"
}

# step_canaries: processes killall must leave alone, all in the server's namespace: a mini
# server of another data dir, a process whose command line looks like a shim of another
# containerd, and a plain sleep.
step_canaries() {
  local port
  port=$(free_port)
  mkdir -p "$OTHER"
  nsenter --net="$(ns_path "$SERVER_NS")" "$MINI_BIN" server --data-dir "$OTHER" --disable-agent \
    --bind-address 127.0.0.1 --https-listen-port "$port" >>"$OTHER/server.log" 2>&1 &
  OTHER_PID=$!
  disown "$OTHER_PID"
  nsenter --net="$(ns_path "$SERVER_NS")" bash -c \
    'exec -a containerd-shim-runc-v2 python3 -c "import time; time.sleep(100000)" -namespace k8s.io -id x -address /run/other-containerd.sock' &
  SHIM_CANARY_PID=$!
  disown "$SHIM_CANARY_PID"
  nsenter --net="$(ns_path "$SERVER_NS")" sleep 100000 &
  SLEEP_CANARY_PID=$!
  disown "$SLEEP_CANARY_PID"
  wait_for "other_mini_ready" 60 in_ns "$SERVER_NS" curl -sfk "https://127.0.0.1:$port/readyz"
}

# pids_with_arg ARG: PIDs whose command line holds ARG as one whole argument.
pids_with_arg() {
  local dir pid
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    if tr '\0' '\n' 2>/dev/null <"$dir/cmdline" | grep -xF -- "$1" >/dev/null; then echo "$pid"; fi
  done
}

step_record() {
  local sock=$DATA/agent/containerd/containerd.sock pid ns
  OUR_PIDS=("$SERVER_PID")
  mapfile -t -O "${#OUR_PIDS[@]}" OUR_PIDS < <(pids_with_arg "$sock")
  for pid in $(pids_with_arg "$sock"); do
    mapfile -t -O "${#OUR_PIDS[@]}" OUR_PIDS < <(ps -o pid= --ppid "$pid" | tr -d ' ')
  done
  mapfile -t TASK_IDS < <(ls "$DATA/agent/containerd/state/io.containerd.runtime.v2.task/k8s.io" 2>/dev/null)
  # our pods' namespaces: the cni-* files whose namespace one of our processes is in (other
  # suites may be creating cni-* namespaces on this machine at the same time)
  local inodes=" " ino
  for pid in "${OUR_PIDS[@]}"; do
    ino=$(readlink "/proc/$pid/ns/net" 2>/dev/null | tr -dc '0-9') && inodes+="$ino "
  done
  # (mini's containerd mounts them under its CRI state dir, inside the data dir)
  local dir
  for dir in /var/run/netns "$DATA/agent/containerd/state/io.containerd.grpc.v1.cri/netns"; do
    for ns in $(ls "$dir" 2>/dev/null | grep '^cni-' || true); do
      ino=$(stat -L -c %i "$dir/$ns" 2>/dev/null) || continue
      [[ $inodes == *" $ino "* ]] && POD_NETNS+=("$dir/$ns")
    done
  done
  # containerd, two pause/sandbox shims' worth of processes, the server: at least 6
  if [ "${#OUR_PIDS[@]}" -ge 6 ] && [ "${#TASK_IDS[@]}" -ge 4 ] && [ "${#POD_NETNS[@]}" -ge 2 ]; then
    ok "recorded_processes_tasks_and_netns"
  else
    not_ok "recorded_processes_tasks_and_netns" "pids=${OUR_PIDS[*]} tasks=${TASK_IDS[*]} netns=${POD_NETNS[*]}"
  fi
  expect "mini0_exists_before" "mini0" in_ns "$SERVER_NS" ip link show mini0
  expect "nft_table_exists_before" "table ip mini" in_ns "$SERVER_NS" nft list tables
}

step_killall() {
  local out rc
  out=$(in_ns "$SERVER_NS" "$MINI_BIN" killall --data-dir "$DATA" 2>&1) && rc=0 || rc=$?
  echo "$out" | sed 's/^/    # /'
  if [ "$rc" -eq 0 ] && grep -q "killed containerd-shim" <<<"$out" && grep -q "removed network namespace" <<<"$out"; then
    ok "killall_succeeds_and_says_what_it_did"
  else
    not_ok "killall_succeeds_and_says_what_it_did" "rc=$rc"
  fi
}

step_verify() {
  local pid left=() ns id
  for pid in "${OUR_PIDS[@]}"; do
    if [ -d "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then left+=("$pid"); fi
  done
  if [ "${#left[@]}" -eq 0 ]; then ok "no_recorded_process_left"; else not_ok "no_recorded_process_left" "alive: ${left[*]}"; fi
  left=()
  mapfile -t left < <(pids_with_arg "$DATA/agent/containerd/containerd.sock")
  if [ "${#left[@]}" -eq 0 ]; then ok "no_containerd_or_shim_of_the_data_dir"; else not_ok "no_containerd_or_shim_of_the_data_dir" "${left[*]}"; fi
  expect_eq "no_mount_under_data_dir" "0" bash -c "awk -v d='$DATA/' 'index(\$5, d) == 1' /proc/self/mountinfo | wc -l"
  left=()
  for ns in "${POD_NETNS[@]}"; do
    if [ -e "$ns" ] || grep -q " $ns " /proc/self/mountinfo; then left+=("$ns"); fi
  done
  if [ "${#left[@]}" -eq 0 ]; then ok "pod_netns_removed"; else not_ok "pod_netns_removed" "${left[*]}"; fi
  expect_fail "mini0_deleted" "" in_ns "$SERVER_NS" ip link show mini0
  expect_fail "vxlan_deleted" "" in_ns "$SERVER_NS" ip link show mini.1
  # the pods' veths go with their namespaces (the kernel destroys them a moment later)
  check_for "pod_veths_gone" 20 bash -c \
    "[ -z \"\$(nsenter --net=$(ns_path "$SERVER_NS") ip -o link show type veth | grep -v ' eth0@')\" ]"
  expect_eq "nft_table_deleted" "0" bash -c "nsenter --net=$(ns_path "$SERVER_NS") nft list tables | grep -c 'table ip mini\$' || true"
  left=()
  for id in "${TASK_IDS[@]}"; do
    for dir in /sys/fs/cgroup/*/k8s.io/"$id" /sys/fs/cgroup/k8s.io/"$id"; do
      [ -d "$dir" ] && left+=("$dir")
    done
  done
  if [ "${#left[@]}" -eq 0 ]; then ok "pod_cgroups_removed"; else not_ok "pod_cgroups_removed" "${left[*]}"; fi
  local name
  for name in other_data_dir_mini:$OTHER_PID shim_lookalike:$SHIM_CANARY_PID plain_process:$SLEEP_CANARY_PID; do
    pid=${name#*:}
    name=${name%%:*}
    if kill -0 "$pid" 2>/dev/null; then ok "untouched_$name"; else not_ok "untouched_$name" "pid $pid is gone"; fi
  done
}

step_status() {
  expect "status_server_ready_with_node" "api: +ready.*" in_ns "$SERVER_NS" "$MINI_BIN" status --data-dir "$DATA"
  expect "status_lists_node_and_store" "datastore: +sled.*" in_ns "$SERVER_NS" "$MINI_BIN" status --data-dir "$DATA"
}

step_status_after() {
  expect_fail "status_after_killall_not_running" "api: +not ready" in_ns "$SERVER_NS" "$MINI_BIN" status --data-dir "$DATA"
}

# step_crashed_server: the server restarted on the same data dir, its pods back, then killed with
# SIGKILL (a crash: its containerd and pods stay); killall must kill that containerd itself.
step_crashed_server() {
  local sock=$DATA/agent/containerd/containerd.sock out rc containerd left
  start_node_server "$DATA" --node-name server --resolv-conf "$WORK/resolv.conf"
  wait_for "restarted_deployment_two_pods_running" 120 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l app=sleeper --no-headers 2>/dev/null | grep -c ' Running ') -eq 2 ]" || return 0
  kill -9 "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  containerd=$(for pid in $(pids_with_arg "$sock"); do [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = containerd ] && echo "$pid"; done)
  out=$(in_ns "$SERVER_NS" "$MINI_BIN" killall --data-dir "$DATA" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -eq 0 ] && [ -n "$containerd" ] && grep -q "killed containerd (pid $containerd)" <<<"$out"; then
    ok "crashed_server_killall_kills_its_containerd"
  else
    not_ok "crashed_server_killall_kills_its_containerd" "rc=$rc containerd=$containerd $out"
  fi
  left=$(pids_with_arg "$sock")
  if [ -z "$left" ]; then ok "crashed_server_no_runtime_process_left"; else not_ok "crashed_server_no_runtime_process_left" "$left"; fi
  expect_eq "crashed_server_no_mount_left" "0" bash -c "awk -v d='$DATA/' 'index(\$5, d) == 1' /proc/self/mountinfo | wc -l"
}

step_again() {
  expect "killall_again_finds_nothing" "nothing of mini was running" \
    in_ns "$SERVER_NS" "$MINI_BIN" killall --data-dir "$DATA"
}

step_start
step_deployment
step_canaries
step_record
step_status
step_killall
step_verify
step_status_after
step_again
step_crashed_server
summary
