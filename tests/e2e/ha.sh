#!/usr/bin/env bash
# End-to-end: high availability. A 3-member etcd (Debian's etcd-server) in its own network
# namespace, three `mini server`s in three more (the second and third join the first with
# --server/--token: CA, keys and keyring come from the datastore), two `mini agent`s with real
# containerd that know only the first server. Checks: the servers share one CA with their own
# serving certificates, the `kubernetes` Endpoints list all three, a wrong token and a join
# without a datastore are refused with one line; a Deployment rollout is under way when the
# server holding the kube-controller-manager Lease (the agents' --server too) is killed -9:
# another server takes the Lease, the rollout completes, the agents' pods keep running, a new pod
# starts, the agents' node Leases keep being renewed through another server and the dead server
# leaves the Endpoints; the killed server restarts and rejoins. Then the day-2 rotations on one
# server reach the others online: `mini secrets-encrypt rotate-keys` on A, and a Secret written
# through A right away reads through B and C with no wait (the old key retired, every server's
# keyring the same); `mini certificate rotate-ca` on a server other than the one an agent is
# attached to (B): B signs with the new CA and trusts both, the agent's certificate is re-issued
# by the new CA through B, the node stays Ready and a new pod starts. Last, B is cut from the
# etcd (its packets to the etcd machine dropped): its /readyz answers 500, the agent's balancer
# leaves it for another server and the node's Lease is renewed; once the cut heals B is ready
# again. Then the embedded registry through any server: an image pushed through the first server
# is on the other servers' disks within seconds (no one asking), its blobs read through each of
# them match their digests, a layer removed from one server's disk is fetched back from a peer,
# an unknown blob is BLOB_UNKNOWN; the first server (the agents' --server, whose address the image
# names) is killed and a pod with the image still starts on an agent. Last, a LoadTest runs on an
# agent: its live results read through the server not running the controller, the finished
# results are copied to it and stay readable (JSON, HTML) after the server that ran the run is
# killed -9, and a second run going on then fails with the reason (another server took the
# controllers) and leaves no generator; deleting the LoadTest removes the copy. Needs root and
# /usr/bin/etcd.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
# shellcheck source=tests/e2e/etcd_lib.sh
. "$HERE/etcd_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-ha.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
AGENTS=(a1 a2)
# server I (1..3): its namespace and address; server 1 is nodes_lib's server machine
SERVER_NSS=("" "$SERVER_NS" "$E2E_NS-s2" "$E2E_NS-s3")
SERVER_IPS=("" "$SERVER_IP" "10.77.0.11" "10.77.0.12")
SERVER_PIDS=("" "" "" "")
ETCD_MACHINE_IP=10.77.0.5

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-ha-logs}"
  local pid
  for pid in "${SERVER_PIDS[@]}"; do
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  etcd_stop
  cleanup_nodes "${AGENTS[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the HA suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi
if [ ! -x /usr/bin/etcd ]; then
  echo "skipped: /usr/bin/etcd is missing (apt-get install etcd-server)"
  echo "0 passed, 0 failed"
  exit 0
fi

# ks I ARGS...: kubectl as server I's admin, from its namespace.
ks() {
  local i=$1
  shift
  in_ns "${SERVER_NSS[$i]}" kubectl --kubeconfig "$WORK/s$i/server/admin.kubeconfig" --request-timeout=20s "$@"
}
# LIVE: a server that is up, for kubectl.
LIVE=1
k() { ks "$LIVE" "$@"; }

# start_ha_server I EXTRA_ARGS...: server I in its namespace on :6443 (no agent), on the etcd.
start_ha_server() {
  local i=$1 dir=$WORK/s$1
  shift
  mkdir -p "$dir"
  nsenter --net="$(ns_path "${SERVER_NSS[$i]}")" "$MINI_BIN" server --data-dir "$dir" \
    --bind-address 0.0.0.0 --https-listen-port "$API_PORT" --advertise-address "${SERVER_IPS[$i]}" \
    --disable-agent --datastore-endpoint "$ETCD_ENDPOINTS" "$@" >>"$dir/server.log" 2>&1 &
  SERVER_PIDS[$i]=$!
  for _ in $(seq 1 300); do
    if in_ns "${SERVER_NSS[$i]}" curl -sk "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null | grep -q ok; then
      return 0
    fi
    if ! kill -0 "${SERVER_PIDS[$i]}" 2>/dev/null; then echo "server $i exited:"; tail -20 "$dir/server.log"; return 1; fi
    sleep 0.2
  done
  echo "server $i did not become ready"; tail -20 "$dir/server.log"; return 1
}

# join_args: what the second and third server are started with.
join_args() { echo "--server https://$SERVER_IP:$API_PORT --token $JOIN_TOKEN"; }

# endpoint_ips: the kubernetes Endpoints' addresses, sorted, space-separated.
endpoint_ips() {
  k get endpoints kubernetes -n default -o jsonpath='{range .subsets[*].addresses[*]}{.ip}{"\n"}{end}' | sort | xargs
}

# server_of_identity IDENTITY: the number of the server whose leader-election identity it is.
server_of_identity() {
  local i id
  for i in 1 2 3; do
    id=$(cat "$WORK/s$i/server/server-id" 2>/dev/null || true)
    if [ -n "$id" ] && [[ "$1" == *"_$id" ]]; then echo "$i"; return 0; fi
  done
  return 1
}

lease_holder() { k get lease "$1" -n kube-system -o jsonpath='{.spec.holderIdentity}'; }

