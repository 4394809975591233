#!/usr/bin/env bash
# End-to-end: a real `mini server` driven by the installed kubectl through the everyday verbs,
# errors, RBAC, CRDs, restart persistence and kill -9 durability.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
WORK=$(mktemp -d /tmp/mini-e2e-api.XXXXXX)
PORT=$(free_port)
export HOME=$WORK/home KUBECONFIG=$WORK/data/server/admin.kubeconfig
mkdir -p "$HOME"

cleanup() {
  stop_server KILL
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

k() { kubectl --request-timeout=20s "$@"; }

step_start() {
  start_server "$WORK/data" "$PORT"
  expect "kubeconfig_written_mode_0600" "^600$" stat -c %a "$KUBECONFIG"
  expect "token_file_has_k10_format" "^K10[0-9a-f]{64}::server:" cat "$WORK/data/server/node-token"
}

step_discovery() {
  expect "version_server_reports_v1_33" "Server Version: v1\.33" k version
  expect "cluster_info_shows_control_plane" "control plane is running at https://127.0.0.1:$PORT" k cluster-info
  expect "api_resources_lists_deployments_and_crds" "deployments +deploy +apps/v1 +true +Deployment" k api-resources
  expect "api_resources_lists_eviction_free_core" "customresourcedefinitions +crd,crds" k api-resources
  expect "api_versions_lists_groups" "rbac.authorization.k8s.io/v1" k api-versions
  expect "explain_deployment_strategy_describes_field" "DeploymentStrategy" k explain deployment.spec.strategy
  expect "explain_nested_field_rolling_update" "maxSurge" k explain deployment.spec.strategy.rollingUpdate
  expect "get_namespaces_lists_system_namespaces" "kube-system +Active" k get ns
  expect_eq "anonymous_request_gets_401" "401" curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/api/v1/namespaces"
  expect "cacerts_served_without_auth" "BEGIN CERTIFICATE" curl -sk "https://127.0.0.1:$PORT/cacerts"
  expect "metrics_count_requests" "apiserver_request_total" k get --raw /metrics
  expect "metrics_store_latency" "store_operation_duration_seconds_bucket" k get --raw /metrics
}

step_create() {
  expect "create_namespace_protobuf_body" "namespace/dev created" k create namespace dev
  expect "create_configmap_from_literal" "configmap/cm1 created" k create configmap cm1 --from-literal=a=b -n dev
  expect_eq "configmap_data_stored" "b" k get cm cm1 -n dev -o jsonpath='{.data.a}'
  expect "create_secret_generic" "secret/s1 created" k create secret generic s1 --from-literal=pw=hunter2 -n dev
  expect_eq "secret_data_base64" "aHVudGVyMg==" k get secret s1 -n dev -o jsonpath='{.data.pw}'
  expect "create_deployment" "deployment.apps/web created" k create deployment web --image=nginx:1.25 --replicas=2 -n dev
  # protobuf bodies nest Go's inline structs (IngressRule.ingressRuleValue): stored lifted, as JSON has them
  expect "create_ingress_protobuf_body" "ingress.networking.k8s.io/web created" k create ingress web --rule='a.example/=web:80' -n dev
  expect_eq "ingress_rule_value_inline" "a.example / web 80" k get ingress web -n dev -o jsonpath='{.spec.rules[0].host} {.spec.rules[0].http.paths[0].path} {.spec.rules[0].http.paths[0].backend.service.name} {.spec.rules[0].http.paths[0].backend.service.port.number}'
  expect_eq "deployment_defaults_strategy" "RollingUpdate 25% 10" k get deploy web -n dev -o jsonpath='{.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge} {.spec.revisionHistoryLimit}'
  cat >"$WORK/pod.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: dev, labels: {app: p}}
spec:
  containers: [{name: c, image: busybox:1, command: [sleep, "100"]}]
YAML
  expect "create_f_pod" "pod/p1 created" k create -f "$WORK/pod.yaml"
  expect_eq "pod_defaults_and_pending" "Pending BestEffort Always default-scheduler" k get pod p1 -n dev -o jsonpath='{.status.phase} {.status.qosClass} {.spec.restartPolicy} {.spec.schedulerName}'
  expect "create_service_allocates_cluster_ip" "service/svc1 created" k create service nodeport svc1 --tcp=80:8080 -n dev
  expect "service_has_cluster_ip_and_node_port" "^10\.43\.[0-9]+\.[0-9]+ 3[0-9]{4}$" k get svc svc1 -n dev -o jsonpath='{.spec.clusterIP} {.spec.ports[0].nodePort}'
  expect_eq "kubernetes_service_has_first_ip" "10.43.0.1" k get svc kubernetes -o jsonpath='{.spec.clusterIP}'
}

write_app() {
  cat >"$WORK/app.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: dev, labels: {tier: fe}}
spec:
  replicas: $1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers: [{name: c, image: busybox:1, command: [sleep, "1000"]}]
YAML
}

step_apply() {
  write_app 1
  expect "apply_creates" "deployment.apps/app created" k apply -f "$WORK/app.yaml"
  write_app 3
  expect "apply_changes" "deployment.apps/app configured" k apply -f "$WORK/app.yaml"
  expect "apply_again_unchanged" "deployment.apps/app unchanged" k apply -f "$WORK/app.yaml"
  expect_eq "apply_bumped_generation_once" "3 2" k get deploy app -n dev -o jsonpath='{.spec.replicas} {.metadata.generation}'
  write_app 4
  expect "diff_shows_change" "replicas: 4" bash -c "kubectl diff -f '$WORK/app.yaml'; [ \$? -eq 1 ]"
  expect_eq "diff_did_not_persist" "3" k get deploy app -n dev -o jsonpath='{.spec.replicas}'
  expect "replace_puts_object" "deployment.apps/app replaced" k replace -f "$WORK/app.yaml"
  expect_eq "replace_applied" "4" k get deploy app -n dev -o jsonpath='{.spec.replicas}'

  cat >"$WORK/ssa.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: ssa, namespace: dev}
data: {k: v1}
YAML
  expect "apply_server_side_creates" "serverside-applied" k apply --server-side -f "$WORK/ssa.yaml"
  expect "ssa_records_managed_fields" "kubectl" k get cm ssa -n dev -o jsonpath='{.metadata.managedFields[*].manager}' --show-managed-fields
  k patch cm ssa -n dev --type merge -p '{"data":{"k":"other"}}' >/dev/null
  sed -i 's/v1}/v2}/' "$WORK/ssa.yaml"
  expect_fail "apply_server_side_conflict_reported" 'conflict with "kubectl-patch".*\.data\.k' k apply --server-side -f "$WORK/ssa.yaml"
  expect "apply_server_side_force_conflicts" "serverside-applied" k apply --server-side --force-conflicts -f "$WORK/ssa.yaml"
  expect_eq "ssa_force_took_value" "v2" k get cm ssa -n dev -o jsonpath='{.data.k}'

  cat >"$WORK/list.yaml" <<'YAML'
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed-a, namespace: dev}
  data: {k: a}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed-b, namespace: dev}
