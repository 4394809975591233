#!/usr/bin/env bash
# Ingress benchmark (issue 11): requests/s through mini's built-in ingress and through nginx
# (Debian nginx-light) configured as a keep-alive reverse proxy to the same backend pods, in the
# same run on one real node (server + agent with its own containerd in network namespaces, the
# e2e harness of tests/e2e/nodes_lib.sh), and the latency each adds over hitting a pod directly.
#   - backend: two pods running the host's nginx binary (copied into a test image) answering
#     `return 200` on :8080
#   - throughput: wrk -t2 -c CONNS for SECS seconds through each proxy (and directly, for scale)
#   - latency: wrk -t1 -c1 for 5 s, p50/p99, through each proxy and directly to one pod
#   - route updates: how long a new host rule takes from the API to the proxy, while wrk keeps
#     connections open through mini (and whether any of them saw an error)
# Runs alternate mini, nginx, direct RUNS times; medians are reported. Prints a table and writes
# target/bench-results/ingress-<timestamp>.json. Numbers are reported, never asserted. Needs root.
# Usually run as `scripts/bench.sh ingress`.
#
#   scripts/bench_ingress.sh [--runs N] [--seconds N] [--connections N] [--updates N]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
RUNS=3
UPDATES=10
SECS=10
CONNS=64
HTTP_PORT=21080
NGINX_PORT=21180

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --seconds) SECS=$2; shift 2 ;;
        --connections) CONNS=$2; shift 2 ;;
        --updates) UPDATES=$2; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--seconds N] [--connections N] [--updates N]" >&2; exit 2 ;;
    esac
done

if [[ "$(id -u)" -ne 0 ]]; then
    echo "bench ingress: needs root (network namespaces, containerd, nftables)" >&2
    exit 1
fi
if ! command -v nginx >/dev/null; then
    echo "bench ingress: installing nginx-light (the peer)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >/dev/null
fi
for tool in wrk nginx python3 ldd; do
    command -v "$tool" >/dev/null || { echo "bench ingress: $tool not found" >&2; exit 1; }
done

# shellcheck source=tests/e2e/lib.sh
. "${ROOT}/tests/e2e/lib.sh"
E2E_NS=ingbn
# shellcheck source=tests/e2e/nodes_lib.sh
. "${ROOT}/tests/e2e/nodes_lib.sh"

# The binary measured: $MINI_BIN, else the newest build (scripts/find_mini.sh; builds nothing).
# shellcheck source=scripts/find_mini.sh
. "${ROOT}/scripts/find_mini.sh"
find_mini ingress
WORK=$(mktemp -d /tmp/mini-bench-ing.XXXXXX)
export HOME=${WORK}/home
mkdir -p "${HOME}"
NODES=(node-a)
IMAGE=mini.local/nginx-bench:1.0
NGINX_PID=""

cleanup() {
    [[ -n "${NGINX_PID}" ]] && kill "${NGINX_PID}" 2>/dev/null || true
    cleanup_nodes "${NODES[@]}"
    rm -rf "${WORK}"
}
trap cleanup EXIT

on_node() { in_ns "${E2E_NS}-node-a" "$@"; }

setup() {
    setup_network "${NODES[@]}"
    local files
    files=$( (echo /usr/sbin/nginx; ldd /usr/sbin/nginx | grep -o '/[^ ]*') | sort -u | tr '\n' ':')
    BUILD_IMAGE_FILES=${files} python3 "${ROOT}/tests/e2e/build_image.py" "${WORK}/image.tar" "${IMAGE}"
    start_node_server "${WORK}/server" --disable-agent
    mkdir -p "${WORK}/node-a/agent/images"
    cp "${WORK}/image.tar" "${WORK}/node-a/agent/images/"
    start_agent node-a "$(node_ip 1)" "${WORK}/node-a" --ingress-http-port "${HTTP_PORT}" --ingress-https-port 0
    wait_for "node_ready" 120 bash -c \
        "nsenter --net=$(ns_path "${SERVER_NS}") kubectl --request-timeout=10s get nodes --no-headers 2>&1 | grep -q ' Ready '" >&2
    wait_for "default_serviceaccount" 30 k get sa default -n default >&2
    cat <<EOF | k apply -f - >/dev/null
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: mini, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: mini.dev/ingress}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend}
spec:
  replicas: 2
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: ${IMAGE}
        command:
        - sh
        - -c
        - |
          mkdir -p /var/lib/nginx /var/log/nginx /tmp/nginx
          printf 'user nobody nobody; worker_processes 1; error_log stderr; pid /tmp/nginx.pid; events { worker_connections 4096; }\nhttp { access_log off; keepalive_requests 1000000; client_body_temp_path /tmp/nginx; proxy_temp_path /tmp/nginx; fastcgi_temp_path /tmp/nginx; uwsgi_temp_path /tmp/nginx; scgi_temp_path /tmp/nginx;\nserver { listen 8080; location / { return 200 "hello from the backend"; } } }\n' > /tmp/nginx.conf
          exec /usr/sbin/nginx -e stderr -c /tmp/nginx.conf -g 'daemon off;'
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench}
spec:
  rules:
  - host: bench.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
