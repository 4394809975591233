#!/usr/bin/env bash
# End-to-end: scheduler and controllers in a real `mini server`, with simulated nodes
# (`mini sim nodes`), driven by kubectl: rollouts, undo, scale, StatefulSets, DaemonSets, Jobs,
# CronJobs, cordon/taint/drain with a PDB, node failure and eviction, cascading deletion,
# namespace deletion, and a server restart in the middle of a rollout.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
WORK=$(mktemp -d /tmp/mini-e2e-workloads.XXXXXX)
PORT=$(free_port)
export HOME=$WORK/home KUBECONFIG=$WORK/data/server/admin.kubeconfig
mkdir -p "$HOME"
SIM_PIDS=()

cleanup() {
  for p in "${SIM_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_server KILL
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-workloads-logs}"
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

k() { kubectl --request-timeout=30s "$@"; }

# start_sim NAME ARGS...: runs `mini sim nodes` in the background, remembering its PID.
start_sim() {
  local name=$1
  shift
  "$MINI_BIN" sim nodes --kubeconfig "$KUBECONFIG" --lease-interval 2 "$@" >"$WORK/sim-$name.log" 2>&1 &
  SIM_PIDS+=($!)
  eval "SIM_$name=$!"
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
  start_server "$WORK/data" "$PORT"
  start_sim main --count 3
  wait_for "sim_nodes_ready" 30 bash -c "[ \$(kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready ') -eq 3 ]"
  wait_for "nodes_get_pod_cidrs" 20 bash -c "[ \$(kubectl get nodes -o jsonpath='{.items[*].spec.podCIDR}' | wc -w) -eq 3 ]"
  wait_for "default_serviceaccount_created" 20 k get sa default -n default
  wait_for "root_ca_configmap_published" 20 k get cm kube-root-ca.crt -n default
}

step_deployment() {
  k create deployment web --image=nginx:1.0 --replicas=6 >/dev/null
  expect "wait_deployment_available" "condition met" k wait --for=condition=Available deployment/web --timeout=60s
  expect "rollout_status_initial" "successfully rolled out" k rollout status deployment/web --timeout=60s
  expect_eq "pods_spread_over_three_nodes" "3" bash -c "kubectl get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName}{\"\\n\"}{end}' | sort -u | wc -l"
  expect "scheduled_event_recorded" "Successfully assigned default/web-" k get events --field-selector reason=Scheduled
  k annotate deployment/web kubernetes.io/change-cause="image 2.0" >/dev/null
  k set image deployment/web nginx=nginx:2.0 >/dev/null
  expect "rollout_status_after_set_image" "successfully rolled out" k rollout status deployment/web --timeout=90s
  expect_eq "all_pods_on_new_image" "nginx:2.0" bash -c "kubectl get pods -l app=web -o jsonpath='{range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}' | sort -u"
  expect "rollout_history_shows_revisions" "image 2.0" k rollout history deployment/web
  expect "rollout_undo" "rolled back" k rollout undo deployment/web
  expect "rollout_status_after_undo" "successfully rolled out" k rollout status deployment/web --timeout=90s
  expect_eq "undo_restored_old_template" "nginx:1.0" k get deployment web -o jsonpath='{.spec.template.spec.containers[0].image}'
  expect "scale_up" "scaled" k scale deployment/web --replicas=9
  wait_for "scale_up_pods_running" 60 bash -c "[ \$(kubectl get pods -l app=web --field-selector=status.phase=Running --no-headers | wc -l) -eq 9 ]"
  expect "scale_down" "scaled" k scale deployment/web --replicas=2
  wait_for "scale_down_pods_gone" 60 bash -c "[ \$(kubectl get pods -l app=web --no-headers | wc -l) -eq 2 ]"
  expect "rollout_restart" "restarted" k rollout restart deployment/web
  expect "rollout_status_after_restart" "successfully rolled out" k rollout status deployment/web --timeout=90s
}

step_statefulset() {
  cat >"$WORK/sts.yaml" <<'YAML'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: db:1}]}
YAML
  k apply -f "$WORK/sts.yaml" >/dev/null
  expect "statefulset_rollout_status" "roll" k rollout status statefulset/db --timeout=90s
  local order
  order=$(k get pods -l app=db --sort-by=.metadata.creationTimestamp -o jsonpath='{range .items[*]}{.metadata.name} {end}')
  if [ "$order" = "db-0 db-1 db-2 " ]; then ok "statefulset_ordinals_created_in_order"; else not_ok "statefulset_ordinals_created_in_order" "got [$order]"; fi
}

