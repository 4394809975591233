#!/usr/bin/env bash
# Load generator benchmark (issue 15), against one nginx worker (Debian nginx-light) answering
# `return 200` on loopback, pinned to its own core:
#   1. throughput: one mini generator on one core (closed model, C users) vs `wrk -t1 -cC` on
#      the same core against the same target, alternated RUNS times; medians and their ratio
#      (the goal is >= 0.8);
#   2. merge exactness: 3 generators at RATE/s each, run together; p99 of the exactly merged
#      histograms (`mini loadtest merge`) vs the p99 of all their raw samples (goal: within 1%);
#   3. a 1 s stall: the target is SIGSTOPped for 1 s during an open-model run at RATE/s; the
#      p99.9 mini reports (latency from the intended send time) vs wrk's p99 in the same stall.
# Prints a table and writes target/bench-results/loadtest-<timestamp>.json. Numbers are
# reported, never asserted. Usually run as `scripts/bench.sh loadtest`.
#
#   scripts/bench_loadtest.sh [--runs N] [--seconds N] [--users N] [--rate N]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
RUNS=3
SECS=10
USERS=32
RATE=2000
PORT=21480
TARGET_CPU=0
LOAD_CPU=1

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --seconds) SECS=$2; shift 2 ;;
        --users) USERS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--seconds N] [--users N] [--rate N]" >&2; exit 2 ;;
    esac
done

if ! command -v nginx >/dev/null; then
    echo "bench loadtest: installing nginx-light (the target)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y nginx-light >/dev/null
fi
if ! command -v wrk >/dev/null; then
    echo "bench loadtest: installing wrk (the peer)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null
fi
for tool in wrk nginx taskset python3; do
    command -v "$tool" >/dev/null || { echo "bench loadtest: $tool not found" >&2; exit 1; }
done
if [[ $(nproc) -lt 2 ]]; then
    TARGET_CPU=0
    LOAD_CPU=0
fi

# The binary measured: $MINI_BIN, else the newest build (scripts/find_mini.sh; builds nothing).
# shellcheck source=scripts/find_mini.sh
. "${ROOT}/scripts/find_mini.sh"
find_mini loadtest
WORK=$(mktemp -d /tmp/mini-bench-lt.XXXXXX)
NGINX_PID=

cleanup() {
    local rc=$?
    if [[ -n "${NGINX_PID}" ]]; then
        kill -CONT "${NGINX_PID}" 2>/dev/null || true
        kill "${NGINX_PID}" 2>/dev/null || true
        wait "${NGINX_PID}" 2>/dev/null || true
    fi
    rm -rf "${WORK}"
    if [[ ${rc} -ne 0 ]]; then
        echo "bench loadtest: failed (exit ${rc})" >&2
    fi
    return "${rc}"
}
trap cleanup EXIT

