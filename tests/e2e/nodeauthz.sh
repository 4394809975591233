#!/usr/bin/env bash
# End-to-end: node isolation on two real nodes (agents with their own containerd, each in a
# network namespace). With node A's own credentials (its agent's kubelet.kubeconfig): the
# secret of a pod on node B is 403, its own pod's secret is readable, node B cannot be
# patched, node A cannot give itself a node-restriction.kubernetes.io/ label nor change its
# taints, and may update its own status; the TLS secret of an Ingress mini serves is
# readable. Both agents run their pods (secret volumes, service account tokens) with no
# refusal in their logs. Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=na
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
API_PORT=25443
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-nodeauthz.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a node-b)

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-nodeauthz-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the node isolation suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

# as_a ARGS...: kubectl with node A's credentials, from node A's machine.
as_a() {
  in_ns "$E2E_NS-node-a" kubectl --request-timeout=30s --kubeconfig "$WORK/node-a/agent/kubelet.kubeconfig" "$@"
}

# patch_as_a PATH BODY: a merge PATCH with node A's client certificate (kubectl patch of a
# subresource GETs it first, which upstream's node rules do not allow); prints code and body.
patch_as_a() {
  local kc=$WORK/node-a/agent/kubelet.kubeconfig d=$WORK/node-a-creds
  if [ ! -f "$d/key.pem" ]; then
    mkdir -p "$d"
    local field
    for field in client-certificate-data:cert.pem client-key-data:key.pem; do
      kubectl --kubeconfig "$kc" config view --raw -o jsonpath="{.users[0].user.${field%%:*}}" | base64 -d >"$d/${field#*:}"
    done
    kubectl --kubeconfig "$kc" config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$d/ca.pem"
  fi
  in_ns "$E2E_NS-node-a" curl -s --cacert "$d/ca.pem" --cert "$d/cert.pem" --key "$d/key.pem" \
    -X PATCH -H 'Content-Type: application/merge-patch+json' --data "$2" \
    -w '\nHTTP %{http_code}\n' "https://$SERVER_IP:$API_PORT$1"
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
}

# a pod on each node mounting its own secret, with a projected service account token
step_pods() {
  local n
  for n in a b; do
    k create secret generic "secret-$n" --from-literal=owner="node-$n" >/dev/null
    cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: pod-$n}
spec:
  nodeName: node-$n
  terminationGracePeriodSeconds: 0
  containers:
  - name: sh
    image: $IMAGE
    command: [sh, -c, "cat /secret/owner; echo; sleep 3600"]
    volumeMounts: [{name: s, mountPath: /secret}]
  volumes: [{name: s, secret: {secretName: secret-$n}}]
EOF
  done
  wait_for "pods_with_secret_volumes_running" 120 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl get pods --no-headers | grep -c Running) -eq 2 ]" || return 1
  check_for "pod_on_a_reads_its_secret" 30 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl logs pod-a | grep -qx node-a"
  expect "pod_has_service_account_token" "eyJ" k exec pod-b -- cat /var/run/secrets/kubernetes.io/serviceaccount/token
}

step_reads() {
  expect "node_a_is_system_node_a" "system:node:node-a" as_a auth whoami
  expect "node_a_gets_its_own_pods_secret" "secret-a" as_a get secret secret-a -o name
  expect_fail "node_a_gets_403_for_node_b_pods_secret" "Forbidden.*no relationship found between node 'node-a' and this object" as_a get secret secret-b
  expect_fail "node_a_cannot_list_secrets" "Forbidden" as_a get secrets
  expect "node_a_lists_pods" "pod-b" as_a get pods -o name
}

step_writes() {
  expect_fail "node_a_cannot_patch_node_b" "Forbidden.*not allowed to modify node" \
    as_a patch node node-b --type=merge -p '{"metadata":{"labels":{"example.com/x":"1"}}}'
  expect_fail "node_a_cannot_set_node_restriction_label" "Forbidden.*node-restriction.kubernetes.io/x" \
    as_a label node node-a node-restriction.kubernetes.io/x=1
  expect_fail "node_a_cannot_taint_itself" "Forbidden.*not allowed to modify taints" \
    as_a taint node node-a e2e=x:NoSchedule
  expect "node_a_labels_itself_with_a_plain_label" "labeled" as_a label node node-a example.com/e2e=1
  expect "node_a_updates_its_own_status" "HTTP 200" patch_as_a /api/v1/nodes/node-a/status \
    '{"status":{"allocatable":{"example.com/e2e":"1"}}}'
  expect "node_a_updates_status_of_its_pod" "HTTP 200" patch_as_a /api/v1/namespaces/default/pods/pod-a/status \
    '{"status":{"message":"e2e"}}'
  expect "node_a_cannot_update_status_of_pod_on_b" "can only update pod status" \
    patch_as_a /api/v1/namespaces/default/pods/pod-b/status '{"status":{"message":"x"}}'
  expect "node_a_cannot_update_status_of_node_b" "HTTP 403" patch_as_a /api/v1/nodes/node-b/status \
    '{"status":{"allocatable":{"example.com/e2e":"1"}}}'
  expect_fail "node_a_cannot_delete_pod_on_b" "Forbidden.*can only delete pods" as_a delete pod pod-b --wait=false
  expect "admin_sees_node_b_unchanged" "^$" k get node node-b -o jsonpath='{.metadata.labels.example\.com/x}'
}

# mini's extension: every agent proxies Ingresses, so it may get their TLS secrets
step_ingress_tls() {
  k create secret generic web-tls --from-literal=tls.crt=x >/dev/null
  k create secret generic other-tls --from-literal=tls.crt=x >/dev/null
  cat <<EOF | k apply -f - >/dev/null
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: mini, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: mini.dev/ingress}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: other}
spec: {controller: example.com/other}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  tls: [{hosts: [web.example], secretName: web-tls}]
  defaultBackend: {service: {name: web, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other}
spec:
  ingressClassName: other
  tls: [{hosts: [other.example], secretName: other-tls}]
  defaultBackend: {service: {name: web, port: {number: 80}}}
EOF
  expect "node_a_gets_tls_secret_of_mini_ingress" "web-tls" as_a get secret web-tls -o name
  expect_fail "node_a_gets_403_for_tls_secret_of_other_class" "Forbidden" as_a get secret other-tls
}

step_agents_unrefused() {
  local n
  for n in "${NODES[@]}"; do
    if grep -i "forbidden" "$WORK/$n/agent.log" >"$WORK/refused-$n.txt"; then
      not_ok "agent_${n}_never_refused" "$(head -5 "$WORK/refused-$n.txt")"
    else
      ok "agent_${n}_never_refused"
    fi
  done
}

if step_start; then
  step_pods || true
  step_reads
  step_writes
  step_ingress_tls
  step_agents_unrefused
fi
summary
