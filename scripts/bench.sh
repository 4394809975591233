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

usage() {
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
    (cd "${ROOT}" && "${ROOT}/target/release/mini-bench-api" \
        --mini "${ROOT}/target/release/mini" --out "${out}" "$@")
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
    (cd "${ROOT}" && "${ROOT}/target/release/mini-bench-scheduler" \
        --mini "${ROOT}/target/release/mini" --out "${out}" "$@")
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
