#!/usr/bin/env bash
# The datastore benchmark of `scripts/bench.sh ha`: the API benchmark (mini-bench-api: sequential
# and concurrent pod creates, GET, LIST of every pod, watch delivery) run twice in one go against
# a fresh `mini server`, once on its embedded sled store and once on a real 3-member etcd cluster
# on loopback (Debian's etcd-server), then create throughput and LIST latency side by side.
# Writes both JSON reports to target/bench-results/ha-{sled,etcd}-<timestamp>.json. Then the
# fail-over: three servers on a fresh etcd (the second and third joined with --server/--token),
# HA_KILLS times (default 5) the holder of the kube-controller-manager Lease is killed -9 and a
# Deployment created at once through another server; the time until its ReplicaSet's pod exists
# (another server took the Lease and its controllers acted) is measured, p50 and max printed and
# written to target/bench-results/ha-failover-<timestamp>.json. Then acknowledged writes under
# kills: a writer creates ConfigMaps without pause through whichever of the three servers answers
# and records every create the API acknowledged (201), while HA_LOSS_KILLS times (default 20) a
# random server is killed -9 and restarted; at the end every acknowledged ConfigMap is looked up
# and the missing ones counted (written to ha-loss-<timestamp>.json). Numbers are printed,
# never asserted.
#
#   scripts/bench_ha.sh [--quick] [mini-bench-api flags...]   (MINI_BIN_DIR: where mini and
#   mini-bench-api are; default the release target dir; HA_KILLS: leader kills; HA_LOSS_KILLS:
#   random kills under write load; HA_PARTS: which of "api failover loss" to run, default all)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS_DIR="${ROOT}/target/bench-results"
BIN_DIR="${MINI_BIN_DIR:-${CARGO_TARGET_DIR:-${ROOT}/target}/release}"
# shellcheck source=tests/e2e/etcd_lib.sh
. "${ROOT}/tests/e2e/etcd_lib.sh"

WORK=$(mktemp -d /tmp/mini-bench-ha.XXXXXX)
HA_PIDS=("" "" "" "")
cleanup() {
    local pid
    for pid in "${HA_PIDS[@]}"; do
        if [[ -n "${pid}" ]]; then kill -9 "${pid}" 2>/dev/null || true; fi
    done
    etcd_stop
    rm -rf "${WORK}"
}
trap cleanup EXIT

[[ -x /usr/bin/etcd ]] || { echo "bench ha: /usr/bin/etcd is missing (apt-get install etcd-server)" >&2; exit 1; }
mkdir -p "${RESULTS_DIR}"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
sled_json="${RESULTS_DIR}/ha-sled-${stamp}.json"
etcd_json="${RESULTS_DIR}/ha-etcd-${stamp}.json"

HA_PARTS=${HA_PARTS:-api failover loss}
part() { [[ " ${HA_PARTS} " == *" $1 "* ]]; }

if part api; then
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
fi

# ---- fail-over: leader kill -> controllers acting again ----
HA_PORTS=("" "$(etcd_free_port)" "$(etcd_free_port)" "$(etcd_free_port)")
failover_json="${RESULTS_DIR}/ha-failover-${stamp}.json"

# ha_kubectl I ARGS...: kubectl as server I's admin.
ha_kubectl() {
    local i=$1
    shift
    kubectl --kubeconfig "${WORK}/ha$i/server/admin.kubeconfig" --request-timeout=10s "$@"
}

# ha_start I EXTRA...: server I on 127.0.0.1:HA_PORTS[I] on the etcd, waits for /readyz.
ha_start() {
    local i=$1 dir="${WORK}/ha$1"
    shift
    mkdir -p "${dir}"
    "${BIN_DIR}/mini" server --data-dir "${dir}" --bind-address 127.0.0.1 --https-listen-port "${HA_PORTS[$i]}" \
        --disable-agent --disable registry,observe --datastore-endpoint "${ETCD_ENDPOINTS}" "$@" >>"${dir}/server.log" 2>&1 &
    HA_PIDS[$i]=$!
    for _ in $(seq 1 300); do
        if curl -sk "https://127.0.0.1:${HA_PORTS[$i]}/readyz" 2>/dev/null | grep -q ok; then return 0; fi
        kill -0 "${HA_PIDS[$i]}" 2>/dev/null || { tail -5 "${dir}/server.log" >&2; return 1; }
        sleep 0.1
    done
    echo "bench ha: server $i did not become ready" >&2
    return 1
}

