#!/usr/bin/env bash
# End-to-end: mini installed as a systemd service on fresh Debian 12 machines (debootstrap
# rootfs, systemd as PID 1 under systemd-nspawn, two machines on a bridge of their own and
# nothing else): install.sh from an air-gap bundle (binary + image, no network beyond the
# bridge), the bundle's image in the node's containerd, the unit active, kubectl, restart keeps data,
# re-running changes nothing, config files, a rejected token fails fast, an agent installs
# from the server's /install.sh, and `mini uninstall` leaves nothing behind.
# Needs root, debootstrap (first run only: the rootfs is cached in /var/cache/mini-test),
# systemd-container and kubectl. MINI_BIN is the binary under test.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
source tests/e2e/lib.sh
: "${MINI_BIN:?set MINI_BIN to the mini binary under test}"
MINI_BIN=$(readlink -f "$MINI_BIN")
WORK=$(mktemp -d /var/tmp/mini-e2e-install.XXXXXX)
source tests/e2e/nspawn_lib.sh

NS=mie2e$$
SWITCH=$NS-sw
SERVER_NS=$NS-s
AGENT_NS=$NS-a
GATEWAY_IP=10.79.0.1
SERVER_IP=10.79.0.10
AGENT_IP=10.79.0.11
URL=https://$SERVER_IP:6443
S_PID=""
A_PID=""

