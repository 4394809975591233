#!/usr/bin/env bash
# End-to-end: the console's resource pages in a real headless browser (Debian's chromium driven
# by playwright-core from npm) against a real `mini server` and one real `mini agent` with its
# own containerd, in network namespaces (the log search needs a pod printing lines on a node).
# Services, Ingresses, ConfigMaps, Secrets, Namespaces and Events list live (objects made with
# kubectl appear without reload); a ConfigMap and a Namespace are created, edited and deleted in
# the browser (a refused create shows the server's message); a Secret's value stays hidden until
# revealed; the log search finds a pod's line and the live tail follows; the registry lists the
# pushed image and deletes a tag; an admin adds a view account, changes its password (it then
# logs in with the new one) and removes another account, a namespace
# admin's grant beyond its rights is refused; a view-only account sees no create/delete and a
# forced request shows the 403. Any console error or CSP violation fails. Screenshots land in
# $CARGO_TARGET_DIR/test-logs/console-resources/. Needs root (namespaces, containerd).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=${E2E_NS:-miniecr}
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
# shellcheck source=tests/e2e/console_lib.sh
. "$HERE/console_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-console-res.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
NODES=(node-a)
REG=$SERVER_IP:$API_PORT
URL="https://$REG"
SHOTS=${CARGO_TARGET_DIR:-$HERE/../../target}/test-logs/console-resources

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-console-res-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the console resources suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

mini_in_server() { in_ns "$SERVER_NS" "$MINI_BIN" "$@"; }



step_workload() {
  local v
  for v in v1 v2; do
    BUILD_IMAGE_VERSION=$v python3 "$HERE/build_image.py" "$WORK/app-$v.tar" "$REG/default/app:$v"
    expect "images_push_app_$v" "default/app:$v" mini_in_server images push "$WORK/app-$v.tar"
  done
  # a pod printing a known line every second, behind a Service (its endpoint becomes ready)
  k create deployment logger --image="$REG/default/app:v1" --port=8080 -- \
    sh -c 'i=0; while true; do i=$((i+1)); echo "console-res-marker line $i"; sleep 1; done' >/dev/null
  k expose deployment logger --port=80 --target-port=8080 >/dev/null
  wait_for "logger_pod_running" 120 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l app=logger --no-headers 2>/dev/null | grep -q ' Running '"
}

step_accounts() {
  expect "admin_account_added" "boss" in_ns "$SERVER_NS" bash -c "echo boss-password | $MINI_BIN user add boss --role cluster-admin --password-stdin --kubeconfig $KUBECONFIG"
  expect "viewer_account_added" "viewer" in_ns "$SERVER_NS" bash -c "echo viewer-password | $MINI_BIN user add viewer --role view --namespace default --password-stdin --kubeconfig $KUBECONFIG"
  expect "namespace_admin_added" "keeper" in_ns "$SERVER_NS" bash -c "echo keeper-password | $MINI_BIN user add keeper --role admin --namespace default --password-stdin --kubeconfig $KUBECONFIG"
}

step_browser() {
  local rc=0
  mkdir -p "$SHOTS"
  in_ns "$SERVER_NS" env NODE_PATH="$NODE_CACHE/node_modules" CONSOLE_URL="$URL" SHOTS="$SHOTS" \
    KUBECONFIG="$KUBECONFIG" node "$HERE/console_resources.mjs" >"$WORK/browser.out" 2>&1 || rc=$?
  cat "$WORK/browser.out"
  PASS=$((PASS + $(grep -c '^ok - ' "$WORK/browser.out" || true)))
  FAIL=$((FAIL + $(grep -c '^not ok - ' "$WORK/browser.out" || true)))
  while read -r name; do FAILED_NAMES+=("$name"); done < <(sed -n 's/^not ok - //p' "$WORK/browser.out")
  [ "$rc" -eq 0 ] || [ "$FAIL" -gt 0 ] || not_ok "browser_suite_ran" "node exited $rc"
}

# what the browser did, as the API sees it
step_api_agrees() {
  expect "console_configmap_gone" "NotFound" bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get configmap made-in-console 2>&1 || true"
  expect_eq "registry_tag_v2_deleted" "" bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get imagetags -n default --no-headers 2>/dev/null | grep 'app:v2' || true"
  expect "reader_account_exists" "reader +view@default" mini_in_server user ls --kubeconfig "$KUBECONFIG"
  expect_eq "viewer_account_removed" "" bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") $MINI_BIN user ls --kubeconfig $KUBECONFIG 2>/dev/null | grep '^viewer ' || true"
  expect_eq "keeper_could_not_grant_cluster_admin" "" bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") $MINI_BIN user ls --kubeconfig $KUBECONFIG 2>/dev/null | grep '^climber' || true"
}

console_tools || { summary; exit 1; }
console_start_with_agent || { summary; exit 1; }
step_workload
step_accounts
step_browser
step_api_agrees
summary
