#!/usr/bin/env bash
# Log shipping benchmark (issue 12): the agent's CPU for shipping 1,000 CRI lines/s. A writer
# process appends the lines to a container log file, mini's log shipper (pkg/logship, the real
# Shipper with the HTTP sink, zstd JSON) ships them to a loopback HTTP sink process, and
# `tail -F file > /dev/null` reads the same file as the peer; prints each one's CPU time / wall
# time as % of a core and writes target/bench-results/observe-logship-<timestamp>.txt. Numbers are
# reported, never asserted. The lead runs it from `scripts/bench.sh observe`.
#
#   scripts/bench_observe_logship.sh [--seconds N] [--rate LINES_PER_SECOND]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
SECS=30
RATE=1000

while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) SECS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        *) echo "usage: $0 [--seconds N] [--rate LINES_PER_SECOND]" >&2; exit 2 ;;
    esac
done

build() {
    echo "bench: building the log shipping benchmark (release)" >&2
    (cd "${ROOT}" && cargo build --release -p mini-logship --example logship_bench)
}

run() {
    mkdir -p "${RESULTS_DIR}"
    local out bin
    out="${RESULTS_DIR}/observe-logship-$(date -u +%Y%m%dT%H%M%SZ).txt"
    bin="${CARGO_TARGET_DIR:-${ROOT}/target}/release/examples/logship_bench"
    # the example stops its writer, sink and tail children by PID itself
    "${bin}" "${SECS}" "${RATE}" | tee "${out}"
    echo "bench: results in ${out}" >&2
}

build
run
