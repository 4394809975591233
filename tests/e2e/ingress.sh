#!/usr/bin/env bash
# End-to-end: the built-in ingress controller on two real nodes (agents with their own
# containerd, each in a network namespace): the proxy idles until mini's IngressClass exists,
# an Ingress routes by host and path to two Deployments, unknown hosts get 404 and Services
# without endpoints 503, TLS serves the right certificate per SNI name, HTTP/2 over TLS and
# cleartext, a WebSocket-style upgrade passes through, a route change is picked up on a
# keep-alive connection that stays open, and status.loadBalancer holds the nodes' addresses.
# Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=ing
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-ing.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a node-b)
HTTP_PORT=21080
HTTPS_PORT=21443

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-ing-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the ingress suite needs root (network namespaces, containerd, netlink, nftables)"
  echo "0 passed, 0 failed"
  exit 0
fi

# from_outside CMD...: runs CMD in the server's machine (outside the nodes).
from_outside() { in_ns "$SERVER_NS" "$@"; }

# get HOST PATH [NODE_IP]: the body of an HTTP GET through the ingress with Host HOST.
get() {
  from_outside curl -s --max-time 5 -H "Host: $1" "http://${3:-$(node_ip 1)}:$HTTP_PORT$2"
}

# status_of HOST PATH: the HTTP status code through the ingress.
status_of() {
  from_outside curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Host: $1" "http://$(node_ip 1):$HTTP_PORT$2"
}

# served_cn NAME: the subject of the certificate the HTTPS port serves for SNI NAME.
served_cn() {
  from_outside openssl s_client -connect "$(node_ip 1):$HTTPS_PORT" -servername "$1" </dev/null 2>/dev/null |
    openssl x509 -noout -subject
}

deployment() {
  local name=$1 text=$2
  cat <<EOF | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: $name}
spec:
  replicas: 1
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: $IMAGE
        command: [sh, -c, "mkdir -p /var/www/api && echo $text > /var/www/name && echo $text-api > /var/www/api/name && exec httpd -f -p 80 -h /var/www"]
        ports: [{name: http, containerPort: 80}]
        readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: $name}
spec:
  selector: {app: $name}
  ports: [{name: http, port: 80, targetPort: 80}]
EOF
}

step_start() {
  setup_network "${NODES[@]}"
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  start_node_server "$WORK/server" --disable-agent --disable ingress
  local i=1 n
  for n in "${NODES[@]}"; do
    mkdir -p "$WORK/$n/agent/images"
    cp "$WORK/busybox.tar" "$WORK/$n/agent/images/"
    start_agent "$n" "$(node_ip $i)" "$WORK/$n" --ingress-http-port "$HTTP_PORT" --ingress-https-port "$HTTPS_PORT"
    i=$((i + 1))
  done
  wait_for "two_nodes_ready" 120 bash -c \
    "out=\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get nodes --no-headers 2>&1); [ \$(grep -c ' Ready ' <<<\"\$out\") -eq 2 ] || { echo \"\$out\"; exit 1; }" || return 1
  wait_for "default_serviceaccount_created" 30 k get sa default -n default || return 1
  deployment app-a app-a
  deployment app-b app-b
  # a WebSocket-style backend: answers an upgrade with 101, then echoes what it is sent
  cat <<'EOF' | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nc
        image: mini.local/busybox:1.0
        command:
        - sh
        - -c
        - |
          printf '#!/bin/sh\nwhile read -r l; do l=$(printf "%%s" "$l" | tr -d "\\r"); [ -z "$l" ] && break; done\nprintf "HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n"\nexec cat\n' > /ws.sh
          chmod +x /ws.sh
          while true; do nc -l -p 8081 -e /ws.sh; done
        ports: [{name: ws, containerPort: 8081}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: ws, port: 80, targetPort: 8081}]
EOF
  k create service clusterip empty --tcp=80:80 >/dev/null
  wait_for "backends_available" 120 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl rollout status deployment/app-a --timeout=5s && nsenter --net=$(ns_path "$SERVER_NS") kubectl rollout status deployment/app-b --timeout=5s && nsenter --net=$(ns_path "$SERVER_NS") kubectl rollout status deployment/echo --timeout=5s" || return 1
}

step_idle_without_class() {
  expect_fail "proxy_idle_without_ingressclass" "Connection refused|Failed to connect" \
    bash -c "nsenter --net=$(ns_path "$SERVER_NS") curl -sS --max-time 3 http://$(node_ip 1):$HTTP_PORT/ 2>&1; exit 7"
  cat <<'EOF' | k apply -f - >/dev/null
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: mini, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: mini.dev/ingress}
EOF
}

step_routes() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: a.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app-a, port: {number: 80}}}}
  - host: b.example.test
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: app-b, port: {name: http}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: app-a, port: {number: 80}}}}
  - host: empty.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: empty, port: {number: 80}}}}
  - host: missing.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: nope, port: {number: 80}}}}
  - host: echo.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
EOF
  wait_for "host_a_routes_to_app_a" 30 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") curl -s --max-time 3 -H 'Host: a.example.test' http://$(node_ip 1):$HTTP_PORT/name)\" = app-a ]" || return 1
  expect_eq "host_b_api_prefix_routes_to_app_b" "app-b-api" get b.example.test /api/name
  expect_eq "host_b_other_path_routes_to_app_a" "app-a" get b.example.test /name
  expect_eq "second_node_serves_the_same_routes" "app-b-api" get b.example.test /api/name "$(node_ip 2)"
  expect_eq "unknown_host_is_404" "404" status_of nope.example.test /
  expect_eq "service_without_endpoints_is_503" "503" status_of empty.example.test /
  expect_eq "missing_service_is_503" "503" status_of missing.example.test /
}

