#!/usr/bin/env bash
# End-to-end: the cluster network on three real nodes (agents with their own containerd, each in
# a network namespace): pod-to-pod across the VXLAN overlay, ClusterIP load balancing across
# nodes and endpoint removal, NodePort and LoadBalancer from outside the cluster, cluster DNS
# (services, headless, SRV, ExternalName, unknown names), and a removed node's overlay entries
# disappearing from the others. Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=mininet
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-net.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a node-b node-c)

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-net-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the network suite needs root (network namespaces, containerd, netlink, nftables)"
  echo "0 passed, 0 failed"
  exit 0
fi


# http_from POD HOST PORT PATH: an HTTP GET from inside POD with busybox nc; prints the body.
http_from() {
  k exec "$1" -- sh -c "printf 'GET $4 HTTP/1.0\r\n\r\n' | nc -w 3 $2 $3 | sed '1,/^\r\$/d'"
}

pod_ip() { k get pod "$1" -o jsonpath='{.status.podIP}'; }

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
  # on failure the last answer (nodes, or kubectl's error) is shown
  wait_for "three_nodes_ready" 120 bash -c \
    "out=\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get nodes --no-headers 2>&1); [ \$(grep -c ' Ready ' <<<\"\$out\") -eq 3 ] || { echo \"\$out\"; exit 1; }" || return 1
  wait_for "default_serviceaccount_created" 30 k get sa default -n default || return 1
  expect "node_publishes_vtep" '"VtepMAC"' k get node node-a -o jsonpath='{.metadata.annotations.flannel\.alpha\.coreos\.com/backend-data}'
  cat <<EOF | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [node-a, node-b]}]}]
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}
      containers:
      - name: httpd
        image: $IMAGE
        command: [sh, -c, "hostname > /var/www/name; exec httpd -f -p 80 -h /var/www"]
        ports: [{name: http, containerPort: 80}]
        readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
EOF
  local n2
  for n2 in a b c; do
    cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: client-$n2}
spec:
  nodeName: node-$n2
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sh, image: $IMAGE, command: [sleep, "3600"]}
EOF
  done
  wait_for "web_available" 120 k rollout status deployment/web --timeout=5s || return 1
  wait_for "clients_running" 60 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l '!app' --no-headers | grep -c Running) -eq 3 ]" || return 1
  WEB_A=$(k get pods -l app=web -o jsonpath='{range .items[?(@.spec.nodeName=="node-a")]}{.metadata.name}{end}')
  WEB_B=$(k get pods -l app=web -o jsonpath='{range .items[?(@.spec.nodeName=="node-b")]}{.metadata.name}{end}')
  [ -n "$WEB_A" ] && [ -n "$WEB_B" ] || { not_ok "web_on_node_a_and_b" "$(k get pods -o wide)"; return 1; }
}

step_pod_to_pod() {
  expect_eq "pod_on_a_reaches_pod_on_b" "$WEB_B" http_from client-a "$(pod_ip "$WEB_B")" 80 /name
  expect_eq "pod_on_b_reaches_pod_on_a" "$WEB_A" http_from client-b "$(pod_ip "$WEB_A")" 80 /name
  expect_eq "pod_on_c_reaches_pod_on_a" "$WEB_A" http_from client-c "$(pod_ip "$WEB_A")" 80 /name
  expect "remote_pod_cidr_routed_over_vxlan" "dev mini.1" in_ns "$E2E_NS-node-a" ip route show "$(k get node node-b -o jsonpath='{.spec.podCIDR}')"
}

