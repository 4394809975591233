#!/usr/bin/env bash
# End-to-end: Secrets encryption at rest with a real `mini server --disable-agent` and kubectl:
# a new cluster generates its key file (mode 0600); a Secret's value is absent from the
# datastore's files yet kubectl decodes it; `mini secrets-encrypt status`, `rotate-keys` (the
# old key retired once nothing uses it), `reencrypt`; still readable after a restart; with
# --secrets-encryption=false new values are plain and sealed ones still read; the endpoints
# answer 401 without credentials and 403 to a non-admin, 200 to a cluster-admin binding.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
WORK=$(mktemp -d /tmp/mini-e2e-secrets.XXXXXX)
PORT=$(free_port)
DATA=$WORK/data
export HOME=$WORK/home KUBECONFIG=$WORK/data/server/admin.kubeconfig
mkdir -p "$HOME"
MARKER=zebra-plaintext-$RANDOM$RANDOM
MARKER2=okapi-plaintext-$RANDOM$RANDOM
PLAIN=plain-on-purpose-$RANDOM$RANDOM
CONFIG=$DATA/server/cred/encryption-config.json

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-secrets-logs}"
  stop_server KILL
  rm -rf "$WORK"
}
trap cleanup EXIT

k() { kubectl --request-timeout=20s "$@"; }
se() { "$MINI_BIN" secrets-encrypt "$@" --data-dir "$DATA"; }

# in_db TEXT: whether TEXT occurs in any file of the server's datastore.
in_db() { grep -rqaF -- "$1" "$DATA/server/db"; }

# key_names: the key names of the configuration file, one per line.
key_names() { jq -r '.resources[].providers[] | (.aesgcm // .secretbox // empty) | .keys[].name' "$CONFIG"; }

step_start() {
  start_server "$DATA" "$PORT"
  expect_eq "key_file_mode_0600" "600" stat -c %a "$CONFIG"
  expect_eq "key_file_is_an_encryption_configuration" "EncryptionConfiguration apiserver.config.k8s.io/v1 secrets aesgcm" \
    jq -r '[.kind, .apiVersion, .resources[0].resources[0], (.resources[0].providers[0] | keys[0])] | join(" ")' "$CONFIG"
}

step_secret_sealed() {
  expect "create_secret" "secret/db created" k create secret generic db --from-literal=password="$MARKER"
  expect_eq "kubectl_decodes_the_secret" "$MARKER" bash -c "kubectl get secret db -o jsonpath='{.data.password}' | base64 -d"
  local b64
  b64=$(printf %s "$MARKER" | base64)
  if in_db "$MARKER" || in_db "$b64"; then not_ok "plaintext_absent_from_datastore_files" "$(grep -rlaF -- "$b64" "$DATA/server/db")"; else ok "plaintext_absent_from_datastore_files"; fi
  if in_db "k8s:enc:aesgcm:v1:"; then ok "datastore_holds_the_upstream_prefix"; else not_ok "datastore_holds_the_upstream_prefix"; fi
  # other resources are not sealed
  k create configmap cm --from-literal=x=visible-config-value >/dev/null
  if in_db "visible-config-value"; then ok "configmaps_stay_plain"; else not_ok "configmaps_stay_plain"; fi
}

step_status() {
  expect "status_shows_encryption_on" "^encryption: on" se status
  expect "status_counts_the_secret_on_the_write_key" "aesgcm:key-[0-9TZ-]+ +1 +write" se status
  expect_eq "status_json_write_key" "$(key_names | head -1)" bash -c \
    "'$MINI_BIN' secrets-encrypt status -o json --data-dir '$DATA' | jq -r '.resources[0].writeKey' | cut -d: -f2"
}

step_rotate() {
  local old new
  old=$(key_names | head -1)
  expect "rotate_keys_retires_the_old_key" "retired aesgcm:$old\$" se rotate-keys
  new=$(key_names | head -1)
  if [ "$new" != "$old" ] && [ "$(key_names | wc -l)" -eq 1 ]; then ok "config_holds_only_the_new_key"; else not_ok "config_holds_only_the_new_key" "$(key_names)"; fi
  expect "status_lists_only_the_new_key" "aesgcm:$new +1 +write" se status
  # the whole key name: a key made in the same second as the old one is named "<old>-2"
  if se status | grep -qE "^ +aesgcm:${old}[[:space:]]"; then not_ok "status_lists_no_old_key" "$(se status)"; else ok "status_lists_no_old_key"; fi
  expect_eq "kubectl_decodes_after_rotation" "$MARKER" bash -c "kubectl get secret db -o jsonpath='{.data.password}' | base64 -d"
  expect "reencrypt_finds_nothing_to_move" "0 values rewritten, 1 already on the write key" se reencrypt
}

