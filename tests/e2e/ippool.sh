#!/usr/bin/env bash
# End-to-end: static pod IPs from IP pools on two real nodes (agents with their own containerd,
# each in a network namespace): a pool pod gets an address of its pool as status.podIP and is
# reachable from a pod on the other node and through a Service; a pod asking a specific address
# gets it and a second one asking the same waits with an event; a StatefulSet pod keeps its
# address after `kubectl delete pod`; a deleted Deployment's address is released; an exhausted
# pool and an overlapping pool are reported. Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=ipp
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
API_PORT=26443
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-ippool.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a node-b)

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-ippool-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the ip pool suite needs root (network namespaces, containerd, netlink, nftables)"
  echo "0 passed, 0 failed"
  exit 0
fi

# http_from POD HOST PORT PATH: an HTTP GET from inside POD with busybox nc; prints the body.
http_from() {
  k exec "$1" -- sh -c "printf 'GET $4 HTTP/1.0\r\n\r\n' | nc -w 3 $2 $3 | sed '1,/^\r\$/d'"
}

pod_ip() { k get pod "$1" -o jsonpath='{.status.podIP}'; }
pod_uid() { k get pod "$1" -o jsonpath='{.metadata.uid}'; }
running() { [ "$(k get pod "$1" -o jsonpath='{.status.phase}')" = Running ] && [ -n "$(pod_ip "$1")" ]; }
# answers_name CLIENT HOST NAME: an HTTP GET of /name from CLIENT to HOST:80 answers NAME.
answers_name() { [ "$(http_from "$1" "$2" 80 /name)" = "$3" ]; }
# recreated POD OLD_UID: the pod runs again as a new object.
recreated() { running "$1" && [ "$(pod_uid "$1")" != "$2" ]; }
# event_for POD REASON: the pod has an event with that reason.
event_for() {
  k get events -o jsonpath='{range .items[*]}{.involvedObject.name}{" "}{.reason}{" "}{.message}{"\n"}{end}' | grep "^$1 $2"
}

# web_pod NAME NODE ANNOTATIONS: an httpd pod answering /name with its name, pinned to NODE.
web_pod() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata:
  name: $1
  labels: {app: $1}
  annotations: {$3}
spec:
  nodeSelector: {kubernetes.io/hostname: $2}
  terminationGracePeriodSeconds: 0
  containers:
  - name: httpd
    image: $IMAGE
    command: [sh, -c, "hostname > /var/www/name; exec httpd -f -p 80 -h /var/www"]
    ports: [{containerPort: 80}]
EOF
}

step_start() {
  setup_network "${NODES[@]}"
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  start_node_server "$WORK/server" --disable-agent
  local i=1 n
  for n in "${NODES[@]}"; do
    mkdir -p "$WORK/$n/agent/images"
    cp "$WORK/busybox.tar" "$WORK/$n/agent/images/"
    start_agent "$n" "$(node_ip $i)" "$WORK/$n" --kubelet-port $((26250 + i))
    i=$((i + 1))
  done
  wait_for "two_nodes_ready" 120 bash -c \
    "out=\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get nodes --no-headers 2>&1); [ \$(grep -c ' Ready ' <<<\"\$out\") -eq 2 ] || { echo \"\$out\"; exit 1; }" || return 1
  wait_for "default_serviceaccount_created" 30 k get sa default -n default || return 1
  wait_for "ippool_crd_established" 30 k get ippools || return 1
  for n in a b; do
    cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: client-$n}
spec:
  nodeName: node-$n
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sh, image: $IMAGE, command: [sleep, "3600"]}
EOF
  done
  wait_for "client_a_running" 90 running client-a || return 1
  wait_for "client_b_running" 90 running client-b || return 1
}

step_pools() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: mini.dev/v1
kind: IPPool
metadata: {name: web}
spec: {cidr: 10.99.0.0/24}
---
apiVersion: mini.dev/v1
kind: IPPool
metadata: {name: tiny}
spec: {cidr: 10.98.0.0/30}
---
apiVersion: mini.dev/v1
kind: IPPool
metadata: {name: clash}
spec: {cidr: 10.42.200.0/24}
EOF
  check_for "pool_status_shows_size" 30 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get ippool web --no-headers | grep -E '10.99.0.0/24 +0 +254'"
  check_for "overlapping_pool_refused_with_reason" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get ippool clash -o jsonpath='{.status.conditions[0].reason} {.status.conditions[0].message}' | grep 'OverlapsClusterCIDR.*cluster CIDR'"
  check_for "overlapping_pool_warning_event" 30 event_for clash "OverlapsClusterCIDR"
}

step_pool_pod() {
  web_pod pinned node-b "ipam.mini.dev/pool: web"
  wait_for "pool_pod_running" 90 running pinned || return 1
  local ip
  ip=$(pod_ip pinned)
  expect "pool_pod_ip_from_pool" '^10\.99\.0\.[0-9]+$' echo "$ip"
  expect_eq "pool_pod_annotated_with_its_address" "$ip" k get pod pinned -o jsonpath='{.metadata.annotations.ipam\.mini\.dev/allocated}'
  expect "allocation_object_names_the_pod" "pinned" k get ipallocation "${ip//./-}" -o jsonpath='{.spec.owner.name} {.spec.node}'
  check_for "pool_pod_reachable_from_other_node" 20 answers_name client-a $ip pinned
  check_for "pool_pod_reachable_from_same_node" 20 answers_name client-b $ip pinned
  expect "other_node_routes_pool_address_over_vxlan" "dev mini.1" in_ns "$E2E_NS-node-a" ip route show "$ip/32"
  expect "holding_node_routes_pool_address_into_bridge" "dev mini0" in_ns "$E2E_NS-node-b" ip route show "$ip/32"
  k expose pod pinned --port=80 --name=pinned >/dev/null
  local svc
  svc=$(k get svc pinned -o jsonpath='{.spec.clusterIP}')
  check_for "service_endpoint_is_pool_address" 20 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get endpointslices -l kubernetes.io/service-name=pinned -o jsonpath='{.items[*].endpoints[*].addresses[*]}' | grep -qx '$ip'"
  check_for "pool_pod_reachable_through_service" 20 answers_name client-a $svc pinned
}