step_servers() {
  setup_network s2 s3 "${AGENTS[@]}"
  add_machine "$E2E_NS-etcd" "$ETCD_MACHINE_IP"
  ETCD_NS=$E2E_NS-etcd ETCD_HOST=$ETCD_MACHINE_IP
  etcd_start "$WORK/etcd"
  if start_ha_server 1; then ok "first_server_starts_on_etcd"; else not_ok "first_server_starts_on_etcd"; exit 1; fi
  JOIN_TOKEN=$(cat "$WORK/s1/server/node-token")
  # the first server takes the controller-manager and scheduler Leases before the others exist
  wait_for "first_server_holds_controller_lease" 30 bash -c "[ -n \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --kubeconfig $WORK/s1/server/admin.kubeconfig get lease kube-controller-manager -n kube-system -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)\" ]" || true
  # shellcheck disable=SC2046
  if start_ha_server 2 $(join_args) && start_ha_server 3 $(join_args); then
    ok "second_and_third_server_join"
  else
    not_ok "second_and_third_server_join"; exit 1
  fi
  local ca1 ca2 ca3
  ca1=$(sha256sum <"$WORK/s1/server/tls/ca.crt") ca2=$(sha256sum <"$WORK/s2/server/tls/ca.crt") ca3=$(sha256sum <"$WORK/s3/server/tls/ca.crt")
  if [ "$ca1" = "$ca2" ] && [ "$ca1" = "$ca3" ]; then ok "servers_share_one_ca"; else not_ok "servers_share_one_ca"; fi
  expect_eq "servers_share_service_account_key" "1" bash -c "sha256sum $WORK/s{1,2,3}/server/tls/service-account.key | awk '{print \$1}' | sort -u | wc -l"
  expect_eq "servers_share_encryption_keyring" "1" bash -c "sha256sum $WORK/s{1,2,3}/server/cred/encryption-config.json | awk '{print \$1}' | sort -u | wc -l"
  expect "joined_server_serving_cert_names_its_address" "IP Address:10.77.0.11" \
    openssl x509 -in "$WORK/s2/server/tls/serving.crt" -noout -ext subjectAltName
  expect "joined_server_serving_cert_verifies_with_shared_ca" "OK" \
    openssl verify -CAfile "$WORK/s1/server/tls/ca.crt" "$WORK/s3/server/tls/serving.crt"
  # the bootstrap record in etcd's raw bytes (v3 HTTP gateway): sealed, no key in the clear
  expect_eq "datastore_holds_bootstrap_sealed_not_plain" "sealed" bash -c \
    "nsenter --net=$(ns_path "$E2E_NS-etcd") curl -s -X POST http://$ETCD_MACHINE_IP:${ETCD_CLIENT_PORTS[0]}/v3/kv/range -d '{\"key\":\"$(printf /mini/bootstrap/data | base64)\"}' | python3 -c 'import json,sys,base64; v=base64.b64decode(json.load(sys.stdin)[\"kvs\"][0][\"value\"]).decode(); print(\"plain\" if \"PRIVATE KEY\" in v else (\"sealed\" if \"ciphertext\" in v else \"other\"))'"
  # a Secret written through server 1 reads back through server 3 (one keyring)
  ks 1 create secret generic shared -n default --from-literal=k=sealed-value >/dev/null
  expect_eq "secret_written_on_one_server_reads_on_another" "sealed-value" bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[3]}") kubectl --kubeconfig $WORK/s3/server/admin.kubeconfig get secret shared -n default -o jsonpath='{.data.k}' | base64 -d"
  check_for "kubernetes_endpoints_list_three_servers" 30 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --kubeconfig $WORK/s1/server/admin.kubeconfig get endpoints kubernetes -n default -o jsonpath='{range .subsets[*].addresses[*]}{.ip}{\"\\n\"}{end}' | sort | xargs)\" = '10.77.0.10 10.77.0.11 10.77.0.12' ]"
}

step_refusals() {
  local out rc
  # a fourth server with a wrong token, from server 3's machine on another port
  out=$(timeout 60 nsenter --net="$(ns_path "${SERVER_NSS[3]}")" "$MINI_BIN" server --data-dir "$WORK/bad" \
    --bind-address 127.0.0.1 --https-listen-port 7443 --disable-agent --datastore-endpoint "$ETCD_ENDPOINTS" \
    --server "https://$SERVER_IP:$API_PORT" --token wrong-secret 2>&1) && rc=0 || rc=$?
  if [ "$rc" -ne 0 ] && grep -q "token does not open the cluster's bootstrap data" <<<"$out" && [ "$(grep -v "^mini check: warning" <<<"$out" | grep -c .)" -le 2 ]; then
    ok "join_with_wrong_token_is_refused_with_one_line"
  else
    not_ok "join_with_wrong_token_is_refused_with_one_line" "rc=$rc: $out"
  fi
  expect_fail "join_without_datastore_is_refused" "give --datastore-endpoint" \
    timeout 60 "$MINI_BIN" server --data-dir "$WORK/bad-sled" --bind-address 127.0.0.1 --https-listen-port 0 \
    --disable-agent --server "https://$SERVER_IP:$API_PORT" --token "$JOIN_TOKEN"
}

step_agents() {
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  echo "# no upstream nameservers in the e2e network" >"$WORK/resolv.conf"
  local i=3 n
  for n in "${AGENTS[@]}"; do
    mkdir -p "$WORK/$n/agent/images"
    cp "$WORK/busybox.tar" "$WORK/$n/agent/images/"
    start_agent "$n" "$(node_ip $i)" "$WORK/$n"
    i=$((i + 1))
  done
  wait_for "agents_join_nodes_ready" 150 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --kubeconfig $WORK/s1/server/admin.kubeconfig get nodes --no-headers 2>/dev/null | grep -c ' Ready ') -eq ${#AGENTS[@]} ]" || {
    tail -30 "$WORK/a1/agent.log"
    exit 1
  }
  check_for "agents_learn_every_server" 40 bash -c \
    "grep -q '10.77.0.11:6443' $WORK/a1/agent.log && grep -q '10.77.0.12:6443' $WORK/a2/agent.log"
}

