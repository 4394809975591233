#!/usr/bin/env bash
# End-to-end: datastore snapshots with a real `mini server --disable-agent` and kubectl: save a
# namespace with ConfigMaps and an encrypted Secret, delete the namespace, stop the server,
# restore (refused while it runs, refused untouched for a corrupted or foreign file), start
# again: the namespace and its objects are back, the Secret decodes, a watch from an old
# resourceVersion gets 410 and a relist works, new resourceVersions are above every earlier
# one; the server's scheduled snapshots appear and are pruned to the retention; ls, delete,
# prune on the command line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$HERE/lib.sh"
MINI_BIN=${MINI_BIN:-$HERE/../../target/debug/mini}
WORK=$(mktemp -d /tmp/mini-e2e-snapshot.XXXXXX)
PORT=$(free_port)
DATA=$WORK/data
SNAPDIR=$DATA/server/db/snapshots
export HOME=$WORK/home KUBECONFIG=$WORK/data/server/admin.kubeconfig
mkdir -p "$HOME"
SECRET_VALUE=kept-secret-$RANDOM$RANDOM
SNAPFILE=""
MAX_RV=0

cleanup() {
  keep_logs_on_failure "${E2E_KEEP_LOGS:-/tmp/mini-e2e-snapshot-logs}"
  stop_server KILL
  rm -rf "$WORK"
}
trap cleanup EXIT

k() { kubectl --request-timeout=20s "$@"; }
snap() { "$MINI_BIN" snapshot "$@" --data-dir "$DATA"; }

# list_rv PATH: the resourceVersion of a list.
list_rv() { k get --raw "$1" | jq -r .metadata.resourceVersion; }

# db_digest: a digest of every file of the datastore (not the snapshots).
db_digest() { find "$DATA/server/db" -path "$SNAPDIR" -prune -o -type f -print0 | sort -z | xargs -0 md5sum | md5sum; }

step_start() {
  MINI_DISABLE_SNAPSHOTS=true start_server "$DATA" "$PORT"
  ok "server_started"
}

step_seed() {
  k create namespace keep >/dev/null
  for i in 1 2 3 4 5; do k -n keep create configmap "cm$i" --from-literal=n="$i" >/dev/null; done
  k -n keep create secret generic s --from-literal=v="$SECRET_VALUE" >/dev/null
  expect_eq "seeded_configmaps" "5" bash -c "kubectl -n keep get configmaps -o name | grep -c configmap/cm"
}

step_save() {
  expect "save_prints_the_file" "^saved .*/before-[0-9TZ]+\.snap \([0-9]+ keys at revision [0-9]+" snap save --name before
  SNAPFILE=$(ls "$SNAPDIR"/before-*.snap | head -1)
  expect "ls_lists_the_snapshot" "^before-[0-9TZ]+\.snap +[0-9]+ +[0-9]+ +[0-9]+ sled" snap ls
  expect_eq "ls_json_names_the_keyring" "true" bash -c "'$MINI_BIN' snapshot ls -o json --data-dir '$DATA' | jq -r '.[0].header.keyring'"
  expect_fail "save_bad_name_refused" "not valid" snap save --name Bad_Name
}

step_change() {
  k delete namespace keep --wait=true --timeout=60s >/dev/null
  expect_fail "namespace_deleted" "NotFound|not found" k get namespace keep
  for i in 1 2 3; do k create configmap "after$i" --from-literal=x=y >/dev/null; done
  MAX_RV=$(list_rv /api/v1/configmaps)
  if [ "$MAX_RV" -gt 0 ]; then ok "recorded_highest_rv_$MAX_RV"; else not_ok "recorded_highest_rv" "$MAX_RV"; fi
}

step_restore_refusals() {
  expect_fail "restore_refused_while_server_runs" "stop the server" snap restore "$SNAPFILE"
  stop_server TERM
  local before
  before=$(db_digest)
  cp "$SNAPFILE" "$WORK/corrupt.snap"
  printf '\x00\x01\x02' | dd of="$WORK/corrupt.snap" bs=1 seek=200 conv=notrunc status=none
  expect_fail "corrupted_snapshot_refused" "corrupt" snap restore "$WORK/corrupt.snap"
  head -c 4096 /dev/urandom >"$WORK/foreign.snap"
  expect_fail "foreign_file_refused" "not a mini snapshot" snap restore "$WORK/foreign.snap"
  expect_fail "missing_snapshot_refused" "not found" snap restore no-such-snapshot
  expect_eq "refused_restores_left_the_datastore_untouched" "$before" db_digest
}

