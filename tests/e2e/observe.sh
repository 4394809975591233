#!/usr/bin/env bash
# End-to-end: monitoring history and cluster log search on two real nodes (agents with their
# own containerd, each in a network namespace). A pod's known lines are found by text, label
# and time (mini logs search, mini's search API, the Loki API); a pod printing numbered lines
# while its log files rotate and while the agent and then the server restart has every line
# stored exactly once; the Prometheus API's rate() of a CPU-limited busy pod matches its limit;
# node and pod series carry the cAdvisor / node_exporter names; a read-only user sees only
# their namespace's figures and logs; logs of a node that is gone stay searchable; malformed
# queries get a 400 with the position. Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=${E2E_NS:-obs}
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
API_PORT=26443
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-observe.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a node-b)
# small files so the counting pod's log rotates several times
AGENT_ARGS=(--container-log-max-size 64Ki --container-log-max-files 3)
COUNT_LINES=12000

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-observe-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the observe suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

# raw PATH: GET of an API-port path with the admin kubeconfig.
raw() { k get --raw "$1"; }
# mini_logs ARGS...: `mini logs search` from the server's namespace with the admin kubeconfig.
mini_logs() { in_ns "$SERVER_NS" "$MINI_BIN" logs search --kubeconfig "$KUBECONFIG" "$@"; }
running() { [ "$(k get pod "$@" -o jsonpath='{.status.phase}')" = Running ]; }
# urlencode TEXT
urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
# prom_value QUERY: the first sample value of an instant query (empty when none).
prom_value() {
  raw "/prometheus/api/v1/query?query=$(urlencode "$1")" |
    python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
# count_lines QUERY: distinct and total lines the search API returns for QUERY over the last
# hour, paging with the cursor: prints "DISTINCT TOTAL".
count_lines() {
  in_ns "$SERVER_NS" python3 - "$1" <<'EOF'
import json, subprocess, sys, urllib.parse
query, cursor, seen, total = sys.argv[1], None, set(), 0
while True:
    params = {"query": query, "since": "1h", "limit": "5000", "direction": "forward"}
    if cursor:
        params["cursor"] = cursor
    path = "/v1-mini/logs/search?" + urllib.parse.urlencode(params)
    out = subprocess.run(["kubectl", "--request-timeout=60s", "get", "--raw", path],
                         check=True, capture_output=True, text=True).stdout
    page = json.loads(out)
    for r in page["records"]:
        total += 1
        seen.add(r["line"])
    cursor = page.get("nextCursor")
    if not cursor or not page["records"]:
        break
print(len(seen), total)
EOF
}
# all_counted: every line of the counting pod is stored exactly once.
all_counted() { [ "$(count_lines '{namespace="team-b", pod="counter"} |= "count "')" = "$COUNT_LINES $COUNT_LINES" ]; }
# lines_of N ARGS...: `mini logs search ARGS` prints exactly N lines.
lines_of() {
  local want=$1 got
  shift
  got=$(mini_logs "$@" | wc -l)
  [ "$got" -eq "$want" ] || { echo "got $got lines"; return 1; }
}
# expect_absent NAME PATTERN CMD...: CMD must exit 0 and its output NOT match PATTERN.
expect_absent() {
  local name=$1 pattern=$2 out rc
  shift 2
  out=$("$@" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -eq 0 ] && ! grep -Eq -- "$pattern" <<<"$out"; then ok "$name"; else not_ok "$name" "rc=$rc must not match /$pattern/: $out"; fi
}
# cpu_rate_near_limit: the Prometheus rate() of the busy pod's CPU is close to its 300m limit.
cpu_rate_near_limit() {
  local v
  v=$(prom_value 'rate(container_cpu_usage_seconds_total{namespace="team-a", pod="burn", container="burn"}[1m])')
  echo "rate=$v"
  python3 -c 'import sys; v = float(sys.argv[1] or 0); sys.exit(0 if 0.18 <= v <= 0.33 else 1)' "$v"
}
rotated_files() { [ "$(find "$WORK/node-b" -path '*team-b_counter_*' -name '*.log.*' | wc -l)" -ge 1 ]; }
# as_admin PATH: "STATUS BODY" of a GET of PATH with a cluster-admin ServiceAccount's token
# (kubectl get --raw hides bodies that are not Kubernetes Status objects).
as_admin() {
  in_ns "$SERVER_NS" curl -sk -w ' %{http_code}' -H "Authorization: Bearer $ADMIN_TOKEN" "https://127.0.0.1:$API_PORT$1" | tr '\n' ' '
}
# as_reader PATH: GET of PATH with the read-only user's token.
as_reader() {
  in_ns "$SERVER_NS" curl -sk -H "Authorization: Bearer $READER_TOKEN" "https://127.0.0.1:$API_PORT$1"
}

step_start() {
  setup_network "${NODES[@]}"
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  start_node_server "$WORK/server" --disable-agent
  local i=1 n
  for n in "${NODES[@]}"; do
    mkdir -p "$WORK/$n/agent/images"
    cp "$WORK/busybox.tar" "$WORK/$n/agent/images/"
    start_agent "$n" "$(node_ip $i)" "$WORK/$n" --kubelet-port $((26250 + i)) "${AGENT_ARGS[@]}"
    i=$((i + 1))
  done
  wait_for "two_nodes_ready" 120 bash -c \
    "out=\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get nodes --no-headers 2>&1); [ \$(grep -c ' Ready ' <<<\"\$out\") -eq 2 ] || { echo \"\$out\"; exit 1; }" || return 1
  k create namespace team-a >/dev/null
  k create namespace team-b >/dev/null
  k create serviceaccount observer -n kube-system >/dev/null
  k create clusterrolebinding observer-admin --clusterrole=cluster-admin --serviceaccount=kube-system:observer >/dev/null
  ADMIN_TOKEN=$(k create token observer -n kube-system)
  wait_for "default_serviceaccounts_created" 30 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get sa default -n team-a && nsenter --net=$(ns_path "$SERVER_NS") kubectl get sa default -n team-b" || return 1
}

step_known_lines() {
  MARK="marker-$RANDOM$RANDOM"
  BEFORE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: printer, namespace: team-a, labels: {app: printer, tier: demo}}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: $IMAGE
    command: [sh, -c, "for i in \$(seq 1 50); do echo \"$MARK line \$i\"; done; echo \"$MARK oops\" >&2; exec sleep 3600"]
EOF
  wait_for "printer_running" 90 running printer -n team-a || return 1
  check_for "lines_found_by_text" 60 lines_of 50 --grep "$MARK line" --limit 500
  check_for "lines_found_by_label" 30 lines_of 51 -l app=printer -n team-a --grep "$MARK" --limit 500
  expect "newest_first_by_default" "$MARK line 50" mini_logs --grep "$MARK line" --limit 1
  expect "oldest_first_on_request" "$MARK line 1\$" mini_logs --grep "$MARK line" --limit 1 --oldest-first
  expect "regex_filter_finds_one_line" "$MARK line 42" mini_logs --regex "$MARK line 4[2]\$"
  expect "stderr_stream_labelled" '"stream":"stderr"' mini_logs --grep "$MARK oops" --json
  expect_eq "time_window_before_the_pod_is_empty" "" mini_logs --grep "$MARK" --start 2020-01-01T00:00:00Z --end "$BEFORE"
  expect "prefix_names_namespace_pod_container" "\[team-a/printer/app\] $MARK line 50" mini_logs --grep "$MARK line 50" --prefix
  local q
  q=$(urlencode "{namespace=\"team-a\", pod=\"printer\"} |= \"$MARK line 7\"")
  expect "loki_query_range_streams" '"resultType":"streams"' raw "/loki/api/v1/query_range?query=$q&limit=10"
  expect "loki_query_range_finds_line" "$MARK line 7" raw "/loki/api/v1/query_range?query=$q&limit=10"
  expect "loki_label_values_lists_namespace" "team-a" raw "/loki/api/v1/label/namespace/values"
  expect "bad_logql_is_400_with_position" 'col [0-9]+.* 400$' as_admin "/loki/api/v1/query_range?query=$(urlencode '{pod=}')"
  expect_fail "bad_search_limit_is_refused" "limit" mini_logs --limit 0
  expect_fail "bad_search_time_is_refused" "start" raw "/v1-mini/logs/search?start=yesterday"
}

