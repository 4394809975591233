#!/usr/bin/env bash
# End-to-end: NetworkPolicy enforcement on two real nodes (agents with their own containerd,
# each in a network namespace): a default-deny ingress policy blocks pod-to-pod traffic on one
# node and across nodes and cuts an established connection, an allow by podSelector (named
# port) and by namespaceSelector (port range) opens exactly what it names, an egress policy
# with an ipBlock except blocks the excepted pod, removing the policies restores traffic, and
# an agent restarted with --disable-network-policy removes its table and polices nothing.
# Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=np
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
API_PORT=22443
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-netpol.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a node-b)

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-netpol-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the network policy suite needs root (network namespaces, containerd, nftables)"
  echo "0 passed, 0 failed"
  exit 0
fi

pod_ip() { k get pod "$@" -o jsonpath='{.status.podIP}'; }

# probe POD[@NS] IP PORT: prints EXEC (the exec ran) and the answer: the web server's name on
# port 80, the echo server's "ping" on 9000.
probe() {
  local pod=${1%@*} ns=default ip=$2 port=$3
  [[ $1 == *@* ]] && ns=${1#*@}
  if [ "$port" = 80 ]; then
    k exec -n "$ns" "$pod" -- sh -c "echo EXEC; printf 'GET /name HTTP/1.0\r\n\r\n' | timeout 4 nc -w 2 $ip 80" 2>/dev/null || true
  else
    k exec -n "$ns" "$pod" -- sh -c "echo EXEC; echo ping | timeout 3 nc -w 2 $ip $port" 2>/dev/null || true
  fi
}

# reach POD[@NS] IP PORT: succeeds when the connection got its answer; otherwise says what the
# probe got and, for a failed check's report, how the destination's node polices it.
reach() {
  local out
  out=$(probe "$@")
  grep -Eq 'web-|ping' <<<"$out" && return 0
  if grep -q EXEC <<<"$out"; then echo "the exec ran; no answer from $2:$3"; else echo "the exec into $1 failed"; fi
  policing_of "$2"
  return 1
}

# policing_of IP: the chain of the node that holds IP's pod, and that node's agent's last words on
# network policy (printed with a failed check).
policing_of() {
  local n table chain set
  for n in "${NODES[@]}"; do
    table=$(in_ns "$E2E_NS-$n" nft list table ip mini-netpol 2>/dev/null || true)
    chain=$(grep -A6 "chain ingress:$1 " <<<"$table" || true)
    [ -n "$chain" ] && sed "s/^/$n: /" <<<"$chain"
    # the sets the chain matches on, with their elements (nft's own syntax cannot name them)
    for set in $(grep -o '@[^ ]*' <<<"$chain" | tr -d @ | sort -u); do
      awk -v s="set $set {" 'index($0, s) {f = 1} f {print} f && /^\t}/ {exit}' <<<"$table" | sed "s/^/$n: /"
    done
    grep -i "network policy" "$WORK/$n/agent.log" 2>/dev/null | tail -2 | sed "s/^/$n agent: /"
  done
}

# blocked POD[@NS] IP PORT: succeeds when the exec ran and no answer came.
blocked() {
  local out
  out=$(probe "$@")
  grep -q EXEC <<<"$out" && ! grep -Eq 'web-|ping' <<<"$out"
}

apply() { k apply -f - >/dev/null; }

step_start() {
  setup_network "${NODES[@]}"
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  start_node_server "$WORK/server" --disable-agent
  local i=1 n
  for n in "${NODES[@]}"; do
    mkdir -p "$WORK/$n/agent/images"
    cp "$WORK/busybox.tar" "$WORK/$n/agent/images/"
    start_agent "$n" "$(node_ip $i)" "$WORK/$n"
    i=$((i + 1))
  done
  wait_for "two_nodes_ready" 120 bash -c \
    "out=\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get nodes --no-headers 2>&1); [ \$(grep -c ' Ready ' <<<\"\$out\") -eq 2 ] || { echo \"\$out\"; exit 1; }" || return 1
  wait_for "default_serviceaccount_created" 30 k get sa default -n default || return 1
  k create namespace np-other >/dev/null
  k label namespace np-other team=x >/dev/null
  wait_for "other_serviceaccount_created" 30 k get sa default -n np-other || return 1
  local node
  for node in a b; do
    apply <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web-$node, labels: {app: web}}
spec:
  nodeName: node-$node
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: $IMAGE
    command: [sh, -c, "hostname > /var/www/name; nc -ll -p 9000 -e cat & exec httpd -f -p 80 -h /var/www"]
    ports: [{name: http, containerPort: 80}, {name: echo, containerPort: 9000}]
---
apiVersion: v1
kind: Pod
metadata: {name: client-$node, labels: {role: client}}
spec:
  nodeName: node-$node
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sh, image: $IMAGE, command: [sleep, "3600"]}
EOF
  done
  apply <<EOF
apiVersion: v1
kind: Pod
metadata: {name: other-a}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sh, image: $IMAGE, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: tool-b, namespace: np-other}
spec:
  nodeName: node-b
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sh, image: $IMAGE, command: [sleep, "3600"]}
EOF
  wait_for "pods_running" 120 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -A --no-headers | grep -c Running) -eq 6 ]" || return 1
  WEB_A=$(pod_ip web-a)
  WEB_B=$(pod_ip web-b)
}