step_cluster_ip() {
  k expose deployment web --port=80 --name=web >/dev/null
  local ip
  ip=$(k get svc web -o jsonpath='{.spec.clusterIP}')
  local c
  for c in a b c; do
    check_for "cluster_ip_answers_from_node_$c" 20 http_from "client-$c" "$ip" 80 /name
  done
  local names
  names=$(k exec client-c -- sh -c "for i in \$(seq 1 30); do printf 'GET /name HTTP/1.0\r\n\r\n' | nc -w 3 $ip 80 | tail -n 1; done" | sort -u | tr '\n' ' ')
  if grep -q "$WEB_A" <<<"$names" && grep -q "$WEB_B" <<<"$names"; then ok "cluster_ip_spreads_over_both_endpoints"; else not_ok "cluster_ip_spreads_over_both_endpoints" "answers from: $names"; fi
  check_for "service_name_resolves_and_answers" 20 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl exec client-a -- sh -c \"printf 'GET /name HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80\" | grep -q web-"
  k create service clusterip empty --tcp=81:81 >/dev/null
  local eip t0 t1 rc
  eip=$(k get svc empty -o jsonpath='{.spec.clusterIP}')
  t0=$(date +%s%N)
  k exec client-a -- sh -c "nc -w 5 $eip 81 </dev/null" >/dev/null 2>&1 && rc=0 || rc=$?
  t1=$(date +%s%N)
  if [ "$rc" -ne 0 ] && [ $(((t1 - t0) / 1000000)) -lt 4000 ]; then ok "service_without_endpoints_rejects_at_once"; else not_ok "service_without_endpoints_rejects_at_once" "rc=$rc after $(((t1 - t0) / 1000000)) ms"; fi
}

step_scale_down() {
  local ip survivor start end answers elapsed
  ip=$(k get svc web -o jsonpath='{.spec.clusterIP}')
  k scale deployment web --replicas=1 >/dev/null
  start=$(date +%s%N)
  end=$((SECONDS + 20))
  survivor=""
  while [ $SECONDS -lt $end ]; do
    answers=$(k exec client-c -- sh -c "for i in \$(seq 1 10); do printf 'GET /name HTTP/1.0\r\n\r\n' | nc -w 2 $ip 80 | tail -n 1; done" 2>/dev/null | sort -u)
    if [ "$(wc -l <<<"$answers")" -eq 1 ] && [ -n "$answers" ]; then survivor=$answers; break; fi
  done
  elapsed=$((($(date +%s%N) - start) / 1000000))
  if [ -n "$survivor" ]; then ok "scaled_down_endpoint_leaves_rotation (${elapsed} ms incl. kubectl exec round trips)"; else not_ok "scaled_down_endpoint_leaves_rotation" "answers: $answers"; fi
  k scale deployment web --replicas=2 >/dev/null
  check_for "web_back_to_two" 60 bash -c "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get endpointslices -l kubernetes.io/service-name=web -o jsonpath='{.items[*].endpoints[*].addresses[0]}' | wc -w) -eq 2 ]"
}

step_node_port_lb() {
  k expose deployment web --name=web-np --type=NodePort --port=80 >/dev/null
  k expose deployment web --name=web-lb --type=LoadBalancer --port=8080 --target-port=80 >/dev/null
  local port i ip
  port=$(k get svc web-np -o jsonpath='{.spec.ports[0].nodePort}')
  for i in 1 2 3; do
    ip=$(node_ip $i)
    check_for "node_port_answers_on_node_$i" 20 bash -c "nsenter --net=$(ns_path "$SERVER_NS") curl -sf --max-time 3 http://$ip:$port/name | grep -q web-"
  done
  check_for "load_balancer_gets_node_addresses" 30 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get svc web-lb -o jsonpath='{.status.loadBalancer.ingress[*].ip}' | wc -w) -eq 3 ]"
  for i in 1 2 3; do
    ip=$(node_ip $i)
    check_for "load_balancer_answers_on_node_$i" 20 bash -c "nsenter --net=$(ns_path "$SERVER_NS") curl -sf --max-time 3 http://$ip:8080/name | grep -q web-"
  done
  check_for "node_port_answers_from_the_node_itself" 20 bash -c "nsenter --net=$(ns_path "$E2E_NS-node-c") curl -sf --max-time 3 http://$(node_ip 3):$port/name | grep -q web-"
}

