#!/usr/bin/env bash
# End-to-end: the built-in local-path provisioner on real nodes. A `mini server` (no node of its
# own) and two `mini agent`s in network namespaces, driven by kubectl: a StatefulSet with
# volumeClaimTemplates (2 replicas) gets Bound claims with volumes pinned to the nodes its pods
# landed on; data survives a pod restart; growing a claim is refused with upstream's message; a
# pod naming a missing claim stays Pending with FailedScheduling; deleting a claim of a Delete
# class removes its directory and its PV; a Retain class keeps both (PV Released); an Immediate
# class binds without a pod; a static PV binds to a matching claim; a volume on a node that is gone
# stays Released with a Warning Event while its directory removal is retried.
# Needs root (namespaces, containerd).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=lpe2e
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
API_PORT=23443
KUBELET_PORT=23250
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-storage.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(lp-a lp-b)

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-storage-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the storage suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

# The StorageClass the manifests part bundles (local-storage.yaml), applied here until a
# default server writes it itself.
STORAGE_CLASS='apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: local-path, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: mini.dev/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
allowVolumeExpansion: false'

# pv_of CLAIM: the PV bound to the claim.
pv_of() { k get pvc "$1" -o jsonpath='{.spec.volumeName}'; }
# pv_path PV: the volume's directory on its node.
pv_path() { k get pv "$1" -o jsonpath='{.spec.hostPath.path}'; }
# pv_host PV: the hostname its node affinity names.
pv_host() { k get pv "$1" -o jsonpath='{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}'; }
# phase KIND NAME: status.phase.
phase() { k get "$1" "$2" -o jsonpath='{.status.phase}'; }
# pod_running NAME: the pod is Running.
pod_running() { [ "$(phase pod "$1")" = Running ]; }

step_start() {
  setup_network "${NODES[@]}"
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  start_node_server "$WORK/server" --disable-agent
  local i=1 n
  for n in "${NODES[@]}"; do
    mkdir -p "$WORK/$n/agent/images"
    cp "$WORK/busybox.tar" "$WORK/$n/agent/images/"
    start_agent "$n" "$(node_ip $i)" "$WORK/$n" --kubelet-port "$KUBELET_PORT"
    i=$((i + 1))
  done
  wait_for "agents_join_nodes_ready" 120 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get nodes --no-headers 2>/dev/null | grep -c ' Ready ') -eq ${#NODES[@]} ]" || {
    tail -40 "$WORK/lp-a/agent.log"
    return 1
  }
  expect "node_announces_local_path_dir" "^$WORK/lp-a/storage\$" \
    k get node lp-a -o jsonpath='{.metadata.annotations.storage\.mini\.dev/local-path-dir}'
  expect "storage_class_applied" "created|configured|unchanged" k apply -f - <<<"$STORAGE_CLASS"
  check_for "default_serviceaccount_created" 30 k get sa default -n default
}

step_statefulset() {
  k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: app
        image: $IMAGE
        command: ["sh", "-c", "hostname >> /data/boots; exec sleep 100000"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 64Mi}}
