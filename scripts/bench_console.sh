#!/usr/bin/env bash
# Benchmark of the web console (numbers printed and stored as JSON, never asserted): bytes of
# all assets gzipped, the server's idle RSS with and without the console, and in Debian's
# chromium (playwright-core, cached outside the checkout) the time from loading /console/ to
# the Overview showing live node counts, median of several reloads, with N simulated nodes;
# then the Pods page with P pods (bound round-robin to the simulated nodes, which mark them
# Running): time until all rows are drawn, until 100 deleted pods are gone from it, and until
# 100 pods whose phase changed show it.
#
#   MINI_BIN=target/release/mini scripts/bench_console.sh [--nodes N] [--samples N] [--pods P]
#
# CONSOLE_ASSETS=pkg/console/assets serves the page's scripts and styles from that directory
# instead of the binary: a change of the page timed against the same server, without a rebuild.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=tests/e2e/lib.sh
. "$ROOT/tests/e2e/lib.sh"
MINI_BIN=$(readlink -f "${MINI_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/mini}")
NODE_CACHE=${MINI_TEST_NODE_CACHE:-/var/cache/mini-test}
PLAYWRIGHT_VERSION=1.65.2
RESULTS_DIR="$ROOT/target/bench-results"
NODES=20
SAMPLES=5
PODS=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --pods) PODS=$2; shift 2 ;;
    *) echo "usage: $0 [--nodes N] [--samples N] [--pods P]" >&2; exit 2 ;;
  esac
done
WORK=$(mktemp -d /tmp/mini-bench-console.XXXXXX)
SIM_PID=""

cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  stop_server KILL
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -f "$NODE_CACHE/node_modules/playwright-core/package.json" ] ||
  ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$NODE_CACHE/node_modules/playwright-core/package.json"; then
  mkdir -p "$NODE_CACHE"
  npm install --prefix "$NODE_CACHE" --no-save --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
fi

# idle_rss DIR [FLAGS...]: the server's RSS in KiB 10 s after it is ready.
idle_rss() {
  local dir=$1 port
  shift
  port=$(free_port)
  mkdir -p "$dir"
  "$MINI_BIN" server --data-dir "$dir" --bind-address 127.0.0.1 --https-listen-port "$port" --disable-agent "$@" >>"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do curl -sk "https://127.0.0.1:$port/readyz" | grep -q ok && break; sleep 0.2; done
  sleep 10
  awk '/VmRSS/{print $2}' "/proc/$SERVER_PID/status"
  stop_server
}

rss_off=$(idle_rss "$WORK/off" --disable console)
rss_on=$(idle_rss "$WORK/on")

PORT=$(free_port)
URL="https://127.0.0.1:$PORT"
export KUBECONFIG=$WORK/data/server/admin.kubeconfig
start_server "$WORK/data" "$PORT"
"$MINI_BIN" sim nodes --kubeconfig "$KUBECONFIG" --count "$NODES" --lease-interval 5 >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
echo bench-password | "$MINI_BIN" user add bench --role cluster-admin --password-stdin --kubeconfig "$KUBECONFIG" >/dev/null
for _ in $(seq 1 60); do
  [ "$(kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready ')" -eq "$NODES" ] && break
  sleep 1
done
gz=0
# every embedded asset (the first page's and those pages load later, as listed in
# pkg/console/src/assets.rs), gzipped as the server sends them
version_dir=$(curl -sk "$URL/console/" | grep -o '/console/v/[^/"]*/' | head -n 1 | sed 's,^/console,,')
assets=$(sed -n '/^pub const ASSET_FILES/,/^];/p' "$ROOT/pkg/console/src/assets.rs" | grep -o '"[^"]*"' | tr -d '"' | grep -v '^\.\./\|^index.html$')
for f in / $(for a in $assets; do echo "$version_dir$a"; done); do
  gz=$((gz + $(curl -sk -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_download}' "$URL/console$f")))
done
# PODS pods in namespace bench, spread over the simulated nodes, all Running before the browser starts
kubectl create namespace bench >/dev/null
python3 - "$PODS" "$NODES" >"$WORK/pods.json" <<'PY'
import json, sys
pods, nodes = int(sys.argv[1]), int(sys.argv[2])
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": f"p-{i:05d}", "namespace": "bench", "labels": {"app": "bench", "batch": str(i // 100)}},
     "spec": {"nodeName": f"sim-node-{i % nodes}", "containers": [{"name": "c", "image": "busybox"}]}}
    for i in range(pods)]}))
PY
kubectl create -f "$WORK/pods.json" >/dev/null
for _ in $(seq 1 300); do
  [ "$(kubectl get pods -n bench --field-selector=status.phase=Running --no-headers 2>/dev/null | wc -l)" -ge "$PODS" ] && break
  sleep 1
done
browser=$(NODE_PATH="$NODE_CACHE/node_modules" CONSOLE_URL="$URL" NODES="$NODES" SAMPLES="$SAMPLES" PODS="$PODS" \
  CONSOLE_ASSETS="${CONSOLE_ASSETS:+$(readlink -f "$CONSOLE_ASSETS")}" \
  node "$ROOT/scripts/bench_console.mjs")
mkdir -p "$RESULTS_DIR"
out="$RESULTS_DIR/console-$(date -u +%Y%m%dT%H%M%SZ).json"
printf '{"assets_gzipped_bytes":%s,"idle_rss_kib_with_console":%s,"idle_rss_kib_without_console":%s,"nodes":%s,%s}\n' \
  "$gz" "$rss_on" "$rss_off" "$NODES" "$browser" | tee "$out"
