#!/usr/bin/env bash
# Metrics store benchmark (issue 12): mini-tsdb on generated, realistic node and pod series next to
# Prometheus 2.42's own TSDB (Debian package `prometheus`, through `promtool tsdb
# create-blocks-from openmetrics` on the identical samples of one node), in the same run:
#   - bytes per stored sample (chunk payload and all files on disk)
#   - resident memory after ingesting NODES nodes x PODS pods x ~10 series at 10 s for HOURS hours
#   - `select` of one day for one pod (median of 21)
# Prints a table and writes target/bench-results/observe-tsdb-<timestamp>.json. Numbers are
# reported, never asserted. Installing the peer needs root; no process is left running (the
# package's systemd units are stopped and disabled right after installing).
# Usually run as part of `scripts/bench.sh observe`.
#
#   scripts/bench_observe_tsdb.sh [--nodes N] [--pods N] [--hours N]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
BIN_DIR="${CARGO_TARGET_DIR:-${ROOT}/target}/release/examples"
NODES=50
PODS=30
HOURS=24

while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) NODES=$2; shift 2 ;;
        --pods) PODS=$2; shift 2 ;;
        --hours) HOURS=$2; shift 2 ;;
        *) echo "usage: $0 [--nodes N] [--pods N] [--hours N]" >&2; exit 2 ;;
    esac
done

install_peer() {
    if command -v promtool >/dev/null; then
        return 0
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "bench observe-tsdb: promtool missing and not root; the prometheus column stays n/a" >&2
        return 0
    fi
    echo "bench observe-tsdb: installing the prometheus package (for promtool)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null
    stop_peer_units
}

stop_peer_units() {
    # The package starts prometheus and node-exporter; the benchmark only needs promtool.
    if command -v systemctl >/dev/null; then
        local unit
        for unit in prometheus prometheus-node-exporter \
            $(systemctl list-unit-files --no-legend 'prometheus-node-exporter-*.timer' 2>/dev/null | awk '{print $1}'); do
            systemctl stop "${unit}" 2>/dev/null || true
            systemctl disable "${unit}" 2>/dev/null || true
        done
    fi
}

build() {
    echo "bench observe-tsdb: building the bench example (release)" >&2
    (cd "${ROOT}" && cargo build --release -p mini-tsdb --example bench)
}

run() {
    mkdir -p "${RESULTS_DIR}"
    local out
    out="${RESULTS_DIR}/observe-tsdb-$(date -u +%Y%m%dT%H%M%SZ).json"
    local promtool
    promtool="$(command -v promtool || echo promtool)"
    "${BIN_DIR}/bench" --nodes "${NODES}" --pods "${PODS}" --hours "${HOURS}" \
        --promtool "${promtool}" --json "${out}" &
    BENCH_PID=$!
    wait "${BENCH_PID}"
    BENCH_PID=""
    echo "bench observe-tsdb: results in ${out}" >&2
}

BENCH_PID=""

cleanup() {
    # Interrupted: stop the bench and the promtool it may be running (by PID, nothing else).
    local rc=$?
    if [[ -n "${BENCH_PID}" ]]; then
        local child
        for child in $(ps -o pid= --ppid "${BENCH_PID}" 2>/dev/null); do
            kill "${child}" 2>/dev/null || true
        done
        kill "${BENCH_PID}" 2>/dev/null || true
    fi
    return "${rc}"
}

main() {
    trap cleanup EXIT
    trap "exit 130" INT TERM
    install_peer
    build
    run
}

main
