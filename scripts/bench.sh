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
    echo "usage: $0 ingress [--runs N] [--seconds N] [--connections N]" >&2
    echo "usage: $0 observe [--nodes N] [--pods N] [--history 24h] [--only server|stores]" >&2
    echo "usage: $0 agent [--pods N] [--idle-secs N]" >&2
    echo "usage: $0 install [--runs N]" >&2
    echo "usage: $0 console [--nodes N] [--samples N]" >&2
    echo "usage: $0 loadtest [--runs N] [--seconds N] [--users N] [--rate N]" >&2
    echo "usage: $0 netpol [--policies N] [--connects N]" >&2
    echo "usage: $0 registry [--runs N] [--seconds N] [--concurrency N]" >&2
    echo "usage: $0 ha [--quick] [mini-bench-api flags...]" >&2
    echo "usage: $0 store|snapshot [--objects N] [--cycles N] [--settle SECS] [--snapshot-objects N] [--backend sled|etcd|both]" >&2
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

# The registry area: mini server's /v2/ next to Debian's docker-registry (distribution 2.8.2).
REGISTRY_BENCH_IMAGE="${MINI_TEST_CACHE:-/var/cache/mini-test}/registry-bench-200m.tar"

build_release_registry() {
    if [[ -n "${MINI_BENCH_BIN_DIR:-}" ]]; then
        return 0
    fi
    echo "bench: building release binaries" >&2
    (cd "${ROOT}" && cargo build --release -p mini -p mini-regclient --bin mini --bin mini-bench-registry)
}

# registry_bench_image: the ~200 MiB OCI-archive (4 layers of 50 MiB random bytes, gzip level 1
# so skopeo pushes the blobs as they are), built once and cached.
registry_bench_image() {
    local img=${REGISTRY_BENCH_IMAGE}
    [[ -s "${img}" ]] && return 0
    mkdir -p "$(dirname "${img}")"
    echo "bench: building the 200 MiB registry bench image ${img}" >&2
    python3 - "${img}.partial" <<'EOF'
import gzip, hashlib, io, json, os, platform, sys, tarfile
out = sys.argv[1]
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
blobs, layers, diff_ids = {}, [], []
for i in range(4):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as t:
        data = os.urandom(50 << 20)
        info = tarfile.TarInfo(f"data/layer-{i}.bin"); info.size = len(data); info.mode = 0o644
        t.addfile(info, io.BytesIO(data))
    raw = raw.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    gz = gzip.compress(raw, compresslevel=1, mtime=0)
    d = hashlib.sha256(gz).hexdigest(); blobs[d] = gz
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + d, "size": len(gz)})
config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/true"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cd = hashlib.sha256(config).hexdigest(); blobs[cd] = config
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cd, "size": len(config)},
                       "layers": layers}).encode()
md = hashlib.sha256(manifest).hexdigest(); blobs[md] = manifest
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:" + md, "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": "1",
                                    "io.containerd.image.name": "mini.local/bench/big:1"}}]}).encode()
with tarfile.open(out, mode="w", format=tarfile.GNU_FORMAT) as t:
    def add(name, data):
        info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o644
        t.addfile(info, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", index)
    for d, data in blobs.items():
        add(f"blobs/sha256/{d}", data)
EOF
    mv "${img}.partial" "${img}"
}

# registry_start_docker DIR: docker-registry with TLS (throwaway CA + serving cert for 127.0.0.1)
# on a free port; sets DOCKER_REG_PID, DOCKER_REG_HOST, and DIR/certs (skopeo cert dir, ca.crt).
registry_start_docker() {
    local dir=$1 port
    mkdir -p "${dir}/certs" "${dir}/data"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench-ca" \
        -keyout "${dir}/ca.key" -out "${dir}/certs/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "${dir}/tls.key" -out "${dir}/tls.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"${dir}/san.ext"
    openssl x509 -req -in "${dir}/tls.csr" -CA "${dir}/certs/ca.crt" -CAkey "${dir}/ca.key" \
        -CAcreateserial -days 2 -extfile "${dir}/san.ext" -out "${dir}/tls.crt" 2>/dev/null
    port=$(free_port)
    cat >"${dir}/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${dir}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
  tls:
    certificate: ${dir}/tls.crt
    key: ${dir}/tls.key
EOF
    /usr/bin/docker-registry serve "${dir}/config.yml" >"${dir}/registry.log" 2>&1 &
    DOCKER_REG_PID=$!
    DOCKER_REG_HOST="127.0.0.1:${port}"
    for _ in $(seq 1 100); do
        curl -s --cacert "${dir}/certs/ca.crt" "https://${DOCKER_REG_HOST}/v2/" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: docker-registry did not answer:" >&2
    cat "${dir}/registry.log" >&2
    return 1
}

