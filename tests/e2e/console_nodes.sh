#!/usr/bin/env bash
# End-to-end: the console's node pages in a real headless browser (Debian's chromium driven by
# playwright-core from npm) against a real `mini server` and a real `mini agent` with its own
# containerd, each in a network namespace. In the browser an admin sees the agent node's CPU and
# memory charts fill with samples (per node and cluster totals on the Overview) and switches the
# range; offers no drain of the agent node until told it may delete a pod no controller manages
# (listed in the confirmation, as kubectl drain without --force); drains the node while a
# PodDisruptionBudget (minAvailable = replicas) blocks its pods, sees the blocked pod in the progress, cancels (the node stays cordoned); after the budget
# is relaxed a second drain evicts the pods; then removes the cordoned node after confirming. A
# read-only account is offered no drain or remove. Any browser console error or CSP violation
# fails. Screenshots land in $CARGO_TARGET_DIR/test-logs/console-nodes/. Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=${E2E_NS:-miniconnodes}
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
# shellcheck source=tests/e2e/console_lib.sh
. "$HERE/console_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-console-nodes.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
NODES=(node-a)
REG=$SERVER_IP:$API_PORT
URL="https://$REG"
SHOTS=${CARGO_TARGET_DIR:-$HERE/../../target}/test-logs/console-nodes

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-console-nodes-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the console nodes suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

mini_in_server() { in_ns "$SERVER_NS" "$MINI_BIN" "$@"; }



# two pods on the agent node, guarded by a budget that allows no disruption
step_workload() {
  BUILD_IMAGE_VERSION=v1 python3 "$HERE/build_image.py" "$WORK/app.tar" "$REG/default/app:v1"
  expect "images_push_app" "default/app:v1" mini_in_server images push "$WORK/app.tar"
  expect "deployment_created" "created" k create deployment web --image="$REG/default/app:v1" --replicas=2 -- sh -c "trap \"exit 0\" TERM; while true; do sleep 1; done"
  expect "pdb_created" "created" k create poddisruptionbudget web --selector=app=web --min-available=2
  wait_for "deployment_available" 180 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get deployment web -o jsonpath='{.status.availableReplicas}')\" = 2 ]" || return 1
  wait_for "pdb_sees_two_healthy" 60 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get pdb web -o jsonpath='{.status.currentHealthy}')\" = 2 ]" || return 1
}

step_accounts() {
  expect "admin_account_added" "boss" in_ns "$SERVER_NS" bash -c "echo boss-password | $MINI_BIN user add boss --role cluster-admin --password-stdin --kubeconfig $KUBECONFIG"
  expect "viewer_account_added" "viewer" in_ns "$SERVER_NS" bash -c "echo viewer-password | $MINI_BIN user add viewer --role view --namespace default --password-stdin --kubeconfig $KUBECONFIG"
  # the viewer may see nodes (and their figures) but not change them
  expect "node_reader_role_created" "created" k create clusterrole node-reader --verb=get,list,watch --resource=nodes,nodes/metrics
  expect "node_reader_bound_to_viewer" "created" k create clusterrolebinding viewer-nodes --clusterrole=node-reader --user=viewer
}

step_browser() {
  local rc=0
  mkdir -p "$SHOTS"
  in_ns "$SERVER_NS" env NODE_PATH="$NODE_CACHE/node_modules" CONSOLE_URL="$URL" SHOTS="$SHOTS" \
    KUBECONFIG="$KUBECONFIG" node "$HERE/console_nodes.mjs" >"$WORK/browser.out" 2>&1 || rc=$?
  cat "$WORK/browser.out"
  PASS=$((PASS + $(grep -c '^ok - ' "$WORK/browser.out" || true)))
  FAIL=$((FAIL + $(grep -c '^not ok - ' "$WORK/browser.out" || true)))
  while read -r name; do FAILED_NAMES+=("$name"); done < <(sed -n 's/^not ok - //p' "$WORK/browser.out")
  [ "$rc" -eq 0 ] || [ "$FAIL" -gt 0 ] || not_ok "browser_suite_ran" "node exited $rc"
}

console_tools || { summary; exit 1; }
console_start_with_agent || { summary; exit 1; }
step_workload || { summary; exit 1; }
step_accounts
step_browser
summary