step_dns() {
  local ip
  ip=$(k get svc web -o jsonpath='{.spec.clusterIP}')
  check_for "dns_service_a_record" 20 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl exec client-b -- nslookup web.default.svc.cluster.local | grep -q '$ip'"
  expect "pod_resolv_conf_uses_cluster_dns" "nameserver 10.43.0.10" k exec client-a -- cat /etc/resolv.conf
  expect "pod_resolv_conf_search_path" "search default.svc.cluster.local svc.cluster.local cluster.local" k exec client-a -- cat /etc/resolv.conf
  k create service clusterip web-headless --clusterip=None --tcp=80:80 >/dev/null
  k patch service web-headless -p '{"spec":{"selector":{"app":"web"},"ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":80}]}}' >/dev/null
  local a b ready
  # the ready web pods, as the web Service's EndpointSlice lists them
  ready=$(k get endpointslices -l kubernetes.io/service-name=web -o jsonpath='{.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}')
  a=$(awk '{print $1}' <<<"$ready")
  b=$(awk '{print $2}' <<<"$ready")
  check_for "dns_headless_returns_pod_ips" 20 bash -c "out=\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl exec client-a -- nslookup web-headless.default.svc.cluster.local); grep -q '$a' <<<\"\$out\" && grep -q '$b' <<<\"\$out\""
  check_for "dns_srv_record_for_named_port" 20 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl exec client-a -- nslookup -type=srv _http._tcp.web-headless.default.svc.cluster.local | grep -q 'port = 80\|80 '"
  k create service externalname ext --external-name web.default.svc.cluster.local >/dev/null
  check_for "dns_external_name_cname" 20 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl exec client-a -- nslookup ext.default.svc.cluster.local | grep -qi 'canonical name\|$ip'"
  local t0 t1 rc
  t0=$(date +%s%N)
  k exec client-a -- nslookup nothing.example.invalid >/dev/null 2>&1 && rc=0 || rc=$?
  t1=$(date +%s%N)
  if [ "$rc" -ne 0 ] && [ $(((t1 - t0) / 1000000)) -lt 4000 ]; then ok "dns_unknown_external_name_fails_fast ($(((t1 - t0) / 1000000)) ms incl. kubectl exec)"; else not_ok "dns_unknown_external_name_fails_fast" "rc=$rc after $(((t1 - t0) / 1000000)) ms"; fi
}

step_node_removed() {
  local cidr mac
  cidr=$(k get node node-c -o jsonpath='{.spec.podCIDR}')
  mac=$(k get node node-c -o jsonpath='{.metadata.annotations.flannel\.alpha\.coreos\.com/backend-data}' | sed 's/.*"VtepMAC":"\([^"]*\)".*/\1/')
  expect "node_c_route_present_on_a" "mini.1" in_ns "$E2E_NS-node-a" ip route show "$cidr"
  expect "node_c_fdb_present_on_a" "$mac" in_ns "$E2E_NS-node-a" bridge fdb show dev mini.1
  kill -9 "$AGENT_PID_node_c"
  k delete pod client-c --grace-period=0 --force >/dev/null 2>&1 || true
  k delete node node-c >/dev/null
  check_for "removed_node_route_gone" 20 bash -c "[ -z \"\$(nsenter --net=$(ns_path "$E2E_NS-node-a") ip route show $cidr)\" ]"
  check_for "removed_node_fdb_gone" 20 bash -c "! nsenter --net=$(ns_path "$E2E_NS-node-a") bridge fdb show dev mini.1 | grep -q '$mac'"
  check_for "removed_node_neighbour_gone" 20 bash -c "! nsenter --net=$(ns_path "$E2E_NS-node-b") ip neigh show dev mini.1 | grep -qi '$mac'"
}

step_cleanup_command() {
  kill -9 "$AGENT_PID_node_b"
  expect "cleanup_command_runs" "removed" in_ns "$E2E_NS-node-b" "$MINI_BIN" cleanup
  expect_eq "cleanup_removed_vxlan_and_bridge" "" bash -c "nsenter --net=$(ns_path "$E2E_NS-node-b") ip -o link show | grep -E 'mini\\.1|mini0' || true"
  expect_fail "cleanup_removed_nft_table" "No such file|does not exist|Error" in_ns "$E2E_NS-node-b" nft list table ip mini
}

main() {
  step_start || { summary; exit 1; }
  step_pod_to_pod
  step_cluster_ip
  step_scale_down
  step_node_port_lb
  step_dns
  step_node_removed
  step_cleanup_command
  summary
}
main
