#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, builds once (dev profile),
# checks formatting and lints, runs unit and integration tests, then the end-to-end suites
# against a real `mini server` with the installed kubectl and the official Python client.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOGS=${CARGO_TARGET_DIR:-$ROOT/target}/test-logs
TOTAL_PASS=0
TOTAL_FAIL=0

log() { printf '\n=== %s\n' "$*"; }

install_deps() {
  log "dependencies"
  local missing=() pair
  # tool:package -- what the node e2e suite runs
  for pair in curl:curl openssl:openssl containerd:containerd runc:runc \
    busybox:busybox-static nft:nftables iperf3:iperf3 ip:iproute2; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  # the install suite boots Debian machines with systemd-nspawn from a debootstrap rootfs
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
  # the registry's integration tests drive real OCI clients and an upstream registry
  for pair in skopeo:skopeo podman:podman docker-registry:docker-registry; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  # the etcd store's integration tests and its e2e suite start a real 3-member etcd
  for pair in etcd:etcd-server; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  # the console suite drives Debian's chromium (playwright-core from npm, cached outside the checkout)
  for pair in chromium:chromium node:nodejs npm:npm; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  # a CJK font, so the Simplified Chinese pages in the console screenshots are legible
  [ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  command -v kubectl >/dev/null 2>&1 || { echo "kubectl is required (installed on every mini machine)"; exit 1; }
  python3 -c 'import kubernetes' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check kubernetes
  mkdir -p "$LOGS"
}

# count_cargo LOG: adds the counts of every `test result:` line in a cargo test log.
count_cargo() {
  local p f
  p=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$1" | awk '{s+=$4} END {print s+0}')
  f=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$1" | awk '{s+=$6} END {print s+0}')
  TOTAL_PASS=$((TOTAL_PASS + p))
  TOTAL_FAIL=$((TOTAL_FAIL + f))
}

# count_plain LOG: adds the counts of a suite's closing `N passed, M failed` line.
count_plain() {
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 || true)
  if [ -z "$line" ]; then
    echo "no summary line in $1: counting the suite as one failure"
    TOTAL_FAIL=$((TOTAL_FAIL + 1))
    return
  fi
  TOTAL_PASS=$((TOTAL_PASS + $(echo "$line" | awk '{print $1}')))
  TOTAL_FAIL=$((TOTAL_FAIL + $(echo "$line" | awk '{print $3}')))
}

build() {
  log "build (dev profile, all targets)"
  # no protoc: the gRPC code is committed in pkg/proto, so a build script that still runs protoc fails here
  export PROTOC=/bin/false
  cargo build --workspace --all-targets
}

lint() {
  log "cargo fmt --check and clippy"
  local rc=0
  cargo fmt --all -- --check >"$LOGS/fmt.log" 2>&1 || rc=1
  cargo clippy --workspace --all-targets -- -D warnings >"$LOGS/clippy.log" 2>&1 || rc=$((rc + 2))
  if [ $((rc & 1)) -ne 0 ]; then echo "not ok - fmt_check_clean"; head -40 "$LOGS/fmt.log"; TOTAL_FAIL=$((TOTAL_FAIL + 1)); else echo "ok - fmt_check_clean"; TOTAL_PASS=$((TOTAL_PASS + 1)); fi
  if [ $((rc & 2)) -ne 0 ]; then echo "not ok - clippy_clean"; grep -E '^(error|warning)' -A 6 "$LOGS/clippy.log" | head -60; TOTAL_FAIL=$((TOTAL_FAIL + 1)); else echo "ok - clippy_clean"; TOTAL_PASS=$((TOTAL_PASS + 1)); fi
}

unit_and_integration() {
  log "unit and integration tests"
  cargo test --workspace --no-fail-fast 2>&1 | tee "$LOGS/cargo-test.log" || true
  count_cargo "$LOGS/cargo-test.log"
}

