#!/usr/bin/env bash
# End-to-end: people's accounts on a real `mini server --disable-agent`, driven by `mini user`,
# kubectl and curl: accounts are RBAC users (kubectl agrees on what they may do), login sets a
# secure session cookie, cookie writes need the CSRF token and the server's Origin, a session
# survives a server restart, a downloaded kubeconfig works with kubectl where RBAC allows, a
# namespace admin cannot grant rights it lacks, passwd ends sessions and tokens, rm removes the
# bindings, failed logins are rate-limited, and audit.log names who did what.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /tmp/mini-e2e-accounts.XXXXXX)
PORT=$(free_port)
URL="https://127.0.0.1:$PORT"
export HOME=$WORK/home KUBECONFIG=$WORK/data/server/admin.kubeconfig
mkdir -p "$HOME"

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-accounts-logs}"
  stop_server KILL
  rm -rf "$WORK"
}
trap cleanup EXIT

k() { kubectl --request-timeout=20s "$@"; }
user() { "$MINI_BIN" user "$@" --kubeconfig "$KUBECONFIG"; }

# login NAME PASSWORD [FILES]: logs in keeping the answer, headers and cookie jar in
# $WORK/FILES.{login,headers,jar} (FILES defaults to NAME); prints the HTTP code.
login() {
  local files=${3:-$1}
  curl -sk -o "$WORK/$files.login" -D "$WORK/$files.headers" -w '%{http_code}' -c "$WORK/$files.jar" \
    -H 'Content-Type: application/json' -d "{\"name\":\"$1\",\"password\":\"$2\"}" "$URL/v1-mini/session/login"
}

# csrf NAME: the CSRF token of NAME's last login.
csrf() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["csrfToken"])' "$WORK/$1.login"; }

# as_cookie NAME METHOD PATH [curl args...]: a request with NAME's session cookie; prints the code.
as_cookie() {
  local name=$1 method=$2 path=$3
  shift 3
  curl -sk -o "$WORK/last.out" -w '%{http_code}' -b "$WORK/$name.jar" -X "$method" "$@" "$URL$path"
}

# expect_absent NAME PATTERN CMD...: CMD must succeed and its output not match PATTERN.
expect_absent() {
  local name=$1 pattern=$2 out rc
  shift 2
  out=$("$@" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -eq 0 ] && ! grep -Eq -- "$pattern" <<<"$out"; then ok "$name"; else not_ok "$name" "rc=$rc want no /$pattern/ got: $out"; fi
}

configmap() { printf '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"%s"},"data":{"k":"v"}}' "$1"; }

step_start() {
  start_server "$WORK/data" "$PORT"
  k create namespace a >/dev/null
  k create namespace b >/dev/null
}

step_user_add() {
  expect "user_add_edit_in_namespace" "account alice created \(edit@a\)" \
    bash -c "echo alice-password | $MINI_BIN user add alice --role edit --namespace a --password-stdin --kubeconfig $KUBECONFIG"
  expect "user_add_namespace_admin" "account lead created \(admin@a\)" \
    bash -c "echo lead-password | $MINI_BIN user add lead --role admin -n a --password-stdin --kubeconfig $KUBECONFIG"
  expect "user_add_cluster_viewer" "account vic created \(view\)" \
    bash -c "echo vic-password | $MINI_BIN user add vic --password-stdin --kubeconfig $KUBECONFIG"
  expect_fail "user_add_short_password_refused" "too short" \
    bash -c "echo short | $MINI_BIN user add shorty --password-stdin --kubeconfig $KUBECONFIG"
  expect_fail "user_add_twice_refused" "already exists" \
    bash -c "echo alice-password | $MINI_BIN user add alice --role edit -n a --password-stdin --kubeconfig $KUBECONFIG"
  expect "user_ls_lists_roles" "alice +edit@a +system:admin" user ls
  expect "binding_is_ordinary_rbac" "ClusterRole/edit" k get rolebinding mini-account-alice -n a -o wide
  expect_eq "kubectl_agrees_edit_in_a" "yes" k auth can-i create deployments -n a --as alice --as-group mini:accounts
  expect_fail "kubectl_agrees_not_in_b" "no" k auth can-i create deployments -n b --as alice --as-group mini:accounts
}

step_login() {
  expect_eq "login_ok" "200" login alice alice-password
  expect "login_cookie_is_secure" "mini_session=.*HttpOnly; Secure; SameSite=Strict" cat "$WORK/alice.headers"
  expect "login_returns_user_and_csrf" '"user":"alice".*"csrfToken"' cat "$WORK/alice.login"
  expect_eq "wrong_password_401" "401" login alice wrong-password bad
  expect_eq "cookie_get_pods_in_a" "200" as_cookie alice GET /api/v1/namespaces/a/pods
  expect_eq "cookie_get_pods_in_b_forbidden" "403" as_cookie alice GET /api/v1/namespaces/b/pods
  expect_eq "cookie_reads_prometheus_api" "200" as_cookie alice GET /prometheus/api/v1/labels
  expect_eq "cookie_reads_loki_api" "200" as_cookie alice GET /loki/api/v1/labels
  local token
  token=$(csrf alice)
  expect_eq "cookie_post_without_csrf_403" "403" as_cookie alice POST /api/v1/namespaces/a/configmaps \
    -H 'Content-Type: application/json' -H "Origin: $URL" -d "$(configmap c0)"
  expect_eq "cookie_post_foreign_origin_403" "403" as_cookie alice POST /api/v1/namespaces/a/configmaps \
    -H 'Content-Type: application/json' -H 'Origin: https://evil.example' -H "X-CSRF-Token: $token" -d "$(configmap c0)"
  expect_eq "cookie_post_with_csrf_and_origin_201" "201" as_cookie alice POST /api/v1/namespaces/a/configmaps \
    -H 'Content-Type: application/json' -H "Origin: $URL" -H "X-CSRF-Token: $token" -d "$(configmap c1)"
  expect_eq "cookie_post_in_b_403" "403" as_cookie alice POST /api/v1/namespaces/b/configmaps \
    -H 'Content-Type: application/json' -H "Origin: $URL" -H "X-CSRF-Token: $token" -d "$(configmap c1)"
  expect_eq "no_cookie_401" "401" curl -sk -o /dev/null -w '%{http_code}' "$URL/v1-mini/session"
}