step_live_tail() {
  local out=$WORK/tail.out
  # nsenter execs mini, so $! is the follower's own PID
  nsenter --net="$(ns_path "$SERVER_NS")" "$MINI_BIN" logs search --kubeconfig "$KUBECONFIG" \
    -n team-a --grep "tail-$MARK" --follow >"$out" 2>&1 &
  local follower=$!
  sleep 2
  k exec -n team-a printer -- sh -c "echo tail-$MARK one >/proc/1/fd/1; echo tail-$MARK two >/proc/1/fd/1"
  check_for "live_tail_follows_new_lines" 45 grep -q "tail-$MARK two" "$out"
  expect_eq "live_tail_prints_each_line_once" "2" grep -c "tail-$MARK" "$out"
  kill "$follower" 2>/dev/null || true
  wait "$follower" 2>/dev/null || true
}

step_rotation_and_restarts() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: counter, namespace: team-b, labels: {app: counter}}
spec:
  nodeName: node-b
  terminationGracePeriodSeconds: 0
  containers:
  - name: count
    image: $IMAGE
    command: [sh, -c, "i=0; while [ \$i -lt $COUNT_LINES ]; do j=0; while [ \$j -lt 300 ]; do i=\$((i+1)); echo \"count \$i padding-padding-padding-padding-padding-padding\"; j=\$((j+1)); done; sleep 0.5; done; exec sleep 3600"]
