#!/usr/bin/env bash
# Cluster network benchmark (issue 5, "What it must show" item 6), measured in one run on two
# real nodes (server + two agents with their own containerd, each in a network namespace, the
# e2e harness of tests/e2e/network.sh):
#   1. TCP throughput with iperf3, 1 and 8 streams, median of 3 runs each: node-to-node on the
#      underlay, over a plain kernel VXLAN link between the same nodes (the encapsulation cost
#      alone), and pod-to-pod across nodes through mini's overlay (the host's iperf3 run in the
#      pods' namespaces); plus the machine's CPU seconds per GB moved in each case.
#   2. Service connect latency p50/p99 (200 TCP connects to a ClusterIP from a pod on the other
#      node) with 10 and with 5,000 Services.
#   3. Time from Service create to the first successful connection to its ClusterIP, with 10
#      and with 5,000 Services.
# Prints a table and writes target/bench-results/network-<timestamp>.json. Numbers are
# reported, never asserted. Needs root. Usually run as `scripts/bench.sh network`.
#
#   scripts/bench_network.sh [--services N] [--connects N] [--iperf-secs N]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
TOTAL_SERVICES=5000
CONNECTS=200
IPERF_SECS=5

while [[ $# -gt 0 ]]; do
    case "$1" in
        --services) TOTAL_SERVICES=$2; shift 2 ;;
        --connects) CONNECTS=$2; shift 2 ;;
        --iperf-secs) IPERF_SECS=$2; shift 2 ;;
        *) echo "usage: $0 [--services N] [--connects N] [--iperf-secs N]" >&2; exit 2 ;;
    esac
done

if [[ "$(id -u)" -ne 0 ]]; then
    echo "bench network: needs root (network namespaces, containerd, nftables)" >&2
    exit 1
fi
for tool in iperf3 nft python3 ctr; do
    command -v "$tool" >/dev/null || { echo "bench network: $tool not found" >&2; exit 1; }
done

# shellcheck source=tests/e2e/lib.sh
. "${ROOT}/tests/e2e/lib.sh"
E2E_NS=minibn
# shellcheck source=tests/e2e/nodes_lib.sh
. "${ROOT}/tests/e2e/nodes_lib.sh"