step_restart() {
  stop_server TERM
  start_server "$WORK/data" "$PORT"
  expect_eq "session_survives_restart" "200" as_cookie alice GET /v1-mini/session
  expect "session_after_restart_is_alice" '"user":"alice"' cat "$WORK/last.out"
}

step_kubeconfig() {
  expect_eq "kubeconfig_download" "200" as_cookie alice GET /v1-mini/session/kubeconfig
  cp "$WORK/last.out" "$WORK/alice.kubeconfig"
  expect "kubeconfig_works_with_kubectl" "deployment.apps/web created" \
    k --kubeconfig "$WORK/alice.kubeconfig" create deployment web --image=busybox -n a
  expect_fail "kubeconfig_refused_where_rbac_says" "Forbidden|forbidden" \
    k --kubeconfig "$WORK/alice.kubeconfig" get pods -n b
  expect_eq "kubectl_whoami_is_alice" "alice" \
    k --kubeconfig "$WORK/alice.kubeconfig" auth whoami -o jsonpath='{.status.userInfo.username}'
}

step_escalation() {
  expect_eq "lead_login" "200" login lead lead-password
  as_cookie lead GET /v1-mini/session/kubeconfig >/dev/null
  cp "$WORK/last.out" "$WORK/lead.kubeconfig"
  expect_fail "namespace_admin_cannot_bind_cluster_admin" "forbidden.*not currently held" \
    k --kubeconfig "$WORK/lead.kubeconfig" create rolebinding root --clusterrole=cluster-admin --user=lead -n a
  local token
  token=$(csrf lead)
  expect_eq "namespace_admin_creates_sub_account_in_its_namespace" "201" as_cookie lead POST /v1-mini/accounts \
    -H 'Content-Type: application/json' -H "Origin: $URL" -H "X-CSRF-Token: $token" \
    -d '{"name":"dev","password":"dev-password","role":"edit","namespaces":["a"]}'
  expect_eq "namespace_admin_cannot_create_account_in_b" "403" as_cookie lead POST /v1-mini/accounts \
    -H 'Content-Type: application/json' -H "Origin: $URL" -H "X-CSRF-Token: $token" \
    -d '{"name":"dev2","password":"dev-password","role":"edit","namespaces":["b"]}'
  expect_eq "namespace_admin_cannot_create_cluster_wide_account" "403" as_cookie lead POST /v1-mini/accounts \
    -H 'Content-Type: application/json' -H "Origin: $URL" -H "X-CSRF-Token: $token" \
    -d '{"name":"dev3","password":"dev-password","role":"view"}'
  expect_eq "namespace_admin_cannot_remove_cluster_viewer" "403" as_cookie lead DELETE /v1-mini/accounts/vic \
    -H "Origin: $URL" -H "X-CSRF-Token: $token"
  expect_absent "refused_account_not_created" "^dev2 " user ls
}

step_passwd() {
  expect "user_passwd" "password of alice changed" \
    bash -c "echo new-alice-password | $MINI_BIN user passwd alice --password-stdin --kubeconfig $KUBECONFIG"
  expect_eq "passwd_ends_session" "401" as_cookie alice GET /v1-mini/session
  expect_fail "passwd_revokes_kubeconfig_token" "Unauthorized|unauthorized|must be logged in" \
    k --kubeconfig "$WORK/alice.kubeconfig" get pods -n a
  expect_eq "old_password_refused" "401" login alice alice-password bad
  expect_eq "new_password_works" "200" login alice new-alice-password
}

step_rm() {
  expect "user_rm" "account alice removed" user rm alice
  expect_fail "rm_removes_binding" "NotFound|not found" k get rolebinding mini-account-alice -n a
  expect_eq "rm_ends_session" "401" as_cookie alice GET /v1-mini/session
  expect_absent "rm_account_not_listed" "^alice " user ls
  expect_fail "user_rm_unknown_fails" "not found" user rm nobody
}

step_audit() {
  local log=$WORK/data/server/audit.log
  expect "audit_records_deployment_by_alice" '"verb":"create","user":\{"username":"alice"' \
    grep '"resource":"deployments"' "$log"
  expect "audit_records_refused_write" '"namespace":"b".*"code":403' grep '"username":"alice"' "$log"
  expect "audit_records_failed_login" '"resource":"sessions".*"code":401' grep '"username":"alice"' "$log"
  expect "audit_records_account_management" '"verb":"delete","user":\{"username":"system:admin".*"resource":"accounts","name":"alice"' \
    cat "$log"
  expect "audit_names_source_ip" '"sourceIPs":\["127.0.0.1"\]' grep '"username":"lead"' "$log"
}

step_rate_limit() {
  local i
  for i in 1 2 3 4 5; do login vic "wrong-password-$i" bad >/dev/null; done
  expect_eq "sixth_failed_login_429" "429" login vic vic-password
  expect "rate_limited_has_retry_after" "^[Rr]etry-[Aa]fter: [0-9]+" cat "$WORK/vic.headers"
}

step_start
step_user_add
step_login
step_restart
step_kubeconfig
step_escalation
step_passwd
step_rm
step_audit
step_rate_limit
summary