step_failover() {
  k create deployment web --image="$IMAGE" --replicas=4 -- sh -c 'sleep 100000' >/dev/null
  wait_for "deployment_available" 120 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --kubeconfig $WORK/s1/server/admin.kubeconfig get deploy web -o jsonpath='{.status.availableReplicas}')\" = 4 ]" || return 1
  # long-running pods on the agents: their names and container ids must survive the kill
  k run keeper --image="$IMAGE" --restart=Never -- sh -c 'sleep 100000' >/dev/null
  wait_for "keeper_pod_running" 60 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl --kubeconfig $WORK/s1/server/admin.kubeconfig get pod keeper -o jsonpath='{.status.phase}' | grep -qx Running" || return 1
  local keeper_cid holder victim node
  keeper_cid=$(k get pod keeper -o jsonpath='{.status.containerStatuses[0].containerID}')
  holder=$(lease_holder kube-controller-manager)
  victim=$(server_of_identity "$holder") || { not_ok "controller_lease_holder_is_a_server" "$holder"; return 1; }
  ok "controller_lease_holder_is_a_server"
  # a rollout that needs the controllers: slow enough to be under way at the kill
  k patch deployment web -p '{"spec":{"minReadySeconds":3,"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}' >/dev/null
  k set env deployment/web ROUND=2 >/dev/null
  sleep 2
  local updated
  updated=$(k get pods -l app=web -o jsonpath='{range .items[*]}{.spec.containers[0].env[0].value}{"\n"}{end}' | grep -c '^2$' || true)
  if [ "$updated" -lt 4 ]; then ok "rollout_under_way_at_kill"; else not_ok "rollout_under_way_at_kill" "all $updated pods already new"; fi
  LIVE=$((victim % 3 + 1))
  declare -A before_renew
  for node in "${AGENTS[@]}"; do
    before_renew[$node]=$(k get lease "$node" -n kube-node-lease -o jsonpath='{.spec.renewTime}')
  done
  kill -9 "${SERVER_PIDS[$victim]}"
  wait "${SERVER_PIDS[$victim]}" 2>/dev/null || true
  SERVER_PIDS[$victim]=""
  echo "# killed server $victim (held kube-controller-manager); kubectl now through server $LIVE"
  local killed_at=$SECONDS
  wait_for "another_server_takes_controller_lease_within_15s" 15 bash -c \
    "h=\$(nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get lease kube-controller-manager -n kube-system -o jsonpath='{.spec.holderIdentity}'); [ -n \"\$h\" ] && [ \"\$h\" != '$holder' ]" || true
  echo "# lease taken over after $((SECONDS - killed_at)) s"
  expect "rollout_completes_after_leader_kill" "successfully rolled out" k rollout status deployment/web --timeout=120s
  expect_eq "rolled_out_pods_carry_new_env" "4" bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get pods -l app=web -o jsonpath='{range .items[*]}{.spec.containers[0].env[0].value}{\"\\n\"}{end}' | grep -c '^2\$'"
  expect_eq "agent_pod_keeps_running_container" "$keeper_cid Running" \
    k get pod keeper -o jsonpath='{.status.containerStatuses[0].containerID} {.status.phase}'
  k run newcomer --image="$IMAGE" --restart=Never -- sh -c 'sleep 100000' >/dev/null
  check_for "new_pod_starts_while_server_down" 90 bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get pod newcomer -o jsonpath='{.status.phase}' | grep -qx Running"
  for node in "${AGENTS[@]}"; do
    check_for "node_${node}_lease_renewed_through_another_server" 30 bash -c \
      "[ \"\$(nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get lease $node -n kube-node-lease -o jsonpath='{.spec.renewTime}')\" != '${before_renew[$node]}' ]"
  done
  expect_eq "nodes_stay_ready" "2" bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get nodes --no-headers | grep -c ' Ready '"
  check_for "dead_server_leaves_kubernetes_endpoints" 40 bash -c \
    "! nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get endpoints kubernetes -n default -o jsonpath='{.subsets[*].addresses[*].ip}' | grep -qw '${SERVER_IPS[$victim]}'"
  VICTIM=$victim
}

step_rejoin() {
  local args=()
  # shellcheck disable=SC2207
  if [ "$VICTIM" -ne 1 ]; then args=($(join_args)); fi
  if start_ha_server "$VICTIM" "${args[@]}"; then ok "killed_server_restarts"; else not_ok "killed_server_restarts"; return 1; fi
  check_for "restarted_server_back_in_kubernetes_endpoints" 30 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get endpoints kubernetes -n default -o jsonpath='{range .subsets[*].addresses[*]}{.ip}{\"\\n\"}{end}' 2>/dev/null | sort | xargs)\" = '10.77.0.10 10.77.0.11 10.77.0.12' ]"
  expect "restarted_server_serves_the_cluster" "keeper +1/1 +Running" ks "$VICTIM" get pod keeper
}

# others_than I: the two other servers.
others_than() { echo $(($1 % 3 + 1)) $((($1 + 1) % 3 + 1)); }