YAML
  expect "apply_list_creates_every_item" "configmap/listed-b created" k apply -f "$WORK/list.yaml"
  expect "apply_list_again_unchanged" "configmap/listed-a unchanged" k apply -f "$WORK/list.yaml"
}

step_patch() {
  expect "patch_strategic" "patched" k patch deploy app -n dev -p '{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}}}'
  expect_eq "patch_strategic_merged_by_name" "c=busybox:2 sleep" k get deploy app -n dev -o jsonpath='{.spec.template.spec.containers[0].name}={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].command[0]}'
  expect "patch_merge" "patched" k patch deploy app -n dev --type merge -p '{"metadata":{"labels":{"m":"1"}}}'
  expect "patch_json" "patched" k patch deploy app -n dev --type json -p '[{"op":"replace","path":"/spec/replicas","value":2}]'
  expect_eq "patches_applied" "2 1" k get deploy app -n dev -o jsonpath='{.spec.replicas} {.metadata.labels.m}'
  expect "label_adds_label" "labeled" k label deploy app -n dev color=blue
  expect "annotate_adds_annotation" "annotated" k annotate deploy app -n dev note=hi
  expect "scale_uses_subresource" "scaled" k scale deploy app -n dev --replicas=5
  expect "scale_current_replicas_precondition" "scaled" k scale deploy app -n dev --current-replicas=5 --replicas=6
  expect "set_image_updates_container" "image updated" k set image deploy/app -n dev c=busybox:3
  expect "patch_strategic_adds_container" "patched" k patch deploy app -n dev -p '{"spec":{"template":{"spec":{"containers":[{"name":"extra","image":"busybox:9","command":["sleep","9"]}]}}}}'
  expect_eq "patch_strategic_new_container_goes_last" "c extra" k get deploy app -n dev -o jsonpath='{.spec.template.spec.containers[*].name}'
  k patch deploy app -n dev --type json -p '[{"op":"remove","path":"/spec/template/spec/containers/1"}]' >/dev/null
  expect_eq "label_annotate_scale_set_image_applied" "6 busybox:3 blue hi" k get deploy app -n dev -o jsonpath='{.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.labels.color} {.metadata.annotations.note}'
}