EOF
  wait_for "statefulset_claims_bound" 180 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pvc data-web-0 data-web-1 -o jsonpath='{.items[*].status.phase}')\" = 'Bound Bound' ]" || {
    k describe pvc data-web-0 | tail -15
    k get events -A | tail -20
    return 1
  }
  expect "claim_got_default_class" "^local-path$" k get pvc data-web-0 -o jsonpath='{.spec.storageClassName}'
  check_for "statefulset_pods_running" 120 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod web-0 web-1 -o jsonpath='{.items[*].status.phase}')\" = 'Running Running' ]"
  local i node pv host path
  for i in 0 1; do
    node=$(k get pod "web-$i" -o jsonpath='{.spec.nodeName}')
    pv=$(pv_of "data-web-$i")
    host=$(pv_host "$pv")
    path=$(pv_path "$pv")
    if [ -n "$node" ] && [ "$host" = "$node" ]; then ok "pv_${i}_pinned_to_pod_node"; else not_ok "pv_${i}_pinned_to_pod_node" "pod on '$node', pv $pv on '$host'"; fi
    expect "claim_${i}_selected_node" "^$node\$" k get pvc "data-web-$i" -o jsonpath='{.metadata.annotations.volume\.kubernetes\.io/selected-node}'
    expect "pv_${i}_provisioned_by" "^mini.dev/local-path\$" k get pv "$pv" -o jsonpath='{.metadata.annotations.pv\.kubernetes\.io/provisioned-by}'
    expect "claim_${i}_bind_completed" "^yes\$" k get pvc "data-web-$i" -o jsonpath='{.metadata.annotations.pv\.kubernetes\.io/bind-completed}'
    if [ "$path" = "$WORK/$node/storage/pvc-$(k get pvc "data-web-$i" -o jsonpath='{.metadata.uid}')_default_data-web-$i" ] && [ -d "$path" ]; then
      ok "pv_${i}_directory_on_its_node"
    else
      not_ok "pv_${i}_directory_on_its_node" "path=$path"
    fi
  done
}

step_data_survives_restart() {
  expect "write_file" "^$" k exec web-0 -- sh -c 'echo persisted > /data/file'
  local node
  node=$(k get pod web-0 -o jsonpath='{.spec.nodeName}')
  k delete pod web-0 --wait=true >/dev/null
  wait_for "pod_recreated_running" 120 pod_running web-0 || return 0
  expect "pod_back_on_same_node" "^$node\$" k get pod web-0 -o jsonpath='{.spec.nodeName}'
  expect "file_survives_pod_restart" "^persisted$" k exec web-0 -- cat /data/file
  expect "volume_saw_two_boots" "^2$" k exec web-0 -- sh -c 'wc -l < /data/boots'
}

step_expansion_refused() {
  expect_fail "expansion_refused_with_upstream_message" \
    "forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize" \
    k patch pvc data-web-0 -p '{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}'
  expect "expansion_left_request_alone" "^64Mi$" k get pvc data-web-0 -o jsonpath='{.spec.resources.requests.storage}'
}

step_missing_claim() {
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: orphan}
spec:
  containers: [{name: app, image: $IMAGE, command: [sleep, "100000"]}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: nope}}]
EOF
  check_for "missing_claim_failed_scheduling" 60 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get events --field-selector involvedObject.name=orphan,reason=FailedScheduling -o jsonpath='{.items[*].message}' | grep -F 'persistentvolumeclaim \"nope\" not found'"
  expect "missing_claim_pod_pending" "^Pending$" phase pod orphan
  # the claim appears: the pod is retried, a volume provisioned on its node, and it runs
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: nope}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
EOF
  check_for "late_claim_pod_runs" 120 pod_running orphan
  k delete pod orphan --wait=false >/dev/null 2>&1 || true
}

step_delete_reclaim() {
  local pv path
  pv=$(pv_of data-web-1)
  path=$(pv_path "$pv")
  k scale statefulset web --replicas=1 >/dev/null
  check_for "scaled_down_pod_gone" 60 bash -c "! nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod web-1 >/dev/null 2>&1"
  k delete pvc data-web-1 --wait=false >/dev/null
  check_for "delete_reclaim_pv_gone" 60 bash -c "! nsenter --net=$(ns_path "$SERVER_NS") kubectl get pv $pv >/dev/null 2>&1"
  if [ -n "$path" ] && [ ! -e "$path" ]; then ok "delete_reclaim_directory_removed"; else not_ok "delete_reclaim_directory_removed" "$path still there"; fi
}

step_retain_reclaim() {
  k apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: keep}