step_shared_keyring() {
  local a=$LIVE b c old new out
  read -r b c <<<"$(others_than "$a")"
  old=$(jq -r '.resources[0].providers[0].aesgcm.keys[0].name' "$WORK/s$a/server/cred/encryption-config.json")
  # the rotation's pass runs in the background; the writes below race it
  in_ns "${SERVER_NSS[$a]}" "$MINI_BIN" secrets-encrypt rotate-keys --data-dir "$WORK/s$a" >"$WORK/rotate-keys.out" 2>&1 &
  local rotate_pid=$!
  for _ in $(seq 1 100); do
    new=$(jq -r '.resources[0].providers[0].aesgcm.keys[0].name' "$WORK/s$a/server/cred/encryption-config.json")
    [ "$new" != "$old" ] && break
    sleep 0.1
  done
  ks "$a" create secret generic after-rotate -n default --from-literal=k=rotated-value >/dev/null
  expect_eq "secret_written_after_rotate_on_a_reads_on_b_at_once" "rotated-value" bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$b]}") kubectl --kubeconfig $WORK/s$b/server/admin.kubeconfig get secret after-rotate -n default -o jsonpath='{.data.k}' | base64 -d"
  expect_eq "secret_written_after_rotate_on_a_reads_on_c_at_once" "rotated-value" bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$c]}") kubectl --kubeconfig $WORK/s$c/server/admin.kubeconfig get secret after-rotate -n default -o jsonpath='{.data.k}' | base64 -d"
  # a write through B right after: sealed with a key every server knows
  ks "$b" create secret generic from-b -n default --from-literal=k=b-value >/dev/null
  expect_eq "secret_written_on_b_reads_on_a" "b-value" bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$a]}") kubectl --kubeconfig $WORK/s$a/server/admin.kubeconfig get secret from-b -n default -o jsonpath='{.data.k}' | base64 -d"
  wait "$rotate_pid" && out=ok || out="rc=$?"
  if [ "$out" = ok ] && grep -q "retired aesgcm:$old\$" "$WORK/rotate-keys.out"; then
    ok "rotate_keys_on_a_retires_old_key_cluster_wide"
  else
    not_ok "rotate_keys_on_a_retires_old_key_cluster_wide" "$out: $(cat "$WORK/rotate-keys.out")"
  fi
  check_for "every_server_holds_the_rotated_keyring" 20 bash -c \
    "[ \$(sha256sum $WORK/s{1,2,3}/server/cred/encryption-config.json | awk '{print \$1}' | sort -u | wc -l) -eq 1 ] && [ \$(jq '.resources[0].providers[0].aesgcm.keys | length' $WORK/s$c/server/cred/encryption-config.json) -eq 1 ]"
  expect_eq "status_on_c_every_secret_on_the_new_key" "0" bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$c]}") '$MINI_BIN' secrets-encrypt status -o json --data-dir $WORK/s$c | jq '[.resources[0].keys[] | select(.write | not) | .values] | add // 0'"
  expect_eq "old_secret_reads_on_c_after_retirement" "sealed-value" bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$c]}") kubectl --kubeconfig $WORK/s$c/server/admin.kubeconfig get secret shared -n default -o jsonpath='{.data.k}' | base64 -d"
}

# issuer_cn FILE: the CN of the issuer of FILE's first certificate.
issuer_cn() { openssl x509 -in "$1" -noout -issuer | sed 's/.*CN *= *//'; }
subject_cn() { openssl x509 -in "$1" -noout -subject | sed 's/.*CN *= *//'; }

step_shared_ca() {
  local b a old_ca new_ca before
  b=$(attached_server a1) || { not_ok "agent_a1_attached_to_a_server"; return 1; }
  a=$((b % 3 + 1))
  echo "# agent a1 is attached to server $b; rotating the CA on server $a"
  old_ca=$(subject_cn "$WORK/s$b/server/tls/ca.crt")
  before=$(openssl x509 -in "$WORK/a1/agent/tls/client.crt" -noout -serial)
  expect "rotate_ca_on_a" "previous CA stays trusted until" \
    in_ns "${SERVER_NSS[$a]}" "$MINI_BIN" certificate rotate-ca --overlap 600s --data-dir "$WORK/s$a"
  new_ca=$(subject_cn "$WORK/s$a/server/tls/ca.crt")
  if [ "$new_ca" != "$old_ca" ]; then ok "new_ca_on_a"; else not_ok "new_ca_on_a" "$new_ca"; fi
  check_for "server_b_takes_the_new_ca" 20 bash -c "[ \"\$(openssl x509 -in $WORK/s$b/server/tls/ca.crt -noout -subject | sed 's/.*CN *= *//')\" = '$new_ca' ]"
  check_for "server_b_cacerts_has_both_cas" 20 bash -c \
    "[ \$(nsenter --net=$(ns_path "${SERVER_NSS[$b]}") curl -sk https://127.0.0.1:$API_PORT/cacerts | grep -c 'BEGIN CERTIFICATE') -eq 2 ]"
  check_for "server_b_serving_cert_from_new_ca" 20 bash -c "[ \"\$(openssl x509 -in $WORK/s$b/server/tls/serving.crt -noout -issuer | sed 's/.*CN *= *//')\" = '$new_ca' ]"
  check_for "agent_on_b_renewed_by_new_ca" 90 bash -c \
    "[ \"\$(openssl x509 -in $WORK/a1/agent/tls/client.crt -noout -serial)\" != '$before' ] && [ \"\$(openssl x509 -in $WORK/a1/agent/tls/client.crt -noout -issuer | sed 's/.*CN *= *//')\" = '$new_ca' ]"
  check_for "agent_on_b_trusts_both_cas" 60 bash -c "[ \$(grep -c 'BEGIN CERTIFICATE' $WORK/a1/agent/tls/ca.crt) -eq 2 ]"
  local renewed
  renewed=$(ks "$b" get lease a1 -n kube-node-lease -o jsonpath='{.spec.renewTime}')
  check_for "agent_on_b_lease_renewed_after_ca_rotation" 40 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "${SERVER_NSS[$b]}") kubectl --kubeconfig $WORK/s$b/server/admin.kubeconfig get lease a1 -n kube-node-lease -o jsonpath='{.spec.renewTime}')\" != '$renewed' ]"
  expect_eq "nodes_stay_ready_after_ca_rotation" "2" bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$b]}") kubectl --kubeconfig $WORK/s$b/server/admin.kubeconfig get nodes --no-headers | grep -c ' Ready '"
  ks "$b" run after-ca --image="$IMAGE" --restart=Never --overrides='{"spec":{"nodeName":"a1"}}' -- sh -c 'sleep 100000' >/dev/null
  check_for "new_pod_on_agent_of_b_starts_after_ca_rotation" 90 bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$b]}") kubectl --kubeconfig $WORK/s$b/server/admin.kubeconfig get pod after-ca -o jsonpath='{.status.phase}' | grep -qx Running"
  expect "kubectl_logs_through_agent_of_b_after_ca_rotation" "" ks "$b" logs after-ca
}