EOF
    wait_for "backend_available" 120 k rollout status deployment/backend --timeout=5s >&2 || {
        k get pods -o wide >&2
        k describe pods -l app=backend 2>&1 | tail -25 >&2
        k logs -l app=backend --tail=20 >&2 || true
        exit 1
    }
    POD_IPS=$(k get pods -l app=backend -o jsonpath='{.items[*].status.podIP}')
    mkdir -p "${WORK}/nginx"
    {
        echo "worker_processes auto; error_log stderr; pid ${WORK}/nginx/nginx.pid; daemon off;"
        echo "events { worker_connections 4096; }"
        echo "http { access_log off; keepalive_requests 1000000;"
        echo "  client_body_temp_path ${WORK}/nginx; proxy_temp_path ${WORK}/nginx; fastcgi_temp_path ${WORK}/nginx; uwsgi_temp_path ${WORK}/nginx; scgi_temp_path ${WORK}/nginx;"
        echo "  upstream backend {"
        for ip in ${POD_IPS}; do echo "    server ${ip}:8080;"; done
        echo "    keepalive 256;"
        echo "  }"
        echo "  server { listen ${NGINX_PORT}; location / {"
        echo "    proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\";"
        echo "    proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
        echo "    proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host; } }"
        echo "}"
    } >"${WORK}/nginx.conf"
    nsenter --net="$(ns_path "${E2E_NS}-node-a")" nginx -e stderr -c "${WORK}/nginx.conf" >"${WORK}/nginx.log" 2>&1 &
    NGINX_PID=$!
    local ip
    ip=$(node_ip 1)
    wait_for "mini_ingress_answers" 30 on_node curl -sf -H 'Host: bench.test' "http://${ip}:${HTTP_PORT}/" >&2
    wait_for "nginx_answers" 30 on_node curl -sf -H 'Host: bench.test' "http://${ip}:${NGINX_PORT}/" >&2
}