# registry_start_mini DIR: `mini server` (no node agent) on loopback with a fresh data dir; its
# admin kubeconfig's CA and client certificate become DIR/certs (ca.crt, client.cert,
# client.key). Sets MINI_REG_HOST, and MINI_V2=1 when the server answers /v2/.
registry_start_mini() {
    local dir=$1 port kubeconfig code
    port=$(free_port)
    start_server "${dir}" "${port}" >&2
    MINI_REG_HOST="127.0.0.1:${port}"
    kubeconfig="${dir}/server/admin.kubeconfig"
    mkdir -p "${dir}/certs"
    grep 'certificate-authority-data:' "${kubeconfig}" | awk '{print $2}' | base64 -d >"${dir}/certs/ca.crt"
    grep 'client-certificate-data:' "${kubeconfig}" | awk '{print $2}' | base64 -d >"${dir}/certs/client.cert"
    grep 'client-key-data:' "${kubeconfig}" | awk '{print $2}' | base64 -d >"${dir}/certs/client.key"
    code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "${dir}/certs/ca.crt" \
        --cert "${dir}/certs/client.cert" --key "${dir}/certs/client.key" "https://${MINI_REG_HOST}/v2/" || true)
    MINI_V2=0
    [[ "${code}" == "200" ]] && MINI_V2=1
    if [[ "${code}" == "404" ]]; then
        echo "bench: mini server answers /v2/ with HTTP 404: this build has no registry; its column stays n/a" >&2
    elif [[ "${MINI_V2}" != 1 ]]; then
        echo "bench: mini server answers /v2/ with HTTP ${code} for the admin client certificate; its column stays n/a" >&2
    fi
}