step_apiservices() {
  expect "get_apiservices_lists_local_groups" "v1.apps +Local +True" k get apiservices
}

step_get() {
  expect "get_wide_shows_images_and_selector" "busybox:3 +app=app" k get deploy app -n dev -o wide
  expect "get_yaml_has_resource_version" "resourceVersion: \"[0-9]+\"" k get deploy app -n dev -o yaml
  expect "get_pods_columns" "NAME +READY +STATUS +RESTARTS +AGE" k get pods -n dev
  expect "get_pods_wide_columns" "IP +NODE +NOMINATED NODE +READINESS GATES" k get pods -n dev -o wide
  expect_eq "get_label_selector" "app" k get deploy -n dev -l tier=fe -o jsonpath='{.items[*].metadata.name}'
  expect_eq "get_label_selector_set_based" "web" k get deploy -n dev -l 'app in (web,x)' -o jsonpath='{.items[*].metadata.name}'
  expect_eq "get_field_selector" "dev" k get ns --field-selector metadata.name=dev -o jsonpath='{.items[*].metadata.name}'
  expect_fail "get_unsupported_field_selector_rejected" "field label not supported" k get pods -n dev --field-selector spec.bogus=x
  expect "get_all_namespaces_shows_namespace_column" "NAMESPACE +NAME" k get deploy -A
  expect "get_show_labels" "color=blue" k get deploy app -n dev --show-labels
  expect "get_all_category" "deployment.apps/web" k get all -n dev
  expect "describe_deployment" "Replicas: +6 desired" k describe deploy app -n dev
  expect "get_events_empty_ok" "No resources found|LAST SEEN" k get events -n dev
  k create -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Event
metadata: {name: ev1, namespace: dev}
involvedObject: {kind: Deployment, name: app, namespace: dev}
reason: Tested
message: core event
type: Normal
YAML
  expect_eq "core_event_visible_as_events_k8s_io" "core event Deployment" k get events.v1.events.k8s.io ev1 -n dev -o jsonpath='{.note} {.regarding.kind}'
  k create -f - >/dev/null <<'YAML'
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: ev2, namespace: dev}
regarding: {kind: Pod, name: p1, namespace: dev}
reason: Tested
note: new-style event
type: Normal
eventTime: "2026-01-01T00:00:00.000000Z"
reportingController: e2e
reportingInstance: e2e-1
action: Testing
YAML
  expect_eq "events_k8s_io_event_visible_as_core" "new-style event Pod" k get events ev2 -n dev -o jsonpath='{.message} {.involvedObject.kind}'
  expect "get_sort_by_uses_objects" "app" k get deploy -n dev --sort-by=.metadata.name
  expect_eq "list_chunking_limit_continue_sees_all" "$(k get cm -A -o name --chunk-size=0 | sort | tr '\n' ' ')" bash -c "kubectl get cm -A --chunk-size=1 -o name | sort | tr '\n' ' '"
  expect "list_limit_returns_continue_token" '"continue":"[A-Za-z0-9_-]+"' k get --raw '/api/v1/configmaps?limit=1'
}

