#!/usr/bin/env bash
# Benchmarks for mini. Numbers are printed and stored as JSON, never asserted.
#
#   scripts/bench.sh api [--quick] [extra mini-bench-api flags...]
#
# `api` builds `mini` and the `mini-bench-api` runner in release mode, starts a fresh
# `mini server` in a temp dir, and writes target/bench-results/api-<timestamp>.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
BIN_DIR="${CARGO_TARGET_DIR:-${ROOT}/target}/release"

usage() {
    echo "usage: $0 network [--services N] [--connects N] [--iperf-secs N]" >&2
    echo "usage: $0 agent [--pods N] [--idle-secs N]" >&2
    echo "usage: $0 api [--quick] [--pods N] [--creates N] [--concurrency N] [--watchers N] [--samples N] [--watch-updates N]" >&2
}

cleanup() {
    # mini-bench-api kills its own server by PID; nothing global to undo here.
    local rc=$?
    if [[ ${rc} -ne 0 ]]; then
        echo "bench: failed (exit ${rc})" >&2
    fi
    return "${rc}"
}

build_release() {
    echo "bench: building release binaries" >&2
    (cd "${ROOT}" && cargo build --release -p mini -p mini-bench --bin mini --bin mini-bench-api)
}

run_api() {
    mkdir -p "${RESULTS_DIR}"
    local out
    out="${RESULTS_DIR}/api-$(date -u +%Y%m%dT%H%M%SZ).json"
    (cd "${ROOT}" && "${BIN_DIR}/mini-bench-api" \
        --mini "${BIN_DIR}/mini" --out "${out}" "$@")
}

build_release_scheduler() {
    echo "bench: building release binaries" >&2
    (cd "${ROOT}" && cargo build --release -p mini -p mini-bench --bin mini --bin mini-bench-scheduler)
}

# scripts/bench.sh scheduler [--quick] [--nodes N] [--pods N] [--scale N] [--rss-pods N] ...
# Scheduler throughput, Deployment scale-up and RSS over simulated nodes; writes
# target/bench-results/scheduler-<timestamp>.json.
run_scheduler() {
    mkdir -p "${RESULTS_DIR}"
    local out
    out="${RESULTS_DIR}/scheduler-$(date -u +%Y%m%dT%H%M%SZ).json"
    (cd "${ROOT}" && "${BIN_DIR}/mini-bench-scheduler" \
        --mini "${BIN_DIR}/mini" --out "${out}" "$@")
}

build_release_podstart() {
    echo "bench: building release binaries" >&2
    (cd "${ROOT}" && cargo build --release -p mini -p mini-bench --bin mini --bin mini-bench-podstart)
}

# scripts/bench.sh agent [--pods N] [--idle-secs N]
# Pod start latency on a real node (server + one agent with its own containerd, each in a
# network namespace, image imported from a local OCI tarball) next to raw CRI time, and the
# agent's idle RSS/CPU; writes target/bench-results/podstart-<timestamp>.json. Needs root.
run_agent() {
    mkdir -p "${RESULTS_DIR}"
    local out
    out="${RESULTS_DIR}/podstart-$(date -u +%Y%m%dT%H%M%SZ).json"
    (
        set -euo pipefail
        # shellcheck source=tests/e2e/lib.sh
        . "${ROOT}/tests/e2e/lib.sh"
        E2E_NS=minibench
        # shellcheck source=tests/e2e/nodes_lib.sh
        . "${ROOT}/tests/e2e/nodes_lib.sh"
        MINI_BIN="${BIN_DIR}/mini"
        WORK=$(mktemp -d /tmp/mini-bench-agent.XXXXXX)
        trap 'cleanup_nodes node-a; rm -rf "$WORK"' EXIT
        setup_network node-a
        python3 "${ROOT}/tests/e2e/build_image.py" "$WORK/busybox.tar" mini.local/busybox:1.0
        start_node_server "$WORK/server" --disable-agent
        mkdir -p "$WORK/node-a/agent/images"
        cp "$WORK/busybox.tar" "$WORK/node-a/agent/images/"
        start_agent node-a "$(node_ip 1)" "$WORK/node-a"
        local ready=""
        for _ in $(seq 1 120); do
            if k get node node-a --no-headers 2>/dev/null | grep -q ' Ready '; then ready=1; break; fi
            sleep 1
        done
        [ -n "$ready" ] || { echo "bench: node-a never became Ready" >&2; tail -30 "$WORK/node-a/agent.log" >&2; exit 1; }
        local sock
        sock=$(find "$WORK/node-a" -maxdepth 4 -name containerd.sock | head -n 1)
        in_ns "$SERVER_NS" "${BIN_DIR}/mini-bench-podstart" --kubeconfig "$KUBECONFIG" \
            --node node-a --cri-socket "$sock" --agent-pid "$AGENT_PID_node_a" --out "$out" "$@"
    )
}

# scripts/bench.sh network [--services N] [--connects N] [--iperf-secs N]
# Overlay vs. underlay TCP throughput, Service connect latency with 10 and 5,000 Services and
# Service create-to-connect time on two real nodes; writes target/bench-results/network-<ts>.json.
# Measures the release `mini` if built, else the debug one (no build here). Needs root.
run_network() {
    "${ROOT}/scripts/bench_network.sh" "$@"
}

main() {
    if [[ $# -lt 1 ]]; then
        usage
        exit 2
    fi
    local cmd="$1"
    shift
    case "${cmd}" in
        api)
            build_release
            run_api "$@"
            ;;
        scheduler)
            build_release_scheduler
            run_scheduler "$@"
            ;;
        agent)
            build_release_podstart
            run_agent "$@"
            ;;
        network)
            run_network "$@"
            ;;
        -h | --help)
            usage
            ;;
        *)
            usage
            exit 2
            ;;
    esac
}

trap cleanup EXIT
main "$@"