step_fixed_address() {
  web_pod fixed node-a "ipam.mini.dev/address: 10.99.0.50"
  wait_for "fixed_address_pod_running" 90 running fixed || return 1
  expect_eq "fixed_address_pod_gets_it" "10.99.0.50" pod_ip fixed
  check_for "fixed_address_reachable_from_other_node" 20 answers_name client-b 10.99.0.50 fixed
  web_pod fixed-dup node-b "ipam.mini.dev/address: 10.99.0.50"
  check_for "same_address_second_pod_gets_event" 30 event_for fixed-dup "IPAddressInUse.*10.99.0.50"
  expect_eq "same_address_second_pod_waits" "" pod_ip fixed-dup
  web_pod outside node-b "ipam.mini.dev/pool: web, ipam.mini.dev/address: 10.97.0.1"
  check_for "address_outside_pool_gets_event" 30 event_for outside "IPAddressNotInPool"
}

step_statefulset() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations: {ipam.mini.dev/pool: web}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {name: sh, image: $IMAGE, command: [sleep, "3600"]}
EOF
  wait_for "statefulset_pod_running" 90 running db-0 || return 1
  local ip uid
  ip=$(pod_ip db-0)
  uid=$(pod_uid db-0)
  expect "statefulset_pod_ip_from_pool" '^10\.99\.0\.[0-9]+$' echo "$ip"
  k delete pod db-0 --wait=false >/dev/null
  wait_for "statefulset_pod_recreated" 90 recreated db-0 "$uid" || return 1
  expect_eq "statefulset_pod_keeps_its_address" "$ip" pod_ip db-0
}

step_release() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: rel}
spec:
  replicas: 1
  selector: {matchLabels: {app: rel}}
  template:
    metadata:
      labels: {app: rel}
      annotations: {ipam.mini.dev/pool: web}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {name: sh, image: $IMAGE, command: [sleep, "3600"]}
EOF
  wait_for "deployment_pod_running" 90 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l app=rel -o jsonpath='{.items[0].status.phase}')\" = Running ]" || return 1
  local pod ip
  pod=$(k get pods -l app=rel -o jsonpath='{.items[0].metadata.name}')
  ip=$(pod_ip "$pod")
  expect "deployment_pod_has_allocation" "$pod" k get ipallocation "${ip//./-}" -o jsonpath='{.spec.owner.name}'
  k delete deployment rel >/dev/null
  check_for "deleted_deployment_address_released" 60 bash -c "! nsenter --net=$(ns_path "$SERVER_NS") kubectl get ipallocation ${ip//./-} >/dev/null 2>&1"
  check_for "released_address_route_gone" 30 bash -c "[ -z \"\$(nsenter --net=$(ns_path "$E2E_NS-node-a") ip route show $ip/32)\$(nsenter --net=$(ns_path "$E2E_NS-node-b") ip route show $ip/32)\" ]"
}

step_exhaustion() {
  local n
  for n in 1 2 3; do web_pod "tiny-$n" node-a "ipam.mini.dev/pool: tiny"; done
  check_for "tiny_pool_fills" 90 bash -c "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get ipallocations -o jsonpath='{range .items[?(@.spec.pool==\"tiny\")]}{.metadata.name}{\"\\n\"}{end}' | grep -c .) -eq 2 ]"
  local waiting=""
  for n in 1 2 3; do
    if [ -z "$(k get pod "tiny-$n" -o jsonpath='{.metadata.annotations.ipam\.mini\.dev/allocated}')" ]; then waiting=tiny-$n; fi
  done
  if [ -z "$waiting" ]; then not_ok "exhausted_pool_leaves_a_pod_waiting" "$(k get pods -o wide)"; return 0; fi
  ok "exhausted_pool_leaves_a_pod_waiting"
  check_for "exhausted_pool_gives_event" 30 event_for "$waiting" "IPPoolExhausted"
  k delete pod tiny-1 tiny-2 tiny-3 --wait=false >/dev/null 2>&1 || true
}

step_node_selector() {
  k label node node-b rack=r1 >/dev/null
  cat <<EOF | k apply -f - >/dev/null
apiVersion: mini.dev/v1
kind: IPPool
metadata: {name: rack1}
spec: {cidr: 10.96.0.0/28, nodeSelector: {rack: r1}}
EOF
  # the pool is seen (status written) before pods asking for it are created
  check_for "selector_pool_ready" 30 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get ippool rack1 -o jsonpath='{.status.size}')\" = 14 ]"
  local n
  for n in 1 2; do
    cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata:
  name: rack-$n
  annotations: {ipam.mini.dev/pool: rack1}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sh, image: $IMAGE, command: [sleep, "3600"]}
EOF
  done
  for n in 1 2; do
    check_for "pool_selector_pod_${n}_running" 90 running "rack-$n"
    expect_eq "pool_selector_pod_${n}_on_matching_node" "node-b" k get pod "rack-$n" -o jsonpath='{.spec.nodeName}'
  done
}

main() {
  step_start || { summary; exit 1; }
  step_pools
  step_pool_pod
  step_fixed_address
  step_statefulset
  step_release
  step_exhaustion
  step_node_selector
  summary
}
main