step_daemonset() {
  k create -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: agent:1}]}
YAML
  wait_for "daemonset_pod_on_every_node" 60 bash -c "[ \$(kubectl get pods -l app=agent --field-selector=status.phase=Running --no-headers | wc -l) -eq 3 ]"
  start_sim extra --count 1 --prefix extra-node- 
  wait_for "daemonset_pod_on_added_node" 60 bash -c "kubectl get pods -l app=agent -o wide --no-headers | grep -q extra-node-0"
  expect "daemonset_rollout_status" "successfully rolled out" k rollout status daemonset/agent --timeout=60s
}

step_jobs() {
  k create -f - >/dev/null <<'YAML'
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  completions: 3
  parallelism: 2
  template:
    metadata: {annotations: {sim.mini.dev/complete-after: "1"}}
    spec:
      restartPolicy: Never
      containers: [{name: j, image: job:1}]
YAML
  expect "job_completes" "condition met" k wait --for=condition=complete job/once --timeout=90s
  expect_eq "job_three_completions" "3" k get job once -o jsonpath='{.status.succeeded}'
}

step_cronjob_create() {
  k create -f - >/dev/null <<'YAML'
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        metadata: {annotations: {sim.mini.dev/complete-after: "1"}}
        spec:
          restartPolicy: Never
          containers: [{name: t, image: tick:1}]
YAML
}

step_cronjob_check() {
  wait_for "cronjob_fires_a_job" 90 bash -c "kubectl get jobs --no-headers 2>/dev/null | grep -q '^tick-'"
  wait_for "cronjob_last_schedule_time" 30 bash -c "[ -n \"\$(kubectl get cronjob tick -o jsonpath='{.status.lastScheduleTime}')\" ]"
}

step_drain() {
  k create deployment guarded --image=g:1 --replicas=3 >/dev/null
  k rollout status deployment/guarded --timeout=60s >/dev/null
  k create pdb guarded --selector=app=guarded --min-available=3 >/dev/null
  wait_for "pdb_status_computed" 30 bash -c "[ \"\$(kubectl get pdb guarded -o jsonpath='{.status.currentHealthy}')\" = 3 ]"
  local node
  node=$(k get pods -l app=guarded -o jsonpath='{.items[0].spec.nodeName}')
  expect "cordon_node" "cordoned" k cordon "$node"
  expect "cordoned_node_unschedulable" "SchedulingDisabled" k get node "$node"
  expect_fail "drain_blocked_by_pdb" "disruption budget" k drain "$node" --ignore-daemonsets --timeout=12s
  k delete pdb guarded >/dev/null
  expect "drain_evicts_and_ignores_daemonsets" "drained" k drain "$node" --ignore-daemonsets --timeout=60s
  wait_for "drained_node_has_only_daemonset_pods" 30 bash -c "[ -z \"\$(kubectl get pods -A --field-selector spec.nodeName=$node -o jsonpath='{range .items[*]}{.metadata.ownerReferences[0].kind}{\"\\n\"}{end}' | grep -v DaemonSet)\" ]"
  wait_for "drained_pods_replaced_elsewhere" 60 bash -c "[ \$(kubectl get pods -l app=guarded --field-selector=status.phase=Running --no-headers | wc -l) -eq 3 ]"
  expect "uncordon_node" "uncordoned" k uncordon "$node"
  expect "taint_node" "tainted" k taint node "$node" dedicated=db:NoSchedule
  k create deployment tainted --image=t:1 --replicas=4 >/dev/null
  k rollout status deployment/tainted --timeout=60s >/dev/null
  expect_eq "tainted_node_gets_no_new_pods" "" bash -c "kubectl get pods -l app=tainted -o jsonpath='{range .items[*]}{.spec.nodeName}{\"\\n\"}{end}' | grep -x '$node' || true"
  k taint node "$node" dedicated- >/dev/null
}

step_unschedulable() {
  k run huge --image=h:1 --restart=Never --overrides='{"spec":{"containers":[{"name":"h","image":"h:1","resources":{"requests":{"cpu":"100"}}}]}}' >/dev/null
  wait_for "failed_scheduling_reason" 30 bash -c "kubectl get events --field-selector involvedObject.name=huge -o jsonpath='{.items[*].message}' | grep -q 'nodes are available: .*Insufficient cpu'"
  k delete pod huge --wait=false >/dev/null
}