# The binary measured: $MINI_BIN, else the newest build (scripts/find_mini.sh; builds nothing).
# shellcheck source=scripts/find_mini.sh
. "${ROOT}/scripts/find_mini.sh"
find_mini network
case "$MINI_BIN" in */release/*|*/dist/*) PROFILE=release ;; *) PROFILE=debug ;; esac
echo "bench network: measuring ${MINI_BIN} (${PROFILE} build)" >&2

WORK=$(mktemp -d /tmp/mini-bench-net.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a node-b)

ACCEPTOR_PID=""
cleanup() {
    local rc=$?
    set +e # best effort: the harness's cleanup must run to the end even if a step fails
    [[ -n "$ACCEPTOR_PID" ]] && kill -9 "$ACCEPTOR_PID" 2>/dev/null
    if [[ $rc -ne 0 ]]; then
        echo "bench network: failed (exit $rc); last agent/server log lines:" >&2
        tail -n 15 "$WORK/node-a/agent.log" "$WORK/server/server.log" >&2 2>/dev/null || true
    fi
    cleanup_nodes "${NODES[@]}"
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "bench network: $*" >&2; }
die() { log "$*"; exit 1; }

# wait_until SECONDS CMD...: polls CMD every 0.5 s until it succeeds.
wait_until() {
    local end=$((SECONDS + $1))
    shift
    while [[ $SECONDS -lt $end ]]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    return 1
}

# pod_netns NODE IP: the network namespace (as /proc/<pid>/ns/net) of the pod with address IP,
# found among the tasks of NODE's own containerd (pod CIDRs may repeat in other clusters).
pod_netns() {
    local node=$1 ip=$2 sock pid
    sock=$(find "$WORK/$node" -maxdepth 4 -name containerd.sock | head -n 1)
    [[ -n "$sock" ]] || return 1
    for pid in $(ctr --address "$sock" -n k8s.io tasks ls 2>/dev/null | awk 'NR > 1 && $2 ~ /^[0-9]+$/ {print $2}'); do
        if nsenter --net="/proc/$pid/ns/net" ip -4 -o addr show 2>/dev/null | grep -q " ${ip}/"; then
            echo "/proc/$pid/ns/net"
            return 0
        fi
    done
    return 1
}

pod_ip() { k get pod "$1" -o jsonpath='{.status.podIP}'; }

# map_elements: elements of the proxy's ClusterIP verdict maps (with and without endpoints) in
# node-a's namespace.
map_elements() {
    in_ns "$E2E_NS-node-a" nft -j list table ip mini 2>/dev/null | python3 -c '
import json, sys
n = 0
for obj in json.load(sys.stdin).get("nftables", []):
    m = obj.get("map")
    if m and m.get("name") in ("service-ips", "no-endpoint-services"):
        n += len(m.get("elem", []))
print(n)'
}

# wait_programmed: waits until every ClusterIP Service port of namespace default is in node-a's
# maps (kube-system's DNS may be served by its own chain); prints seconds.
wait_programmed() {
    local want t0 have
    want=$(k get svc -n default -o jsonpath='{range .items[*]}{.spec.clusterIP}{" "}{range .spec.ports[*]}x{end}{"\n"}{end}' \
        | awk '$1 != "None" && $1 != "" {n += length($2)} END {print n}')
    t0=$(date +%s.%N)
    while :; do
        have=$(map_elements || echo 0)
        [[ "$have" -ge "$want" ]] && break
        if [[ $(python3 -c "import time; print(int(time.time() - $t0))") -gt 600 ]]; then
            die "the proxy programmed only $have of $want service ports in 600 s"
        fi
        sleep 1
    done
    python3 -c "import time; print(f'{time.time() - $t0:.1f}')"
    log "proxy programmed $have map elements (want $want)"
}

# busy_jiffies: CPU time used by the whole machine so far (user+nice+system+irq+softirq+steal).
busy_jiffies() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# iperf NAME SERVER_NETNS CLIENT_NETNS SERVER_IP STREAMS: "Gbit/s cpu-seconds-per-GB" received,
# via iperf3 -J; the CPU cost is the machine's busy time during the run over the bytes moved
# (meaningful on an otherwise idle machine).
iperf() {
    local name=$1 sns=$2 cns=$3 ip=$4 streams=$5 port=5201 spid j0 j1
    nsenter --net="$sns" iperf3 -s -1 -B "$ip" -p "$port" >"$WORK/iperf-$name-server.log" 2>&1 &
    spid=$!
    listening() { [[ -n "$(nsenter --net="$sns" ss -ltnH "sport = :$port")" ]]; }
    wait_until 10 listening || { kill -9 "$spid" 2>/dev/null || true; die "iperf3 server for $name did not start"; }
    j0=$(busy_jiffies)
    if ! nsenter --net="$cns" iperf3 -c "$ip" -p "$port" -t "$IPERF_SECS" -P "$streams" -J >"$WORK/iperf-$name.json"; then
        kill -9 "$spid" 2>/dev/null || true
        die "iperf3 $name failed: $(tail -5 "$WORK/iperf-$name.json")"
    fi
    j1=$(busy_jiffies)
    wait "$spid" 2>/dev/null || true
    python3 -c "
import json, os
d = json.load(open('$WORK/iperf-$name.json'))['end']['sum_received']
cpu = ($j1 - $j0) / os.sysconf('SC_CLK_TCK')
print(f\"{d['bits_per_second'] / 1e9:.3f} {cpu / (d['bytes'] / 1e9):.3f}\")"
}

# iperf_median NAME SERVER_NETNS CLIENT_NETNS SERVER_IP STREAMS: the run with the median
# throughput of three (one run on a 2-core machine varies by tens of percent).
iperf_median() {
    local i runs=()
    for i in 1 2 3; do runs+=("$(iperf "$1-$i" "$2" "$3" "$4" "$5")"); done
    printf '%s\n' "${runs[@]}" | sort -n -k1,1 | sed -n 2p
}

# kernel_vxlan_setup: a plain kernel VXLAN link (VNI 99, UDP 4790) between the two node
# namespaces, over the same underlay as mini's overlay but without pods, bridge or rules: the
# cost of the kernel's encapsulation alone, to compare mini's pod-to-pod path with.
kernel_vxlan_setup() {
    local a=$E2E_NS-node-a b=$E2E_NS-node-b mac_a mac_b
    ip -n "$a" link add kvx type vxlan id 99 local "$(node_ip 1)" dstport 4790 nolearning dev eth0
    ip -n "$b" link add kvx type vxlan id 99 local "$(node_ip 2)" dstport 4790 nolearning dev eth0
    ip -n "$a" link set kvx mtu 1450 up
    ip -n "$b" link set kvx mtu 1450 up
    ip -n "$a" addr add 10.254.0.1/24 dev kvx
    ip -n "$b" addr add 10.254.0.2/24 dev kvx
    mac_a=$(ip -n "$a" -o link show kvx | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
    mac_b=$(ip -n "$b" -o link show kvx | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2)
    ip -n "$a" neigh replace 10.254.0.2 lladdr "$mac_b" dev kvx nud permanent
    ip -n "$b" neigh replace 10.254.0.1 lladdr "$mac_a" dev kvx nud permanent
    bridge -n "$a" fdb append "$mac_b" dev kvx dst "$(node_ip 2)"
    bridge -n "$b" fdb append "$mac_a" dev kvx dst "$(node_ip 1)"
}

# PROBE: a python3 program run in the client pod's namespace.
#   latency IP PORT N          -> {"p50_ms":..,"p99_ms":..,"mean_ms":..,"n":..}
#   first IP PORT              -> prints "ready", then polls connect every 10 ms; prints the wall
#                                 clock time of the first successful connect
cat >"$WORK/probe.py" <<'EOF'
import json, socket, sys, time
mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "latency":
    n = int(sys.argv[4])
    for _ in range(10):  # warm-up: ARP, conntrack, the backend's first forks
        socket.create_connection((ip, port), 2).close()
    samples = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        t = time.perf_counter()
        s.connect((ip, port))
        samples.append((time.perf_counter() - t) * 1000)
        s.close()
    samples.sort()
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    print(json.dumps({"n": n, "p50_ms": round(pick(0.50), 3), "p99_ms": round(pick(0.99), 3),
                      "mean_ms": round(sum(samples) / n, 3), "max_ms": round(samples[-1], 3)}))
else:
    print("ready", flush=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.2)
        try:
            s.connect((ip, port))
            print(f"{time.time():.6f}", flush=True)
            sys.exit(0)
        except OSError:
            time.sleep(0.01)
        finally:
            s.close()
    print("timeout", flush=True)
    sys.exit(1)
EOF

# create_to_connect NAME CLUSTER_IP: ms from the Service create request to the first connect.
create_to_connect() {
    local name=$1 ip=$2 fifo="$WORK/probe-$1.out" ppid t0 t1
    nsenter --net="$CLIENT_NS" python3 "$WORK/probe.py" first "$ip" 80 >"$fifo" 2>&1 &
    ppid=$!
    wait_until 10 grep -q ready "$fifo" || { kill -9 "$ppid" 2>/dev/null || true; die "probe for $name did not start: $(cat "$fifo")"; }
    t0=$(date +%s.%N)
    cat <<EOF | k create -f - >/dev/null
apiVersion: v1
kind: Service
metadata: {name: $name}
spec:
  clusterIP: $ip
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
    wait "$ppid" || die "no connection to Service $name ($ip) within 60 s: $(cat "$fifo")"
    t1=$(tail -n 1 "$fifo")
    python3 -c "print(f'{($t1 - $t0) * 1000:.0f}')"
}

mkdir -p "$RESULTS_DIR"
OUT="${RESULTS_DIR}/network-$(date -u +%Y%m%dT%H%M%SZ).json"

# --- the cluster: server + two agents -------------------------------------------------------
setup_network "${NODES[@]}"
python3 "${ROOT}/tests/e2e/build_image.py" "$WORK/busybox.tar" "$IMAGE" >/dev/null
start_node_server "$WORK/server" --disable-agent
i=1
for n in "${NODES[@]}"; do
    mkdir -p "$WORK/$n/agent/images"
    cp "$WORK/busybox.tar" "$WORK/$n/agent/images/"
    start_agent "$n" "$(node_ip $i)" "$WORK/$n"
    i=$((i + 1))
done
nodes_ready() { [[ $(k get nodes --no-headers 2>/dev/null | grep -c ' Ready ') -eq 2 ]]; }
wait_until 180 nodes_ready || die "nodes never became Ready"
wait_until 60 k get sa default -n default || die "no default service account"
log "nodes ready"

# the backend (httpd on node-b), the iperf3 server pod (node-b) and the client pod (node-a)
cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: node-b
  terminationGracePeriodSeconds: 0
  containers:
  - name: httpd
    image: $IMAGE
    command: [sh, -c, "echo ok > /var/www/index.html; exec httpd -f -p 80 -h /var/www"]
    ports: [{containerPort: 80}]
    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: iperf-server}
spec:
  nodeName: node-b
  terminationGracePeriodSeconds: 0
  containers: [{name: sh, image: $IMAGE, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 0
  containers: [{name: sh, image: $IMAGE, command: [sleep, "3600"]}]
EOF
pods_running() { [[ $(k get pods --no-headers 2>/dev/null | grep -c ' Running ') -eq 3 ]]; }
wait_until 180 pods_running || die "pods never ran: $(k get pods -o wide 2>&1)"
wait_until 60 k wait --for=condition=Ready pod/web --timeout=2s || die "web never became Ready"

CLIENT_IP=$(pod_ip client)
WEB_IP=$(pod_ip web)
WEB_NS=$(pod_netns node-b "$WEB_IP") || die "no namespace found for web pod $WEB_IP"
SERVER_POD_IP=$(pod_ip iperf-server)
CLIENT_NS=$(pod_netns node-a "$CLIENT_IP") || die "no namespace found for client pod $CLIENT_IP"
SERVER_POD_NS=$(pod_netns node-b "$SERVER_POD_IP") || die "no namespace found for iperf-server pod $SERVER_POD_IP"
log "client pod $CLIENT_IP ($CLIENT_NS), iperf server pod $SERVER_POD_IP ($SERVER_POD_NS)"

# --- 1. throughput ------------------------------------------------------------------------------
NODE_A_NS=$(ns_path "$E2E_NS-node-a")
NODE_B_NS=$(ns_path "$E2E_NS-node-b")
kernel_vxlan_setup
log "iperf3: underlay, kernel vxlan and mini overlay, 1 stream (median of 3 each)"
read -r UNDER_1 UNDER_1_CPU < <(iperf_median underlay-1 "$NODE_B_NS" "$NODE_A_NS" "$(node_ip 2)" 1)
read -r KVX_1 KVX_1_CPU < <(iperf_median kvxlan-1 "$NODE_B_NS" "$NODE_A_NS" 10.254.0.2 1)
read -r OVER_1 OVER_1_CPU < <(iperf_median overlay-1 "$SERVER_POD_NS" "$CLIENT_NS" "$SERVER_POD_IP" 1)
log "iperf3: the same with 8 streams"
read -r UNDER_8 UNDER_8_CPU < <(iperf_median underlay-8 "$NODE_B_NS" "$NODE_A_NS" "$(node_ip 2)" 8)
read -r KVX_8 KVX_8_CPU < <(iperf_median kvxlan-8 "$NODE_B_NS" "$NODE_A_NS" 10.254.0.2 8)
read -r OVER_8 OVER_8_CPU < <(iperf_median overlay-8 "$SERVER_POD_NS" "$CLIENT_NS" "$SERVER_POD_IP" 8)
log "Gbit/s underlay 1/8 streams: $UNDER_1 / $UNDER_8, kernel vxlan: $KVX_1 / $KVX_8, overlay: $OVER_1 / $OVER_8"

# The Services' backend: the web pod's namespace, port 8080, where a python3 listener with a deep
# accept queue accepts and closes. busybox httpd (port 80) listens with a backlog of 9 and forks
# per connection: under a connect storm its full accept queue drops SYNs, and the 1 s SYN
# retransmits would be measured instead of the Service path.
cat >"$WORK/acceptor.py" <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(4096)
while True:
    c, _ = s.accept()
    c.close()
EOF
nsenter --net="$WEB_NS" python3 "$WORK/acceptor.py" >"$WORK/acceptor.log" 2>&1 &
ACCEPTOR_PID=$!

# --- 2. and 3. with 10 Services ----------------------------------------------------------------
# explicit ClusterIPs so the fillers (10.43.100.0+) never take the probes' addresses
WEB_VIP=10.43.50.1
cat <<EOF | k create -f - >/dev/null
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: $WEB_VIP
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
EOF
# fillers up to 10 Services in all
filler_list() { # FROM TO: selectorless ClusterIP Services filler-FROM..filler-TO
    python3 - "$1" "$2" <<'EOF'
import json, sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
items = [{"apiVersion": "v1", "kind": "Service",
          "metadata": {"name": f"filler-{i}"},
          "spec": {"clusterIP": f"10.43.{100 + i // 250}.{1 + i % 250}",
                   "ports": [{"port": 80, "targetPort": 80}]}}
         for i in range(lo, hi)]
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
EOF
}
# (kubectl's schema validation cannot look up a List's schema on mini; the server validates)
have=$(k get svc -A --no-headers | wc -l)
FILLERS_SMALL=$((10 - have))
if [[ $FILLERS_SMALL -gt 0 ]]; then filler_list 0 "$FILLERS_SMALL" | k create --validate=false -f - >/dev/null; else FILLERS_SMALL=0; fi
SVC_SMALL=$(k get svc -A --no-headers | wc -l)
wait_programmed >/dev/null
wait_until 30 nsenter --net="$CLIENT_NS" python3 -c "import socket; socket.create_connection(('$WEB_VIP', 80), 1).close()" \
    || die "the web Service never answered"
log "latency with $SVC_SMALL Services"
LAT_SMALL=$(nsenter --net="$CLIENT_NS" python3 "$WORK/probe.py" latency "$WEB_VIP" 80 "$CONNECTS")
log "create-to-connect with $SVC_SMALL Services"
C2C_SMALL=$(create_to_connect probe-small 10.43.50.2)
log "with $SVC_SMALL Services: connect $LAT_SMALL; create-to-connect $C2C_SMALL ms"

# --- 2. and 3. with 5,000 Services -------------------------------------------------------------
have=$(k get svc -A --no-headers | wc -l)
FILLERS_BIG=$((TOTAL_SERVICES - have))
log "creating $FILLERS_BIG more Services"
t0=$SECONDS
# in chunks of 250, four kubectl creates at a time (one POST per Service each)
chunks=()
for ((lo = FILLERS_SMALL; lo < FILLERS_SMALL + FILLERS_BIG; lo += 250)); do
    hi=$((lo + 250))
    [[ $hi -gt $((FILLERS_SMALL + FILLERS_BIG)) ]] && hi=$((FILLERS_SMALL + FILLERS_BIG))
    filler_list "$lo" "$hi" >"$WORK/fillers-$lo.json"
    chunks+=("$WORK/fillers-$lo.json")
done
for ((c = 0; c < ${#chunks[@]}; c += 4)); do
    pids=()
    for f in "${chunks[@]:c:4}"; do
        in_ns "$SERVER_NS" kubectl --request-timeout=120s create --validate=false -f "$f" >/dev/null &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "creating filler Services failed"; done
    log "  $(k get svc -n default --no-headers | wc -l) Services in default ($((SECONDS - t0)) s)"
done
CREATE_SECS=$((SECONDS - t0))
SVC_BIG=$(k get svc -A --no-headers | wc -l)
log "created in ${CREATE_SECS}s; waiting for the proxy"
PROGRAM_SECS=$(wait_programmed)
log "latency with $SVC_BIG Services"
LAT_BIG=$(nsenter --net="$CLIENT_NS" python3 "$WORK/probe.py" latency "$WEB_VIP" 80 "$CONNECTS")
log "create-to-connect with $SVC_BIG Services"
C2C_BIG=$(create_to_connect probe-big 10.43.50.3)

# --- report ------------------------------------------------------------------------------------
python3 - "$OUT" <<EOF
import json, sys
under1, under8, over1, over8 = $UNDER_1, $UNDER_8, $OVER_1, $OVER_8
kvx1, kvx8 = $KVX_1, $KVX_8
cpu = {"underlay_1": $UNDER_1_CPU, "underlay_8": $UNDER_8_CPU, "kernel_vxlan_1": $KVX_1_CPU,
       "kernel_vxlan_8": $KVX_8_CPU, "overlay_1": $OVER_1_CPU, "overlay_8": $OVER_8_CPU}
lat_small, lat_big = json.loads('''$LAT_SMALL'''), json.loads('''$LAT_BIG''')
res = {
    "binary": "$MINI_BIN", "profile": "$PROFILE", "iperf_secs": $IPERF_SECS,
    "throughput_gbps": {
        "underlay_1_stream": under1, "underlay_8_streams": under8,
        "overlay_1_stream": over1, "overlay_8_streams": over8,
        "kernel_vxlan_1_stream": kvx1, "kernel_vxlan_8_streams": kvx8,
        "ratio_1_stream": round(over1 / under1, 3), "ratio_8_streams": round(over8 / under8, 3),
        "overlay_vs_kernel_vxlan_1_stream": round(over1 / kvx1, 3),
        "overlay_vs_kernel_vxlan_8_streams": round(over8 / kvx8, 3),
        "cpu_seconds_per_gb": cpu,
        "target_ratio_1_stream": 0.75, "target_ratio_8_streams": 0.90,
    },
    "service_connect_latency": {
        "services_small": $SVC_SMALL, "small": lat_small,
        "services_big": $SVC_BIG, "big": lat_big,
        "big_services_create_secs": $CREATE_SECS, "big_services_program_secs": $PROGRAM_SECS,
    },
    "service_create_to_connect_ms": {"small": $C2C_SMALL, "big": $C2C_BIG, "target_ms": 1000},
}
json.dump(res, open(sys.argv[1], "w"), indent=2)
t = res["throughput_gbps"]
print(f"mini network benchmark ({res['profile']} build: {res['binary']})")
print()
print(f"{'TCP throughput (iperf3 %d s, median of 3)' % $IPERF_SECS:<42}{'underlay':>10}{'kernel vxlan':>13}{'mini overlay':>13}{'ratio':>8}{'target':>8}{'vs vxlan':>10}")
print(f"{'  1 stream  (Gbit/s)':<42}{under1:>10.2f}{kvx1:>13.2f}{over1:>13.2f}{t['ratio_1_stream']:>8.0%}{'>= 75%':>8}{t['overlay_vs_kernel_vxlan_1_stream']:>10.0%}")
print(f"{'  8 streams (Gbit/s)':<42}{under8:>10.2f}{kvx8:>13.2f}{over8:>13.2f}{t['ratio_8_streams']:>8.0%}{'>= 90%':>8}{t['overlay_vs_kernel_vxlan_8_streams']:>10.0%}")
print(f"{'  CPU seconds per GB, 1 stream':<42}{cpu['underlay_1']:>10.2f}{cpu['kernel_vxlan_1']:>13.2f}{cpu['overlay_1']:>13.2f}")
print(f"{'  CPU seconds per GB, 8 streams':<42}{cpu['underlay_8']:>10.2f}{cpu['kernel_vxlan_8']:>13.2f}{cpu['overlay_8']:>13.2f}")
print("  (kernel vxlan: a plain VXLAN link between the same two nodes, no pods, bridge or rules)")
print()
print(f"{'Service connect (%d connects)' % lat_small['n']:<34}{'p50 ms':>10}{'p99 ms':>10}")
print(f"{'  with %d Services' % $SVC_SMALL:<34}{lat_small['p50_ms']:>10.3f}{lat_small['p99_ms']:>10.3f}")
print(f"{'  with %d Services' % $SVC_BIG:<34}{lat_big['p50_ms']:>10.3f}{lat_big['p99_ms']:>10.3f}")
print()
print(f"{'Service create -> first connect':<34}{'ms':>10}{'target':>10}")
print(f"{'  with %d Services' % $SVC_SMALL:<34}{$C2C_SMALL:>10}{'<= 1000':>10}")
print(f"{'  with %d Services' % $SVC_BIG:<34}{$C2C_BIG:>10}{'<= 1000':>10}")
print()
print(f"({$SVC_BIG - $SVC_SMALL} Services created in {$CREATE_SECS} s, programmed by the proxy {$PROGRAM_SECS} s later)")
print(f"results: {sys.argv[1]}")
EOF