# registry_measure HOST CERTDIR RUNS SECONDS CONCURRENCY [bench flags...]: prints
# "push_mibs pull_mibs gets_per_second" (medians over RUNS for push and pull). Every run
# copies to a new repository with an empty skopeo blob cache (HOME), so nothing is skipped.
registry_measure() {
    local host=$1 certs=$2 runs=$3 secs=$4 conc=$5 i t0 t1 mib pushes=() pulls=() gets
    shift 5
    mib=$(stat -c %s "${REGISTRY_BENCH_IMAGE}" | awk '{printf "%.3f", $1 / 1048576}')
    for i in $(seq 1 "${runs}"); do
        rm -rf "${WORK}/home" "${WORK}/pulled"
        mkdir -p "${WORK}/home"
        t0=$(date +%s.%N)
        HOME="${WORK}/home" skopeo copy -q --dest-cert-dir "${certs}" \
            "oci-archive:${REGISTRY_BENCH_IMAGE}" "docker://${host}/bench/big-${i}:1" >&2
        t1=$(date +%s.%N)
        pushes+=("$(echo "${t0} ${t1} ${mib}" | awk '{printf "%.1f", $3 / ($2 - $1)}')")
        t0=$(date +%s.%N)
        HOME="${WORK}/home" skopeo copy -q --src-cert-dir "${certs}" \
            "docker://${host}/bench/big-${i}:1" "oci:${WORK}/pulled:1" >&2
        t1=$(date +%s.%N)
        pulls+=("$(echo "${t0} ${t1} ${mib}" | awk '{printf "%.1f", $3 / ($2 - $1)}')")
    done
    rm -rf "${WORK}/home" "${WORK}/pulled"
    gets=$("${BENCH_BIN_DIR}/mini-bench-registry" --url "https://${host}" --ca "${certs}/ca.crt" "$@" \
        --repository bench/big-1 --reference 1 --seconds "${secs}" --concurrency "${conc}" | awk '{print $2}')
    echo "$(median "${pushes[@]}") $(median "${pulls[@]}") ${gets}"
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

ratio() {
    if [[ "$1" =~ ^[0-9.]+$ && "$2" =~ ^[0-9.]+$ ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'
    else
        echo "n/a"
    fi
}

# registry_push_to_running HOST CERTDIR: seconds from the start of a push of a new small image
# (skopeo, admin certificate) to a pod running it on a real node: its own server and agent in
# network namespaces (the throughput server above has no node), median of 3 fresh images. The
# node has never seen the image, so the time includes containerd's pull from the registry.
registry_push_to_running() {
    (
        set -euo pipefail
        E2E_NS=minibreg
        # shellcheck source=tests/e2e/nodes_lib.sh
        . "${ROOT}/tests/e2e/nodes_lib.sh"
        trap 'cleanup_nodes node-a >/dev/null 2>&1' EXIT
        setup_network node-a
        start_node_server "${WORK}/run-server" --disable-agent >&2
        start_agent node-a "$(node_ip 1)" "${WORK}/run-node-a"
        local certs="${WORK}/run-certs" reg="${SERVER_IP}:${API_PORT}" i t0 t1 times=() phase
        mkdir -p "${certs}"
        cp "${WORK}/run-server/server/tls/ca.crt" "${certs}/ca.crt"
        k config view --raw -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"${certs}/client.cert"
        k config view --raw -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"${certs}/client.key"
        for _ in $(seq 1 120); do
            k get node node-a --no-headers 2>/dev/null | grep -q ' Ready ' && break
            sleep 1
        done
        for _ in $(seq 1 30); do k get sa default >/dev/null 2>&1 && break; sleep 1; done
        for i in 1 2 3; do
            BUILD_IMAGE_VERSION="run-${i}-$(date +%s%N)" python3 "${ROOT}/tests/e2e/build_image.py" "${WORK}/run-${i}.tar" "app:${i}"
            t0=$(date +%s.%N)
            in_ns "${SERVER_NS}" skopeo copy -q --dest-cert-dir "${certs}" "oci-archive:${WORK}/run-${i}.tar" \
                "docker://${reg}/default/run:${i}" >&2
            k run "run-${i}" --image="${reg}/default/run:${i}" --restart=Never \
                --overrides='{"spec":{"nodeName":"node-a","terminationGracePeriodSeconds":0}}' -- sleep 3600 >/dev/null
            phase=""
            for _ in $(seq 1 1200); do
                phase=$(k get pod "run-${i}" -o jsonpath='{.status.phase}' 2>/dev/null || true)
                [[ "${phase}" == Running ]] && break
                sleep 0.05
            done
            t1=$(date +%s.%N)
            [[ "${phase}" == Running ]] || { echo "bench: pod run-${i} never ran" >&2; echo n/a; return 0; }
            times+=("$(echo "${t0} ${t1}" | awk '{printf "%.2f", $2 - $1}')")
        done
        echo "bench: push -> Running: ${times[*]} s" >&2
        median "${times[@]}"
    )
}

# scripts/bench.sh registry [--runs N] [--seconds N] [--concurrency N]
# Push and pull MiB/s of a ~200 MiB image (skopeo copy, the same client for both) and manifest
# GETs/s (mini-bench-registry: the mini client in a loop, N concurrent) against Debian's
# docker-registry 2.8.2 (TLS, throwaway cert) and a fresh `mini server`'s /v2/ (TLS, admin client
# certificate), side by side with the ratio mini/docker-registry; writes
# target/bench-results/registry-<ts>.json. MINI_BENCH_BIN_DIR measures prebuilt binaries (no
# build). A function `registry_push_to_running HOST CERTDIR`, when defined, adds the
# "push → Running" line (it prints seconds).
run_registry() {
    local runs=3 secs=5 conc=8
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --runs) runs="$2"; shift 2 ;;
            --seconds) secs="$2"; shift 2 ;;
            --concurrency) conc="$2"; shift 2 ;;
            *) usage; exit 2 ;;
        esac
    done
    mkdir -p "${RESULTS_DIR}"
    local out
    out="${RESULTS_DIR}/registry-$(date -u +%Y%m%dT%H%M%SZ).json"
    (
        set -euo pipefail
        # shellcheck source=tests/e2e/lib.sh
        . "${ROOT}/tests/e2e/lib.sh"
        BENCH_BIN_DIR="${MINI_BENCH_BIN_DIR:-${BIN_DIR}}"
        MINI_BIN="${BENCH_BIN_DIR}/mini"
        WORK=$(mktemp -d /tmp/mini-bench-registry.XXXXXX)
        DOCKER_REG_PID=""
        trap 'stop_server KILL; [[ -n "${DOCKER_REG_PID}" ]] && kill "${DOCKER_REG_PID}" 2>/dev/null; wait 2>/dev/null; rm -rf "${WORK}"' EXIT
        registry_bench_image
        registry_start_docker "${WORK}/docker"
        registry_start_mini "${WORK}/mini"
        local d m res d_push d_pull d_gets mini_push=n/a mini_pull=n/a mini_gets=n/a running=n/a
        echo "bench: docker-registry at ${DOCKER_REG_HOST}" >&2
        res=$(registry_measure "${DOCKER_REG_HOST}" "${WORK}/docker/certs" "${runs}" "${secs}" "${conc}")
        read -r d_push d_pull d_gets <<<"${res}"
        if [[ "${MINI_V2}" == 1 ]]; then
            echo "bench: mini server at ${MINI_REG_HOST}" >&2
            m="${WORK}/mini/certs"
            res=$(registry_measure "${MINI_REG_HOST}" "${m}" "${runs}" "${secs}" "${conc}" \
                --cert "${m}/client.cert" --key "${m}/client.key")
            read -r mini_push mini_pull mini_gets <<<"${res}"
            if declare -F registry_push_to_running >/dev/null; then
                running=$(registry_push_to_running "${MINI_REG_HOST}" "${m}")
            fi
        fi
        d="$(stat -c %s "${REGISTRY_BENCH_IMAGE}" | awk '{printf "%.0f", $1 / 1048576}') MiB image, ${runs} runs (median), GETs ${secs} s x ${conc}"
        echo "registry bench: ${d}"
        printf '%-18s %16s %12s %22s\n' "" "docker-registry" "mini" "mini/docker-registry"
        printf '%-18s %16s %12s %22s\n' "push MiB/s" "${d_push}" "${mini_push}" "$(ratio "${mini_push}" "${d_push}")"
        printf '%-18s %16s %12s %22s\n' "pull MiB/s" "${d_pull}" "${mini_pull}" "$(ratio "${mini_pull}" "${d_pull}")"
        printf '%-18s %16s %12s %22s\n' "manifest GETs/s" "${d_gets}" "${mini_gets}" "$(ratio "${mini_gets}" "${d_gets}")"
        if declare -F registry_push_to_running >/dev/null; then
            printf '%-18s %16s %12s\n' "push -> Running s" "-" "${running}"
        fi
        j() { [[ "$1" =~ ^[0-9.]+$ ]] && echo "$1" || echo null; }
        printf '{"image_bytes":%s,"runs":%s,"docker_registry":{"push_mibs":%s,"pull_mibs":%s,"manifest_gets_per_second":%s},"mini":{"push_mibs":%s,"pull_mibs":%s,"manifest_gets_per_second":%s,"push_to_running_seconds":%s}}\n' \
            "$(stat -c %s "${REGISTRY_BENCH_IMAGE}")" "${runs}" "$(j "${d_push}")" "$(j "${d_pull}")" "$(j "${d_gets}")" \
            "$(j "${mini_push}")" "$(j "${mini_pull}")" "$(j "${mini_gets}")" "$(j "${running}")" >"${out}"
        echo "bench: wrote ${out}" >&2
    )
}