EOF
  wait_for "counter_running" 90 running counter -n team-b || return 1
  sleep 4
  # the agent restarts in the middle of the writing and the rotations
  local pid_var=AGENT_PID_node_b
  kill -TERM "${!pid_var}" 2>/dev/null || true
  wait "${!pid_var}" 2>/dev/null || true
  start_agent node-b "$(node_ip 2)" "$WORK/node-b" --kubelet-port 26252 "${AGENT_ARGS[@]}"
  sleep 6
  # and then the server
  stop_server TERM
  start_node_server "$WORK/server" --disable-agent
  check_for "counter_log_rotated" 60 rotated_files
  check_for "every_counted_line_stored_once" 150 all_counted
  expect_eq "counted_lines_distinct_and_total" "$COUNT_LINES $COUNT_LINES" count_lines '{namespace="team-b", pod="counter"} |= "count "'
  # the agent may have rotated the file right after the last count, leaving the current file
  # empty (kubectl logs reads the current file, as upstream's kubelet does): one more line
  # lands in the current file, and kubectl logs must show it
  k exec -n team-b counter -- sh -c "echo count-final >/proc/1/fd/1"
  check_for "kubectl_logs_after_rotation" 30 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl logs counter -n team-b --tail 1 | grep -qx count-final"
}

step_metrics() {
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: burn, namespace: team-a, labels: {app: burn}}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 0
  containers:
  - name: burn
    image: $IMAGE
    command: [sh, -c, "while :; do :; done"]
    resources: {limits: {cpu: 300m}}