e2e() {
  log "end-to-end: kubectl against mini server"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/kubectl_api.sh 2>&1 | tee "$LOGS/e2e-kubectl.log" || true
  count_plain "$LOGS/e2e-kubectl.log"
  log "end-to-end: scheduler and controllers with simulated nodes"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/kubectl_workloads.sh 2>&1 | tee "$LOGS/e2e-workloads.log" || true
  count_plain "$LOGS/e2e-workloads.log"
  if [ -f tests/e2e/python_client.py ]; then
    log "end-to-end: official Python client against mini server"
    MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" python3 tests/e2e/python_client.py 2>&1 | tee "$LOGS/e2e-python.log" || true
    count_plain "$LOGS/e2e-python.log"
  fi
  log "end-to-end: server + two agents with containerd in network namespaces"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/agent_pods.sh 2>&1 | tee "$LOGS/e2e-agent.log" || true
  count_plain "$LOGS/e2e-agent.log"
  log "end-to-end: cluster network on three nodes (overlay, services, DNS)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/network.sh 2>&1 | tee "$LOGS/e2e-network.log" || true
  count_plain "$LOGS/e2e-network.log"
  log "end-to-end: NetworkPolicy enforcement on two nodes (deny, allow, ports, egress ipBlock, cut connections)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/netpol.sh 2>&1 | tee "$LOGS/e2e-netpol.log" || true
  count_plain "$LOGS/e2e-netpol.log"
  log "end-to-end: static pod IPs from IP pools on two nodes"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/ippool.sh 2>&1 | tee "$LOGS/e2e-ippool.log" || true
  count_plain "$LOGS/e2e-ippool.log"
  log "end-to-end: the built-in ingress controller on two nodes (hosts, paths, TLS by SNI, HTTP/2, upgrades, status)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/ingress.sh 2>&1 | tee "$LOGS/e2e-ingress.log" || true
  count_plain "$LOGS/e2e-ingress.log"
  log "end-to-end: the embedded image registry (skopeo, podman, ctr, nodes pulling, mirror, GC, commit)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/registry.sh 2>&1 | tee "$LOGS/e2e-registry.log" || true
  count_plain "$LOGS/e2e-registry.log"
  log "end-to-end: node isolation (Node authorizer, NodeRestriction) on two agents"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/nodeauthz.sh 2>&1 | tee "$LOGS/e2e-nodeauthz.log" || true
  count_plain "$LOGS/e2e-nodeauthz.log"
  log "end-to-end: mini killall removes one data dir's server, containerd, pods and network state"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/killall.sh 2>&1 | tee "$LOGS/e2e-killall.log" || true
  count_plain "$LOGS/e2e-killall.log"
  log "end-to-end: bootstrap tokens, install endpoints, bundle images reaching an agent"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/tokens.sh 2>&1 | tee "$LOGS/e2e-tokens.log" || true
  count_plain "$LOGS/e2e-tokens.log"
  log "end-to-end: local-path volumes (StatefulSet claims, data across restarts, reclaim, static PVs)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/storage.sh 2>&1 | tee "$LOGS/e2e-storage.log" || true
  count_plain "$LOGS/e2e-storage.log"
  log "end-to-end: install.sh and mini install/uninstall as systemd services in nspawn machines"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/install.sh 2>&1 | tee "$LOGS/e2e-install.log" || true
  count_plain "$LOGS/e2e-install.log"
  log "end-to-end: mini server on a 3-member etcd (controllers, restart, member loss, quorum loss, bad endpoint)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/etcd.sh 2>&1 | tee "$LOGS/e2e-etcd.log" || true
  count_plain "$LOGS/e2e-etcd.log"
  log "end-to-end: three servers on a 3-member etcd, two agents (join, shared keys, leader kill during a rollout, fail-over, rejoin)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/ha.sh 2>&1 | tee "$LOGS/e2e-ha.log" || true
  count_plain "$LOGS/e2e-ha.log"
  log "end-to-end: auto-deployed manifests (apply, change, broken file, prune, --disable)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/manifests.sh 2>&1 | tee "$LOGS/e2e-manifests.log" || true
  count_plain "$LOGS/e2e-manifests.log"
  log "end-to-end: monitoring history and log search on two nodes (rotation, restarts, PromQL, LogQL, RBAC)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/observe.sh 2>&1 | tee "$LOGS/e2e-observe.log" || true
  count_plain "$LOGS/e2e-observe.log"
  log "end-to-end: secrets encryption at rest (sealed in the datastore, rotate-keys, reencrypt, restart, off, 403)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/secrets_encrypt.sh 2>&1 | tee "$LOGS/e2e-secrets-encrypt.log" || true
  count_plain "$LOGS/e2e-secrets-encrypt.log"
  log "end-to-end: snapshots (save, delete a namespace, restore refused while running or corrupt, restore, 410 and relist, scheduled and pruned)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/snapshot.sh 2>&1 | tee "$LOGS/e2e-snapshot.log" || true
  count_plain "$LOGS/e2e-snapshot.log"
  log "end-to-end: accounts (mini user, login sessions, CSRF, restart, kubeconfig download, escalation, audit log)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/accounts.sh 2>&1 | tee "$LOGS/e2e-accounts.log" || true
  count_plain "$LOGS/e2e-accounts.log"
  log "end-to-end: load tests on two nodes (fixed rate from 2 generators, exports, thresholds, bad input, cancel)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/loadtest.sh 2>&1 | tee "$LOGS/e2e-loadtest.log" || true
  count_plain "$LOGS/e2e-loadtest.log"
  log "end-to-end: web console in chromium (login, live overview and nodes, join, cordon, refused viewer, zh, logout)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/console.sh 2>&1 | tee "$LOGS/e2e-console.log" || true
  count_plain "$LOGS/e2e-console.log"
  log "end-to-end: certificates renewed online under traffic (2m lifetime), rotate, CA rotation overlap and retirement"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/certrotate.sh 2>&1 | tee "$LOGS/e2e-certrotate.log" || true
  count_plain "$LOGS/e2e-certrotate.log"
  log "end-to-end: console applications in chromium with an agent (deploy from the registry, upgrade, history, rollback, scale, logs, terminal, read-only)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/console_apps.sh 2>&1 | tee "$LOGS/e2e-console-apps.log" || true
  count_plain "$LOGS/e2e-console-apps.log"
  log "end-to-end: console load tests in chromium with an agent (start from the form, live charts, verdicts, compare, exports, cancel, read-only)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/console_loadtest.sh 2>&1 | tee "$LOGS/e2e-console-loadtest.log" || true
  count_plain "$LOGS/e2e-console-loadtest.log"
  log "end-to-end: console resource pages in chromium with an agent (services, ingresses, configmaps, secrets, namespaces, events live; create/edit/delete; log search; registry; accounts; read-only 403)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/console_resources.sh 2>&1 | tee "$LOGS/e2e-console-resources.log" || true
  count_plain "$LOGS/e2e-console-resources.log"
  log "end-to-end: console nodes in chromium with an agent (CPU/memory charts per node and cluster, drain blocked by a PDB, cancel, drain, remove node, read-only)"
  MINI_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/mini" bash tests/e2e/console_nodes.sh 2>&1 | tee "$LOGS/e2e-console-nodes.log" || true
  count_plain "$LOGS/e2e-console-nodes.log"
}

# the release binary (zig-linked for glibc 2.17, build cached in /var/cache/mini-build) on Debian 11
release_oldglibc() {
  log "end-to-end: release binary on an older distribution (Debian 11, glibc 2.31)"
  bash tests/e2e/oldglibc.sh 2>&1 | tee "$LOGS/e2e-oldglibc.log" || true
  count_plain "$LOGS/e2e-oldglibc.log"
}

install_deps
build
lint
unit_and_integration
e2e
release_oldglibc
echo
echo "all suites: $TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" -eq 0 ]
