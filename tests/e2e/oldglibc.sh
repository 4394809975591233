#!/usr/bin/env bash
# The release binary runs on an older distribution: builds it with scripts/release.sh (glibc floor
# checked there; its hot functions linked first, checked here), puts it into a Debian 11
# (bullseye, glibc 2.31) minbase rootfs and runs `mini --version` and `mini check` there under
# chroot. Needs root.
#
#   bash tests/e2e/oldglibc.sh            # builds dist/mini with scripts/release.sh (cached build dir)
#   MINI_RELEASE_BIN=path bash tests/e2e/oldglibc.sh   # tests that binary instead
#
# The bullseye rootfs is debootstrapped once into $MINI_TEST_CACHE/bullseye.tar (default
# /var/cache/mini-test) and extracted into a temp dir per run.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh

CACHE_DIR=${MINI_TEST_CACHE:-/var/cache/mini-test}
ROOTFS_TAR="$CACHE_DIR/bullseye.tar"
MIRROR=${MINI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=""
MOUNTS=()
BIN=""

cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount -l "${MOUNTS[$i]}" 2>/dev/null || true
  done
  if [ -n "$ROOT" ] && ! grep -q " $ROOT/" /proc/mounts; then rm -rf "$ROOT"; fi
}
trap cleanup EXIT

# ensure_rootfs: debootstraps the bullseye minbase rootfs into the cache when it is missing.
ensure_rootfs() {
  [ -s "$ROOTFS_TAR" ] && return 0
  command -v debootstrap >/dev/null 2>&1 || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
  }
  mkdir -p "$CACHE_DIR"
  local tmp
  tmp=$(mktemp -d "$CACHE_DIR/bullseye.XXXXXX")
  echo "# debootstrap bullseye minbase into $ROOTFS_TAR (once)"
  if ! debootstrap --variant=minbase bullseye "$tmp" "$MIRROR" >"$tmp.log" 2>&1; then
    tail -20 "$tmp.log"
    rm -rf "$tmp"
    return 1
  fi
  tar -C "$tmp" -cf "$ROOTFS_TAR.part" .
  mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
  rm -rf "$tmp" "$tmp.log"
}

# release_binary: the binary under test, built by scripts/release.sh unless MINI_RELEASE_BIN is set.
release_binary() {
  if [ -n "${MINI_RELEASE_BIN:-}" ]; then
    BIN=$MINI_RELEASE_BIN
  else
    bash scripts/release.sh >"${TMPDIR:-/tmp}/mini-oldglibc-release.log" 2>&1 || {
      tail -30 "${TMPDIR:-/tmp}/mini-oldglibc-release.log"
      return 1
    }
    BIN=$REPO/dist/mini
  fi
  [ -x "$BIN" ]
}

# prepare_root: extracts the rootfs into a temp dir, installs the binary, mounts /proc, /sys, /dev.
prepare_root() {
  ROOT=$(mktemp -d /tmp/mini-oldglibc.XXXXXX)
  tar -C "$ROOT" -xf "$ROOTFS_TAR"
  install -m 0755 "$BIN" "$ROOT/usr/local/bin/mini"
  mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
  mount -t sysfs sysfs "$ROOT/sys" && MOUNTS+=("$ROOT/sys")
  mount --bind /dev "$ROOT/dev" && MOUNTS+=("$ROOT/dev")
}

# check_rootfs_is_old: the rootfs's glibc is older than 2.34, and its loader rejects a binary
# linked on this (newer) host, so the checks below mean something.
check_rootfs_is_old() {
  local out
  # the whole answer, then its first line: `| head -n 1` lets ldd die of SIGPIPE, which
  # pipefail turns into the end of the suite
  out=$(chroot "$ROOT" /usr/bin/ldd --version 2>&1) || true
  out=${out%%$'\n'*}
  if grep -Eq ' 2\.(1[0-9]|2[0-9]|3[0-3])$' <<<"$out"; then ok "rootfs_glibc_older_than_2_34"; else not_ok "rootfs_glibc_older_than_2_34" "$out"; fi
  cp /usr/bin/env "$ROOT/usr/local/bin/host-env"
  expect_fail "rootfs_rejects_binary_linked_on_host" "GLIBC_2\.3[4-9]" chroot "$ROOT" /usr/local/bin/host-env true
  rm -f "$ROOT/usr/local/bin/host-env"
}

# check_version: `mini --version` prints the version from Cargo.toml.
check_version() {
  local want
  want=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
  expect "version_runs_on_bullseye" "mini.* ${want//./\\.}" chroot "$ROOT" /usr/local/bin/mini --version
}

# check_check: `mini check` runs to its report: exit 0 (all passed) or 1 (some check failed), with
# output and no dynamic-loader error (exit 127) or crash (signal, exit >= 128).
check_check() {
  local out rc
  out=$(chroot "$ROOT" /usr/local/bin/mini check 2>&1) && rc=0 || rc=$?
  if [ "$rc" -le 1 ] && [ -n "$out" ] && ! grep -Eq 'GLIBC_[0-9.]+.* not found|error while loading shared libraries' <<<"$out"; then
    ok "check_runs_to_report_on_bullseye"
  else
    not_ok "check_runs_to_report_on_bullseye" "rc=$rc output: $out"
  fi
}

# check_hot_code_first: the functions of scripts/hot-functions.txt sit together in a section of
# their own before the rest of the code: a few megabytes (the list's functions take ~5 MB; none
# matched, or patterns matching far more than listed, fail).
check_hot_code_first() {
  local sections hot_hex text_line
  sections=$(readelf -S -W "$BIN")
  hot_hex=$(awk '$2 == ".text.hot" {print $6}' <<<"$sections")
  text_line=$(grep -n ' \.text ' <<<"$sections" | cut -d: -f1)
  if [ -n "$hot_hex" ] && [ $((16#$hot_hex)) -ge $((2 << 20)) ] && [ $((16#$hot_hex)) -le $((12 << 20)) ] &&
    [ "$(grep -n ' \.text\.hot ' <<<"$sections" | cut -d: -f1)" -lt "$text_line" ]; then
    ok "release_binary_links_hot_code_first"
  else
    not_ok "release_binary_links_hot_code_first" "$(grep -E ' \.text' <<<"$sections")"
  fi
}

main() {
  if [ "$(id -u)" -ne 0 ]; then echo "needs root (chroot, mounts)"; exit 1; fi
  if ! ensure_rootfs; then not_ok "bullseye_rootfs_built"; summary; exit 1; fi
  if ! release_binary; then not_ok "release_binary_built"; summary; exit 1; fi
  ok "release_binary_built"
  [ -z "${MINI_RELEASE_BIN:-}" ] && check_hot_code_first
  prepare_root
  check_rootfs_is_old
  check_version
  check_check
  summary
}

main "$@"
