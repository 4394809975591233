#!/usr/bin/env bash
# Log store benchmark (issue 12): generates ~1 GiB of realistic container log lines (nginx access
# logs, JSON application logs, Java stack traces) spread over the last 24 hours, ingests them into
# mini-logstore in agent-sized batches on one thread, and reports in the same run:
#   - ingest lines/s (wall, fsync per batch) and lines per CPU second of the ingesting thread
#   - compression ratio (raw bytes / segment files, index included) next to `zstd -3 -T1` on the
#     same raw file
#   - text searches over the last hour (substring, label + regex) and over all 24 h, next to
#     `grep -c -F` of the same text over the whole raw file
# Prints a table and writes target/bench-results/observe-logstore-<timestamp>.json. Numbers are
# reported, never asserted. Needs ~2.5x RAW_MB of free disk under the work directory.
# Usually run as part of `scripts/bench.sh observe`.
#
#   scripts/bench_observe_logstore.sh [--raw-mb N] [--dir DIR]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
BIN_DIR="${CARGO_TARGET_DIR:-${ROOT}/target}/release/examples"
RAW_MB=1024
WORK=""

usage() {
    echo "usage: $0 [--raw-mb N] [--dir DIR]" >&2
}

parse_args() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --raw-mb) RAW_MB=$2; shift 2 ;;
            --dir) WORK=$2; shift 2 ;;
            *) usage; exit 2 ;;
        esac
    done
}

cleanup() {
    local rc=$?
    if [[ -n "${WORK}" && -d "${WORK}" ]]; then
        rm -rf "${WORK}"
    fi
    if [[ ${rc} -ne 0 ]]; then
        echo "bench observe-logstore: failed (exit ${rc})" >&2
    fi
    return "${rc}"
}

check_tools() {
    local t
    for t in grep zstd; do
        if ! command -v "${t}" >/dev/null; then
            echo "bench observe-logstore: ${t} is missing (apt-get install -y ${t})" >&2
            exit 1
        fi
    done
}

build() {
    echo "bench observe-logstore: building the bench example (release)" >&2
    (cd "${ROOT}" && cargo build --release -p mini-logstore --example bench)
}

run() {
    mkdir -p "${RESULTS_DIR}"
    if [[ -z "${WORK}" ]]; then
        WORK="$(mktemp -d /var/tmp/mini-bench-logstore.XXXXXX)"
    else
        mkdir -p "${WORK}"
        WORK="$(mktemp -d "${WORK}/mini-bench-logstore.XXXXXX")"
    fi
    local out
    out="${RESULTS_DIR}/observe-logstore-$(date -u +%Y%m%dT%H%M%SZ).json"
    "${BIN_DIR}/bench" --raw-mb "${RAW_MB}" --dir "${WORK}/run" --json "${out}"
    echo "bench observe-logstore: results in ${out}" >&2
}

parse_args "$@"
trap cleanup EXIT
check_tools
build
run
