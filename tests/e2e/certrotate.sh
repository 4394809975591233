#!/usr/bin/env bash
# End-to-end: online certificate renewal and CA rotation on a real server and one agent (its
# own containerd, in a network namespace), with certificates issued for two minutes
# (--cert-lifetime 2m). While a kubectl loop and a watch run: the server's and the agent's
# leaves are renewed at two thirds of their life without a restart (the node stays Ready,
# kubectl logs/exec through the node keep working, `mini certificate check` shows the new
# expiry); `mini certificate rotate` renews at once (the agent follows); `mini certificate
# rotate-ca` makes a new CA sign while the old one stays trusted (an old copy of the admin
# kubeconfig keeps working during the overlap), then retires it (the old copy is refused,
# the current kubeconfig, the node and the node token follow). Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
E2E_NS=${E2E_NS:-cr}
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
API_PORT=26443
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-certrotate.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/busybox:1.0
NODES=(node-a)
BACKGROUND_PIDS=()
OVERLAP=45

cleanup() {
  local pid
  touch "$WORK/stop-loop" 2>/dev/null || true
  for pid in "${BACKGROUND_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-certrotate-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the certificate rotation suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

# cert_field DATA_DIR FILE FIELD: one field of one certificate from `mini certificate check -o json`.
cert_field() {
  "$MINI_BIN" certificate check --data-dir "$1" -o json | python3 -c '
import json, sys
f, field = sys.argv[1], sys.argv[2]
print([c[field] for c in json.load(sys.stdin) if c["path"].endswith("/" + f)][0])' "$2" "$3"
}

# serial FILE: the serial number of the first certificate of FILE.
serial() { openssl x509 -noout -serial -in "$1"; }

# pem_count FILE: how many certificates FILE holds.
pem_count() { grep -c 'BEGIN CERTIFICATE' "$1"; }

# changed WHAT WANT_NOT CMD...: CMD's output differs from WANT_NOT (for wait_for).
changed() {
  local want_not=$1 out
  shift
  out=$("$@") || return 1
  [ "$out" != "$want_not" ] || { echo "still $out"; return 1; }
}

node_ready() {
  k get node node-a -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

# through_node: kubectl logs and exec, which the API server forwards to the agent's kubelet
# port (its kubelet client certificate against the agent's serving certificate).
through_node() {
  local tag=$1
  expect "logs_through_node_$tag" "tick" k logs ticker --tail=2
  expect_eq "exec_through_node_$tag" "hello-$tag" k exec ticker -- echo "hello-$tag"
  if node_ready; then ok "node_ready_$tag"; else not_ok "node_ready_$tag" "$(k get node node-a -o wide 2>&1)"; fi
}

# loop_failures: how many kubectl calls of the background loop failed so far.
loop_failures() { grep -c '^fail' "$WORK/loop.log" || true; }

step_start() {
  setup_network "${NODES[@]}"
  python3 "$HERE/build_image.py" "$WORK/busybox.tar" "$IMAGE"
  start_node_server "$WORK/server" --disable-agent --cert-lifetime 2m
  mkdir -p "$WORK/node-a/agent/images"
  cp "$WORK/busybox.tar" "$WORK/node-a/agent/images/"
  start_agent node-a "$(node_ip 1)" "$WORK/node-a"
  wait_for "node_ready" 120 node_ready || return 1
  wait_for "default_serviceaccount_created" 30 k get sa default -n default || return 1
  k run ticker --image="$IMAGE" -- sh -c 'while true; do echo tick; sleep 1; done' >/dev/null
  wait_for "ticker_running" 90 bash -c "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod ticker -o jsonpath='{.status.phase}' | grep -qx Running" || return 1
  local life
  life=$(($(cert_field "$WORK/server" serving.crt not_after) - $(cert_field "$WORK/server" serving.crt not_before)))
  if [ "$life" -ge 120 ] && [ "$life" -le 135 ]; then ok "short_lifetime_issued"; else not_ok "short_lifetime_issued" "lifetime ${life}s"; fi
}

# a kubectl loop (a new connection, and a fresh read of the kubeconfig, every time) and a watch
# (one connection held across every swap)
step_traffic() {
  : >"$WORK/loop.log"
  (
    while [ ! -f "$WORK/stop-loop" ]; do
      if nsenter --net="$(ns_path "$SERVER_NS")" kubectl --request-timeout=10s get --raw /api/v1/namespaces/default >/dev/null 2>>"$WORK/loop.err"; then
        echo ok >>"$WORK/loop.log"
      else
        echo "fail $(date +%T)" >>"$WORK/loop.log"
      fi
      sleep 0.5
    done
  ) &
  BACKGROUND_PIDS+=($!)
  nsenter --net="$(ns_path "$SERVER_NS")" kubectl get configmaps -w -o name --request-timeout=0 >"$WORK/watch.log" 2>&1 &
  WATCH_PID=$!
  BACKGROUND_PIDS+=("$WATCH_PID")
  through_node "before"
}

# leaves are renewed at two thirds of their two-minute life, server and agent, online
step_renewal() {
  local serving client admin kubelet_client
  serving=$(cert_field "$WORK/server" serving.crt not_after)
  admin=$(cert_field "$WORK/server" admin.crt not_after)
  kubelet_client=$(cert_field "$WORK/server" apiserver-kubelet-client.crt not_after)
  client=$(cert_field "$WORK/node-a" client.crt not_after)
  check_for "server_serving_cert_renewed" 150 changed "$serving" cert_field "$WORK/server" serving.crt not_after
  check_for "server_admin_cert_renewed" 60 changed "$admin" cert_field "$WORK/server" admin.crt not_after
  check_for "server_kubelet_client_cert_renewed" 60 changed "$kubelet_client" cert_field "$WORK/server" apiserver-kubelet-client.crt not_after
  check_for "agent_client_cert_renewed" 150 changed "$client" cert_field "$WORK/node-a" client.crt not_after
  # what the server serves is the renewed certificate
  local served on_disk
  served=$(in_ns "$SERVER_NS" openssl s_client -connect 127.0.0.1:$API_PORT </dev/null 2>/dev/null | openssl x509 -noout -serial)
  on_disk=$(serial "$WORK/server/server/tls/serving.crt")
  if [ "$served" = "$on_disk" ]; then ok "served_cert_is_the_renewed_one"; else not_ok "served_cert_is_the_renewed_one" "served $served, file $on_disk"; fi
  expect "check_shows_new_expiry" "serving.crt  subject=CN=kube-apiserver  issuer=CN=mini-ca@[0-9]+  expires=$(date -u -d @"$(cert_field "$WORK/server" serving.crt not_after)" +%Y-%m-%dT%H:%M:%SZ)" \
    "$MINI_BIN" certificate check --data-dir "$WORK/server"
  expect "agent_renewal_logged" "renewed the node's client and serving certificates" cat "$WORK/node-a/agent.log"
  if kill -0 "$SERVER_PID" 2>/dev/null; then ok "server_not_restarted"; else not_ok "server_not_restarted" "$(tail -5 "$WORK/server/server.log")"; fi
  through_node "after_renewal"
  expect "status_lists_certificates" "certificates:" in_ns "$SERVER_NS" "$MINI_BIN" status --data-dir "$WORK/server"
}

# `mini certificate rotate`: the server's leaves at once, the agent's when it next asks
step_rotate() {
  local serving client
  serving=$(serial "$WORK/server/server/tls/serving.crt")
  # rotate renews what was issued before it, with 2 s of slack for the back-dated notBefore: a
  # certificate the agent renewed on its own just before the rotate counts as new. Rotate only
  # once the agent's certificate is at least 4 s old (its own renewals come every 80 s here).
  local i
  for i in $(seq 1 30); do
    client=$(serial "$WORK/node-a/agent/tls/client.crt")
    sleep 4
    [ "$(serial "$WORK/node-a/agent/tls/client.crt")" = "$client" ] && break
  done
  expect "rotate_command" "serving.crt" in_ns "$SERVER_NS" "$MINI_BIN" certificate rotate --data-dir "$WORK/server"
  if changed "$serving" serial "$WORK/server/server/tls/serving.crt" >/dev/null; then ok "rotate_renewed_serving_now"; else not_ok "rotate_renewed_serving_now" "serving.crt kept serial $serving"; fi
  check_for "rotate_reaches_agent" 40 changed "$client" serial "$WORK/node-a/agent/tls/client.crt"
  through_node "after_rotate"
}

# `mini certificate rotate-ca`: overlap with both CAs trusted, then the old one retired
step_rotate_ca() {
  local old_ca old_kubeconfig=$WORK/old-admin.kubeconfig
  cp "$KUBECONFIG" "$old_kubeconfig"
  old_ca=$(cert_field "$WORK/server" ca.crt subject)
  expect "rotate_ca_command" "previous CA stays trusted until" \
    in_ns "$SERVER_NS" "$MINI_BIN" certificate rotate-ca --overlap "${OVERLAP}s" --data-dir "$WORK/server"
  expect_fail "rotate_ca_refused_during_overlap" "already in its overlap" \
    in_ns "$SERVER_NS" "$MINI_BIN" certificate rotate-ca --data-dir "$WORK/server"
  local new_ca
  new_ca=$(cert_field "$WORK/server" ca.crt subject)
  if [ "$new_ca" != "$old_ca" ]; then ok "new_ca_signs"; else not_ok "new_ca_signs" "ca.crt still $old_ca"; fi
  expect_eq "cacerts_has_both_cas" "2" bash -c "nsenter --net=$(ns_path "$SERVER_NS") curl -sk https://127.0.0.1:$API_PORT/cacerts | grep -c 'BEGIN CERTIFICATE'"
  expect_eq "serving_cert_from_new_ca" "$new_ca" cert_field "$WORK/server" serving.crt issuer
  expect "kubectl_with_rewritten_kubeconfig" "node-a" k get nodes -o name
  expect "old_kubeconfig_works_during_overlap" "node-a" in_ns "$SERVER_NS" kubectl --kubeconfig "$old_kubeconfig" --request-timeout=10s get nodes -o name
  check_for "agent_trusts_both_cas" 40 bash -c "[ \$(grep -c 'BEGIN CERTIFICATE' $WORK/node-a/agent/tls/ca.crt) -eq 2 ]"
  check_for "agent_cert_from_new_ca" 40 changed "$old_ca" cert_field "$WORK/node-a" client.crt issuer
  expect_eq "agent_cert_issuer_is_new_ca" "$new_ca" cert_field "$WORK/node-a" client.crt issuer
  through_node "during_overlap"
  check_for "old_ca_retired" $((OVERLAP + 30)) bash -c "[ \$(nsenter --net=$(ns_path "$SERVER_NS") curl -sk https://127.0.0.1:$API_PORT/cacerts | grep -c 'BEGIN CERTIFICATE') -eq 1 ]"
  check_for "agent_follows_retirement" 40 bash -c "[ \$(grep -c 'BEGIN CERTIFICATE' $WORK/node-a/agent/tls/ca.crt) -eq 1 ]"
  expect_eq "kubeconfig_trusts_new_ca_only" "1" bash -c \
    "kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d | grep -c 'BEGIN CERTIFICATE'"
  expect "kubectl_after_retirement" "node-a" k get nodes -o name
  expect_fail "old_kubeconfig_refused_after_retirement" "certificate|unknown authority|x509|tls" \
    in_ns "$SERVER_NS" kubectl --kubeconfig "$old_kubeconfig" --request-timeout=10s get nodes -o name
  local hash
  hash=$(in_ns "$SERVER_NS" curl -sk "https://127.0.0.1:$API_PORT/cacerts" | sha256sum | cut -d' ' -f1)
  expect "node_token_pins_new_bundle" "^K10$hash::server:" cat "$WORK/server/server/node-token"
  through_node "after_retirement"
}

step_traffic_kept_flowing() {
  touch "$WORK/stop-loop"
  sleep 1
  local total failures
  total=$(wc -l <"$WORK/loop.log")
  failures=$(loop_failures)
  if [ "$total" -gt 50 ] && [ "$failures" -eq 0 ]; then
    ok "kubectl_loop_never_failed"
  else
    not_ok "kubectl_loop_never_failed" "$failures of $total calls failed: $(grep '^fail' "$WORK/loop.log" | head -5) $(tail -5 "$WORK/loop.err" 2>/dev/null)"
  fi
  k create configmap after-rotation >/dev/null
  check_for "watch_survived_every_swap" 20 grep -q "configmap/after-rotation" "$WORK/watch.log"
  if kill -0 "$WATCH_PID" 2>/dev/null; then ok "watch_still_open"; else not_ok "watch_still_open" "$(tail -5 "$WORK/watch.log")"; fi
}

step_start || { summary; exit 1; }
step_traffic
step_renewal
step_rotate
step_rotate_ca
step_traffic_kept_flowing
summary