cleanup() {
  stop_machines
  local ns
  for ns in "$SERVER_NS" "$AGENT_NS" "$SWITCH"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

ms() { in_machine "$S_PID" "$@"; }
ma() { in_machine "$A_PID" "$@"; }
# k ARGS...: the host's kubectl in the server machine's network, with its admin kubeconfig.
k() {
  nsenter --net="/var/run/netns/$SERVER_NS" kubectl --request-timeout=30s \
    --kubeconfig "$WORK/server/var/lib/mini/server/admin.kubeconfig" "$@"
}
unit_prop() { "$1" systemctl show -p "$3" --value "$2"; }

# machine_net NS IP: a namespace on the bridge with one address and a default route to the
# bridge (which forwards nowhere: the machines reach each other and nothing else).
machine_net() {
  local ns=$1 ip=$2 port="p-${1##*-}"
  ip netns add "$ns"
  ip -n "$SWITCH" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$SWITCH" link set "$port" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$GATEWAY_IP"
  # /proc/sys is read-only inside systemd-nspawn: set from outside what an installed host has
  # (the network sysctls are per network namespace)
  nsenter --net="/var/run/netns/$ns" sysctl -qw net.ipv4.ip_forward=1
}

setup() {
  ensure_rootfs
  for ns in "$SERVER_NS" "$AGENT_NS" "$SWITCH"; do ip netns del "$ns" 2>/dev/null || true; done
  ip netns add "$SWITCH"
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" addr add "$GATEWAY_IP/24" dev br0
  ip -n "$SWITCH" link set br0 up
  machine_net "$SERVER_NS" "$SERVER_IP"
  machine_net "$AGENT_NS" "$AGENT_IP"
  # --capability=all: an installed host's root has every capability; nspawn's default set
  # lacks CAP_NET_ADMIN with --network-namespace-path (the pod bridge: "operation not permitted")
  boot_machine server --network-namespace-path="/var/run/netns/$SERVER_NS" --capability=all
  S_PID=$MACHINE_PID
  boot_machine agent --network-namespace-path="/var/run/netns/$AGENT_NS" --capability=all
  A_PID=$MACHINE_PID
  local m
  for m in server agent; do
    cp "$MINI_BIN" "$WORK/$m/root/mini"
    (cd "$WORK/$m/root" && sha256sum mini >mini.sha256)
    cp install.sh "$WORK/$m/root/install.sh"
    printf '%s' "$LEFTOVERS" >"$WORK/$m/root/leftovers.sh"
  done
  ok "machines_booted_with_systemd"
  # the air-gap bundle the server installs from: this binary and the test image
  python3 tests/e2e/build_image.py "$WORK/image.tar" mini.test/bundled:1 >/dev/null
  expect "bundle_created" "wrote" "$MINI_BIN" bundle create --binary "$MINI_BIN" \
    --images "$WORK/image.tar" -o "$WORK/server/root/mini-bundle.tar.zst"
}

# show_failure UNIT: the unit's journal, and what it means when containerd cannot run here.
show_failure() {
  local logs
  logs=$(ms journalctl -u "$1" -n 30 --no-pager -o cat 2>/dev/null || true)
  printf '%s\n' "$logs" | sed 's/^/    /' | tail -30
  if grep -Eqi 'containerd|runc|cgroup' <<<"$logs"; then
    echo "# note: the node side failed inside systemd-nspawn (containerd/runc); the node is covered by the netns suites (agent_pods.sh, network.sh)"
  fi
  # what the control plane did (a node left without a pod CIDR points at the controllers)
  echo "    -- warnings, errors and controller lines of the whole journal:"
  ms journalctl -u "$1" --no-pager -o cat 2>/dev/null | grep -E 'WARN|ERROR|controller|cidr' | tail -20 | sed 's/^/    /' || true
  echo "    -- nodes as the server sees them:"
  k get nodes -o custom-columns=NAME:.metadata.name,PODCIDR:.spec.podCIDR,READY:.status.conditions[-1].status 2>&1 | sed 's/^/    /' || true
}

install_server() {
  local out rc
  out=$(ms sh -c 'cd /root && MINI_BUNDLE=/root/mini-bundle.tar.zst sh install.sh --timeout 240' 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" | sed 's/^/    /' | tail -12
  if [ "$rc" -eq 0 ] && grep -q "mini-server.service is ready" <<<"$out"; then
    ok "install_server_from_bundle_ready"
  else
    not_ok "install_server_from_bundle_ready" "rc=$rc"
    show_failure mini-server.service
  fi
  expect_eq "server_unit_active" active ms systemctl is-active mini-server
  expect_eq "server_unit_enabled" enabled ms systemctl is-enabled mini-server
  expect_eq "server_status_text_running" running unit_prop ms mini-server StatusText
  expect_eq "env_file_mode_0600" 600 ms stat -c %a /etc/systemd/system/mini-server.service.env
  expect_eq "installed_unit_is_master_copy" "" diff "$WORK/server/etc/systemd/system/mini-server.service" systemd/mini-server.service
}

# bundled_image_listed: the bundle's image is in the server node's containerd.
bundled_image_listed() {
  ms ctr --address /var/lib/mini/agent/containerd/containerd.sock -n k8s.io images ls -q | grep -x 'mini.test/bundled:1' >/dev/null
}

kubectl_works() {
  local i
  for i in $(seq 1 60); do bundled_image_listed && break; sleep 1; done
  if bundled_image_listed; then ok "bundle_image_imported_into_node_containerd"; else not_ok "bundle_image_imported_into_node_containerd" "$(ms ls -l /var/lib/mini/agent/images 2>&1)"; fi
  expect "kubectl_get_nodes_server_ready" '^server +Ready +control-plane' k get nodes --no-headers
  expect "kubectl_create_configmap" 'created' k create configmap e2e-keep --from-literal=a=b
}

# pod_runs_in_machine: a pod (the built-in pause image) on the server's own node, so uninstall
# has containerd shims, a pod network namespace and mounts to remove. If containerd/runc cannot
# run it inside systemd-nspawn here, the output says why and the node side is left to the netns
# suites (agent_pods.sh, network.sh).
pod_runs_in_machine() {
  k run e2e-pause --image=mini.local/pause:3.10 --image-pull-policy=Never --restart=Never >/dev/null 2>&1 || true
  local phase=""
  for _ in $(seq 1 90); do
    phase=$(k get pod e2e-pause -o 'jsonpath={.status.phase}' 2>/dev/null || true)
    [ "$phase" = Running ] && break
    sleep 1
  done
  if [ "$phase" = Running ]; then
    ok "pod_runs_in_machine"
  else
    echo "# note: containerd/runc could not run a pod inside systemd-nspawn here (phase '$phase'):"
    k get pod e2e-pause -o 'jsonpath={range .status.containerStatuses[*]}{.state}{"\n"}{end}' 2>&1 | sed 's/^/#   /' | head -5
    k get events --field-selector involvedObject.name=e2e-pause --no-headers 2>&1 | sed 's/^/#   /' | tail -5
    echo "ok - pod_runs_in_machine # skip: the node side is covered by agent_pods.sh and network.sh (not counted)"
  fi
}

restart_keeps_data() {
  # Type=notify: `systemctl restart` returns once mini sent READY=1
  local rc
  ms systemctl restart mini-server && rc=0 || rc=$?
  if [ "$rc" -eq 0 ]; then ok "systemctl_restart_waits_for_ready"; else not_ok "systemctl_restart_waits_for_ready" "rc=$rc"; fi
  expect "restart_keeps_configmap" '^b$' k get configmap e2e-keep -o 'jsonpath={.data.a}{"\n"}'
}

rerun_changes_nothing() {
  local pid1 n1 pid2 n2 out rc env1 env2
  pid1=$(unit_prop ms mini-server MainPID)
  n1=$(unit_prop ms mini-server NRestarts)
  env1=$(cat "$WORK/server/etc/systemd/system/mini-server.service.env")
  out=$(ms sh -c 'cd /root && MINI_BINARY=/root/mini sh install.sh' 2>&1) && rc=0 || rc=$?
  pid2=$(unit_prop ms mini-server MainPID)
  n2=$(unit_prop ms mini-server NRestarts)
  env2=$(cat "$WORK/server/etc/systemd/system/mini-server.service.env")
  if [ "$rc" -eq 0 ] && grep -q "nothing changed" <<<"$out" && ! grep -q "writing\|installing" <<<"$out"; then
    ok "rerun_without_arguments_changes_nothing"
  else
    not_ok "rerun_without_arguments_changes_nothing" "rc=$rc $out"
  fi
  if [ "$pid1" = "$pid2" ] && [ "$n1" = "$n2" ] && [ "$env1" = "$env2" ]; then
    ok "rerun_does_not_restart"
  else
    not_ok "rerun_does_not_restart" "MainPID $pid1 -> $pid2, NRestarts $n1 -> $n2"
  fi
}

settings_are_kept() {
  local out rc
  out=$(ms sh -c 'cd /root && MINI_BINARY=/root/mini MINI_NODE_NAME=server sh install.sh -- --node-label e2e-exec=yes' 2>&1) && rc=0 || rc=$?
  if [ "$rc" -eq 0 ] && grep -q "restarting mini-server.service" <<<"$out"; then ok "new_setting_restarts"; else not_ok "new_setting_restarts" "rc=$rc $out"; fi
  out=$(ms /usr/local/bin/mini install 2>&1) && rc=0 || rc=$?
  if [ "$rc" -eq 0 ] && grep -q "nothing changed" <<<"$out"; then ok "rerun_after_setting_changes_nothing"; else not_ok "rerun_after_setting_changes_nothing" "rc=$rc $out"; fi
  expect "env_file_keeps_settings" 'MINI_EXEC="--node-label e2e-exec=yes"' cat "$WORK/server/etc/systemd/system/mini-server.service.env"
  expect "node_label_from_exec" '^server +yes' k get node server -L e2e-exec --no-headers -o custom-columns=N:.metadata.name,L:.metadata.labels.e2e-exec
}

config_files() {
  mkdir -p "$WORK/server/etc/mini/config.yaml.d"
  printf 'node-label:\n  - e2e-file=base\n' >"$WORK/server/etc/mini/config.yaml"
  printf 'node-label: [e2e-dropin=yes]\n' >"$WORK/server/etc/mini/config.yaml.d/10-e2e.yaml"
  local rc
  ms systemctl restart mini-server && rc=0 || rc=$?
  [ "$rc" -eq 0 ] || not_ok "restart_with_config_file" "rc=$rc"
  expect "config_file_and_dropin_labels" '^base +yes$' k get node server --no-headers \
    -o 'custom-columns=A:.metadata.labels.e2e-file,B:.metadata.labels.e2e-dropin'
  printf 'tls-sans: x\n' >"$WORK/server/root/bad.yaml"
  expect_fail "config_unknown_key_names_key_and_file" '/root/bad.yaml: unknown key "tls-sans"' \
    ms /usr/local/bin/mini server --config /root/bad.yaml
}

agent_rejected_token_fails_fast() {
  local hash out rc
  hash=$(sed -n 's/^K10\([0-9a-f]*\)::.*/\1/p' "$WORK/server/var/lib/mini/server/node-token")
  out=$(ma sh -c "cd /root && MINI_BINARY=/root/mini sh install.sh --server $URL --token K10$hash::server:not-the-secret --timeout 120" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" | tail -3 | sed 's/^/    /'
  if [ "$rc" -ne 0 ] && grep -q "mini-agent.service failed" <<<"$out"; then
    ok "agent_rejected_token_fails_with_message"
  else
    not_ok "agent_rejected_token_fails_with_message" "rc=$rc $out"
  fi
  ma /usr/local/bin/mini uninstall >/dev/null 2>&1 || true
}

agent_from_server_script() {
  local token out rc
  token=$(cat "$WORK/server/var/lib/mini/server/node-token")
  if ! nsenter --net="/var/run/netns/$AGENT_NS" curl -sfk --max-time 10 "$URL/install.sh" -o /dev/null; then
    not_ok "agent_install_from_server_install_sh" \
      "the server does not serve GET /install.sh yet (the server side of /install.sh and /v1-mini/binary is another branch)"
    return
  fi
  out=$(ma sh -c "curl -sfLk $URL/install.sh | MINI_URL=$URL MINI_TOKEN=$token sh -" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" | tail -5 | sed 's/^/    /'
  if [ "$rc" -eq 0 ] && grep -q "mini-agent.service is ready" <<<"$out"; then
    ok "agent_install_from_server_install_sh"
  else
    not_ok "agent_install_from_server_install_sh" "rc=$rc"
  fi
  expect_eq "agent_unit_active" active ma systemctl is-active mini-agent
  expect "agent_node_registered" '^agent ' k get nodes --no-headers
}

# LEFTOVERS: prints what of mini is still on a machine (files, processes, mounts, interfaces);
# copied into each machine as /root/leftovers.sh.
LEFTOVERS='#!/bin/sh
for f in /usr/local/bin/mini /etc/systemd/system/mini-server.service /etc/systemd/system/mini-agent.service \
  /etc/systemd/system/mini-server.service.env /etc/systemd/system/mini-agent.service.env /etc/mini /var/lib/mini; do
  [ -e "$f" ] && echo "file $f"
done
# mini, and anything started under its data dir (the distribution'"'"'s own containerd.service is not mini'"'"'s)
for p in /proc/[0-9]*; do
  c=$(cat "$p/comm" 2>/dev/null) || continue
  a=$(tr "\000" " " <"$p/cmdline" 2>/dev/null) || continue
  case "$c $a" in "mini "* | */var/lib/mini*) echo "process ${p#/proc/} $a" ;; esac
done
grep -E "/var/lib/mini|/run/mini|/run/netns" /proc/self/mountinfo | sed "s/^/mount /"
ip -o link show | awk -F": " "{print \$2}" | sed "s/@.*//" | grep -vx -e lo -e eth0 | sed "s/^/interface /"
true
'

uninstall_leaves_nothing() {
  local m pid out rc left
  for m in ms ma; do
    if "$m" test -x /usr/local/bin/mini; then
      out=$("$m" /usr/local/bin/mini uninstall 2>&1) && rc=0 || rc=$?
      printf '%s\n' "$out" | tail -4 | sed 's/^/    /'
      if [ "$rc" -eq 0 ]; then ok "uninstall_succeeds_${m#m}"; else not_ok "uninstall_succeeds_${m#m}" "rc=$rc"; fi
    fi
    left=$("$m" sh /root/leftovers.sh)
    if [ -z "$left" ]; then ok "uninstall_leaves_nothing_${m#m}"; else not_ok "uninstall_leaves_nothing_${m#m}" "$left"; fi
  done
  expect_eq "uninstall_removed_unit" "" sh -c "ls $WORK/server/etc/systemd/system | grep mini || true"
}

setup
install_server
kubectl_works
pod_runs_in_machine
restart_keeps_data
rerun_changes_nothing
settings_are_kept
config_files
agent_rejected_token_fails_fast
agent_from_server_script
uninstall_leaves_nothing
summary