step_watch() {
  (timeout 6 kubectl get cm -n dev -w >"$WORK/watch.out" 2>&1 || true) &
  local pid=$!
  sleep 2
  k patch cm cm1 -n dev --type merge -p '{"data":{"x":"y"}}' >/dev/null
  k create cm watched -n dev --from-literal=q=1 >/dev/null
  wait "$pid" || true
  expect "get_watch_receives_update" "cm1 +2 " cat "$WORK/watch.out"
  expect "get_watch_receives_create" "watched +1 " cat "$WORK/watch.out"
  expect "wait_for_jsonpath" "condition met" k wait --for=jsonpath='{.data.q}'=1 cm/watched -n dev --timeout=10s
}

step_delete() {
  k create cm del1 -n dev --from-literal=a=1 >/dev/null
  k create cm del2 -n dev --from-literal=a=1 >/dev/null
  k label cm del1 del2 -n dev group=gone >/dev/null
  expect "delete_single" "configmap \"cm1\" deleted" k delete cm cm1 -n dev
  expect_fail "deleted_is_gone" "NotFound" k get cm cm1 -n dev
  expect "delete_by_label" "configmap \"del2\" deleted" k delete cm -n dev -l group=gone
  expect_eq "delete_by_label_left_others" "" bash -c "kubectl get cm -n dev -l group=gone -o name"
  expect "delete_all" "deleted" k delete cm --all -n dev
  # the root CA publisher re-creates kube-root-ca.crt at once, as upstream
  expect_eq "delete_all_removed_all_but_root_ca" "0" bash -c "kubectl get cm -n dev -o name | grep -vc '^configmap/kube-root-ca.crt$' || true"
  expect "delete_pod_without_node_is_immediate" "pod \"p1\" deleted" k delete pod p1 -n dev --wait=true
}

step_errors() {
  expect_fail "error_not_found" 'Error from server \(NotFound\): deployments.apps "nope" not found' k get deploy nope -n dev
  expect_fail "error_already_exists" 'Error from server \(AlreadyExists\): namespaces "dev" already exists' k create ns dev
  k create cm conf -n dev --from-literal=a=1 >/dev/null
  k get cm conf -n dev -o json >"$WORK/conf.json"
  k patch cm conf -n dev --type merge -p '{"data":{"a":"2"}}' >/dev/null
  expect_fail "error_conflict_on_stale_replace" 'Error from server \(Conflict\).*the object has been modified' k replace -f "$WORK/conf.json"
  expect_fail "error_invalid_replicas_names_field" 'is invalid: spec.replicas: Invalid value: -1' k patch deploy app -n dev --type merge -p '{"spec":{"replicas":-1}}'
  expect_fail "error_invalid_name" 'Invalid value: "Bad_Name"' k create cm Bad_Name -n dev
  cat >"$WORK/bad.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: bad, namespace: dev}
data: {a: b}
bogus: 1
YAML
  expect_fail "error_unknown_field_rejected_by_apply" 'unknown field "bogus"' k apply -f "$WORK/bad.yaml"
  expect_fail "error_unknown_field_rejected_by_create" 'unknown field "bogus"' k create -f "$WORK/bad.yaml"
  expect_fail "error_missing_namespace" 'namespaces "ghost" not found' k create cm x -n ghost
}

step_rbac() {
  local tls=$WORK/data/server/tls bob=$WORK/bob
  mkdir -p "$bob"
  openssl ecparam -name prime256v1 -genkey -noout -out "$bob/key.pem" 2>/dev/null
  openssl req -new -key "$bob/key.pem" -subj "/CN=bob/O=devs" -out "$bob/csr.pem" 2>/dev/null
  openssl x509 -req -in "$bob/csr.pem" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 1 \
    -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n') -out "$bob/cert.pem" 2>/dev/null
  cp "$KUBECONFIG" "$bob/kubeconfig"
  KUBECONFIG=$bob/kubeconfig kubectl config set-credentials bob --client-certificate="$bob/cert.pem" --client-key="$bob/key.pem" --embed-certs >/dev/null
  KUBECONFIG=$bob/kubeconfig kubectl config set-context default --user=bob >/dev/null
  expect "auth_can_i_admin_yes" "^yes" k auth can-i create deployments -n dev
  expect_fail "auth_can_i_bob_no" "^no" env KUBECONFIG="$bob/kubeconfig" kubectl auth can-i list pods -n dev
  expect_fail "rbac_forbidden_message" 'pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "dev"' env KUBECONFIG="$bob/kubeconfig" kubectl get pods -n dev
  expect "rolebinding_to_view" "created" k create rolebinding bob-view --clusterrole=view --user=bob -n dev
  expect "rbac_view_allows_list" "No resources found|NAME" env KUBECONFIG="$bob/kubeconfig" kubectl get pods -n dev
  expect_fail "rbac_view_denies_create" "forbidden" env KUBECONFIG="$bob/kubeconfig" kubectl create cm bobcm -n dev
  expect_fail "rbac_view_denies_secrets" "forbidden" env KUBECONFIG="$bob/kubeconfig" kubectl get secrets -n dev
  expect_fail "rbac_scope_is_namespace" "forbidden" env KUBECONFIG="$bob/kubeconfig" kubectl get pods -n default
  expect "auth_can_i_list_rules" "pods" env KUBECONFIG="$bob/kubeconfig" kubectl auth can-i --list -n dev
}

