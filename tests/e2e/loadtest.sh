#!/usr/bin/env bash
# End-to-end: distributed load testing on two real nodes (agents with their own containerd,
# each in a network namespace). A busybox httpd Deployment behind a Service is driven at a
# fixed rate by 2 generator pods, one per node (mini's own image, built from the binary on the
# node, nothing pulled); the achieved rate is within 5% of the request; the HTML, JSON, CSV and
# HDR exports agree with the status; the target pods' and nodes' CPU and memory are sampled
# every second (read live from the agents, not the 10 s Summary rounds); a failing threshold makes `mini loadtest run` exit
# non-zero; invalid thresholds and a Service without endpoints fail with a clear status and an
# event; cancel and delete leave no generator pod running. Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=${E2E_NS:-lt}
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-lt.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a node-b)
RATE=100

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-lt-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the loadtest suite needs root (network namespaces, containerd, netlink, nftables)"
  echo "0 passed, 0 failed"
  exit 0
fi

# lt SUBCOMMAND ARGS...: `mini loadtest` against the suite's server, from the server's machine.
lt() {
  local sub=$1
  shift
  in_ns "$SERVER_NS" "$MINI_BIN" loadtest "$sub" --kubeconfig "$KUBECONFIG" "$@"
}

# field NAME JSONPATH: a field of a LoadTest (empty when it cannot be read).
field() { k get loadtest "$1" -o "jsonpath={$2}" 2>/dev/null || true; }

# generator_pods [NAME]: generator pods left (of NAME, else of any run).
generator_pods() {
  if [ -n "${1:-}" ]; then
    k get pods -l "loadtest.mini.dev/name=$1" --no-headers 2>/dev/null | grep -c . || true
  else
    k get pods -A -l loadtest.mini.dev/run --no-headers 2>/dev/null | grep -c . || true
  fi
}

step_start() {
  setup_network "${NODES[@]}"
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  start_node_server "$WORK/server" --disable-agent
  local i=1 n
  for n in "${NODES[@]}"; do
    mkdir -p "$WORK/$n/agent/images"
    cp "$WORK/busybox.tar" "$WORK/$n/agent/images/"
    start_agent "$n" "$(node_ip $i)" "$WORK/$n"
    i=$((i + 1))
  done
  wait_for "two_nodes_ready" 120 bash -c \
    "out=\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get nodes --no-headers 2>&1); [ \$(grep -c ' Ready ' <<<\"\$out\") -eq 2 ] || { echo \"\$out\"; exit 1; }" || return 1
  wait_for "default_serviceaccount_created" 30 k get sa default -n default || return 1
  wait_for "loadtest_crd_established" 30 k get crd loadtests.loadtest.mini.dev || return 1
  cat <<EOF | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
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
---
apiVersion: v1
kind: Service
metadata: {name: nothing}
spec:
  selector: {app: no-such-pods}
  ports: [{port: 80}]
EOF
  wait_for "web_endpoints_ready" 120 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get endpoints web -o jsonpath='{.subsets[*].addresses[*].ip}' | wc -w)\" -eq 2 ]" || return 1
}

step_fixed_rate() {
  # the run is followed in the background while its pods are checked
  lt run --name fixed --target svc/web/index.html --rate "$RATE" --duration 20s --generators 2 \
    --threshold 'p99<5s' --threshold 'errors<1%' >"$WORK/fixed.out" 2>&1 &
  local cli=$! rc=0
  check_for "generator_pods_on_two_nodes" 300 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l loadtest.mini.dev/name=fixed -o jsonpath='{range .items[*]}{.spec.nodeName}{\"\\n\"}{end}' | sort -u | grep -c .)\" -eq 2 ]"
  check_for "run_reaches_running" 300 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest fixed -o jsonpath='{.status.phase}')\" = Running ]"
  wait "$cli" || rc=$?
  if [ "$rc" -eq 0 ] && grep -q "Succeeded" "$WORK/fixed.out"; then ok "cli_run_succeeds_and_exits_zero"; else not_ok "cli_run_succeeds_and_exits_zero" "rc=$rc $(cat "$WORK/fixed.out")"; fi
  expect "cli_printed_live_lines" "req/s +p50" cat "$WORK/fixed.out"
  expect "cli_printed_summary" "latency p50 .* p99.9 " cat "$WORK/fixed.out"
  local achieved
  achieved=$(field fixed .status.achievedRate)
  if python3 -c "import sys; a=float('$achieved'); sys.exit(0 if abs(a-$RATE) <= 0.05*$RATE else 1)"; then
    ok "achieved_rate_within_5_percent ($achieved of $RATE/s)"
  else
    not_ok "achieved_rate_within_5_percent" "achieved $achieved of $RATE/s: $(k get loadtest fixed -o yaml)"
  fi
  expect_eq "status_phase_succeeded" "Succeeded" field fixed .status.phase
  expect_eq "status_passed" "true" field fixed .status.passed
  expect_eq "status_has_two_verdicts" "true true" field fixed '.status.thresholds[*].passed'
  check_for "no_generator_pods_after_the_run" 30 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -l loadtest.mini.dev/name=fixed --no-headers 2>/dev/null | grep -c .)\" -eq 0 ]"
  expect "kubectl_get_loadtests_columns" "fixed +svc/web/index.html +$RATE +2 +Succeeded" k get loadtests
}