start_target() {
    mkdir -p "${WORK}/nginx/logs"
    cat >"${WORK}/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid ${WORK}/nginx/nginx.pid;
error_log ${WORK}/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path ${WORK}/nginx/body;
    proxy_temp_path ${WORK}/nginx/proxy;
    fastcgi_temp_path ${WORK}/nginx/fastcgi;
    uwsgi_temp_path ${WORK}/nginx/uwsgi;
    scgi_temp_path ${WORK}/nginx/scgi;
    server {
        listen 127.0.0.1:${PORT} backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
    taskset -c "${TARGET_CPU}" nginx -p "${WORK}/nginx" -c "${WORK}/nginx/nginx.conf" &
    NGINX_PID=$!
    for _ in $(seq 50); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', ${PORT}), 0.2)" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "bench loadtest: nginx did not listen on 127.0.0.1:${PORT}" >&2
    exit 1
}

URL="http://127.0.0.1:${PORT}/"

# wrk's "Requests/sec:" figure
wrk_rate() {
    taskset -c "${LOAD_CPU}" wrk -t1 -c"${USERS}" -d"${SECS}s" "${URL}" | awk '/Requests\/sec:/ {print $2}'
}

# the generator's "rate N/s" figure
mini_rate() {
    taskset -c "${LOAD_CPU}" "${MINI_BIN}" loadtest generate --url "${URL}" --users "${USERS}" \
        --duration "${SECS}s" | sed -n 's/.* rate \([0-9.]*\)\/s.*/\1/p'
}

median() {
    sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'
}

step_throughput() {
    local w=() m=() i
    for i in $(seq "${RUNS}"); do
        w+=("$(wrk_rate)")
        m+=("$(mini_rate)")
        echo "bench loadtest: run ${i}: wrk ${w[-1]}/s, mini ${m[-1]}/s" >&2
    done
    WRK_RATE=$(printf '%s\n' "${w[@]}" | median)
    MINI_RATE=$(printf '%s\n' "${m[@]}" | median)
    RATIO=$(python3 -c "print(f'{${MINI_RATE}/${WRK_RATE}:.3f}')")
}

step_merge() {
    local pids=() g
    for g in 1 2 3; do
        "${MINI_BIN}" loadtest generate --url "${URL}" --rate "${RATE}" --duration "${SECS}s" \
            --out "${WORK}/gen${g}.json" --raw "${WORK}/gen${g}.raw" >/dev/null &
        pids+=($!)
    done
    for g in "${pids[@]}"; do wait "${g}"; done
    MERGED_P99=$("${MINI_BIN}" loadtest merge "${WORK}"/gen{1,2,3}.json --out "${WORK}/merged.json" \
        | sed -n 's/.* p99 \([0-9.]*\)ms.*/\1/p')
    read -r RAW_COUNT RAW_P99 < <(cat "${WORK}"/gen{1,2,3}.raw | python3 -c '
import math, sys
v = sorted(int(x) for x in sys.stdin if x.strip())
rank = max(1, math.ceil(0.99 * len(v)))
print(len(v), v[rank - 1] / 1000.0)')
    MERGED_COUNT=$(python3 -c "import json; print(json.load(open('${WORK}/merged.json'))['summary']['requests'])")
    MERGE_DIFF=$(python3 -c "print(f'{abs(${MERGED_P99}-${RAW_P99})/${RAW_P99}*100:.3f}')")
}

stall_target() {
    sleep $((SECS / 2))
    kill -STOP "${NGINX_PID}"
    sleep 1
    kill -CONT "${NGINX_PID}"
}

step_stall() {
    local out
    stall_target &
    local stall=$!
    out=$("${MINI_BIN}" loadtest generate --url "${URL}" --rate 1000 --duration "${SECS}s")
    wait "${stall}"
    STALL_P999=$(sed -n 's/.* p99.9 \([0-9.]*\)ms.*/\1/p' <<<"${out}")
    STALL_P99=$(sed -n 's/.* p99 \([0-9.]*\)ms.*/\1/p' <<<"${out}")
    STALL_MAX=$(sed -n 's/.* max \([0-9.]*\)ms.*/\1/p' <<<"${out}")
    stall_target &
    stall=$!
    out=$(wrk -t1 -c"${USERS}" -d"${SECS}s" --latency "${URL}")
    wait "${stall}"
    WRK_STALL_P99=$(awk '$1 == "99%" {print $2}' <<<"${out}")
}

report() {
    mkdir -p "${RESULTS_DIR}"
    local out
    out="${RESULTS_DIR}/loadtest-$(date -u +%Y%m%dT%H%M%SZ).json"
    printf '\n%-52s %14s\n' "loadtest benchmark (${MINI_BIN##*/}, ${SECS}s runs)" "value"
    printf '%-52s %14s\n' "wrk -t1 -c${USERS}, one core (median of ${RUNS}), req/s" "${WRK_RATE}"
    printf '%-52s %14s\n' "mini generator, ${USERS} users, one core, req/s" "${MINI_RATE}"
    printf '%-52s %14s\n' "mini / wrk (goal >= 0.8)" "${RATIO}"
    printf '%-52s %14s\n' "3 generators x ${RATE}/s: samples (merged / raw)" "${MERGED_COUNT} / ${RAW_COUNT}"
    printf '%-52s %14s\n' "merged p99, ms" "${MERGED_P99}"
    printf '%-52s %14s\n' "p99 of all raw samples, ms" "${RAW_P99}"
    printf '%-52s %14s\n' "difference, % (goal <= 1)" "${MERGE_DIFF}"
    printf '%-52s %14s\n' "target stopped 1 s, mini 1000/s: p99 / p99.9 / max, ms" "${STALL_P99} / ${STALL_P999} / ${STALL_MAX}"
    printf '%-52s %14s\n' "target stopped 1 s, wrk -c${USERS}: p99" "${WRK_STALL_P99}"
    cat >"${out}" <<EOF
{"binary": "${MINI_BIN}", "seconds": ${SECS}, "users": ${USERS}, "runs": ${RUNS},
 "wrk_rps": ${WRK_RATE}, "mini_rps": ${MINI_RATE}, "ratio": ${RATIO},
 "merge": {"rate_per_generator": ${RATE}, "samples": ${RAW_COUNT}, "merged_p99_ms": ${MERGED_P99}, "raw_p99_ms": ${RAW_P99}, "diff_percent": ${MERGE_DIFF}},
 "stall": {"mini_p99_ms": ${STALL_P99}, "mini_p999_ms": ${STALL_P999}, "mini_max_ms": ${STALL_MAX}, "wrk_p99": "${WRK_STALL_P99}"}}
EOF
    echo "bench loadtest: wrote ${out}" >&2
}

start_target
step_throughput
step_merge
step_stall
report
