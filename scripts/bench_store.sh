#!/usr/bin/env bash
# Datastore disk use and snapshot timings through a real `mini server --disable-agent`.
#
#   scripts/bench.sh store [--objects N] [--cycles N] [--size BYTES] [--settle SECS]
#                          [--snapshot-objects N] [--backend sled|etcd|both] [--compact-interval 30s]
#
# Disk use: CYCLES times, creates OBJECTS ConfigMaps of SIZE bytes each and deletes them again
# (16 concurrent clients), printing the size of the sled data directory (without snapshots)
# and, on etcd, each member's database size from etcd's status endpoint, after each phase
# and again after SETTLE seconds (the server reclaims space online every COMPACT_INTERVAL,
# --datastore-compact-interval; its default is 5m). Target: at most twice the live
# data plus the history window, flat across cycles.
# Snapshots: SNAPSHOT_OBJECTS ConfigMaps, then the time of `mini snapshot save` and, with the
# server stopped, `mini snapshot restore` (sled) or restore into etcd.
# Numbers are printed and stored as JSON in target/bench-results/store-<time>.json, never
# asserted. MINI_BIN picks the binary (default: a release build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
# shellcheck source=tests/e2e/lib.sh
. "${ROOT}/tests/e2e/lib.sh"
# shellcheck source=tests/e2e/etcd_lib.sh
. "${ROOT}/tests/e2e/etcd_lib.sh"

OBJECTS=20000
CYCLES=3
SIZE=1024
SETTLE=20
SNAPSHOT_OBJECTS=10000
BACKEND=sled
COMPACT_INTERVAL=30s
while [[ $# -gt 0 ]]; do
    case "$1" in
        --objects) OBJECTS=$2; shift 2 ;;
        --cycles) CYCLES=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --snapshot-objects) SNAPSHOT_OBJECTS=$2; shift 2 ;;
        --backend) BACKEND=$2; shift 2 ;;
        --compact-interval) COMPACT_INTERVAL=$2; shift 2 ;;
        *) echo "bench store: unknown flag $1" >&2; exit 2 ;;
    esac
done

if [[ -z "${MINI_BIN:-}" ]]; then
    echo "bench: building release binaries" >&2
    (cd "${ROOT}" && cargo build --release -p mini --bin mini)
    MINI_BIN="${CARGO_TARGET_DIR:-${ROOT}/target}/release/mini"
fi
WORK=$(mktemp -d /tmp/mini-bench-store.XXXXXX)
export MINI_DATASTORE_COMPACT_INTERVAL=${COMPACT_INTERVAL}
RESULTS=()

cleanup() {
    stop_server KILL
    etcd_stop
    rm -rf "${WORK}"
}
trap cleanup EXIT

# client_files DATA: the admin kubeconfig's CA, client certificate and key as files.
client_files() {
    local kc=$1/server/admin.kubeconfig
    grep 'certificate-authority-data' "$kc" | awk '{print $2}' | base64 -d >"${WORK}/ca.crt"
    grep 'client-certificate-data' "$kc" | awk '{print $2}' | base64 -d >"${WORK}/client.crt"
    grep 'client-key-data' "$kc" | awk '{print $2}' | base64 -d >"${WORK}/client.key"
}

