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
    echo "usage: $0 install [--runs N]" >&2
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

# The install area: what a person installing mini gets. The release binary comes from
# scripts/release.sh (dist/mini, stripped, glibc floor checked; MINI_BENCH_BIN=path measures
# another binary instead).
INSTALL_PEER_K3S_READY_SECONDS=50

build_release_dist() {
    if [[ -n "${MINI_BENCH_BIN:-}" ]]; then
        return 0
    fi
    echo "bench: building the release binary (scripts/release.sh)" >&2
    bash "${ROOT}/scripts/release.sh" >&2
}

# install_server_to_ready_once DIR: starts `mini server` (with its own node agent, the default)
# on the fresh data dir DIR in the bench's server namespace and prints the seconds from start to
# the node's Ready condition True; stops everything it started.
install_server_to_ready_once() {
    local dir=$1 t0 t1 status=""
    setup_network
    t0=$(date +%s.%N)
    start_node_server "${dir}" --node-name server --resolv-conf "${WORK}/resolv.conf" >&2
    for _ in $(seq 1 1200); do
        status=$(k get node server -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
        [[ "${status}" == "True" ]] && break
        sleep 0.1
    done
    t1=$(date +%s.%N)
    kill_node_processes "${dir}" "${SERVER_NS}"
    stop_server KILL
    kill_node_processes "${dir}" "${SERVER_NS}"
    teardown_network
    unmount_under "${dir}"
    if [[ "${status}" != "True" ]]; then
        echo "bench: the node never became Ready; server log:" >&2
        tail -30 "${dir}/server.log" >&2
        return 1
    fi
    echo "${t0} ${t1}" | awk '{printf "%.2f\n", $2 - $1}'
}

# install_sh_to_ready: seconds from `MINI_BINARY=mini sh install.sh` on a fresh Debian 12 machine
# (the install suite's cached debootstrap rootfs booted with systemd as PID 1 under
# systemd-nspawn, in a network namespace of its own with one veth pair: no network) until
# the installer returns, which it does once the server's API answers and its node is Ready.
install_sh_to_ready() {
    local ns="minibinsh$$" t0 t1 rc root
    ensure_rootfs >&2
    ip netns add "${ns}"
    ip -n "${ns}" link set lo up
    ip -n "${ns}" link add eth0 type veth peer name eth0-peer
    ip -n "${ns}" addr add 10.78.0.10/24 dev eth0
    ip -n "${ns}" link set eth0-peer up
    ip -n "${ns}" link set eth0 up
    ip -n "${ns}" route add default dev eth0
    nsenter --net="/var/run/netns/${ns}" sysctl -qw net.ipv4.ip_forward=1
    boot_machine benchinstall --network-namespace-path="/var/run/netns/${ns}" --capability=all >&2
    root="${WORK}/benchinstall/root"
    cp "${MINI_BIN}" "${root}/mini"
    (cd "${root}" && sha256sum mini >mini.sha256)
    cp "${ROOT}/install.sh" "${root}/install.sh"
    t0=$(date +%s.%N)
    in_machine "${MACHINE_PID}" sh -c 'cd /root && MINI_BINARY=/root/mini sh install.sh --timeout 240' >"${WORK}/install-sh.log" 2>&1 && rc=0 || rc=$?
    t1=$(date +%s.%N)
    sed 's/^/bench: install.sh: /' "${WORK}/install-sh.log" | tail -4 >&2
    stop_machines >&2
    ip netns del "${ns}" 2>/dev/null || true
    if [[ ${rc} -ne 0 ]]; then
        echo "bench: install.sh failed (exit ${rc}):" >&2
        tail -20 "${WORK}/install-sh.log" >&2
        echo "failed"
        return 0
    fi
    echo "${t0} ${t1}" | awk '{printf "%.2f\n", $2 - $1}'
}

# scripts/bench.sh install [--runs N]
# The stripped release binary's size and glibc floor, `mini server` on a fresh data dir to node
# Ready (median of N runs, default 3; in a network namespace of its own, needs root), install.sh
# to Ready, and k3s's start-to-Ready as the peer figure (quoted from issue 9, not measured here:
# k3s cannot be installed on this machine). Writes target/bench-results/install-<ts>.json.
run_install() {
    local runs=3
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --runs) runs="$2"; shift 2 ;;
            *) usage; exit 2 ;;
        esac
    done
    mkdir -p "${RESULTS_DIR}"
    local out bin
    out="${RESULTS_DIR}/install-$(date -u +%Y%m%dT%H%M%SZ).json"
    bin="${MINI_BENCH_BIN:-${ROOT}/dist/mini}"
    (
        set -euo pipefail
        # shellcheck source=tests/e2e/lib.sh
        . "${ROOT}/tests/e2e/lib.sh"
        E2E_NS=minibinst
        # shellcheck source=tests/e2e/nodes_lib.sh
        . "${ROOT}/tests/e2e/nodes_lib.sh"
        # shellcheck source=tests/e2e/nspawn_lib.sh
        . "${ROOT}/tests/e2e/nspawn_lib.sh"
        MINI_BIN=$(readlink -f "${bin}")
        WORK=$(mktemp -d /tmp/mini-bench-install.XXXXXX)
        export HOME="${WORK}/home"
        mkdir -p "${HOME}"
        trap 'stop_machines; cleanup_nodes; rm -rf --one-file-system "${WORK}"' EXIT
        echo "# no upstream nameservers in the bench network" >"${WORK}/resolv.conf"
        local size floor i secs times=() median install_sh
        size=$(stat -c %s "${MINI_BIN}")
        floor=$(objdump -T "${MINI_BIN}" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n 1)
        for i in $(seq 1 "${runs}"); do
            secs=$(install_server_to_ready_once "${WORK}/run${i}")
            echo "bench: run ${i}: mini server to node Ready ${secs} s" >&2
            times+=("${secs}")
        done
        median=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')
        install_sh=$(install_sh_to_ready)
        echo "binary: ${MINI_BIN} ${size} bytes ($(awk -v b="${size}" 'BEGIN {printf "%.1f", b / 1048576}') MiB), needs glibc >= ${floor}"
        echo "mini server fresh data dir -> node Ready: median ${median} s of ${runs} (${times[*]})"
        echo "install.sh -> node Ready: ${install_sh}"
        echo "peer: k3s server -> node Ready ~${INSTALL_PEER_K3S_READY_SECONDS} s (quoted from issue 9, not measured: k3s is not installable here)"
        local install_json=null
        [[ "${install_sh}" =~ ^[0-9.]+$ ]] && install_json="${install_sh}"
        printf '{"binary":"%s","binary_bytes":%s,"glibc_needed":"%s","server_to_ready_seconds":[%s],"server_to_ready_median_seconds":%s,"install_sh_to_ready_seconds":%s,"peer_k3s_to_ready_seconds_quoted":%s}\n' \
            "${MINI_BIN}" "${size}" "${floor}" "$(IFS=,; echo "${times[*]}")" "${median}" "${install_json}" \
            "${INSTALL_PEER_K3S_READY_SECONDS}" >"${out}"
        echo "bench: wrote ${out}" >&2
    )
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
        install)
            build_release_dist
            run_install "$@"
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