ha_join_args() { echo "--server https://127.0.0.1:${HA_PORTS[1]} --token $(cat "${WORK}/ha1/server/token")"; }

etcd_start "${WORK}/etcd-failover"
ha_start 1
# shellcheck disable=SC2046
ha_start 2 $(ha_join_args)
# shellcheck disable=SC2046
ha_start 3 $(ha_join_args)

# ha_restart I: server I again, joined to the first unless it is the first.
ha_restart() {
    if [[ "$1" -eq 1 ]]; then ha_start 1; else
        # shellcheck disable=SC2046
        ha_start "$1" $(ha_join_args)
    fi
}

if part failover; then
echo "bench ha: fail-over, ${HA_KILLS:-5} kills of the controller-manager Lease holder among 3 servers" >&2
times=()
for round in $(seq 1 "${HA_KILLS:-5}"); do
    holder=""
    for _ in $(seq 1 300); do
        holder=$(ha_kubectl 1 get lease kube-controller-manager -n kube-system -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || ha_kubectl 2 get lease kube-controller-manager -n kube-system -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
        [[ -n "${holder}" ]] && break
        sleep 0.1
    done
    victim=""
    for i in 1 2 3; do
        if [[ "${holder}" == *"_$(cat "${WORK}/ha$i/server/server-id")" ]]; then victim=$i; fi
    done
    [[ -n "${victim}" ]] || { echo "bench ha: lease holder ${holder:-none} is not one of the servers" >&2; exit 1; }
    live=$((victim % 3 + 1))
    kill -9 "${HA_PIDS[$victim]}"
    wait "${HA_PIDS[$victim]}" 2>/dev/null || true
    HA_PIDS[$victim]=""
    start=$(date +%s.%N)
    ha_kubectl "${live}" create deployment "failover-${round}" --image=mini.local/none:1 >/dev/null
    until [[ -n "$(ha_kubectl "${live}" get pods -l "app=failover-${round}" -o name 2>/dev/null)" ]]; do sleep 0.1; done
    took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "${start}" "$(date +%s.%N)")
    times+=("${took}")
    echo "bench ha: kill ${round}: server ${victim} killed, controllers acting again after ${took} s" >&2
    ha_restart "${victim}"
done
python3 - "${failover_json}" "${times[@]}" <<'PY'
import json, statistics, sys
out, times = sys.argv[1], [float(t) for t in sys.argv[2:]]
results = [
    {"name": "failover.controllers_acting_again.p50", "value": statistics.median(times), "unit": "s"},
    {"name": "failover.controllers_acting_again.max", "value": max(times), "unit": "s"},
]
with open(out, "w") as f:
    json.dump({"config": {"servers": 3, "etcd_members": 3, "kills": len(times), "lease_duration_s": 15},
               "samples": times, "results": results}, f, indent=1)
print("mini fail-over: kill -9 the kube-controller-manager Lease holder (3 servers, 3-member etcd, loopback)")
for r in results:
    print(f"{r['name']:<45} {r['value']:8.2f} {r['unit']}")
PY
echo "report: ${failover_json}"
fi