# load VERB PORT COUNT SIZE: creates (POST) or deletes (DELETE) COUNT ConfigMaps in namespace
# bench with 16 keep-alive clients.
load() {
    python3 - "$@" "${WORK}" <<'PY'
import http.client, json, os, ssl, sys, threading
verb, port, count, size, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ctx = ssl.create_default_context(cafile=f"{work}/ca.crt")
ctx.load_cert_chain(f"{work}/client.crt", f"{work}/client.key")
ctx.check_hostname = False
errors = []
def worker(start):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    for i in range(start, count, 16):
        name = f"cm-{i:06d}"
        if verb == "POST":
            body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                               "data": {"v": os.urandom(size // 2).hex()}})
            conn.request("POST", "/api/v1/namespaces/bench/configmaps", body, {"Content-Type": "application/json"})
        else:
            conn.request("DELETE", f"/api/v1/namespaces/bench/configmaps/{name}")
        resp = conn.getresponse()
        resp.read()
        if resp.status >= 300:
            errors.append(f"{verb} {name}: {resp.status}")
threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
for t in threads: t.start()
for t in threads: t.join()
if errors:
    print(f"{len(errors)} failed, first: {errors[0]}", file=sys.stderr)
    sys.exit(1)
PY
}

mb() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

# sled_size DATA: bytes of the sled directory without the snapshots in it.
sled_size() { du -sb --exclude=snapshots "$1/server/db" | awk '{print $1}'; }

# etcd_sizes: "dbSize/dbSizeInUse" of each member, MB.
etcd_sizes() {
    local i out=""
    for i in 0 1 2; do
        out+=$(curl -s --max-time 5 -X POST -d '{}' "http://127.0.0.1:${ETCD_CLIENT_PORTS[$i]}/v3/maintenance/status" |
            python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.1f/%.1f" % (int(s.get("dbSize",0))/1048576, int(s.get("dbSizeInUse",0))/1048576), end="")')
        out+=" "
    done
    echo "${out% }"
}

# report BACKEND DATA PHASE: prints and records the size now.
report() {
    local backend=$1 data=$2 phase=$3 size
    if [[ "${backend}" == sled ]]; then
        size=$(sled_size "${data}")
        printf '%-5s %-28s data dir %8s MB\n' "${backend}" "${phase}" "$(mb "${size}")"
        RESULTS+=("{\"backend\":\"sled\",\"phase\":\"${phase}\",\"bytes\":${size}}")
    else
        size=$(etcd_sizes)
        printf '%-5s %-28s db size/in use per member %s MB\n' "${backend}" "${phase}" "${size}"
        RESULTS+=("{\"backend\":\"etcd\",\"phase\":\"${phase}\",\"members_mb\":\"${size}\"}")
    fi
}

# start BACKEND DATA: starts the server on sled or on the etcd cluster.
start() {
    local backend=$1 data=$2
    if [[ "${backend}" == etcd ]]; then
        MINI_DATASTORE_ENDPOINT="${ETCD_ENDPOINTS}" MINI_DISABLE_SNAPSHOTS=true start_server "${data}" "${PORT}"
    else
        MINI_DISABLE_SNAPSHOTS=true start_server "${data}" "${PORT}"
    fi
}

timed() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    awk -v a="${t0}" -v b="${t1}" 'BEGIN {printf "%.2f", b - a}'
}

run_backend() {
    local backend=$1 data=${WORK}/$1 cycle t secs
    PORT=$(free_port)
    if [[ "${backend}" == etcd ]]; then etcd_start "${WORK}/etcd"; fi
    start "${backend}" "${data}"
    client_files "${data}"
    KUBECONFIG=${data}/server/admin.kubeconfig kubectl create namespace bench >/dev/null
    report "${backend}" "${data}" "start"
    for cycle in $(seq 1 "${CYCLES}"); do
        t=$(timed load POST "${PORT}" "${OBJECTS}" "${SIZE}")
        report "${backend}" "${data}" "cycle ${cycle} created (${t}s)"
        t=$(timed load DELETE "${PORT}" "${OBJECTS}" "${SIZE}")
        report "${backend}" "${data}" "cycle ${cycle} deleted (${t}s)"
        sleep "${SETTLE}"
        report "${backend}" "${data}" "cycle ${cycle} +${SETTLE}s"
    done

    load POST "${PORT}" "${SNAPSHOT_OBJECTS}" "${SIZE}"
    secs=$(timed "${MINI_BIN}" snapshot save --name bench --data-dir "${data}")
    echo "${backend} snapshot save of ${SNAPSHOT_OBJECTS} objects: ${secs}s"
    RESULTS+=("{\"backend\":\"${backend}\",\"snapshot_save_secs\":${secs},\"objects\":${SNAPSHOT_OBJECTS}}")
    stop_server TERM
    local file
    file=$(ls "${data}"/server/db/snapshots/bench-*.snap | head -1)
    if [[ "${backend}" == etcd ]]; then
        secs=$(timed "${MINI_BIN}" snapshot restore "${file}" --data-dir "${data}" --datastore-endpoint "${ETCD_ENDPOINTS}")
    else
        secs=$(timed "${MINI_BIN}" snapshot restore "${file}" --data-dir "${data}")
    fi
    echo "${backend} snapshot restore of ${SNAPSHOT_OBJECTS} objects: ${secs}s ($(mb "$(stat -c %s "${file}")") MB file)"
    RESULTS+=("{\"backend\":\"${backend}\",\"snapshot_restore_secs\":${secs},\"objects\":${SNAPSHOT_OBJECTS}}")
    if [[ "${backend}" == etcd ]]; then etcd_stop; fi
}

case "${BACKEND}" in
    sled) run_backend sled ;;
    etcd) run_backend etcd ;;
    both) run_backend sled; run_backend etcd ;;
    *) echo "bench store: --backend is sled, etcd or both" >&2; exit 2 ;;
esac

mkdir -p "${RESULTS_DIR}"
out="${RESULTS_DIR}/store-$(date -u +%Y%m%dT%H%M%SZ).json"
(IFS=,; echo "[${RESULTS[*]}]") >"${out}"
echo "results: ${out}"
