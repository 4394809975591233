#!/usr/bin/env bash
# Monitoring and logs benchmark (issue 12). Numbers are printed, never asserted.
#   1. a real `mini server` (no agent) takes the history 50 simulated nodes x 30 pods would have
#      sent every 10 s (`mini sim samples`), is restarted (which reloads the store), then takes
#      the same nodes' samples in real time, every 10 s, for --live (as agents send them);
#      reported: ingest rate, the server's resident memory at each step (the goal's figure is
#      the steady state: real-time samples on top of a day of history), bytes per stored sample
#      from its /metrics and on realistic series (the store bench's generator, one node, straight
#      into mini-tsdb), and `query_range` of one day for one pod through the Prometheus API
#      (median of 10, with curl);
#   2. the stores' own benchmarks, each next to its peer in the same run: the metrics store
#      against Prometheus 2.42's TSDB (scripts/bench_observe_tsdb.sh), the PromQL evaluator's
#      speed and its answers against Prometheus' (scripts/bench_observe_promql.sh), the log store against
#      grep and zstd (scripts/bench_observe_logstore.sh), the log shipper against `tail -F`
#      (scripts/bench_observe_logship.sh).
# Usually run as `scripts/bench.sh observe`.
#
#   scripts/bench_observe.sh [--nodes N] [--pods N] [--history 24h] [--live 3m] [--only server|stores]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODES=50
PODS=30
HISTORY=24h
LIVE=3m
ONLY=""
PORT=27643

while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) NODES=$2; shift 2 ;;
        --pods) PODS=$2; shift 2 ;;
        --history) HISTORY=$2; shift 2 ;;
        --live) LIVE=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        *) echo "usage: $0 [--nodes N] [--pods N] [--history 24h] [--live 3m] [--only server|stores]" >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/find_mini.sh
. "${ROOT}/scripts/find_mini.sh"
find_mini observe
WORK=$(mktemp -d /tmp/mini-bench-observe.XXXXXX)
SERVER_PID=""

cleanup() {
    if [[ -n "${SERVER_PID}" ]]; then
        kill "${SERVER_PID}" 2>/dev/null || true
        wait "${SERVER_PID}" 2>/dev/null || true
    fi
    rm -rf "${WORK}"
}
trap cleanup EXIT

start_server() {
    "${MINI_BIN}" server --data-dir "${WORK}/data" --bind-address 127.0.0.1 \
        --https-listen-port "${PORT}" --disable-agent >>"${WORK}/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        if curl -sk "https://127.0.0.1:${PORT}/readyz" 2>/dev/null | grep -q ok; then return 0; fi
        sleep 0.2
    done
    echo "bench observe: the server did not become ready" >&2
    tail -20 "${WORK}/server.log" >&2
    exit 1
}

stop_server() {
    kill -TERM "${SERVER_PID}" 2>/dev/null || true
    wait "${SERVER_PID}" 2>/dev/null || true
    SERVER_PID=""
}

rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/${SERVER_PID}/status"; }
# anonymous (heap, stacks) and file-backed (the binary's code) parts of the resident memory
rss_parts() { awk '/^RssAnon/ {a = $2} /^RssFile/ {f = $2} END {printf "%.1f/%.1f", a / 1024, f / 1024}' "/proc/${SERVER_PID}/status"; }

# metric NAME: the value of an unlabelled series on the server's /metrics.
# Chunk bytes per raw sample on realistic series (smooth counters, gauges that rarely move, as
# the agents sample them; `mini sim`'s random walks are harder to compress than real figures): the
# store bench's generator for one node straight into mini-tsdb. Prints nan when it cannot build.
realistic_bps() {
    local bin="${CARGO_TARGET_DIR:-${ROOT}/target}/release/examples/bench"
    (cd "${ROOT}" && cargo build --release -q -p mini-tsdb --example bench) >&2 || { echo nan; return 0; }
    "${bin}" --nodes 1 --pods "${PODS}" --hours 24 --promtool /nonexistent 2>/dev/null \
        | awk '/^chunk bytes \/ sample/ {print $5; exit}'
}

metric() { kubectl --kubeconfig "${KUBECONFIG}" get --raw /metrics | awk -v n="$1" '$1 == n {print $2}'; }