# ---- acknowledged writes under random kills ----
if part loss; then
loss_json="${RESULTS_DIR}/ha-loss-${stamp}.json"
kills=${HA_LOSS_KILLS:-20}
# the admin's client certificate and the CA, for the writer
ha_kubectl 1 config view --raw -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"${WORK}/admin.crt"
ha_kubectl 1 config view --raw -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"${WORK}/admin.key"
echo "bench ha: acknowledged writes, ${kills} kills of random servers under write load" >&2
touch "${WORK}/acked"
python3 - "${WORK}" "${HA_PORTS[1]}" "${HA_PORTS[2]}" "${HA_PORTS[3]}" <<'PY' &
# the writer: ConfigMap creates, one at a time, through the first server that answers; every
# 201 is recorded (flushed) before the next create; stops when WORK/stop-writer exists
import http.client, json, os, ssl, sys, time
work, ports = sys.argv[1], sys.argv[2:]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.load_cert_chain(f"{work}/admin.crt", f"{work}/admin.key")
acked = open(f"{work}/acked", "a")
stats = {"attempts": 0, "acked": 0, "failed": 0}
n, server = 0, 0
while not os.path.exists(f"{work}/stop-writer"):
    n += 1
    name = f"loss-{n}"
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"n": str(n)}})
    for attempt in range(len(ports)):
        port = ports[(server + attempt) % len(ports)]
        stats["attempts"] += 1
        try:
            c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=5)
            c.request("POST", "/api/v1/namespaces/default/configmaps", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            c.close()
        except Exception:
            stats["failed"] += 1
            continue
        if r.status in (200, 201):
            acked.write(name + "\n")
            acked.flush()
            stats["acked"] += 1
            server = (server + attempt) % len(ports)
            break
        if r.status == 409:  # a retry of a create that landed: not acknowledged to us, skip
            break
        stats["failed"] += 1
    else:
        time.sleep(0.05)
json.dump(stats, open(f"{work}/writer-stats.json", "w"))
PY
writer=$!
loss_start=$(date +%s)
for round in $(seq 1 "${kills}"); do
    sleep "0.$((RANDOM % 9 + 1))"
    victim=$((RANDOM % 3 + 1))
    kill -9 "${HA_PIDS[$victim]}"
    wait "${HA_PIDS[$victim]}" 2>/dev/null || true
    HA_PIDS[$victim]=""
    echo "bench ha: loss kill ${round}/${kills}: server ${victim}, $(wc -l <"${WORK}/acked") creates acknowledged so far" >&2
    sleep "1.$((RANDOM % 9))"
    ha_restart "${victim}"
done
sleep 2
touch "${WORK}/stop-writer"
wait "${writer}"
loss_seconds=$(( $(date +%s) - loss_start ))
# every acknowledged ConfigMap must be there, read through any server
live=1
ha_kubectl "${live}" get configmaps -n default -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' >"${WORK}/present"
python3 - "${loss_json}" "${WORK}/acked" "${WORK}/present" "${WORK}/writer-stats.json" "${kills}" "${loss_seconds}" <<'PY'
import json, sys
out, acked_path, present_path, stats_path, kills, seconds = sys.argv[1:7]
acked = [l.strip() for l in open(acked_path) if l.strip()]
present = {l.strip() for l in open(present_path) if l.strip()}
lost = [n for n in acked if n not in present]
stats = json.load(open(stats_path))
results = [
    {"name": "loss.acknowledged_writes", "value": len(acked), "unit": "writes"},
    {"name": "loss.acknowledged_writes_lost", "value": len(lost), "unit": "writes"},
    {"name": "loss.failed_attempts", "value": stats["failed"], "unit": "requests"},
]
with open(out, "w") as f:
    json.dump({"config": {"servers": 3, "etcd_members": 3, "kills": int(kills), "seconds": int(seconds)},
               "lost": lost[:100], "results": results}, f, indent=1)
print(f"mini acknowledged writes under kills: {kills} kill -9 of random servers in {seconds} s (3 servers, 3-member etcd, loopback)")
for r in results:
    print(f"{r['name']:<45} {r['value']:8d} {r['unit']}")
print(f"{len(lost)} acknowledged writes lost across {kills} kills of random servers under write load ({len(acked)} acknowledged)")
PY
echo "report: ${loss_json}"
fi