step_node_failure() {
  cat >"$WORK/fragile.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: fragile}
spec:
  replicas: 2
  selector: {matchLabels: {app: fragile}}
  template:
    metadata: {labels: {app: fragile}}
    spec:
      nodeSelector: {pool: lonely}
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers: [{name: f, image: f:1}]
YAML
  start_sim lonely --count 1 --prefix lonely- --label pool=lonely
  wait_for "lonely_node_ready" 30 bash -c "kubectl get node lonely-0 --no-headers | grep -q ' Ready '"
  k apply -f "$WORK/fragile.yaml" >/dev/null
  k rollout status deployment/fragile --timeout=60s >/dev/null
  # a second node in the same pool takes over once the first stops heartbeating
  start_sim lonely2 --count 1 --prefix lonely-b- --label pool=lonely
  kill "$SIM_lonely"
  wait_for "stopped_node_goes_not_ready" 90 bash -c "kubectl get node lonely-0 --no-headers | grep -q NotReady"
  expect "not_ready_node_tainted_unreachable" "node.kubernetes.io/unreachable" k get node lonely-0 -o jsonpath='{.spec.taints[*].key}'
  wait_for "pods_evicted_and_replaced_on_other_node" 90 bash -c "[ \$(kubectl get pods -l app=fragile -o wide --field-selector=status.phase=Running --no-headers | grep -c lonely-b-0) -eq 2 ]"
}

step_cascade() {
  for mode in background foreground orphan; do
    k create deployment "casc-$mode" --image=c:1 --replicas=2 >/dev/null
    k rollout status "deployment/casc-$mode" --timeout=60s >/dev/null
  done
  k delete deployment casc-background --cascade=background >/dev/null
  wait_for "cascade_background_removes_pods" 60 bash -c "[ \$(kubectl get pods -l app=casc-background --no-headers 2>/dev/null | wc -l) -eq 0 ] && [ \$(kubectl get rs -l app=casc-background --no-headers 2>/dev/null | wc -l) -eq 0 ]"
  expect "cascade_foreground_waits" "deleted" k delete deployment casc-foreground --cascade=foreground --timeout=60s
  expect_eq "cascade_foreground_dependents_gone_first" "0" bash -c "kubectl get pods,rs -l app=casc-foreground --no-headers 2>/dev/null | wc -l"
  k delete deployment casc-orphan --cascade=orphan >/dev/null
  sleep 3
  expect_eq "cascade_orphan_keeps_replicaset" "1" bash -c "kubectl get rs -l app=casc-orphan --no-headers | wc -l"
  expect_eq "cascade_orphan_removed_owner_ref" "" k get rs -l app=casc-orphan -o jsonpath='{.items[0].metadata.ownerReferences}'
}

step_namespace() {
  k create ns scratch >/dev/null
  k create deployment s --image=s:1 --replicas=2 -n scratch >/dev/null
  k rollout status deployment/s -n scratch --timeout=60s >/dev/null
  expect "namespace_delete_empties_it" "deleted" k delete ns scratch --timeout=90s
  expect_fail "namespace_gone" "NotFound" k get ns scratch
}

step_restart_mid_rollout() {
  k create deployment roll --image=r:1 --replicas=8 >/dev/null
  k rollout status deployment/roll --timeout=60s >/dev/null
  k set image deployment/roll r=r:2 >/dev/null
  sleep 0.5
  stop_server TERM
  start_server "$WORK/data" "$PORT"
  expect "rollout_completes_after_server_restart" "successfully rolled out" k rollout status deployment/roll --timeout=120s
  # as upstream, a ReplicaSet's status.replicas leaves out terminating pods, so `rollout status`
  # may return while old pods are still being deleted: every pod that is not terminating runs the
  # new image at once, and the terminating ones go away
  expect_eq "restart_rollout_pods_all_new" "r:2" bash -c "kubectl get pods -l app=roll -o jsonpath='{range .items[*]}{.spec.containers[0].image}{\" \"}{.metadata.deletionTimestamp}{\"\\n\"}{end}' | awk 'NF == 1 {print \$1}' | sort -u"
  wait_for "restart_rollout_old_pods_gone" 60 bash -c "! kubectl get pods -l app=roll -o jsonpath='{range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}' | grep -qv '^r:2\$'"
  expect_eq "restart_rollout_one_active_replicaset" "1" bash -c "kubectl get rs -l app=roll -o jsonpath='{range .items[*]}{.spec.replicas}{\"\\n\"}{end}' | grep -vc '^0$'"
}

step_start
step_cronjob_create
step_deployment
step_statefulset
step_daemonset
step_jobs
step_unschedulable
step_drain
step_cascade
step_namespace
step_cronjob_check
step_node_failure
step_restart_mid_rollout
summary
