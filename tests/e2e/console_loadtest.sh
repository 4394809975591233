#!/usr/bin/env bash
# End-to-end: the console's Load tests page in a real headless browser (Debian's chromium
# driven by playwright-core from npm) against a real `mini server` and a real `mini agent` with
# its own containerd, each in a network namespace, and a busybox httpd Deployment behind a
# Service. In the browser an admin starts a run from the form (the Service picked from the
# namespace's), watches the live charts change while it runs, sees it complete with its
# threshold verdicts, sees the API refuse a duplicate name and the controller reject a bad
# threshold (its reason shown), starts a second run, compares the
# two, downloads the JSON export (checked against the LoadTest's status) and the other exports,
# cancels and deletes a third; a read-only account sees the runs but no form, and a forced
# request shows the 403. Any browser console error or CSP violation fails. Screenshots land in
# $CARGO_TARGET_DIR/test-logs/console-loadtest/. Needs root (namespaces, containerd).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=${E2E_NS:-minielt}
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
# shellcheck source=tests/e2e/console_lib.sh
. "$HERE/console_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-console-lt.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
NODES=(node-a)
IMAGE=mini.local/busybox:1.0
URL="https://$SERVER_IP:$API_PORT"
SHOTS=${CARGO_TARGET_DIR:-$HERE/../../target}/test-logs/console-loadtest

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-console-lt-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the console load test suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

mini_in_server() { in_ns "$SERVER_NS" "$MINI_BIN" "$@"; }


step_start() {
  setup_network "${NODES[@]}"
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  start_node_server "$WORK/server" --disable-agent || return 1
  mkdir -p "$WORK/node-a/agent/images"
  cp "$WORK/busybox.tar" "$WORK/node-a/agent/images/"
  start_agent node-a "$(node_ip 1)" "$WORK/node-a"
  console_wait_agent_ready || return 1
  wait_for "loadtest_crd_established" 30 k get crd loadtests.loadtest.mini.dev || return 1
  cat <<YAML | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: $IMAGE
        command: [sh, -c, "mkdir -p /var/www && echo hello > /var/www/index.html && exec httpd -f -p 80 -h /var/www"]
        ports: [{name: http, containerPort: 80}]
        readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 80}]
YAML
  wait_for "web_endpoints_ready" 120 bash -c \
    "[ -n \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get endpoints web -o jsonpath='{.subsets[*].addresses[*].ip}')\" ]" || return 1
}

step_accounts() {
  expect "admin_account_added" "boss" in_ns "$SERVER_NS" bash -c "echo boss-password | $MINI_BIN user add boss --role cluster-admin --password-stdin --kubeconfig $KUBECONFIG"
  expect "viewer_account_added" "viewer" in_ns "$SERVER_NS" bash -c "echo viewer-password | $MINI_BIN user add viewer --role view --namespace default --password-stdin --kubeconfig $KUBECONFIG"
}

step_browser() {
  local rc=0
  mkdir -p "$SHOTS"
  in_ns "$SERVER_NS" env NODE_PATH="$NODE_CACHE/node_modules" CONSOLE_URL="$URL" SHOTS="$SHOTS" \
    DOWNLOADS="$WORK/downloads" KUBECONFIG="$KUBECONFIG" node "$HERE/console_loadtest.mjs" >"$WORK/browser.out" 2>&1 || rc=$?
  cat "$WORK/browser.out"
  PASS=$((PASS + $(grep -c '^ok - ' "$WORK/browser.out" || true)))
  FAIL=$((FAIL + $(grep -c '^not ok - ' "$WORK/browser.out" || true)))
  while read -r name; do FAILED_NAMES+=("$name"); done < <(sed -n 's/^not ok - //p' "$WORK/browser.out")
  [ "$rc" -eq 0 ] || [ "$FAIL" -gt 0 ] || not_ok "browser_suite_ran" "node exited $rc"
}

# what the browser did, as the API sees it
step_api_agrees() {
  expect_eq "first_run_succeeded" "Succeeded" k get loadtest first -o jsonpath='{.status.phase}'
  expect_eq "first_run_passed_both_thresholds" "true true" k get loadtest first -o jsonpath='{.status.thresholds[*].passed}'
  expect_eq "first_run_spec_from_the_form" "svc/web:80/index.html 20 12s p99<5s" \
    k get loadtest first -o jsonpath='{.spec.target} {.spec.rate} {.spec.duration} {.spec.thresholds[0]}'
  expect_eq "second_run_succeeded" "Succeeded" k get loadtest second -o jsonpath='{.status.phase}'
  expect "third_run_deleted" "NotFound|not found" bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest third 2>&1 || true"
  check_for "no_generator_pods_left" 60 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -A -l loadtest.mini.dev/run --no-headers 2>/dev/null | grep -c .)\" -eq 0 ]"
}

console_tools || { summary; exit 1; }
step_start || { summary; exit 1; }
step_accounts
step_browser
step_api_agrees
summary
