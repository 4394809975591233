#!/usr/bin/env bash
# Shared helpers for the node end-to-end suites: a small network of "machines" made of network
# namespaces on one host (a switch namespace with a bridge, one namespace per node), a real
# `mini server` in one of them and `mini agent`s (each with its own containerd) in the others,
# and a cleanup that removes every process, mount and namespace the suite created.
# Source it after lib.sh; it needs MINI_BIN and WORK set.

E2E_NS=${E2E_NS:-minie2e}
SWITCH_NS=$E2E_NS-sw
SERVER_NS=$E2E_NS-s
SERVER_IP=10.77.0.10
API_PORT=6443
NODE_PIDS=()
CNI_NETNS_BEFORE=""

# ns_path NAME: the bind-mounted namespace file of a netns we created.
ns_path() { echo "/var/run/netns/$1"; }

# in_ns NAME CMD...: runs CMD in the network namespace only (mounts untouched: runc needs the
# host's cgroup mounts, which `ip netns exec` would hide behind a fresh /sys).
in_ns() {
  local ns=$1
  shift
  nsenter --net="$(ns_path "$ns")" "$@"
}

# k ARGS...: kubectl against the suite's server, from the server's namespace.
k() { in_ns "$SERVER_NS" kubectl --request-timeout=30s "$@"; }

# add_machine NAME IP: a namespace wired to the switch with one address on 10.77.0.0/24.
add_machine() {
  local ns=$1 ip=$2 port="p-${1##*-}"
  ip netns add "$ns"
  ip -n "$SWITCH_NS" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$SWITCH_NS" link set "$port" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
}

# setup_network NODE...: the switch, the server's machine and one machine per node name
# (node N gets 10.77.0.(10+N)).
setup_network() {
  teardown_network
  CNI_NETNS_BEFORE=$(ls /var/run/netns 2>/dev/null | grep '^cni-' || true)
  ip netns add "$SWITCH_NS"
  ip -n "$SWITCH_NS" link add br0 type bridge
  ip -n "$SWITCH_NS" link set br0 up
  add_machine "$SERVER_NS" "$SERVER_IP"
  local i=1 node
  for node in "$@"; do
    add_machine "$E2E_NS-$node" "10.77.0.$((10 + i))"
    i=$((i + 1))
  done
}

# node_ip N: the address of the N-th node machine (1-based).
node_ip() { echo "10.77.0.$((10 + $1))"; }

# start_node_server DATA_DIR EXTRA_ARGS...: mini server in the server namespace on :6443.
start_node_server() {
  local dir=$1
  shift
  mkdir -p "$dir"
  # nsenter execs mini, so $! is mini's PID (a backgrounded shell function would be a subshell)
  nsenter --net="$(ns_path "$SERVER_NS")" "$MINI_BIN" server --data-dir "$dir" --bind-address 0.0.0.0 \
    --https-listen-port "$API_PORT" --advertise-address "$SERVER_IP" "$@" >>"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do
    if in_ns "$SERVER_NS" curl -sk "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null | grep -q ok; then
      export KUBECONFIG=$dir/server/admin.kubeconfig
      JOIN_TOKEN=$(cat "$dir/server/node-token")
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "mini server exited:"; tail -30 "$dir/server.log"; return 1; fi
    sleep 0.2
  done
  echo "mini server did not become ready"; tail -30 "$dir/server.log"; return 1
}

# start_agent NAME IP DATA_DIR EXTRA_ARGS...: mini agent (with its own managed containerd) in
# namespace $E2E_NS-NAME; its PID goes to AGENT_PID_<NAME>.
start_agent() {
  local name=$1 ip=$2 dir=$3
  shift 3
  mkdir -p "$dir"
  # no upstream resolvers: test traffic stays inside the suite's namespaces
  [ -f "$WORK/resolv.conf" ] || echo "# no upstream nameservers in the e2e network" >"$WORK/resolv.conf"
  nsenter --net="$(ns_path "$E2E_NS-$name")" "$MINI_BIN" agent --server "https://$SERVER_IP:$API_PORT" \
    --token "$JOIN_TOKEN" --data-dir "$dir" --node-name "$name" --node-ip "$ip" \
    --resolv-conf "$WORK/resolv.conf" "$@" >>"$dir/agent.log" 2>&1 &
  local pid=$!
  NODE_PIDS+=("$pid")
  eval "AGENT_PID_${name//-/_}=$pid"
}

# kill_node_processes DATA_DIR NS: kills every container task of the node's containerd, then
# containerd itself and whatever else still runs in the node's namespace (shims), by PID.
kill_node_processes() {
  local dir=$1 ns=$2 sock task pid
  sock=$(find "$dir" -maxdepth 4 -name 'containerd.sock' 2>/dev/null | head -n 1 || true)
  if [ -n "$sock" ] && [ -S "$sock" ]; then
    for task in $(timeout 10 ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      timeout 10 ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for task in $(timeout 10 ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      timeout 10 ctr --address "$sock" -n k8s.io tasks delete -f "$task" >/dev/null 2>&1 || true
    done
  fi
  if [ -e "$(ns_path "$ns")" ]; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  fi
}

# teardown_network: deletes the suite's namespaces, and the pod namespaces our containerds made.
teardown_network() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$E2E_NS-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  # pod namespaces our containerds made: their processes were killed with the node's tasks;
  # remove the ones left empty (a busy one belongs to someone else's containers)
  for ns in $(ls /var/run/netns 2>/dev/null | grep '^cni-' || true); do
    if ! grep -qx "$ns" <<<"$CNI_NETNS_BEFORE" && [ -z "$(ip netns pids "$ns" 2>/dev/null)" ]; then
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

# unmount_under DIR: lazily unmounts every mount below DIR (container rootfs, shm, tmpfs volumes).
unmount_under() {
  local dir=$1 m
  for m in $(awk -v d="$dir" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

# cleanup_nodes NAME...: everything the suite started, for the given node names, then the network.
cleanup_nodes() {
  local pid name
  for pid in "${NODE_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for name in "$@"; do kill_node_processes "$WORK/$name" "$E2E_NS-$name"; done
  stop_server KILL
  teardown_network
  unmount_under "$WORK"
}

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds; records a failure otherwise
# (and returns 1, so callers that can't go on may stop: `wait_for ... || return 1`).
wait_for() {
  local name=$1 secs=$2
  shift 2
  local end=$((SECONDS + secs)) out=""
  while [ $SECONDS -lt $end ]; do
    if out=$("$@" 2>&1); then ok "$name"; return 0; fi
    sleep 1
  done
  not_ok "$name" "timed out after ${secs}s: $out"
  return 1
}

# check_for NAME SECONDS CMD...: wait_for that never stops the suite.
check_for() { wait_for "$@" || true; }