step_exports() {
  local f
  for f in json html csv hdr; do
    expect "report_$f" "^$" lt report fixed --format "$f" -o "$WORK/fixed.$f"
  done
  local requests errors p99
  requests=$(field fixed .status.requests)
  errors=$(field fixed .status.errors)
  p99=$(field fixed .status.latency.p99)
  expect_eq "json_requests_equal_status" "$requests" python3 -c "import json; print(json.load(open('$WORK/fixed.json'))['summary']['requests'])"
  expect_eq "json_errors_equal_status" "$errors" python3 -c "import json; print(json.load(open('$WORK/fixed.json'))['summary']['errors'])"
  expect_eq "json_p99_equals_status" "ok" python3 -c "import json; j=json.load(open('$WORK/fixed.json')); print('ok' if abs(j['summary']['latency']['p99'] - float('$p99')) < 1e-6 else j['summary']['latency'])"
  expect_eq "json_seconds_add_up_to_requests" "$requests" python3 -c "import json; print(sum(r['requests'] for r in json.load(open('$WORK/fixed.json'))['seconds']))"
  expect "json_has_resource_samples_of_target_pods" "web-" python3 -c "import json; print([p['name'] for s in json.load(open('$WORK/fixed.json'))['resources'] for p in s['pods']][:2])"
  # per-second resource samples: nearly every second of the 20 s run, pod CPU that changes from
  # second to second (the 10 s Summary rounds would give at most 3 distinct values)
  expect "json_resource_samples_every_second_with_live_cpu" "^ok" python3 -c "
import json
res = json.load(open('$WORK/fixed.json'))['resources']
pod_seconds = {s['second'] for s in res if s['pods']}
node_seconds = {s['second'] for s in res if s['nodes']}
assert len(pod_seconds) >= 17 and len(node_seconds) >= 17, ('seconds', sorted(pod_seconds), sorted(node_seconds))
cpu = {}
for s in res:
    for p in s['pods']:
        cpu.setdefault(p['name'], set()).add(round(p['cpuMillicores'], 3))
        assert p['memoryBytes'] > 0, p
    for n in s['nodes']:
        assert n['cpuMillicores'] >= 0 and n['memoryBytes'] > 0, n
best = max((len(v) for v in cpu.values()), default=0)
assert best >= 5, ('distinct pod cpu values', {k: sorted(v) for k, v in cpu.items()})
print('ok', len(pod_seconds), 'seconds,', best, 'distinct pod cpu values')"
  expect "html_report_has_inline_charts_and_totals" "^ok$" python3 -c "
t=open('$WORK/fixed.html').read()
assert t.count('<svg') >= 3 and '<script' not in t and 'src=' not in t, 'charts'
assert '<td>$requests</td>' in t, 'requests'
print('ok')"
  expect_eq "csv_rows_add_up_to_requests" "$requests" awk -F, 'NR > 1 {s += $2} END {print s}' "$WORK/fixed.csv"
  expect "hdr_log_has_intervals" "^[0-9.]+,1\.000,[0-9.]+,HIST" cat "$WORK/fixed.hdr"
  expect "ls_lists_the_run" "fixed +svc/web/index.html +Succeeded" lt ls
}

step_threshold_fails() {
  expect_fail "failing_threshold_exits_nonzero" "threshold p99<1us .*FAILED" \
    lt run --name strict --target svc/web --rate 20 --duration 3s --threshold 'p99<1us'
  expect_eq "failing_threshold_status" "Failed ThresholdsFailed false" bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest strict -o jsonpath='{.status.phase} {.status.reason} {.status.passed}'"
}

