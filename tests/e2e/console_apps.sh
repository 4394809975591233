#!/usr/bin/env bash
# End-to-end: the console's application pages in a real headless browser (Debian's chromium
# driven by playwright-core from npm) against a real `mini server` and a real `mini agent` with
# its own containerd, each in a network namespace. Two image versions are pushed to the cluster
# registry with `mini images push`; in the browser an admin deploys from the registry, upgrades,
# reads the release history, rolls back, scales, restarts, sees a YAML edit refused by the
# server, follows logs (one pod and the application merged), types `echo $((6*7))` in the
# terminal and reads 42; a read-only account sees no deploy/scale buttons and a forced request
# shows the 403. Any browser console error or CSP violation fails. Screenshots land in
# $CARGO_TARGET_DIR/test-logs/console-apps/. Needs root (namespaces, containerd).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=${E2E_NS:-miniconsole}
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
# shellcheck source=tests/e2e/console_lib.sh
. "$HERE/console_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-console-apps.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
NODES=(node-a)
REG=$SERVER_IP:$API_PORT
URL="https://$REG"
SHOTS=${CARGO_TARGET_DIR:-$HERE/../../target}/test-logs/console-apps

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-console-apps-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the console applications suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

mini_in_server() { in_ns "$SERVER_NS" "$MINI_BIN" "$@"; }



step_images() {
  local v
  for v in v1 v2; do
    BUILD_IMAGE_VERSION=$v python3 "$HERE/build_image.py" "$WORK/app-$v.tar" "$REG/default/app:$v"
    expect "images_push_app_$v" "default/app:$v" mini_in_server images push "$WORK/app-$v.tar"
    # push times order the tags (newest first, to the second)
    sleep 1.1
  done
  expect "registry_lists_both_tags" 'app:v2' k get imagetags -n default
}

step_accounts() {
  expect "admin_account_added" "boss" in_ns "$SERVER_NS" bash -c "echo boss-password | $MINI_BIN user add boss --role cluster-admin --password-stdin --kubeconfig $KUBECONFIG"
  expect "viewer_account_added" "viewer" in_ns "$SERVER_NS" bash -c "echo viewer-password | $MINI_BIN user add viewer --role view --namespace default --password-stdin --kubeconfig $KUBECONFIG"
}

step_browser() {
  local rc=0
  mkdir -p "$SHOTS"
  in_ns "$SERVER_NS" env NODE_PATH="$NODE_CACHE/node_modules" CONSOLE_URL="$URL" SHOTS="$SHOTS" \
    KUBECONFIG="$KUBECONFIG" node "$HERE/console_apps.mjs" >"$WORK/browser.out" 2>&1 || rc=$?
  cat "$WORK/browser.out"
  PASS=$((PASS + $(grep -c '^ok - ' "$WORK/browser.out" || true)))
  FAIL=$((FAIL + $(grep -c '^not ok - ' "$WORK/browser.out" || true)))
  while read -r name; do FAILED_NAMES+=("$name"); done < <(sed -n 's/^not ok - //p' "$WORK/browser.out")
  [ "$rc" -eq 0 ] || [ "$FAIL" -gt 0 ] || not_ok "browser_suite_ran" "node exited $rc"
}

# what the browser did, as the API sees it
step_api_agrees() {
  expect_eq "deployment_runs_v1_after_rollback" "$REG/default/app:v1" \
    k get deployment web -o jsonpath='{.spec.template.spec.containers[0].image}'
  expect_eq "deployment_scaled_to_3" "3" k get deployment web -o jsonpath='{.spec.replicas}'
  expect "deployment_has_restartedAt" '^20[0-9-]+T' \
    k get deployment web -o jsonpath='{.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}'
  expect_eq "service_exposes_8080" "8080" k get service web -o jsonpath='{.spec.ports[0].port}'
}

console_tools || { summary; exit 1; }
console_start_with_agent || { summary; exit 1; }
step_images
step_accounts
step_browser
step_api_agrees
summary
