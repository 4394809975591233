#!/usr/bin/env bash
# Shared helpers for a real 3-member etcd cluster on loopback (Debian's etcd-server,
# /usr/bin/etcd): free ports, data under a directory the caller removes, members started and
# killed by PID. Source it; don't run it. Used by tests/e2e/etcd.sh, tests/e2e/ha.sh and
# scripts/bench_ha.sh. Set ETCD_NS (a network namespace under /var/run/netns) and ETCD_HOST (an
# address in it) before etcd_start to run the members there instead (tests/e2e/ha.sh).

ETCD_DIR=""
ETCD_NAMES=(e0 e1 e2)
ETCD_CLIENT_PORTS=()
ETCD_PEER_PORTS=()
ETCD_PIDS=("" "" "")
ETCD_ENDPOINTS=""
ETCD_NS=${ETCD_NS:-}
ETCD_HOST=${ETCD_HOST:-127.0.0.1}

# etcd_in_ns CMD...: CMD in ETCD_NS when set (foreground use only).
etcd_in_ns() {
  if [ -n "$ETCD_NS" ]; then nsenter --net="/var/run/netns/$ETCD_NS" "$@"; else "$@"; fi
}

etcd_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# etcd_member_start I: starts (or restarts, keeping its data) member I in the background.
etcd_member_start() {
  local i=$1 initial="" j
  for j in 0 1 2; do
    initial+="${initial:+,}${ETCD_NAMES[$j]}=http://$ETCD_HOST:${ETCD_PEER_PORTS[$j]}"
  done
  local client="http://$ETCD_HOST:${ETCD_CLIENT_PORTS[$i]}" peer="http://$ETCD_HOST:${ETCD_PEER_PORTS[$i]}"
  # a simple command in the background (not a function: that would be a subshell), so $! is
  # etcd's own PID (nsenter execs it)
  local in_ns=()
  if [ -n "$ETCD_NS" ]; then in_ns=(nsenter --net="/var/run/netns/$ETCD_NS"); fi
  "${in_ns[@]}" /usr/bin/etcd --name "${ETCD_NAMES[$i]}" --data-dir "$ETCD_DIR/${ETCD_NAMES[$i]}" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token mini-e2e \
    --heartbeat-interval 50 --election-timeout 500 --logger zap --log-outputs stderr \
    >>"$ETCD_DIR/${ETCD_NAMES[$i]}.log" 2>&1 </dev/null &
  ETCD_PIDS[$i]=$!
}

# etcd_member_kill I: SIGKILLs member I (by the PID it was started with) and reaps it.
etcd_member_kill() {
  local i=$1 pid=${ETCD_PIDS[$1]}
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  ETCD_PIDS[$i]=""
}

# etcd_wait_healthy [SECONDS]: waits until a member reports a healthy cluster (has a leader).
etcd_wait_healthy() {
  local secs=${1:-30} i
  for _ in $(seq 1 $((secs * 10))); do
    for i in 0 1 2; do
      if etcd_in_ns curl -s --max-time 1 "http://$ETCD_HOST:${ETCD_CLIENT_PORTS[$i]}/health" 2>/dev/null | grep -q '"health":"true"'; then
        return 0
      fi
    done
    sleep 0.1
  done
  echo "etcd did not become healthy within ${secs}s; logs in $ETCD_DIR"
  return 1
}

# etcd_start DIR: starts three members with data and logs under DIR and waits for a leader;
# sets ETCD_ENDPOINTS (comma-separated client URLs).
etcd_start() {
  ETCD_DIR=$1
  mkdir -p "$ETCD_DIR"
  local i
  for i in 0 1 2; do
    ETCD_CLIENT_PORTS[$i]=$(etcd_free_port)
    ETCD_PEER_PORTS[$i]=$(etcd_free_port)
  done
  for i in 0 1 2; do etcd_member_start "$i"; done
  ETCD_ENDPOINTS=""
  for i in 0 1 2; do ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}http://$ETCD_HOST:${ETCD_CLIENT_PORTS[$i]}"; done
  etcd_wait_healthy 30
}

# etcd_stop: kills every member this script started.
etcd_stop() {
  local i
  for i in 0 1 2; do etcd_member_kill "$i"; done
}