# wrk_run THREADS CONNS SECS URL: prints "rps p50_us p99_us".
wrk_run() {
    on_node wrk -t"$1" -c"$2" -d"$3s" --latency -H 'Host: bench.test' "$4" | python3 -c '
import re, sys
text = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def us(p):
    m = re.search(r"^\s+" + p + r"%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1000, "s": 1000000}[unit]
p50, p99 = us("50"), us("99")
print(f"{rps:.0f} {p50:.0f} {p99:.0f}")'
}

median() { python3 -c 'import statistics, sys; print(round(statistics.median(float(x) for x in sys.argv[1:])))' "$@"; }

measure() {
    local ip pod run t
    ip=$(node_ip 1)
    pod=$(awk '{print $1}' <<<"${POD_IPS}")
    declare -gA URL=([mini]="http://${ip}:${HTTP_PORT}/" [nginx]="http://${ip}:${NGINX_PORT}/" [direct]="http://${pod}:8080/")
    declare -gA RPS=() P50=() P99=()
    for run in $(seq 1 "${RUNS}"); do
        for t in mini nginx direct; do
            local r l
            r=$(wrk_run 2 "${CONNS}" "${SECS}" "${URL[$t]}")
            l=$(wrk_run 1 1 5 "${URL[$t]}")
            echo "bench ingress: run ${run} ${t}: ${r%% *} req/s at ${CONNS} connections; 1 connection p50 $(cut -d' ' -f2 <<<"$l") us p99 $(cut -d' ' -f3 <<<"$l") us" >&2
            RPS[$t]+="${r%% *} "
            P50[$t]+="$(cut -d' ' -f2 <<<"$l") "
            P99[$t]+="$(cut -d' ' -f3 <<<"$l") "
        done
    done
}

report() {
    local t mini_rps nginx_rps ratio out
    declare -A M_RPS M_P50 M_P99
    for t in mini nginx direct; do
        # shellcheck disable=SC2086
        M_RPS[$t]=$(median ${RPS[$t]})
        # shellcheck disable=SC2086
        M_P50[$t]=$(median ${P50[$t]})
        # shellcheck disable=SC2086
        M_P99[$t]=$(median ${P99[$t]})
    done
    mini_rps=${M_RPS[mini]}
    nginx_rps=${M_RPS[nginx]}
    ratio=$(python3 -c "print(f'{${mini_rps} / max(${nginx_rps}, 1):.2f}')")
    echo
    printf '%-8s %12s %14s %14s %16s %16s\n' "target" "req/s" "p50 (us)" "p99 (us)" "p50 added (us)" "p99 added (us)"
    for t in mini nginx direct; do
        printf '%-8s %12s %14s %14s %16s %16s\n' "$t" "${M_RPS[$t]}" "${M_P50[$t]}" "${M_P99[$t]}" \
            "$((M_P50[$t] - M_P50[direct]))" "$((M_P99[$t] - M_P99[direct]))"
    done
    echo "mini / nginx requests/s: ${ratio} (target >= 0.8); medians of ${RUNS} runs, ${SECS}s each at ${CONNS} connections"
    mkdir -p "${RESULTS_DIR}"
    out="${RESULTS_DIR}/ingress-$(date -u +%Y%m%dT%H%M%SZ).json"
    printf '{"runs":%s,"seconds":%s,"connections":%s,"mini":{"rps":%s,"p50_us":%s,"p99_us":%s},"nginx":{"rps":%s,"p50_us":%s,"p99_us":%s},"direct":{"rps":%s,"p50_us":%s,"p99_us":%s},"ratio":%s,"route_update_ms":[%s],"errors_during_updates":"%s"}\n' \
        "${RUNS}" "${SECS}" "${CONNS}" "${M_RPS[mini]}" "${M_P50[mini]}" "${M_P99[mini]}" \
        "${M_RPS[nginx]}" "${M_P50[nginx]}" "${M_P99[nginx]}" "${M_RPS[direct]}" "${M_P50[direct]}" "${M_P99[direct]}" "${ratio}" \
        "$(IFS=,; echo "${UPDATE_MS[*]}")" "${UPDATE_ERRORS}" >"${out}"
    echo "bench ingress: wrote ${out}" >&2
}

# route_updates: while wrk keeps 16 connections busy through mini, adds a new host rule to
# the Ingress UPDATES times and times each from the API's acknowledgement of the change to the
# first 200 for the new host (polled every 10 ms); wrk's errors show whether open connections
# were dropped while the route table was swapped.
route_updates() {
    local ip i t0 t1 wrk_out
    ip=$(node_ip 1)
    wrk_out="${WORK}/wrk-during-updates.txt"
    on_node wrk -t1 -c16 -d"$((UPDATES * 2 + 4))s" -H 'Host: bench.test' "http://${ip}:${HTTP_PORT}/" >"${wrk_out}" 2>&1 &
    local wrk_pid=$!
    sleep 2
    UPDATE_MS=()
    for i in $(seq 1 "${UPDATES}"); do
        k patch ingress bench --type=json -p "[{\"op\":\"add\",\"path\":\"/spec/rules/-\",\"value\":{\"host\":\"new-${i}.test\",\"http\":{\"paths\":[{\"path\":\"/\",\"pathType\":\"Prefix\",\"backend\":{\"service\":{\"name\":\"backend\",\"port\":{\"number\":80}}}}]}}}]" >/dev/null
        t0=$(date +%s%N)
        until [[ "$(on_node curl -s -o /dev/null -w '%{http_code}' -H "Host: new-${i}.test" "http://${ip}:${HTTP_PORT}/")" == 200 ]]; do
            if (( $(date +%s%N) - t0 > 30000000000 )); then
                echo "bench ingress: route for new-${i}.test never appeared" >&2
                break
            fi
            sleep 0.01
        done
        t1=$(date +%s%N)
        UPDATE_MS+=("$(( (t1 - t0) / 1000000 ))")
        sleep 1
    done
    wait "${wrk_pid}" || true
    UPDATE_RPS=$(grep -Eo 'Requests/sec:\s+[0-9.]+' "${wrk_out}" | awk '{print int($2)}')
    UPDATE_ERRORS=$(grep -E 'Socket errors|Non-2xx' "${wrk_out}" | tr -s ' ' | paste -sd';' - || true)
    UPDATE_ERRORS=${UPDATE_ERRORS:-none}
}

report_updates() {
    local sorted
    sorted=$(printf '%s\n' "${UPDATE_MS[@]}" | sort -n | paste -sd' ' -)
    echo
    echo "route updates: ${#UPDATE_MS[@]} new host rules, API acknowledgement -> first 200 (ms, 10 ms polling): ${sorted}"
    echo "route updates: median $(median "${UPDATE_MS[@]}") ms, max $(printf '%s\n' "${UPDATE_MS[@]}" | sort -n | tail -1) ms (target <= 1000)"
    echo "route updates: wrk through mini meanwhile: ${UPDATE_RPS:-?} req/s, errors: ${UPDATE_ERRORS}"
}

echo "bench ingress: measuring ${MINI_BIN}" >&2
setup
measure
route_updates
report_updates
report
