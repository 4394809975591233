#!/usr/bin/env bash
# End-to-end: bootstrap join tokens, the install endpoints and air-gap bundles, with a real
# `mini server` (no node of its own) and `mini agent`s in network namespaces: an agent joins
# with a token from `mini token create --ttl 1h`; an expired and a deleted token are refused with
# a message saying so; /install.sh is served without authentication and the binary's checksum
# only with a join token; a bundle's images, unpacked on the server with stock zstd and tar,
# reach a second agent through /v1-mini/images and a pod there runs that image with
# imagePullPolicy Never. Needs root (namespaces, containerd).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
E2E_NS=minitok
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
# shellcheck source=tests/e2e/nodes_lib.sh
. "$HERE/nodes_lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-tokens.XXXXXX)
export HOME=$WORK/home
mkdir -p "$HOME"
IMAGE=mini.local/bundled:1.0
NODES=(node-a node-b bad)
URL="https://$SERVER_IP:$API_PORT"

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-tokens-logs}"
  cleanup_nodes "${NODES[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: the node suite needs root (network namespaces, containerd)"
  echo "0 passed, 0 failed"
  exit 0
fi

# token ARGS...: `mini token` against the suite's server, from its namespace.
token() { in_ns "$SERVER_NS" "$MINI_BIN" token "$@" --kubeconfig "$KUBECONFIG"; }

# try_join TOKEN: one join attempt from the "bad" machine; prints the output, keeps the exit code.
try_join() {
  timeout 60 nsenter --net="$(ns_path "$E2E_NS-bad")" "$MINI_BIN" agent --server "$URL" \
    --token "$1" --data-dir "$WORK/bad" --node-name bad --node-ip "$(node_ip 3)" 2>&1
}

step_start() {
  setup_network "${NODES[@]}"
  # the cleaner would delete the expired token before the refusal could name it "expired"
  start_node_server "$WORK/server" --disable-agent --disable-controller tokencleaner
}

step_bundle() {
  python3 "$HERE/build_image.py" "$WORK/image.tar" "$IMAGE"
  # a small stand-in binary keeps the bundle small; the binary path is covered by unit tests
  expect "bundle_create" "wrote $WORK/bundle.tar.zst" \
    "$MINI_BIN" bundle create --images "$WORK/image.tar" --binary /bin/true -o "$WORK/bundle.tar.zst"
  expect "bundle_verify" ": ok" "$MINI_BIN" bundle verify "$WORK/bundle.tar.zst"
  expect "bundle_lists_with_stock_tools" "images/index.json" \
    bash -c "zstd -dc '$WORK/bundle.tar.zst' | tar -t"
  cp "$WORK/bundle.tar.zst" "$WORK/flipped.tar.zst"
  python3 -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[200] ^= 1; open(p, "wb").write(b)' \
    "$WORK/flipped.tar.zst"
  expect_fail "bundle_verify_rejects_a_flipped_byte" "verification failed|not a mini bundle" \
    "$MINI_BIN" bundle verify "$WORK/flipped.tar.zst"
  # the images of the bundle as one OCI-layout tarball in the server's image directory
  mkdir -p "$WORK/unpack" "$WORK/server/agent/images"
  zstd -dc "$WORK/bundle.tar.zst" | tar -x -C "$WORK/unpack" images
  tar -C "$WORK/unpack/images" -cf "$WORK/server/agent/images/bundle.tar" .
}

step_token_join() {
  local t
  t=$(token create --ttl 1h --description e2e)
  if [[ "$t" =~ ^K10[0-9a-f]{64}::[a-z0-9]{6}\.[a-z0-9]{16}$ ]]; then ok "token_create_prints_pinned_token"; else not_ok "token_create_prints_pinned_token" "$t"; fi
  expect "token_list_shows_it" "${t:69:6} +(59m|1h0m) .*authentication,signing +e2e" token list
  JOIN_TOKEN=$t start_agent node-a "$(node_ip 1)" "$WORK/node-a"
  wait_for "agent_joins_with_bootstrap_token" 120 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get node node-a --no-headers 2>/dev/null | grep -q ' Ready '" || {
    tail -20 "$WORK/node-a/agent.log"
    return 1
  }
}

