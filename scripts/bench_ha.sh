#!/usr/bin/env bash
# The datastore benchmark of `scripts/bench.sh ha`: the API benchmark (mini-bench-api: sequential
# and concurrent pod creates, GET, LIST of every pod, watch delivery) run twice in one go against
# a fresh `mini server`, once on its embedded sled store and once on a real 3-member etcd cluster
# on loopback (Debian's etcd-server), then create throughput and LIST latency side by side.
# Writes both JSON reports to target/bench-results/ha-{sled,etcd}-<timestamp>.json. Numbers are
# printed, never asserted.
#
#   scripts/bench_ha.sh [--quick] [mini-bench-api flags...]   (MINI_BIN_DIR: where mini and
#   mini-bench-api are; default the release target dir)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
BIN_DIR="${MINI_BIN_DIR:-${CARGO_TARGET_DIR:-${ROOT}/target}/release}"
# shellcheck source=tests/e2e/etcd_lib.sh
. "${ROOT}/tests/e2e/etcd_lib.sh"

WORK=$(mktemp -d /tmp/mini-bench-ha.XXXXXX)
cleanup() {
    etcd_stop
    rm -rf "${WORK}"
}
trap cleanup EXIT

[[ -x /usr/bin/etcd ]] || { echo "bench ha: /usr/bin/etcd is missing (apt-get install etcd-server)" >&2; exit 1; }
mkdir -p "${RESULTS_DIR}"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
sled_json="${RESULTS_DIR}/ha-sled-${stamp}.json"
etcd_json="${RESULTS_DIR}/ha-etcd-${stamp}.json"

echo "bench ha: API benchmark on sled" >&2
"${BIN_DIR}/mini-bench-api" --mini "${BIN_DIR}/mini" --out "${sled_json}" "$@" >"${WORK}/sled.txt"

echo "bench ha: API benchmark on a 3-member etcd on loopback" >&2
etcd_start "${WORK}/etcd"
"${BIN_DIR}/mini-bench-api" --mini "${BIN_DIR}/mini" --out "${etcd_json}" \
    --server-arg "--datastore-endpoint=${ETCD_ENDPOINTS}" "$@" >"${WORK}/etcd.txt"
etcd_stop

python3 - "${sled_json}" "${etcd_json}" <<'PY'
import json, sys

def results(path):
    with open(path) as f:
        doc = json.load(f)
    return {r["name"]: r for r in doc["results"]}

sled, etcd = results(sys.argv[1]), results(sys.argv[2])
wanted = [n for n in sled if n.startswith(("create.", "list.")) and "server_cpu" not in n]
print("mini datastore benchmark: the same API benchmark on sled and on a 3-member etcd (loopback)")
print(f"{'name':<40} {'sled':>12} {'etcd':>12}  unit")
for name in wanted:
    s, e = sled[name], etcd.get(name)
    ev = f"{e['value']:12.2f}" if e else f"{'-':>12}"
    print(f"{name:<40} {s['value']:12.2f} {ev}  {s['unit']}")
PY
echo "reports: ${sled_json} ${etcd_json}"
