#!/usr/bin/env bash
# Shared helpers for the install end-to-end suite: a cached Debian 12 rootfs (debootstrap, kept
# outside the checkout), "machines" booted from copies of it with systemd as PID 1 under
# `systemd-nspawn -b`, running commands inside them with nsenter, and stopping them again.
# Source it after lib.sh; it needs WORK set.

ROOTFS_CACHE=${ROOTFS_CACHE:-/var/cache/mini-test/bookworm.tar}
ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,iproute2,ca-certificates,curl,containerd,runc
MACHINE_PIDS=()
MACHINE_ROOTS=()

# ensure_rootfs: builds the cached rootfs tarball when it is missing (about a minute, needs the
# Debian mirror); later runs only copy it. A lock keeps parallel builders apart.
ensure_rootfs() {
  [ -s "$ROOTFS_CACHE" ] && return 0
  mkdir -p "$(dirname "$ROOTFS_CACHE")"
  (
    flock 9
    [ -s "$ROOTFS_CACHE" ] && exit 0
    local tmp
    tmp=$(mktemp -d /var/tmp/mini-rootfs.XXXXXX)
    echo "building $ROOTFS_CACHE with debootstrap (packages: $ROOTFS_PACKAGES)"
    if ! debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" bookworm "$tmp" \
      http://deb.debian.org/debian >"$tmp.log" 2>&1; then
      tail -20 "$tmp.log"
      rm -rf "$tmp" "$tmp.log"
      exit 1
    fi
    # a machine id per boot, no getty on the console
    : >"$tmp/etc/machine-id"
    rm -f "$tmp/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
    tar -C "$tmp" -cf "$ROOTFS_CACHE.part" . && mv "$ROOTFS_CACHE.part" "$ROOTFS_CACHE"
    rm -rf "$tmp" "$tmp.log"
  ) 9>"$ROOTFS_CACHE.lock"
}

# boot_machine NAME [NSPAWN_ARGS...]: unpacks a copy of the rootfs under $WORK/NAME and boots it;
# sets MACHINE_PID (the inner systemd) once `systemctl is-system-running` answers.
boot_machine() {
  local name=$1 root="$WORK/$1" pid inner state
  shift
  mkdir -p "$root" /run/systemd/nspawn
  tar -C "$root" -xf "$ROOTFS_CACHE"
  echo "$name" >"$root/etc/hostname"
  # debootstrap's minbase has no /etc/hosts; an installed Debian has one (containerd copies it
  # into every pod sandbox)
  [ -e "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$name" >"$root/etc/hosts"
  MACHINE_ROOTS+=("$root")
  systemd-nspawn -b -D "$root" --register=no --keep-unit -q --machine="$name" "$@" \
    >"$WORK/$name.console" 2>&1 </dev/null &
  pid=$!
  MACHINE_PIDS+=("$pid")
  inner=""
  state=""
  for _ in $(seq 1 300); do
    inner=$(inner_systemd "$pid")
    if [ -n "$inner" ]; then
      state=$(timeout 10 nsenter -t "$inner" -a systemctl is-system-running 2>/dev/null || true)
      case $state in running | degraded) break ;; esac
      # basic.target is all the suites need (systemctl talks to PID 1 over its private socket);
      # D-Bus can hang here when the host runs short of inotify instances
      if [ "$(timeout 10 nsenter -t "$inner" -a systemctl is-active basic.target 2>/dev/null)" = active ] &&
        [ "$(timeout 10 nsenter -t "$inner" -a systemctl is-active systemd-journald.service 2>/dev/null)" = active ]; then
        sleep 2
        state=$(timeout 10 nsenter -t "$inner" -a systemctl is-system-running 2>/dev/null || true)
        break
      fi
    fi
    kill -0 "$pid" 2>/dev/null || { echo "machine $name exited:"; tail -20 "$WORK/$name.console"; return 1; }
    sleep 0.2
  done
  [ -n "$inner" ] || { echo "machine $name: no systemd found"; return 1; }
  case $state in running | degraded) ;; *) echo "# note: machine $name is '$state' (basic.target reached); going on" ;; esac
  MACHINE_PID=$inner
}

# inner_systemd NSPAWN_PID: the PID (host view) of the machine's PID 1, a descendant of nspawn.
inner_systemd() {
  local pid
  for pid in $(pgrep -P "$1" 2>/dev/null); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ]; then echo "$pid"; return 0; fi
  done
  return 0
}

# in_machine PID CMD...: runs CMD inside the machine (all of its namespaces).
in_machine() {
  local pid=$1
  shift
  timeout "${MACHINE_CMD_TIMEOUT:-600}" nsenter -t "$pid" -a \
    env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# stop_machines: powers every machine off (SIGRTMIN+4 to its systemd: no D-Bus needed, so it
# works even when the machine hangs in boot), kills what does not stop within 20 s, and removes
# the rootfs copies.
stop_machines() {
  local pid inner root
  for pid in "${MACHINE_PIDS[@]}"; do
    inner=$(inner_systemd "$pid")
    [ -n "$inner" ] && kill -s RTMIN+4 "$inner" 2>/dev/null || true
  done
  for pid in "${MACHINE_PIDS[@]}"; do
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      # PID 1 of the machine's PID namespace: killing it ends every process in the machine
      inner=$(inner_systemd "$pid")
      [ -n "$inner" ] && kill -KILL "$inner" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  MACHINE_PIDS=()
  for root in "${MACHINE_ROOTS[@]}"; do
    umount -R "$root" 2>/dev/null || true
    rm -rf --one-file-system "$root"
  done
  MACHINE_ROOTS=()
}