step_policy() {
  k create ns policy >/dev/null
  expect "quota_create" "created" k create quota q1 -n policy --hard=pods=1,configmaps=2,requests.cpu=1
  expect_fail "quota_requires_constrained_requests" 'must specify requests.cpu' k run nocpu -n policy --image=busybox --restart=Never
  local cpu='{"spec":{"containers":[{"name":"c","image":"busybox","resources":{"requests":{"cpu":"500m"}}}]}}'
  expect "quota_allows_within_hard" "pod/p1 created" k run p1 -n policy --image=busybox --restart=Never --overrides="$cpu"
  expect_fail "quota_rejects_over_hard" 'exceeded quota: q1, requested: pods=1, used: pods=1, limited: pods=1' k run p2 -n policy --image=busybox --restart=Never --overrides="$cpu"
  k delete quota q1 -n policy >/dev/null
  cat >"$WORK/lr.yaml" <<'YAML'
apiVersion: v1
kind: LimitRange
metadata: {name: lr, namespace: policy}
spec:
  limits:
  - type: Container
    default: {cpu: 300m, memory: 64Mi}
    defaultRequest: {cpu: 100m}
    max: {cpu: "1"}
YAML
  k apply -f "$WORK/lr.yaml" >/dev/null
  k run p3 -n policy --image=busybox --restart=Never >/dev/null
  expect_eq "limitrange_defaults_applied" "300m 100m Burstable" k get pod p3 -n policy -o jsonpath='{.spec.containers[0].resources.limits.cpu} {.spec.containers[0].resources.requests.cpu} {.status.qosClass}'
  expect_fail "limitrange_max_enforced" 'maximum cpu usage per Container is 1, but limit is 2' k run p4 -n policy --image=busybox --restart=Never --overrides='{"spec":{"containers":[{"name":"c","image":"busybox","resources":{"limits":{"cpu":"2"}}}]}}'
  k create sa robot -n policy >/dev/null
  local token
  token=$(k create token robot -n policy)
  expect_eq "serviceaccount_token_authenticates" "403" curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "https://127.0.0.1:$PORT/api/v1/namespaces/policy/pods"
  expect_eq "bad_token_is_401" "401" curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${token}x" "https://127.0.0.1:$PORT/api/v1/namespaces/policy/pods"
  k create rolebinding robot-view -n policy --clusterrole=view --serviceaccount=policy:robot >/dev/null
  expect_eq "serviceaccount_token_rbac_allows" "200" curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "https://127.0.0.1:$PORT/api/v1/namespaces/policy/pods"
  expect "impersonation_as_serviceaccount" "^yes" k auth can-i list pods -n policy --as=system:serviceaccount:policy:robot
  expect_fail "impersonation_as_serviceaccount_denied_create" "^no" k auth can-i create pods -n policy --as=system:serviceaccount:policy:robot
  expect "impersonation_whoami_groups" "devs" k auth whoami --as=bob --as-group=devs
}

step_crd() {
  cat >"$WORK/crd.yaml" <<'YAML'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string}
              replicas: {type: integer}