run_server_bench() {
    # the simulated nodes stand for other machines: they run from a copy of the binary, so they
    # do not share the server's page cache (pages of the same file in the cache would be mapped
    # into the server's resident set by the kernel's fault-around)
    SIM_BIN="${WORK}/mini-sim"
    cp "${MINI_BIN}" "${SIM_BIN}"
    start_server
    export KUBECONFIG="${WORK}/data/server/admin.kubeconfig"
    local idle_rss idle_parts settled_rss settled_parts load_out rss_after rss_restart samples bytes
    sleep 2
    idle_rss=$(rss_mib)
    idle_parts=$(rss_parts)
    # the same server once startup is over (the code only startup ran leaves the resident set 30 s
    # after the start): what the process costs before it holds any samples
    sleep 33
    settled_rss=$(rss_mib)
    settled_parts=$(rss_parts)
    echo "bench observe: posting ${HISTORY} of samples for ${NODES} nodes x ${PODS} pods" >&2
    load_out=$("${SIM_BIN}" sim samples --kubeconfig "${KUBECONFIG}" --nodes "${NODES}" --pods "${PODS}" \
        --history "${HISTORY}" --prefix bench-node-)
    sleep 5
    rss_after=$(rss_mib)
    samples=$(metric mini_metrics_ingested_samples_total)
    bytes=$(metric mini_metrics_disk_bytes)
    local chunk_bps store_mem
    chunk_bps=$(metric mini_metrics_bytes_per_sample)
    store_mem=$(metric mini_metrics_memory_bytes)
    # one pod's CPU over the last day, 1-minute steps (1,440 points)
    local now start q times
    now=$(date +%s)
    start=$((now - 86400))
    q=$(python3 -c 'import urllib.parse; print(urllib.parse.quote("rate(container_cpu_usage_seconds_total{pod=\"bench-node-7-app-3\", container=\"app\"}[5m])"))')
    local cert key ca
    cert="${WORK}/admin.crt"; key="${WORK}/admin.key"; ca="${WORK}/ca.crt"
    python3 - "${KUBECONFIG}" "${cert}" "${key}" "${ca}" <<'EOF'
import base64, sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
user = cfg["users"][0]["user"]
open(sys.argv[2], "wb").write(base64.b64decode(user["client-certificate-data"]))
open(sys.argv[3], "wb").write(base64.b64decode(user["client-key-data"]))
open(sys.argv[4], "wb").write(base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]))
EOF
    times=""
    for _ in $(seq 1 10); do
        times+="$(curl -s -o "${WORK}/range.json" -w '%{time_total}' --cacert "${ca}" --cert "${cert}" --key "${key}" \
            "https://127.0.0.1:${PORT}/prometheus/api/v1/query_range?query=${q}&start=${start}&end=${now}&step=60") "
    done
    local points
    points=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["data"]["result"]; print(len(r[0]["values"]) if r else 0)' "${WORK}/range.json")
    stop_server
    start_server
    sleep 3
    rss_restart=$(rss_mib)
    echo "bench observe: the same nodes send in real time every 10 s for ${LIVE}" >&2
    local live_out rss_steady steady_parts
    live_out=$("${SIM_BIN}" sim samples --kubeconfig "${KUBECONFIG}" --nodes "${NODES}" --pods "${PODS}" \
        --history 0 --live "${LIVE}" --prefix bench-node-)
    rss_steady=$(rss_mib)
    steady_parts=$(rss_parts)
    store_mem=$(metric mini_metrics_memory_bytes)
    local heap_in_use heap_free
    heap_in_use=$(metric mini_process_heap_in_use_bytes)
    heap_free=$(metric mini_process_heap_free_held_bytes)
    stop_server
    local real_bps
    echo "bench observe: bytes per sample on realistic series (the store bench's generator)" >&2
    real_bps=$(realistic_bps)
    python3 - "${idle_rss}" "${rss_after}" "${rss_restart}" "${samples:-0}" "${bytes:-0}" "${points}" "${load_out}" "${chunk_bps:-0}" "${store_mem:-0}" "${rss_steady}" "${idle_parts}" "${steady_parts}" "${live_out}" "${real_bps:-nan}" "${heap_in_use:-nan}" "${heap_free:-nan}" "${settled_rss}" "${settled_parts}" ${times} <<'EOF'
import statistics, sys
idle, after, restart, samples, disk, points, load, chunk_bps, store_mem, steady, idle_parts, steady_parts, live, real_bps, heap_in_use, heap_free, settled, settled_parts = sys.argv[1:19]
times = sorted(float(t) * 1000 for t in sys.argv[19:])
samples, disk = float(samples), float(disk)
print()
print("metrics store in a real mini server (%s; then live: %s)" % (load, live))
print("  %-52s %10s   (anonymous/file-backed: %s)" % ("server RSS idle (MiB)", idle, idle_parts))
print("  %-52s %10s   (anonymous/file-backed: %s; no samples yet)" % ("server RSS idle, 35 s after the start (MiB)", settled, settled_parts))
print("  %-52s %10s   (a day posted in one go)" % ("server RSS right after the history (MiB)", after))
print("  %-52s %10s" % ("server RSS after a restart (MiB)", restart))
print("  %-52s %10s   (%.1f MB; goal <= 60 MB; anonymous/file-backed: %s)" % ("server RSS steady: real time on a day of data (MiB)", steady, float(steady) * 1.048576, steady_parts))
print("  %-52s %10.1f   (steady minus idle 35 s after the start)" % ("what the history and the live samples add (MiB)", float(steady) - float(settled)))
print("  %-52s %10.0f" % ("samples stored", samples))
print("  %-52s %10.2f   (mini sim's random walks; Prometheus: see the store bench below)" % ("chunk bytes per raw sample", float(chunk_bps)))
print("  %-52s %10.2f   (goal <= 2; smooth counters, gauges that rarely move)" % ("chunk bytes per raw sample, realistic series", float(real_bps)))
print("  %-52s %10.2f   (all files: blocks, tiers, WAL)" % ("disk bytes per sample", disk / samples if samples else float("nan")))
print("  %-52s %10.1f" % ("the store's own memory estimate (MiB)", float(store_mem) / 1048576))
print("  %-52s %10.1f   (freed but held by malloc: %.1f)" % ("heap in use, steady (MiB)", float(heap_in_use) / 1048576, float(heap_free) / 1048576))
print("  %-52s %10.1f   (goal <= 50 ms; %s points)" % ("query_range 1 day, one pod, median ms", statistics.median(times), points))
print("  %-52s %10.1f" % ("query_range 1 day, one pod, max ms", times[-1]))
EOF
}

if [[ "${ONLY}" != "stores" ]]; then
    run_server_bench
fi
if [[ "${ONLY}" != "server" ]]; then
    for part in tsdb promql logstore logship; do
        if [[ -x "${ROOT}/scripts/bench_observe_${part}.sh" ]]; then
            echo
            "${ROOT}/scripts/bench_observe_${part}.sh"
        fi
    done
fi