step_bad_input() {
  expect_fail "cli_rejects_invalid_threshold" "spec.thresholds: threshold \"p99<fast\"" \
    lt run --target svc/web --threshold 'p99<fast'
  cat <<EOF | k apply -f - >/dev/null
apiVersion: loadtest.mini.dev/v1
kind: LoadTest
metadata: {name: badthreshold}
spec: {target: svc/web, thresholds: ["p99<fast"]}
---
apiVersion: loadtest.mini.dev/v1
kind: LoadTest
metadata: {name: noendpoints}
spec: {target: svc/nothing, rate: 10, duration: 5s}
---
apiVersion: loadtest.mini.dev/v1
kind: LoadTest
metadata: {name: nosuchsvc}
spec: {target: svc/missing, rate: 10, duration: 5s}
EOF
  check_for "invalid_threshold_fails_with_reason" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest badthreshold -o jsonpath='{.status.phase} {.status.reason} {.status.message}' | grep -q 'Failed InvalidSpec spec.thresholds'"
  check_for "service_without_endpoints_fails_with_reason" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest noendpoints -o jsonpath='{.status.phase} {.status.reason} {.status.message}' | grep -q 'Failed NoEndpoints .*resolves to nothing'"
  check_for "missing_service_fails_with_reason" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest nosuchsvc -o jsonpath='{.status.phase} {.status.reason}' | grep -q 'Failed TargetNotFound'"
  check_for "no_endpoints_event_recorded" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get events --field-selector involvedObject.name=noendpoints -o jsonpath='{.items[*].reason}' | grep -q NoEndpoints"
  expect_eq "bad_input_leaves_no_generator_pods" "0" generator_pods
}

step_unreachable_and_dead_generator() {
  # nothing listens on port 9 inside the generator pod: every connection is refused
  lt run --name unreachable --target http://127.0.0.1:9/ --rate 10 --duration 60s --detach >/dev/null
  check_for "unreachable_target_fails_with_reason" 120 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest unreachable -o jsonpath='{.status.phase} {.status.reason}' | grep -q 'Failed TargetUnreachable'"
  check_for "unreachable_event_recorded" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get events --field-selector involvedObject.name=unreachable -o jsonpath='{.items[*].reason}' | grep -q TargetUnreachable"
  lt run --name dead --target svc/web --rate 10 --duration 10m --generators 2 --detach >/dev/null
  check_for "dead_run_reaches_running" 150 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest dead -o jsonpath='{.status.phase}')\" = Running ]"
  k delete pod dead-gen-1 --wait=false >/dev/null
  check_for "dead_generator_fails_the_run" 60 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest dead -o jsonpath='{.status.phase} {.status.reason}' | grep -q 'Failed GeneratorFailed'"
  check_for "dead_generator_leaves_no_pods" 60 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -A -l loadtest.mini.dev/run --no-headers 2>/dev/null | grep -c .)\" -eq 0 ]"
}

step_cancel() {
  lt run --name long --target svc/web --rate 20 --duration 10m --generators 2 --detach >/dev/null
  check_for "long_run_reaches_running" 150 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest long -o jsonpath='{.status.phase}')\" = Running ]"
  expect "cancel_command" "cancelled" lt cancel long
  check_for "cancelled_phase" 30 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest long -o jsonpath='{.status.phase}')\" = Cancelled ]"
  check_for "cancel_leaves_no_generator_pods" 60 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -A -l loadtest.mini.dev/run --no-headers 2>/dev/null | grep -c .)\" -eq 0 ]"
}

step_delete() {
  lt run --name deleted --target svc/web --rate 20 --duration 10m --detach >/dev/null
  check_for "deleted_run_reaches_running" 150 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get loadtest deleted -o jsonpath='{.status.phase}')\" = Running ]"
  k delete loadtest deleted --wait=false >/dev/null
  check_for "delete_leaves_no_generator_pods" 60 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods -A -l loadtest.mini.dev/run --no-headers 2>/dev/null | grep -c .)\" -eq 0 ]"
}

main() {
  step_start || { summary; exit 1; }
  step_fixed_rate
  step_exports
  step_threshold_fails
  step_bad_input
  step_unreachable_and_dead_generator
  step_cancel
  step_delete
  summary
}
main