step_baseline() {
  check_for "same_node_pod_reaches_web_before_policies" 30 reach client-a "$WEB_A" 80
  check_for "cross_node_pod_reaches_web_before_policies" 30 reach client-b "$WEB_A" 80
  check_for "echo_port_answers_before_policies" 30 reach client-a "$WEB_A" 9000
  # a long-lived connection from node-b to web-a's echo port, to be cut by the deny
  apply <<EOF
apiVersion: v1
kind: Pod
metadata: {name: streamer}
spec:
  nodeName: node-b
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sh, image: $IMAGE, command: [sh, -c, "while true; do echo tick; sleep 1; done | nc $WEB_A 9000; echo CUT; sleep 3600"]}
EOF
  check_for "established_connection_streams" 60 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl logs streamer 2>&1 | grep -q tick"
}

step_default_deny() {
  apply <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
EOF
  check_for "default_deny_blocks_same_node" 30 blocked client-a "$WEB_A" 80
  check_for "default_deny_blocks_across_nodes" 30 blocked client-b "$WEB_A" 80
  check_for "default_deny_blocks_other_node_pod" 30 blocked client-a "$WEB_B" 80
  check_for "established_connection_is_cut" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl logs streamer 2>&1 | grep -q CUT"
  expect "table_has_a_chain_for_the_isolated_pod" "ingress:$WEB_A" in_ns "$E2E_NS-node-a" nft list table ip mini-netpol
  expect_fail "table_has_no_chain_for_the_other_node_pod" "^$" bash -c \
    "nsenter --net=$(ns_path "$E2E_NS-node-a") nft list table ip mini-netpol | grep 'ingress:$WEB_B'"
}

step_allow_pod_selector() {
  apply <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-clients}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{port: http}]
EOF
  check_for "later_allow_opens_same_node" 30 reach client-a "$WEB_A" 80
  check_for "later_allow_opens_across_nodes" 30 reach client-b "$WEB_A" 80
  check_for "later_allow_opens_the_other_web" 30 reach client-a "$WEB_B" 80
  check_for "unselected_pod_stays_blocked" 30 blocked other-a "$WEB_A" 80
  check_for "port_not_named_stays_blocked" 30 blocked client-a "$WEB_A" 9000
}

step_allow_namespace() {
  check_for "other_namespace_blocked" 30 blocked tool-b@np-other "$WEB_A" 9000
  apply <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-team-x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: x}}}]
    ports: [{protocol: TCP, port: 9000, endPort: 9010}]
EOF
  check_for "namespace_selector_opens_port_range" 30 reach tool-b@np-other "$WEB_A" 9000
  check_for "namespace_selector_leaves_other_ports_closed" 30 blocked tool-b@np-other "$WEB_A" 80
}

step_egress() {
  apply <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients-egress}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.42.0.0/16, except: [$WEB_B/32]}}]
EOF
  check_for "egress_except_blocks_the_excepted_pod" 30 blocked client-a "$WEB_B" 80
  check_for "egress_ip_block_allows_the_rest" 30 reach client-a "$WEB_A" 80
  check_for "egress_except_blocks_across_nodes_too" 30 blocked client-b "$WEB_B" 80
}

step_removal() {
  k delete networkpolicy --all >/dev/null
  check_for "removal_restores_unselected_pod" 30 reach other-a "$WEB_A" 80
  check_for "removal_restores_egress" 30 reach client-a "$WEB_B" 80
  check_for "removal_restores_other_ports" 30 reach client-a "$WEB_A" 9000
  check_for "removal_leaves_no_pod_chains" 30 bash -c \
    "! nsenter --net=$(ns_path "$E2E_NS-node-a") nft list table ip mini-netpol | grep -q 'chain ingress:'"
}

step_disable_flag() {
  apply <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
EOF
  check_for "deny_again_blocks" 30 blocked client-b "$WEB_A" 80
  # node-a's agent restarted with --disable-network-policy: its table goes, its pods are open
  kill -9 "$AGENT_PID_node_a"
  start_agent node-a "$(node_ip 1)" "$WORK/node-a" --disable-network-policy
  check_for "disabled_agent_removes_the_table" 60 bash -c \
    "! nsenter --net=$(ns_path "$E2E_NS-node-a") nft list table ip mini-netpol >/dev/null 2>&1"
  check_for "disabled_node_does_not_police" 60 reach client-b "$WEB_A" 80
  check_for "enforcing_node_still_polices" 30 blocked client-a "$WEB_B" 80
}

step_cleanup_command() {
  kill -9 "$AGENT_PID_node_b"
  expect "cleanup_command_runs" "removed" in_ns "$E2E_NS-node-b" "$MINI_BIN" cleanup
  expect_fail "cleanup_removed_the_policy_table" "No such file|does not exist|Error" in_ns "$E2E_NS-node-b" nft list table ip mini-netpol
}

main() {
  step_start || { summary; exit 1; }
  step_baseline
  step_default_deny
  step_allow_pod_selector
  step_allow_namespace
  step_egress
  step_removal
  step_disable_flag
  step_cleanup_command
  summary
}
main
