#!/usr/bin/env bash
# Shared helpers for mini's end-to-end scripts: checks with pass/fail counts, and starting and
# stopping a real `mini server` on a free loopback port. Source it; don't run it.

PASS=0
FAIL=0
FAILED_NAMES=()
SERVER_PID=""

# ok NAME: record a pass.
ok() { PASS=$((PASS + 1)); echo "ok - $1"; }

# not_ok NAME DETAIL: record a failure.
not_ok() {
  FAIL=$((FAIL + 1))
  FAILED_NAMES+=("$1")
  echo "not ok - $1"
  [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /' | head -20
  return 0
}

# expect NAME PATTERN CMD...: CMD must exit 0 and its output match the extended regex PATTERN.
expect() {
  local name=$1 pattern=$2 out rc
  shift 2
  out=$("$@" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -eq 0 ] && grep -Eq -- "$pattern" <<<"$out"; then ok "$name"; else not_ok "$name" "rc=$rc want /$pattern/ got: $out"; fi
}

# expect_fail NAME PATTERN CMD...: CMD must exit non-zero and its output match PATTERN.
expect_fail() {
  local name=$1 pattern=$2 out rc
  shift 2
  out=$("$@" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -ne 0 ] && grep -Eq -- "$pattern" <<<"$out"; then ok "$name"; else not_ok "$name" "rc=$rc want failure /$pattern/ got: $out"; fi
}

# expect_eq NAME WANT CMD...: CMD's trimmed output must equal WANT.
expect_eq() {
  local name=$1 want=$2 out rc
  shift 2
  out=$("$@" 2>&1) && rc=0 || rc=$?
  if [ "$rc" -eq 0 ] && [ "$out" = "$want" ]; then ok "$name"; else not_ok "$name" "rc=$rc want [$want] got [$out]"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_server DATA_DIR PORT: starts mini server, waits until /readyz answers.
start_server() {
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir"
  "$MINI_BIN" server --data-dir "$dir" --bind-address 127.0.0.1 --https-listen-port "$port" --disable-agent "$@" >>"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    if curl -sk "https://127.0.0.1:$port/readyz" 2>/dev/null | grep -q ok; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "mini server exited:"; cat "$dir/server.log"; return 1; fi
    sleep 0.1
  done
  echo "mini server did not become ready"; cat "$dir/server.log"; return 1
}

# stop_server [SIGNAL]: stops the server this script started (by PID).
stop_server() {
  local sig=${1:-TERM}
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "-$sig" "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

summary() {
  echo
  if [ "$FAIL" -gt 0 ]; then printf 'failed: %s\n' "${FAILED_NAMES[@]}"; fi
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
}

# keep_logs_on_failure DIR: after a failed run, copies the server/agent/containerd logs from
# $WORK to DIR before cleanup removes them.
keep_logs_on_failure() {
  local keep=$1
  if [ "$FAIL" -gt 0 ]; then
    rm -rf "$keep" && mkdir -p "$keep"
    (cd "$WORK" && find . -maxdepth 4 -name '*.log' -exec cp --parents {} "$keep" \;) 2>/dev/null || true
    echo "logs of the failed run kept in $keep"
  fi
}