YAML
  cat >"$WORK/w1.yaml" <<'YAML'
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: dev}
spec: {size: 3, color: red}
YAML
  expect "crd_create" "created" k apply -f "$WORK/crd.yaml"
  expect "crd_established" "condition met" k wait --for=condition=Established crd/widgets.example.com --timeout=10s
  expect "crd_in_api_resources" "widgets +wd +example.com/v1 +true +Widget" k api-resources --api-group=example.com
  expect "cr_create" "widget.example.com/w1 created" k apply -f "$WORK/w1.yaml"
  expect "cr_get_printer_columns" "NAME +SIZE" k get widgets -n dev
  expect "cr_patch_merge" "patched" k patch wd w1 -n dev --type merge -p '{"spec":{"size":5}}'
  expect_eq "cr_patch_applied" "5 red" k get wd w1 -n dev -o jsonpath='{.spec.size} {.spec.color}'
  expect "cr_scale_subresource" "scaled" k scale wd w1 -n dev --replicas=4
  expect_eq "cr_scale_wrote_spec_path" "4" k get wd w1 -n dev -o jsonpath='{.spec.replicas}'
  expect_fail "cr_schema_validation_minimum" "should be greater than or equal to 1" k patch wd w1 -n dev --type merge -p '{"spec":{"size":0}}'
  expect "cr_explain_uses_schema" "size" k explain widgets.spec
  expect "cr_delete" "deleted" k delete wd w1 -n dev
  expect "crd_delete" "deleted" k delete crd widgets.example.com
  expect_fail "crd_gone_resource_gone" "the server doesn't have a resource type|NotFound" k get widgets -n dev
}

step_namespace_delete() {
  k create ns doomed >/dev/null
  k create cm c -n doomed --from-literal=a=1 >/dev/null
  expect "delete_namespace" "namespace \"doomed\" deleted" k delete ns doomed --timeout=30s
  expect_fail "deleted_namespace_gone" "NotFound" k get ns doomed
}

step_restart() {
  local before after
  before=$(k get deploy app -n dev -o jsonpath='{.metadata.resourceVersion} {.spec.replicas}')
  stop_server TERM
  start_server "$WORK/data" "$PORT"
  after=$(k get deploy app -n dev -o jsonpath='{.metadata.resourceVersion} {.spec.replicas}')
  if [ "$before" = "$after" ]; then ok "restart_keeps_objects_and_versions"; else not_ok "restart_keeps_objects_and_versions" "before [$before] after [$after]"; fi
  expect "restart_keeps_namespaces" "dev +Active" k get ns dev
}

# Writes ConfigMaps from 4 parallel curl loops, records each acknowledged name, kills the server
# with SIGKILL mid-burst, restarts it, and checks every acknowledged write survived.
step_kill9() {
  local dir=$WORK/kill9 url="https://127.0.0.1:$PORT/api/v1/namespaces/default/configmaps"
  mkdir -p "$dir"
  kubectl config view --raw -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$dir/cert.pem"
  kubectl config view --raw -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$dir/key.pem"
  for w in 1 2 3 4; do
    (
      for i in $(seq 1 100000); do
        name="burst-$w-$i"
        code=$(curl -sk --cert "$dir/cert.pem" --key "$dir/key.pem" -o /dev/null -w '%{http_code}' \
          -H 'Content-Type: application/json' -X POST "$url" \
          -d "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"$name\"},\"data\":{\"i\":\"$i\"}}" || true)
        if [ "$code" = "201" ]; then echo "$name" >>"$dir/acked-$w"; else break; fi
      done
    ) &
  done
  sleep 3
  stop_server KILL
  wait 2>/dev/null || true
  cat "$dir"/acked-* 2>/dev/null | sort >"$dir/acked"
  start_server "$WORK/data" "$PORT"
  k get cm -n default -o name | sed 's|configmap/||' | sort >"$dir/present"
  local acked missing
  acked=$(wc -l <"$dir/acked")
  missing=$(comm -23 "$dir/acked" "$dir/present" | wc -l)
  if [ "$acked" -gt 20 ] && [ "$missing" -eq 0 ]; then ok "kill9_loses_no_acknowledged_write ($acked acked)"; else not_ok "kill9_loses_no_acknowledged_write" "acked=$acked missing=$missing"; fi
}

step_start
step_discovery
step_create
step_apply
step_patch
step_get
step_apiservices
step_watch
step_delete
step_errors
step_rbac
step_policy
step_crd
step_namespace_delete
step_restart
step_kill9
summary