# attached_server AGENT: the number of the server the agent's balancer uses now.
attached_server() {
  case "$(grep 'now uses this server' "$WORK/$1/agent.log" | tail -1 | grep -oE '10\.77\.0\.1[0-2]' | head -1)" in
    10.77.0.10) echo 1 ;; 10.77.0.11) echo 2 ;; 10.77.0.12) echo 3 ;; *) return 1 ;;
  esac
}

step_datastore_cut() {
  local b lines renewed
  b=$(attached_server a1) || { not_ok "agent_a1_attached_to_a_server"; return 1; }
  lines=$(wc -l <"$WORK/a1/agent.log")
  echo "# cutting server $b (agent a1's) from the etcd"
  in_ns "${SERVER_NSS[$b]}" nft add table ip "$E2E_NS-cut"
  in_ns "${SERVER_NSS[$b]}" nft add chain ip "$E2E_NS-cut" out '{ type filter hook output priority 0; }'
  in_ns "${SERVER_NSS[$b]}" nft add rule ip "$E2E_NS-cut" out ip daddr "$ETCD_MACHINE_IP" drop
  check_for "readyz_of_server_cut_from_etcd_is_500" 30 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "${SERVER_NSS[$b]}") curl -sk -o /dev/null -w '%{http_code}' --max-time 10 https://127.0.0.1:$API_PORT/readyz)\" = 500 ]"
  check_for "agent_balancer_leaves_server_without_datastore" 60 bash -c \
    "tail -n +$((lines + 1)) $WORK/a1/agent.log | grep 'now uses this server' | grep -qvE '${SERVER_IPS[$b]}:'"
  LIVE=$(attached_server a1 || echo $((b % 3 + 1)))
  renewed=$(k get lease a1 -n kube-node-lease -o jsonpath='{.spec.renewTime}')
  check_for "node_lease_renewed_while_server_cut" 40 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get lease a1 -n kube-node-lease -o jsonpath='{.spec.renewTime}')\" != '$renewed' ]"
  in_ns "${SERVER_NSS[$b]}" nft delete table ip "$E2E_NS-cut"
  check_for "readyz_ok_once_the_cut_heals" 60 bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$b]}") curl -sk --max-time 10 https://127.0.0.1:$API_PORT/readyz | grep -qx ok"
}

# --- the embedded registry through any server: blobs copied between the servers ---
# admin_tls I DIR: server I's admin kubeconfig's CA bundle and client certificate, as files.
admin_tls() {
  local kc=$WORK/s$1/server/admin.kubeconfig
  mkdir -p "$2"
  kubectl config view --raw --kubeconfig "$kc" -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$2/ca.crt"
  kubectl config view --raw --kubeconfig "$kc" -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$2/client.crt"
  kubectl config view --raw --kubeconfig "$kc" -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$2/client.key"
}

# registry_get I PATH: GET PATH from server I's registry as its admin; the body on stdout.
registry_get() {
  local dir=$WORK/regrepl/tls-s$1
  admin_tls "$1" "$dir"
  in_ns "${SERVER_NSS[$1]}" curl -sf --max-time 60 --cacert "$dir/ca.crt" --cert "$dir/client.crt" --key "$dir/client.key" \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' \
    "https://127.0.0.1:$API_PORT$2"
}