step_tls() {
  local h
  for h in a b; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$h.example.test" \
      -addext "subjectAltName=DNS:$h.example.test" -keyout "$WORK/$h.key" -out "$WORK/$h.crt" 2>/dev/null
    k create secret tls "tls-$h" --cert="$WORK/$h.crt" --key="$WORK/$h.key" >/dev/null
  done
  k patch ingress web --type=merge \
    -p '{"spec":{"tls":[{"hosts":["a.example.test"],"secretName":"tls-a"},{"hosts":["b.example.test"],"secretName":"tls-b"}]}}' >/dev/null
  wait_for "tls_serves_cert_of_a" 30 bash -c "nsenter --net=$(ns_path "$SERVER_NS") openssl s_client -connect $(node_ip 1):$HTTPS_PORT -servername a.example.test </dev/null 2>/dev/null | openssl x509 -noout -subject | grep -q 'CN *= *a.example.test'"
  expect "tls_serves_cert_of_b" "CN ?= ?b\.example\.test" served_cn b.example.test
  expect "tls_unknown_name_gets_default_cert" "mini-ingress\.invalid" bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") openssl s_client -connect $(node_ip 1):$HTTPS_PORT -servername other.example.test </dev/null 2>/dev/null | openssl x509 -noout -text"
  expect_eq "https_routes_with_verified_cert" "app-b-api" from_outside curl -s --max-time 5 --cacert "$WORK/b.crt" \
    --resolve "b.example.test:$HTTPS_PORT:$(node_ip 1)" "https://b.example.test:$HTTPS_PORT/api/name"
  expect "http2_over_tls" "^2 app-a$" bash -c "nsenter --net=$(ns_path "$SERVER_NS") curl -s --http2 --max-time 5 --cacert $WORK/a.crt \
    --resolve a.example.test:$HTTPS_PORT:$(node_ip 1) -w '%{http_version} ' -o $WORK/h2body https://a.example.test:$HTTPS_PORT/name && cat $WORK/h2body"
  expect "http2_cleartext_prior_knowledge" "^2 app-a$" bash -c "nsenter --net=$(ns_path "$SERVER_NS") curl -s --http2-prior-knowledge --max-time 5 \
    -H 'Host: a.example.test' -w '%{http_version} ' -o $WORK/h2cbody http://$(node_ip 1):$HTTP_PORT/name && cat $WORK/h2cbody"
}

step_upgrade() {
  local out
  out=$(from_outside python3 - "$(node_ip 1)" "$HTTP_PORT" <<'EOF' 2>&1
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"GET /chat HTTP/1.1\r\nHost: echo.example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
head, _, rest = buf.partition(b"\r\n\r\n")
print(head.split(b"\r\n")[0].decode())
s.sendall(b"hello through the upgrade\n")
while b"\n" not in rest:
    chunk = s.recv(4096)
    if not chunk:
        break
    rest += chunk
print(rest.decode().strip())
EOF
  ) || true
  if grep -q "101" <<<"$out" && grep -q "hello through the upgrade" <<<"$out"; then ok "upgrade_passes_through_both_ways"; else not_ok "upgrade_passes_through_both_ways" "$out"; fi
}

step_route_change_keepalive() {
  local out
  # one keep-alive connection: app-a, then the rule is switched to app-b, and the same
  # connection (same local port) must see app-b without being dropped
  out=$(from_outside python3 - "$(node_ip 1)" "$HTTP_PORT" "$(ns_path "$SERVER_NS")" "$KUBECONFIG" <<'EOF' 2>&1
import http.client, subprocess, sys, time
host, port, ns, kubeconfig = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = http.client.HTTPConnection(host, port, timeout=5)
def get():
    c.request("GET", "/name", headers={"Host": "a.example.test"})
    r = c.getresponse()
    return r.read().decode().strip()
first = get()
local = c.sock.getsockname()
patch = '[{"op":"replace","path":"/spec/rules/0/http/paths/0/backend/service/name","value":"app-b"}]'
subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "patch", "ingress", "web", "--type=json", "-p", patch],
               check=True, capture_output=True)
seen = first
for _ in range(100):
    seen = get()
    if seen == "app-b":
        break
    time.sleep(0.1)
same = c.sock is not None and c.sock.getsockname() == local
print(f"first={first} then={seen} same_connection={same}")
EOF
  ) || true
  if grep -q "first=app-a then=app-b same_connection=True" <<<"$out"; then ok "route_change_seen_on_open_keepalive_connection"; else not_ok "route_change_seen_on_open_keepalive_connection" "$out"; fi
}

step_status() {
  check_for "status_load_balancer_has_node_addresses" 30 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get ingress web -o jsonpath='{.status.loadBalancer.ingress[*].ip}')\" = '$(node_ip 1) $(node_ip 2)' ]"
  expect "ingress_listed_with_address" "$(node_ip 1)" k get ingress web
}

step_class_removed() {
  k delete ingressclass mini >/dev/null
  check_for "proxy_stops_listening_without_class" 20 bash -c \
    "! nsenter --net=$(ns_path "$SERVER_NS") curl -s --max-time 2 -o /dev/null http://$(node_ip 1):$HTTP_PORT/"
}

main() {
  step_start || { summary; exit 1; }
  step_idle_without_class
  step_routes || { summary; exit 1; }
  step_tls
  step_upgrade
  step_route_change_keepalive
  step_status
  step_class_removed
  summary
}
main
