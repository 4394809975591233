#!/usr/bin/env bash
# PromQL benchmark and conformance (issue 12): the evaluator's cost on dashboard-shaped queries over
# an in-memory table (query_range of 1 day for one pod, topk over 3000 series, sum by node over 1500
# pods), and a differential check of query/query_range answers against a real Prometheus (Debian
# package `prometheus`; skipped with a note when it is not installed). Prints a table and writes
# target/bench-results/promql-<timestamp>.json. Numbers are reported, never asserted.
# Usually run from `scripts/bench.sh observe`.
#
#   scripts/bench_observe_promql.sh [--no-conformance]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
CONFORMANCE=1

while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-conformance) CONFORMANCE=0; shift ;;
        *) echo "usage: $0 [--no-conformance]" >&2; exit 2 ;;
    esac
done

TMP=""
cleanup() {
    # The conformance example stops the Prometheus it started (by its child handle); only our
    # temp file is left to remove.
    [[ -n "${TMP}" ]] && rm -f "${TMP}"
    return 0
}
trap cleanup EXIT

run_bench() {
    mkdir -p "${RESULTS_DIR}"
    TMP=$(mktemp /tmp/mini-bench-promql.XXXXXX)
    (cd "${ROOT}" && cargo run --release -q -p mini-promql --example bench) | tee "${TMP}"
    local out="${RESULTS_DIR}/promql-$(date -u +%Y%m%dT%H%M%SZ).json"
    tail -n 1 "${TMP}" > "${out}"
    echo "bench: wrote ${out}" >&2
}

run_conformance() {
    if [[ "${CONFORMANCE}" -eq 0 ]]; then
        return 0
    fi
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        echo "# conformance skipped: prometheus/promtool not installed (apt-get install -y prometheus)"
        return 0
    fi
    (cd "${ROOT}" && cargo run --release -q -p mini-promql --example conformance -- \
        "$(command -v prometheus)" "$(command -v promtool)") | grep -v '^ok - '
}

run_bench
run_conformance