step_restore() {
  expect "restore_succeeds" "^restored [0-9]+ keys of before .* with its encryption keyring; revisions continue at [0-9]+" snap restore "$(basename "$SNAPFILE")"
  MINI_DISABLE_SNAPSHOTS=true start_server "$DATA" "$PORT"
  expect_eq "namespace_is_back" "keep" k get namespace keep -o jsonpath='{.metadata.name}'
  expect_eq "configmaps_are_back" "5" bash -c "kubectl -n keep get configmaps -o name | grep -c configmap/cm"
  expect_eq "secret_decodes_with_restored_keyring" "$SECRET_VALUE" bash -c "kubectl -n keep get secret s -o jsonpath='{.data.v}' | base64 -d"
  expect_fail "objects_created_after_the_snapshot_are_gone" "NotFound|not found" k get configmap after1
}

step_revisions() {
  local rv old_rv created
  expect "watch_from_old_rv_gets_410" '"code":410' \
    k get --raw "/api/v1/namespaces/keep/configmaps?watch=1&resourceVersion=$MAX_RV&timeoutSeconds=2"
  old_rv=$(k -n keep get configmap cm1 -o jsonpath='{.metadata.resourceVersion}')
  expect "watch_from_restored_objects_rv_gets_410" '"code":410' \
    k get --raw "/api/v1/namespaces/keep/configmaps?watch=1&resourceVersion=$old_rv&timeoutSeconds=2"
  rv=$(list_rv /api/v1/namespaces/keep/configmaps)
  if [ "$rv" -gt "$MAX_RV" ]; then ok "relist_rv_above_every_earlier_one"; else not_ok "relist_rv_above_every_earlier_one" "$rv <= $MAX_RV"; fi
  local out
  out=$(k get --raw "/api/v1/namespaces/keep/configmaps?watch=1&resourceVersion=$rv&timeoutSeconds=1" 2>&1) || true
  if grep -q '"code":410' <<<"$out"; then not_ok "watch_from_relist_rv_is_accepted" "$out"; else ok "watch_from_relist_rv_is_accepted"; fi
  k -n keep create configmap fresh --from-literal=x=1 >/dev/null
  created=$(k -n keep get configmap fresh -o jsonpath='{.metadata.resourceVersion}')
  if [ "$created" -gt "$MAX_RV" ]; then ok "new_rv_above_every_earlier_one"; else not_ok "new_rv_above_every_earlier_one" "$created <= $MAX_RV"; fi
}

# scheduled_count: scheduled snapshots on disk.
scheduled_count() { find "$SNAPDIR" -maxdepth 1 -name 'scheduled-*.snap' | wc -l; }

step_scheduled() {
  stop_server TERM
  MINI_SNAPSHOT_CRON="*/2 * * * * *" MINI_SNAPSHOT_RETENTION=2 start_server "$DATA" "$PORT"
  local pruned=0
  for _ in $(seq 1 150); do
    if grep -q "pruned a scheduled snapshot" "$DATA/server.log"; then pruned=1; break; fi
    sleep 0.2
  done
  stop_server TERM
  if [ "$pruned" -eq 1 ]; then ok "scheduled_snapshots_pruned"; else not_ok "scheduled_snapshots_pruned" "$(ls "$SNAPDIR")"; fi
  expect_eq "scheduled_snapshots_kept_to_retention" "2" scheduled_count
  expect "scheduled_snapshots_listed" "^scheduled-" snap ls
}

step_cli_prune_delete() {
  local file
  expect_fail "save_without_server_names_it" "server" snap save
  expect "prune_keeps_newest" "1 deleted, 1 scheduled kept at most" snap prune --keep 1 --name scheduled
  expect_eq "one_scheduled_left" "1" scheduled_count
  file=$(basename "$(ls "$SNAPDIR"/scheduled-*.snap)")
  expect "delete_removes_it" "^deleted .*$file" snap delete "$file"
  expect_eq "no_scheduled_left" "0" scheduled_count
  expect_fail "delete_unknown_refused" "not found" snap delete "$file"
}

step_start
step_seed
step_save
step_change
step_restore_refusals
step_restore
step_revisions
step_scheduled
step_cli_prune_delete
summary