step_refusals() {
  local hash out rc id
  hash=${JOIN_TOKEN%%::*}
  # an expired token: written as `mini token create` would, with an expiry in the past
  k -n kube-system create secret generic bootstrap-token-old000 --type=bootstrap.kubernetes.io/token \
    --from-literal=token-id=old000 --from-literal=token-secret=0123456789abcdef \
    --from-literal=expiration=2020-01-01T00:00:00Z --from-literal=usage-bootstrap-authentication=true \
    --from-literal=usage-bootstrap-signing=true >/dev/null
  out=$(try_join "$hash::old000.0123456789abcdef") && rc=0 || rc=$?
  if [ "$rc" -eq 1 ] && grep -q "bootstrap token old000 expired at 2020-01-01T00:00:00Z" <<<"$out"; then
    ok "expired_token_refused_with_message"
  else not_ok "expired_token_refused_with_message" "rc=$rc $out"; fi
  local t
  t=$(token create --ttl 1h)
  id=${t:69:6}
  expect "token_delete" "bootstrap token $id deleted" token delete "$id"
  out=$(try_join "$t") && rc=0 || rc=$?
  if [ "$rc" -eq 1 ] && grep -q "bootstrap token $id does not exist" <<<"$out"; then
    ok "deleted_token_refused_with_message"
  else not_ok "deleted_token_refused_with_message" "rc=$rc $out"; fi
  expect_fail "refused_nodes_not_registered" "NotFound" k get node bad
}

step_install_endpoints() {
  local t want
  t=$(token create --ttl 1h)
  expect "install_script_served_without_auth" "^#!/bin/sh" \
    in_ns "$E2E_NS-node-b" curl -sfk "$URL/install.sh"
  expect "binary_sha256_needs_a_token" "^401$" \
    in_ns "$E2E_NS-node-b" curl -sk -o /dev/null -w '%{http_code}' "$URL/v1-mini/binary.sha256"
  want="$(sha256sum "$MINI_BIN" | cut -d' ' -f1)  mini"
  expect_eq "binary_sha256_with_bootstrap_token" "$want" \
    in_ns "$E2E_NS-node-b" curl -sfk -H "Authorization: Bearer $t" "$URL/v1-mini/binary.sha256"
  expect "images_listed_with_server_token" '"name":"bundle.tar"' \
    in_ns "$E2E_NS-node-b" curl -sfk -H "Authorization: Bearer $JOIN_TOKEN" "$URL/v1-mini/images"
}

step_images_reach_agent() {
  local t
  t=$(token create --ttl 1h)
  JOIN_TOKEN=$t start_agent node-b "$(node_ip 2)" "$WORK/node-b"
  wait_for "second_agent_ready" 120 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get node node-b --no-headers 2>/dev/null | grep -q ' Ready '" || return 1
  wait_for "agent_fetched_bundle_images" 60 cmp "$WORK/server/agent/images/bundle.tar" "$WORK/node-b/agent/images/bundle.tar"
  cat <<EOF | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: bundled}
spec:
  nodeName: node-b
  containers:
  - {name: app, image: $IMAGE, imagePullPolicy: Never, command: [sleep, "3600"]}
EOF
  check_for "bundled_image_runs_on_second_agent" 90 bash -c \
    "nsenter --net=$(ns_path "$SERVER_NS") kubectl get pod bundled -o jsonpath='{.status.phase}' | grep -qx Running"
}

main() {
  step_start || { summary; exit 1; }
  step_bundle
  step_token_join || { summary; exit 1; }
  step_refusals
  step_install_endpoints
  step_images_reach_agent
  summary
}
main