# scripts/bench.sh netpol [--policies N] [--connects N]
# Connection setup latency through mini's NetworkPolicy table with 0 and N policies (default
# 1,000), side by side, and with no table at all. Three network namespaces: a client pod
# (10.42.1.6), a router holding `ip mini-netpol` on its forward hook (programmed by the agent's
# own Enforcer through `mini-bench-netpol`), a server pod (10.42.0.5:8080, isolated by a
# default deny plus an allow for the client, the other policies mostly selecting a decoy pod).
# Each of N connects (default 2,000) is a fresh TCP handshake, so every SYN walks the policy
# path. Needs root. Writes target/bench-results/netpol-<ts>.json.
run_netpol() {
    local policies=1000 connects=2000
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --policies) policies="$2"; shift 2 ;;
            --connects) connects="$2"; shift 2 ;;
            *) usage; exit 2 ;;
        esac
    done
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "bench: netpol needs root (network namespaces, nftables)" >&2
        exit 1
    fi
    echo "bench: building mini-bench-netpol" >&2
    (cd "${ROOT}" && cargo build -p mini-bench --bin mini-bench-netpol)
    mkdir -p "${RESULTS_DIR}"
    local out bin
    out="${RESULTS_DIR}/netpol-$(date -u +%Y%m%dT%H%M%SZ).json"
    bin="${CARGO_TARGET_DIR:-${ROOT}/target}/debug/mini-bench-netpol"
    (
        set -euo pipefail
        local cli=np-bench-cli rt=np-bench-rt srv=np-bench-srv server_pid=""
        teardown() {
            [[ -n "${server_pid}" ]] && kill "${server_pid}" 2>/dev/null || true
            ip netns del "${cli}" 2>/dev/null || true
            ip netns del "${rt}" 2>/dev/null || true
            ip netns del "${srv}" 2>/dev/null || true
        }
        trap teardown EXIT
        teardown
        ip netns add "${cli}"
        ip netns add "${rt}"
        ip netns add "${srv}"
        ip -n "${rt}" link add to-cli type veth peer name eth0 netns "${cli}"
        ip -n "${rt}" link add to-srv type veth peer name eth0 netns "${srv}"
        ip -n "${rt}" addr add 10.42.1.1/24 dev to-cli
        ip -n "${rt}" addr add 10.42.0.1/24 dev to-srv
        ip -n "${cli}" addr add 10.42.1.6/24 dev eth0
        ip -n "${srv}" addr add 10.42.0.5/24 dev eth0
        local ns
        for ns in "${cli}" "${rt}" "${srv}"; do
            ip -n "${ns}" link set lo up
        done
        ip -n "${rt}" link set to-cli up
        ip -n "${rt}" link set to-srv up
        ip -n "${cli}" link set eth0 up
        ip -n "${srv}" link set eth0 up
        ip -n "${cli}" route add default via 10.42.1.1
        ip -n "${srv}" route add default via 10.42.0.1
        ip netns exec "${rt}" sysctl -qw net.ipv4.ip_forward=1
        nsenter --net="/var/run/netns/${srv}" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.42.0.5", 8080)); s.listen(1024)
while True:
    c, _ = s.accept(); c.close()
' &
        server_pid=$!
        sleep 0.5
        # connect_latency: N fresh TCP connects from the client; prints "median_us p99_us"
        connect_latency() {
            nsenter --net="/var/run/netns/${cli}" python3 -c '
import socket, sys, time
n = int(sys.argv[1]); lat = []
for i in range(n + 100):
    s = socket.socket(); s.settimeout(3)
    t = time.perf_counter(); s.connect(("10.42.0.5", 8080)); d = time.perf_counter() - t
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    if i >= 100: lat.append(d * 1e6)
lat.sort()
print("%.1f %.1f" % (lat[len(lat) // 2], lat[int(len(lat) * 0.99)]))
' "${connects}"
        }
        local none zero many zero_sync many_sync
        none=$(connect_latency)
        zero_sync=$("${bin}" "${rt}" 0)
        zero=$(connect_latency)
        many_sync=$("${bin}" "${rt}" "${policies}")
        many=$(connect_latency)
        "${bin}" "${rt}" --cleanup
        printf '%-34s %14s %14s\n' "connection setup (${connects} connects)" "median us" "p99 us"
        printf '%-34s %14s %14s\n' "no policy table" ${none}
        printf '%-34s %14s %14s\n' "mini-netpol, 0 policies" ${zero}
        printf '%-34s %14s %14s\n' "mini-netpol, ${policies} policies" ${many}
        echo "table programming, 0 policies: ${zero_sync}"
        echo "table programming, ${policies} policies: ${many_sync}"
        read -r n_med n_p99 <<<"${none}"
        read -r z_med z_p99 <<<"${zero}"
        read -r m_med m_p99 <<<"${many}"
        printf '{"connects":%s,"policies":%s,"no_table":{"median_us":%s,"p99_us":%s},"zero_policies":{"median_us":%s,"p99_us":%s,"sync":%s},"many_policies":{"median_us":%s,"p99_us":%s,"sync":%s}}\n' \
            "${connects}" "${policies}" "${n_med}" "${n_p99}" "${z_med}" "${z_p99}" "${zero_sync}" \
            "${m_med}" "${m_p99}" "${many_sync}" >"${out}"
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
        ingress)
            "${ROOT}/scripts/bench_ingress.sh" "$@"
            ;;
        observe)
            # the binary users run: scripts/release.sh's, with the server's hot code linked first
            build_release_dist
            MINI_BIN="${MINI_BENCH_BIN:-${ROOT}/dist/mini}" "${ROOT}/scripts/bench_observe.sh" "$@"
            ;;
        loadtest)
            echo "bench: building the release binary" >&2
            (cd "${ROOT}" && cargo build --release -p mini --bin mini)
            MINI_BIN="${BIN_DIR}/mini" "${ROOT}/scripts/bench_loadtest.sh" "$@"
            ;;
        console)
            echo "bench: building the release binary" >&2
            (cd "${ROOT}" && cargo build --release -p mini --bin mini)
            MINI_BIN="${BIN_DIR}/mini" "${ROOT}/scripts/bench_console.sh" "$@"
            ;;
        install)
            build_release_dist
            run_install "$@"
            ;;
        registry)
            build_release_registry
            run_registry "$@"
            ;;
        netpol)
            run_netpol "$@"
            ;;
        ha)
            build_release
            "${ROOT}/scripts/bench_ha.sh" "$@"
            ;;
        store | snapshot)
            "${ROOT}/scripts/bench_store.sh" "$@"
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