provisioner: mini.dev/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: kept}
spec: {storageClassName: keep, accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: keeper}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: app, image: $IMAGE, command: [sh, -c, "echo kept > /data/file; exec sleep 100000"], volumeMounts: [{name: d, mountPath: /data}]}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: kept}}]
EOF
  wait_for "retain_pod_running" 120 pod_running keeper || return 0
  local pv path
  pv=$(pv_of kept)
  path=$(pv_path "$pv")
  expect "retain_pv_policy" "^Retain$" k get pv "$pv" -o jsonpath='{.spec.persistentVolumeReclaimPolicy}'
  k delete pod keeper --wait=true >/dev/null
  k delete pvc kept --wait=true >/dev/null
  check_for "retain_pv_released" 60 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pv $pv -o jsonpath='{.status.phase}')\" = Released ]"
  if [ -f "$path/file" ] && grep -q kept "$path/file"; then ok "retain_directory_kept"; else not_ok "retain_directory_kept" "$path"; fi
  # removing the Retain PV by hand leaves its data alone
  k delete pv "$pv" --wait=true >/dev/null
  if [ -f "$path/file" ]; then ok "retain_pv_deleted_data_kept"; else not_ok "retain_pv_deleted_data_kept" "$path"; fi
}

step_immediate_class() {
  k apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: now}
provisioner: mini.dev/local-path
volumeBindingMode: Immediate
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: early}
spec: {storageClassName: now, accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
EOF
  check_for "immediate_claim_bound_without_pod" 60 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pvc early -o jsonpath='{.status.phase}')\" = Bound ]"
  expect "immediate_pv_pinned_to_a_node" "^lp-(a|b)$" bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pv \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pvc early -o jsonpath='{.spec.volumeName}') -o jsonpath='{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}'"
}

step_static_pv() {
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: static-big, labels: {kind: static}}
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: $WORK/static-big}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: static-small, labels: {kind: static}}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {path: $WORK/static-small}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: static-rox}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadOnlyMany]
  storageClassName: manual
  hostPath: {path: $WORK/static-rox}
EOF
  check_for "static_pv_available" 30 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pv static-small -o jsonpath='{.status.phase}')\" = Available ]"
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: wants-static}
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  selector: {matchLabels: {kind: static}}
  resources: {requests: {storage: 500Mi}}
EOF
  check_for "static_claim_bound" 60 bash -c "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pvc wants-static -o jsonpath='{.status.phase}')\" = Bound ]"
  expect "static_claim_got_smallest_fit" "^static-small$" pv_of wants-static
  expect "static_pv_claim_ref" "^default/wants-static Bound$" k get pv static-small -o jsonpath='{.spec.claimRef.namespace}/{.spec.claimRef.name} {.status.phase}'
  expect "static_claim_capacity" "^1Gi$" k get pvc wants-static -o jsonpath='{.status.capacity.storage}'
  expect "other_static_pv_still_available" "^Available$" phase pv static-big
}

# last: stops the agent of the Immediate claim's node, then deletes the claim
step_node_gone() {
  local pv host pid_var
  pv=$(pv_of early)
  host=$(pv_host "$pv")
  pid_var="AGENT_PID_${host//-/_}"
  [ -n "$pv" ] && [ -n "${!pid_var:-}" ] || { not_ok "gone_node_setup" "pv=$pv host=$host"; return 0; }
  kill -9 "${!pid_var}" 2>/dev/null || true
  kill_node_processes "$WORK/$host" "$E2E_NS-$host"
  k delete pvc early --wait=false >/dev/null
  check_for "gone_node_cleanup_retried_with_warning" 90 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get events --field-selector involvedObject.name=$pv,reason=VolumeFailedDelete -o jsonpath='{.items[*].message}' | grep -F 'removing directory'"
  expect "gone_node_pv_kept_released" "^Released$" phase pv "$pv"
}

main() {
  step_start || { summary; exit 1; }
  step_statefulset || { summary; exit 1; }
  step_data_survives_restart
  step_expansion_refused
  step_missing_claim
  step_delete_reclaim
  step_retain_reclaim
  step_immediate_class
  step_static_pv
  step_node_gone
  summary
}
main