step_restart() {
  stop_server TERM
  start_server "$DATA" "$PORT"
  expect_eq "kubectl_decodes_after_restart" "$MARKER" bash -c "kubectl get secret db -o jsonpath='{.data.password}' | base64 -d"
  expect "create_after_restart" "secret/db2 created" k create secret generic db2 --from-literal=password="$MARKER2"
  if in_db "$MARKER2"; then not_ok "second_secret_sealed_too"; else ok "second_secret_sealed_too"; fi
  expect "status_counts_both" " 2 +write" se status
}

step_forbidden() {
  expect_eq "anonymous_gets_401" "401" curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/v1-mini/secrets-encrypt/status"
  k create serviceaccount viewer -n default >/dev/null
  k create serviceaccount operator -n default >/dev/null
  k create clusterrolebinding operator-admin --clusterrole=cluster-admin --serviceaccount=default:operator >/dev/null
  local viewer operator path
  viewer=$(k create token viewer -n default)
  operator=$(k create token operator -n default)
  for path in status rotate-keys reencrypt; do
    local method=POST
    [ "$path" = status ] && method=GET
    expect_eq "non_admin_gets_403_on_$path" "403" curl -sk -o /dev/null -w '%{http_code}' -X "$method" \
      -H "Authorization: Bearer $viewer" "https://127.0.0.1:$PORT/v1-mini/secrets-encrypt/$path"
  done
  expect_eq "cluster_admin_binding_gets_200" "200" curl -sk -o /dev/null -w '%{http_code}' \
    -H "Authorization: Bearer $operator" "https://127.0.0.1:$PORT/v1-mini/secrets-encrypt/status"
  cp "$KUBECONFIG" "$WORK/viewer.kubeconfig"
  KUBECONFIG=$WORK/viewer.kubeconfig kubectl config set-credentials viewer --token="$viewer" >/dev/null
  KUBECONFIG=$WORK/viewer.kubeconfig kubectl config set-context --current --user=viewer >/dev/null
  expect_fail "cli_as_non_admin_fails_in_one_line" "^mini: .*cluster administrators" \
    "$MINI_BIN" secrets-encrypt status --kubeconfig "$WORK/viewer.kubeconfig"
}

step_encryption_off() {
  stop_server TERM
  mkdir -p "$DATA"
  "$MINI_BIN" server --data-dir "$DATA" --bind-address 127.0.0.1 --https-listen-port "$PORT" --disable-agent \
    --secrets-encryption=false >>"$DATA/server.log" 2>&1 &
  SERVER_PID=$!
  wait_ready
  expect "off_status_says_off" "^encryption: off" se status
  expect_eq "off_still_decodes_sealed_secret" "$MARKER" bash -c "kubectl get secret db -o jsonpath='{.data.password}' | base64 -d"
  k create secret generic plain --from-literal=password="$PLAIN" >/dev/null
  if in_db "$(printf %s "$PLAIN" | base64)"; then ok "off_writes_new_values_plain"; else not_ok "off_writes_new_values_plain"; fi
  expect_fail "off_refuses_rotation" "secrets-encryption=false" se rotate-keys
  # back on: reencrypt seals the plain value
  stop_server TERM
  start_server "$DATA" "$PORT"
  expect "on_again_reencrypt_seals_the_plain_value" "1 values rewritten, 2 already on the write key" se reencrypt
  expect "status_no_plain_values_left" "identity \(plain\) +0" se status
  expect_eq "kubectl_decodes_resealed_secret" "$PLAIN" bash -c "kubectl get secret plain -o jsonpath='{.data.password}' | base64 -d"
}

wait_ready() {
  for _ in $(seq 1 100); do
    if curl -sk "https://127.0.0.1:$PORT/readyz" 2>/dev/null | grep -q ok; then return 0; fi
    sleep 0.1
  done
  echo "mini server did not become ready"; tail -20 "$DATA/server.log"; return 1
}

step_start
step_secret_sealed
step_status
step_rotate
step_restart
step_forbidden
step_encryption_off
stop_server TERM
summary