# blob_file I DIGEST: where server I keeps the blob.
blob_file() { local hex=${2#sha256:}; echo "$WORK/s$1/server/registry/blobs/sha256/${hex:0:2}/$hex"; }

step_registry_replication() {
  local digests d i ok_all t0 waited layer kind
  mkdir -p "$WORK/regrepl"
  BUILD_IMAGE_VERSION=regrepl BUILD_IMAGE_RANDOM_MB=16 python3 "$HERE/build_image.py" "$WORK/regrepl.tar" "127.0.0.1:$API_PORT/default/regrepl:v1"
  expect "registry_push_through_server_1_lands" 'default/regrepl:v1' \
    in_ns "$SERVER_NS" "$MINI_BIN" images push --kubeconfig "$WORK/s1/server/admin.kubeconfig" "$WORK/regrepl.tar"
  t0=$(date +%s%N)
  # the manifest (an index's first child), its config and layers
  digests=$(registry_get 1 /v2/default/regrepl/manifests/v1 | python3 -c '
import json, sys, hashlib
raw = sys.stdin.buffer.read()
m = json.loads(raw)
print("sha256:" + hashlib.sha256(raw).hexdigest())
print(m["config"]["digest"])
for l in m["layers"]:
    print(l["digest"])') || { not_ok "registry_manifest_reads_through_server_1"; return 1; }
  layer=$(tail -1 <<<"$digests")
  # every server holds everything a push brought, without anyone asking for it
  ok_all=""
  for _ in $(seq 1 300); do
    ok_all=yes
    for d in $digests; do
      for i in 2 3; do [ -f "$(blob_file "$i" "$d")" ] || ok_all=""; done
    done
    [ -n "$ok_all" ] && break
    sleep 0.1
  done
  waited=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ -n "$ok_all" ]; then
    ok "registry_pushed_image_reaches_every_server_disk"
    echo "# the pushed image ($(wc -l <<<"$digests") blobs, 16 MiB layer) was on servers 2 and 3 ${waited} ms after the push"
  else
    not_ok "registry_pushed_image_reaches_every_server_disk" "after ${waited} ms: $(ls -R "$WORK/s2/server/registry/blobs" | tail -5)"
  fi
  for i in 2 3; do
    ok_all=yes
    kind=manifests
    for d in $digests; do
      if [ "sha256:$(registry_get "$i" "/v2/default/regrepl/$kind/$d" | sha256sum | cut -d' ' -f1)" != "$d" ]; then ok_all="no: $kind/$d"; fi
      kind=blobs
    done
    if [ "$ok_all" = yes ]; then ok "registry_image_pulled_through_server_${i}_matches_digests"; else not_ok "registry_image_pulled_through_server_${i}_matches_digests" "$ok_all"; fi
  done
  # a layer lost from server 2's disk: asked through server 2, it comes back from a peer
  rm -f "$(blob_file 2 "$layer")"
  expect_eq "registry_blob_lost_on_server_2_fetched_from_a_peer" "$layer" bash -c \
    "echo sha256:\$(nsenter --net=$(ns_path "${SERVER_NSS[2]}") curl -sf --max-time 60 --cacert $WORK/regrepl/tls-s2/ca.crt --cert $WORK/regrepl/tls-s2/client.crt --key $WORK/regrepl/tls-s2/client.key https://127.0.0.1:$API_PORT/v2/default/regrepl/blobs/$layer | sha256sum | cut -d' ' -f1)"
  if [ -f "$(blob_file 2 "$layer")" ]; then ok "registry_blob_fetched_from_peer_stored_again"; else not_ok "registry_blob_fetched_from_peer_stored_again"; fi
  expect "registry_unknown_blob_is_blob_unknown_on_every_server" 'BLOB_UNKNOWN' bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[3]}") curl -s --max-time 60 --cacert $WORK/regrepl/tls-s3/ca.crt --cert $WORK/regrepl/tls-s3/client.crt --key $WORK/regrepl/tls-s3/client.key https://127.0.0.1:$API_PORT/v2/default/regrepl/blobs/sha256:$(printf nothing | sha256sum | cut -d' ' -f1)"
  # the server that took the push goes; an agent (whose --server it was) pulls the image anyway
  if [ -n "${SERVER_PIDS[1]}" ]; then
    kill -9 "${SERVER_PIDS[1]}"
    wait "${SERVER_PIDS[1]}" 2>/dev/null || true
    SERVER_PIDS[1]=""
  fi
  LIVE=2
  echo "# killed server 1 (took the push); kubectl now through server $LIVE"
  k run regrepl --image="$SERVER_IP:$API_PORT/default/regrepl:v1" --restart=Never \
    --overrides='{"spec":{"nodeName":"a2","terminationGracePeriodSeconds":1}}' -- sh -c 'cat /etc/version; sleep 100000' >/dev/null
  check_for "registry_pod_with_image_pushed_through_dead_server_runs" 120 bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get pod regrepl -o jsonpath='{.status.phase}' | grep -qx Running"
  expect "registry_pod_runs_the_pushed_image_content" 'regrepl' k logs regrepl
}

# --- load test results through any server, and after the server that ran the run is gone ---
# lt_results I: the JSON results of the LoadTest ha-lt through server I (`since=0`: no histograms).
lt_results() {
  ks "$1" get --raw "/loadtest/v1/namespaces/default/loadtests/ha-lt/results?format=json&since=${2:-0}"
}
# lt_results_field I EXPR: a field of those results (a Python expression on `r`).
lt_results_field() { lt_results "$1" | python3 -c "import json,sys; r=json.load(sys.stdin); print($2)"; }
# controller_on_live_server: the kube-controller-manager Lease names a server that is up.
controller_on_live_server() {
  local i
  i=$(server_of_identity "$(lease_holder kube-controller-manager)") && [ -n "${SERVER_PIDS[$i]}" ]
}
# lt_phase_is I PHASE [NAME]: the phase and reason of LoadTest NAME (ha-lt) through server I
# are PHASE (`Failed ServerRestarted`: both).
lt_phase_is() {
  local got
  got=$(ks "$1" get loadtest "${3:-ha-lt}" -o jsonpath='{.status.phase} {.status.reason}')
  [ "$got" = "$2" ] || [ "${got% *}" = "$2" ]
}
# no_generator_pods I NAME: no generator pod of LoadTest NAME is left, through server I.
no_generator_pods() { [ -z "$(ks "$1" get pods -l "loadtest.mini.dev/name=$2" -o name)" ]; }

step_loadtest_results() {
  k create deployment ltweb --image="$IMAGE" -- sh -c 'mkdir -p /w && echo hello >/w/index.html && exec httpd -f -p 80 -h /w' >/dev/null
  k expose deployment ltweb --port 80 >/dev/null
  wait_for "loadtest_target_has_endpoints" 120 bash -c \
    "[ -n \"\$(nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get endpoints ltweb -o jsonpath='{.subsets[*].addresses[*].ip}')\" ]" || return 1
  local runner other i
  wait_for "loadtest_controller_on_a_live_server" 40 controller_on_live_server || return 1
  runner=$(server_of_identity "$(lease_holder kube-controller-manager)")
  for i in 1 2 3; do
    if [ "$i" != "$runner" ] && [ -n "${SERVER_PIDS[$i]}" ]; then other=$i; fi
  done
  echo "# server $runner runs the load test controller; results read through server $other"
  in_ns "${SERVER_NSS[$runner]}" "$MINI_BIN" loadtest run --kubeconfig "$WORK/s$runner/server/admin.kubeconfig" \
    --name ha-lt --target svc/ltweb/index.html --rate 20 --duration 20s --generators 1 --detach >/dev/null
  check_for "loadtest_runs_on_an_agent" 300 lt_phase_is "$other" Running
  # while it runs, only the server running it receives the reports; the other asks it
  check_for "loadtest_live_results_read_through_the_other_server" 20 bash -c \
    "[ \"\$(nsenter --net=$(ns_path "${SERVER_NSS[$other]}") kubectl --kubeconfig $WORK/s$other/server/admin.kubeconfig get --raw '/loadtest/v1/namespaces/default/loadtests/ha-lt/results?format=json&since=0' | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r[\"phase\"], r[\"summary\"][\"requests\"] > 0)')\" = 'Running True' ]"
  if [ -e "$WORK/s$other/server/loadtest/default/ha-lt.json" ]; then
    not_ok "loadtest_running_results_not_copied" "a copy of a run going on was stored"
  else
    ok "loadtest_running_results_not_copied"
  fi
  check_for "loadtest_succeeds" 120 lt_phase_is "$other" Succeeded
  check_for "loadtest_finished_results_copied_to_the_other_server" 20 \
    test -s "$WORK/s$other/server/loadtest/default/ha-lt.json"
  local requests
  requests=$(ks "$other" get loadtest ha-lt -o jsonpath='{.status.requests}')
  expect_eq "loadtest_results_through_the_other_server_match_the_status" "Succeeded $requests" \
    lt_results_field "$other" 'r["phase"], r["summary"]["requests"]'
  # a second run goes on when the server that runs it goes: another server takes the
  # controllers and fails it with the reason, deleting its generators
  in_ns "${SERVER_NSS[$runner]}" "$MINI_BIN" loadtest run --kubeconfig "$WORK/s$runner/server/admin.kubeconfig" \
    --name ha-lt2 --target svc/ltweb/index.html --rate 5 --duration 10m --generators 1 --detach >/dev/null
  check_for "second_loadtest_runs" 120 lt_phase_is "$other" Running ha-lt2
  # the server that ran them goes: the finished run's results stay readable, in every format
  kill -9 "${SERVER_PIDS[$runner]}"
  wait "${SERVER_PIDS[$runner]}" 2>/dev/null || true
  SERVER_PIDS[$runner]=""
  LIVE=$other
  echo "# killed server $runner (ran the load test, ${requests} requests)"
  expect_eq "loadtest_results_survive_the_server_that_ran_it" "$requests" \
    lt_results_field "$other" 'r["summary"]["requests"]'
  expect "loadtest_html_report_survives_the_server_that_ran_it" '<!DOCTYPE html>' \
    ks "$other" get --raw "/loadtest/v1/namespaces/default/loadtests/ha-lt/results?format=html"
  check_for "loadtest_going_on_when_its_server_died_fails_with_reason" 90 \
    lt_phase_is "$other" "Failed ServerRestarted" ha-lt2
  check_for "loadtest_going_on_when_its_server_died_leaves_no_generators" 90 no_generator_pods "$other" ha-lt2
  # deleting the LoadTest removes the copy as well
  ks "$other" delete loadtest ha-lt >/dev/null
  check_for "loadtest_deleted_copy_removed" 30 bash -c "[ ! -e $WORK/s$other/server/loadtest/default/ha-lt.json ]"
}

step_servers
step_refusals
step_agents
step_failover || true
step_rejoin || true
step_shared_keyring || true
step_shared_ca || true
step_datastore_cut || true
# --- monitoring and logs: every server holds the whole history (replicated at ingest) ---
# repl_search I ARGS...: `mini logs search` through server I.
repl_search() {
  local i=$1
  shift
  in_ns "${SERVER_NSS[$i]}" "$MINI_BIN" logs search --kubeconfig "$WORK/s$i/server/admin.kubeconfig" "$@"
}
# repl_has I REGEX: server I's log search finds a line matching REGEX.
repl_has() { [ -n "$(repl_search "$1" --regex "$2" --limit 1 2>/dev/null)" ]; }
# repl_prom I QUERY TIME: the first value of an instant PromQL query through server I at TIME.
repl_prom() {
  ks "$1" get --raw "/prometheus/api/v1/query?query=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$2")&time=$3" |
    python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'
}
# repl_counter I NAME: counter NAME (without _total) on server I's /metrics, 0 when absent.
repl_counter() { ks "$1" get --raw /metrics | awk -v n="$2_total" '$1 == n {v = $2} END {print v + 0}'; }
# repl_same QUERY TIME I...: QUERY at TIME gives one value, a count above 2, on every server I.
repl_same() {
  local q=$1 t=$2 i v values=""
  shift 2
  for i in "$@"; do
    v=$(repl_prom "$i" "$q" "$t") || return 1
    values="$values $v"
  done
  echo "values:$values"
  [ "$(tr ' ' '\n' <<<"$values" | grep -c .)" -eq $# ] &&
    [ "$(tr ' ' '\n' <<<"$values" | grep . | sort -u | wc -l)" -eq 1 ] &&
    [ "${v%%.*}" != none ] && [ "${v%%.*}" -gt 2 ]
}

step_observe_replicated() {
  local mark b i t0 t1 q start first_s all_s stop_ts lines c restart_ts args=()
  mark=obsrepl-$RANDOM$RANDOM
  b=$(attached_server a1) || { not_ok "agent_a1_attached_to_a_server"; return 1; }
  echo "# agent a1 ships its samples and logs to server $b"
  t0=$(date +%s)
  k run "$mark" --image="$IMAGE" --restart=Never --overrides='{"spec":{"nodeName":"a1"}}' -- \
    sh -c "i=0; while true; do i=\$((i+1)); echo \"$mark line \$i \$(date +%s)\"; sleep 1; done" >/dev/null
  wait_for "replicated_printer_pod_running" 90 bash -c \
    "nsenter --net=$(ns_path "${SERVER_NSS[$LIVE]}") kubectl --kubeconfig $WORK/s$LIVE/server/admin.kubeconfig get pod $mark -o jsonpath='{.status.phase}' | grep -qx Running" || return 1
  # the delay until line 2 is searchable: on the first server, then on all three
  declare -A found=()
  start=$(date +%s%N) first_s="" all_s=""
  while [ $(($(date +%s%N) - start)) -lt 90000000000 ] && [ ${#found[@]} -lt 3 ]; do
    for i in 1 2 3; do
      if [ -z "${found[$i]:-}" ] && repl_has "$i" "^$mark line 2 "; then
        found[$i]=$((($(date +%s%N) - start) / 1000000))
        [ -z "$first_s" ] && first_s=${found[$i]}
      fi
    done
    sleep 0.2
  done
  if [ ${#found[@]} -eq 3 ]; then
    all_s=${found[1]}
    for i in 2 3; do
      if [ "${found[$i]}" -gt "$all_s" ]; then all_s=${found[$i]}; fi
    done
  fi
  echo "# line 2 searchable on the first server after ${first_s:-?} ms, on all three after ${all_s:-?} ms (from the pod Running)"
  for i in 1 2 3; do
    if [ -n "${found[$i]:-}" ]; then ok "pod_line_from_a1_searchable_on_server_$i"; else not_ok "pod_line_from_a1_searchable_on_server_$i" "not found within 90 s"; fi
  done
  # the node's samples in a 40 s window (shipped every 10 s) are the same on every server
  t1=$((t0 + 40))
  while [ "$(date +%s)" -lt $((t1 + 25)) ]; do sleep 1; done
  q="count_over_time(node_memory_MemAvailable_bytes{node=\"a1\"}[40s])"
  check_for "node_a1_samples_same_on_every_server" 30 repl_same "$q" "$t1" 1 2 3
  local count
  count=$(repl_prom "$b" "$q" "$t1")
  echo "# $count samples of node_memory_MemAvailable_bytes{node=a1} in the window on each server"
  check_for "origin_server_counts_forwarded_batches" 20 bash -c "[ \$(nsenter --net=$(ns_path "${SERVER_NSS[$b]}") kubectl --kubeconfig $WORK/s$b/server/admin.kubeconfig get --raw /metrics | awk '\$1 == \"mini_observe_replica_forwarded_batches_total\" {print \$2}' | cut -d. -f1) -gt 0 ]"
  for i in $(others_than "$b"); do
    check_for "server_${i}_counts_received_replicas" 20 bash -c "[ \"\$(nsenter --net=$(ns_path "${SERVER_NSS[$i]}") kubectl --kubeconfig $WORK/s$i/server/admin.kubeconfig get --raw /metrics | awk '\$1 == \"mini_observe_replica_received_batches_total\" {print \$2}' | cut -d. -f1)\" -gt 0 ]"
  done
  expect_eq "no_replicated_batch_dropped_on_origin" "0" repl_counter "$b" mini_observe_replica_dropped_batches
  # the server the agent ships to stops: the others keep the whole history and take over
  lines=$(wc -l <"$WORK/a1/agent.log")
  kill "${SERVER_PIDS[$b]}"
  for _ in $(seq 1 150); do kill -0 "${SERVER_PIDS[$b]}" 2>/dev/null || break; sleep 0.2; done
  kill -9 "${SERVER_PIDS[$b]}" 2>/dev/null || true
  wait "${SERVER_PIDS[$b]}" 2>/dev/null || true
  SERVER_PIDS[$b]=""
  stop_ts=$(date +%s)
  echo "# stopped server $b"
  [ "$LIVE" = "$b" ] && LIVE=$((b % 3 + 1))
  check_for "agent_a1_leaves_the_stopped_server" 60 bash -c \
    "tail -n +$((lines + 1)) $WORK/a1/agent.log | grep 'now uses this server' | grep -qvE '${SERVER_IPS[$b]}:'"
  for i in $(others_than "$b"); do
    expect_eq "node_a1_samples_kept_on_server_${i}_after_origin_stopped" "$count" repl_prom "$i" "$q" "$t1"
    if repl_has "$i" "^$mark line 2 "; then ok "pod_line_kept_on_server_${i}_after_origin_stopped"; else not_ok "pod_line_kept_on_server_${i}_after_origin_stopped"; fi
    check_for "pod_line_printed_after_origin_stopped_on_server_$i" 90 repl_has "$i" "^$mark line [0-9]+ ($((stop_ts + 12))|$((stop_ts + 13))|$((stop_ts + 14)))\$"
  done
  # the stopped server comes back after 45 s (a few sample rounds): its peers send what it missed
  while [ "$(date +%s)" -lt $((stop_ts + 45)) ]; do sleep 1; done
  # shellcheck disable=SC2207
  if [ "$b" -ne 1 ]; then args=($(join_args)); fi
  if start_ha_server "$b" "${args[@]}"; then ok "stopped_server_restarts"; else not_ok "stopped_server_restarts"; return 1; fi
  restart_ts=$(date +%s)
  echo "# server $b was down $((restart_ts - stop_ts)) s"
  check_for "restarted_server_gets_lines_printed_while_down" 60 repl_has "$b" "^$mark line [0-9]+ ($((stop_ts + 12))|$((stop_ts + 13))|$((stop_ts + 14)))\$"
  c=$((b % 3 + 1))
  q="count_over_time(node_memory_MemAvailable_bytes{node=\"a1\"}[$((restart_ts - stop_ts - 4))s])"
  check_for "restarted_server_gets_samples_taken_while_down" 60 repl_same "$q" "$((restart_ts - 2))" "$b" "$c"
}
step_observe_replicated || true
step_registry_replication || true
step_loadtest_results || true
summary
