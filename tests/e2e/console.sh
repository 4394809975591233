#!/usr/bin/env bash
# End-to-end: the web console in a real headless browser (Debian's chromium driven by
# playwright-core from npm) against a real `mini server --disable-agent` with simulated nodes:
# login, the live Overview and Nodes pages, a node joining without reload, cordon and uncordon,
# the join command, a read-only account refused, Chinese strings, logout; any browser console
# error or CSP violation fails. Screenshots land in $CARGO_TARGET_DIR/test-logs/console/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
# shellcheck source=tests/e2e/console_lib.sh
. "$HERE/console_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-console.XXXXXX)
PORT=$(free_port)
URL="https://127.0.0.1:$PORT"
CONSOLE_PORT=$(free_port)
export HOME=$WORK/home KUBECONFIG=$WORK/data/server/admin.kubeconfig
mkdir -p "$HOME"
# playwright-core lives outside the checkout, installed once at this pinned version
SHOTS=${CARGO_TARGET_DIR:-$HERE/../../target}/test-logs/console
SIM_PIDS=()

cleanup() {
  for p in "${SIM_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-console-logs}"
  stop_server KILL
  rm -rf "$WORK"
}
trap cleanup EXIT

k() { kubectl --request-timeout=20s "$@"; }

# start_sim NAME ARGS...: runs `mini sim nodes` in the background, remembering its PID.
start_sim() {
  local name=$1
  shift
  "$MINI_BIN" sim nodes --kubeconfig "$KUBECONFIG" --lease-interval 2 "$@" >"$WORK/sim-$name.log" 2>&1 &
  SIM_PIDS+=($!)
}

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
  local name=$1 secs=$2
  shift 2
  local end=$((SECONDS + secs)) out=""
  while [ $SECONDS -lt $end ]; do
    if out=$("$@" 2>&1); then ok "$name"; return 0; fi
    sleep 1
  done
  not_ok "$name" "timed out after ${secs}s: $out"
}


step_start() {
  expect_fail "console_port_with_console_disabled_refused" "console-port.*disable console" \
    "$MINI_BIN" server --data-dir "$WORK/refused" --bind-address 127.0.0.1 --https-listen-port 0 \
    --disable-agent --disable console --console-port "$CONSOLE_PORT"
  start_server "$WORK/data" "$PORT" --console-port "$CONSOLE_PORT"
  start_sim first --count 2 --prefix sim-a-
  wait_for "sim_nodes_ready" 40 bash -c "[ \$(kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready ') -eq 2 ]"
  expect "admin_account_added" "boss" bash -c "echo boss-password | $MINI_BIN user add boss --role cluster-admin --password-stdin --kubeconfig $KUBECONFIG"
  expect "viewer_account_added" "viewer" bash -c "echo viewer-password | $MINI_BIN user add viewer --role view --password-stdin --kubeconfig $KUBECONFIG"
  k create namespace shop >/dev/null
  expect "editor_account_added" "clerk" bash -c "echo clerk-password | $MINI_BIN user add clerk --role edit --namespace shop --password-stdin --kubeconfig $KUBECONFIG"
  k -n shop create deployment shelf --image=nginx:1.0 --replicas=2 >/dev/null
  # the Overview of all namespaces counts 5 running pods: web (3) and shelf (2)
  # `view` does not cover nodes (as upstream): let the viewer read them, not change them
  k create clusterrole node-reader --verb=get,list,watch --resource=nodes >/dev/null
  k create clusterrolebinding viewer-node-reader --clusterrole=node-reader --user=viewer >/dev/null
  k create deployment web --image=nginx:1.0 --replicas=3 >/dev/null
  expect_eq "console_redirects_to_slash" "location: /console/" \
    bash -c "curl -sk -D - -o /dev/null '$URL/console' | tr -d '\r' | grep -i '^location:' | tr 'A-Z' 'a-z'"
  expect "console_index_has_csp" "default-src 'self'" curl -sk -D - -o /dev/null "$URL/console/nodes"
  # --console-port: the same console, and the API its pages call, on a port of its own
  expect "console_port_serves_console" "default-src 'self'" \
    curl -sk -D - -o /dev/null "https://127.0.0.1:$CONSOLE_PORT/console/nodes"
  expect_eq "console_port_api_wants_login" "401" \
    curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$CONSOLE_PORT/api/v1/namespaces"
  local own="https://127.0.0.1:$CONSOLE_PORT"
  expect_eq "console_port_login_sets_session" "200" \
    curl -sk -o /dev/null -w '%{http_code}' -c "$WORK/console-port.jar" -H 'Content-Type: application/json' \
    -H "Origin: $own" -d '{"name":"viewer","password":"viewer-password"}' "$own/v1-mini/session/login"
  expect_eq "console_port_session_reads_nodes" "200" \
    curl -sk -o /dev/null -w '%{http_code}' -b "$WORK/console-port.jar" "$own/api/v1/nodes"
}

# the sim node added while the browser watches the Nodes page
step_browser() {
  local rc=0
  mkdir -p "$SHOTS"
  NODE_PATH="$NODE_CACHE/node_modules" CONSOLE_URL="$URL" SHOTS="$SHOTS" \
    MINI_BIN="$MINI_BIN" SIM_LOG="$WORK/sim-second.log" \
    node "$HERE/console.mjs" >"$WORK/browser.out" 2>&1 || rc=$?
  cat "$WORK/browser.out"
  PASS=$((PASS + $(grep -c '^ok - ' "$WORK/browser.out" || true)))
  FAIL=$((FAIL + $(grep -c '^not ok - ' "$WORK/browser.out" || true)))
  while read -r name; do FAILED_NAMES+=("$name"); done < <(sed -n 's/^not ok - //p' "$WORK/browser.out")
  if [ -f "$WORK/sim-second.pid" ]; then SIM_PIDS+=("$(cat "$WORK/sim-second.pid")"); fi
  [ "$rc" -eq 0 ] || [ "$FAIL" -gt 0 ] || not_ok "browser_suite_ran" "node exited $rc"
}

console_tools || { summary; exit 1; }
step_start
step_browser
summary