EOF
  wait_for "burn_running" 90 running burn -n team-a || return 1
  # a 300m limit: the busy loop uses at most 0.3 of a core, and on an idle machine nearly that
  check_for "cpu_rate_matches_the_limit" 150 cpu_rate_near_limit
  expect "working_set_series_has_cadvisor_labels" '"container":"burn"' raw "/prometheus/api/v1/query?query=$(urlencode 'container_memory_working_set_bytes{pod="burn"}')"
  expect "node_memory_available_per_node" '"node":"node-a"' raw "/prometheus/api/v1/query?query=$(urlencode 'node_memory_MemAvailable_bytes')"
  expect "node_cpu_seconds_has_mode" '"mode":"idle"' raw "/prometheus/api/v1/query?query=$(urlencode 'node_cpu_seconds_total{node="node-b"}')"
  expect "sum_by_namespace" '"namespace":"team-b"' raw "/prometheus/api/v1/query?query=$(urlencode 'sum by (namespace) (container_memory_working_set_bytes)')"
  local now start
  now=$(date +%s)
  start=$((now - 120))
  expect "query_range_returns_a_matrix" '"resultType":"matrix"' raw "/prometheus/api/v1/query_range?query=$(urlencode 'node_load1')&start=$start&end=$now&step=10"
  expect "labels_lists_metric_names" "container_cpu_usage_seconds_total" raw "/prometheus/api/v1/label/__name__/values"
  expect "buildinfo_for_grafana" '"version"' raw "/prometheus/api/v1/status/buildinfo"
  expect "bad_promql_is_400_with_position" '"bad_data".*1:[0-9]+: parse error.* 400$' as_admin "/prometheus/api/v1/query?query=$(urlencode 'rate(')"
  check_for "kubectl_top_pod_still_works" 60 k top pod burn -n team-a --no-headers
  expect "agent_metrics_endpoint" "process_resident_memory_bytes" raw "/api/v1/nodes/node-a/proxy/metrics"
  expect "server_metrics_count_ingested_samples" "mini_metrics_ingested_samples_total" raw "/metrics"
}

step_read_only_user() {
  k create serviceaccount reader -n team-a >/dev/null
  k create rolebinding reader-view -n team-a --clusterrole=view --serviceaccount=team-a:reader >/dev/null
  READER_TOKEN=$(k create token reader -n team-a)
  expect "reader_sees_own_namespace_series" '"namespace":"team-a"' as_reader "/prometheus/api/v1/query?query=$(urlencode 'container_memory_working_set_bytes')"
  expect_absent "reader_sees_no_other_namespace_series" '"namespace":"team-b"' as_reader "/prometheus/api/v1/query?query=$(urlencode 'container_memory_working_set_bytes')"
  expect_absent "reader_sees_no_node_series" '"node_load1"' as_reader "/prometheus/api/v1/label/__name__/values"
  expect "reader_finds_own_logs" "$MARK line 3" as_reader "/v1-mini/logs/search?query=$(urlencode "{pod=\"printer\"} |= \"$MARK line 3\"")"
  expect_absent "reader_finds_no_other_logs" "count 1" as_reader "/v1-mini/logs/search?query=$(urlencode '{pod="counter"} |= "count 1 "')"
  expect_absent "reader_loki_namespaces_only_own" "team-b" as_reader "/loki/api/v1/label/namespace/values"
  expect "anonymous_is_refused" '"code":401' in_ns "$SERVER_NS" curl -sk "https://127.0.0.1:$API_PORT/v1-mini/logs/search"
}

step_node_gone() {
  local pid_var=AGENT_PID_node_b
  kill -TERM "${!pid_var}" 2>/dev/null || true
  wait "${!pid_var}" 2>/dev/null || true
  k delete node node-b --wait=true >/dev/null
  expect "gone_node_logs_still_searchable" "count 777 " mini_logs -n team-b --grep "count 777 " --since 1h
}

run_steps() {
  step_start || return 0
  step_known_lines
  step_live_tail
  step_rotation_and_restarts
  step_metrics
  step_read_only_user
  step_node_gone
}

run_steps
summary
