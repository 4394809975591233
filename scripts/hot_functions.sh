#!/usr/bin/env bash
# Writes scripts/hot-functions.txt: the functions `mini server` runs in the steady state of
# `scripts/bench.sh observe` (50 nodes x 30 pods sending samples every 10 s on a day of history),
# which scripts/release.sh links first, next to each other.
#
# Why: the kernel maps a binary's code in 64 KiB windows around each page a process touches
# (fault-around), and from Linux 6.16 it also reads ahead around every missed page of an
# executable mapping, MADV_RANDOM or not. The release binary has ~75 MB of code; the server's
# steady work runs ~3,600 functions of it (~5 MB) spread all over, so it kept ~30 MiB of code
# resident. Linked together they take a few megabytes.
#
# How: the binary is linked once with every function on its own page (linker script SUBALIGN),
# copied to a small ext4 image on a loop device with read-ahead off, and the server runs from it:
# startup, a day of history, a restart, 11 minutes of live samples (the store flushes its head
# every 10 minutes of data; that code runs too). 32 s into the live phase (just after the
# server paged out its startup code itself) its code is paged out (process_madvise MADV_PAGEOUT,
# and the image's page cache dropped), so from then on a page is mapped only when its function
# runs. At the end the resident pages (/proc/PID/pagemap) name the functions (nm of the
# unstripped profiling binary). Run it again after large changes: a function missing from the
# list still works, it only sits among the cold code.
#
#   scripts/hot_functions.sh [--live 660s]     # needs root (loop device); ~15 minutes
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIST="${ROOT}/scripts/hot-functions.txt"
CACHE="${MINI_BUILD_CACHE:-/var/cache/mini-build}"
VENV="${CACHE}/venv"
TARGET_DIR="${CACHE}/target"
TRIPLE=x86_64-unknown-linux-gnu
GLIBC_FLOOR=2.17
LIVE=660s
PAGEOUT_AFTER=32
PORT=24443

while [[ $# -gt 0 ]]; do
    case "$1" in
        --live) LIVE=$2; shift 2 ;;
        *) echo "usage: $0 [--live 660s]" >&2; exit 2 ;;
    esac
done
if [[ "$(id -u)" -ne 0 ]]; then
    echo "hot functions: needs root (a loop device with read-ahead off)" >&2
    exit 1
fi

log() { echo "hot functions: $*" >&2; }

PROFILED="${TARGET_DIR}/${TRIPLE}/release/mini"
# remove_profiled: the profiling binary leaves the build cache (the next release build relinks).
remove_profiled() {
    find "${TARGET_DIR}/${TRIPLE}/release/deps" -maxdepth 1 -samefile "${PROFILED}" -delete
    rm -f "${PROFILED}"
    PROFILED_PRESENT=0
}

WORK=$(mktemp -d /var/tmp/mini-hot-functions.XXXXXX)
SERVER_PID=""
SIM_PID=""
LOOP_MOUNT="${WORK}/mnt"

cleanup() {
    local pid
    # a run that stopped half-way leaves no profiling binary (~650 MB with its padding) behind
    [[ "${PROFILED_PRESENT:-0}" -eq 1 ]] && remove_profiled
    for pid in "${SIM_PID}" "${SERVER_PID}"; do
        [[ -n "${pid}" ]] && { kill "${pid}" 2>/dev/null || true; wait "${pid}" 2>/dev/null || true; }
    done
    if mountpoint -q "${LOOP_MOUNT}" 2>/dev/null; then umount "${LOOP_MOUNT}" || true; fi
    rm -rf "${WORK}"
}
trap cleanup EXIT

# 1. the release build (tools, dependencies) and the product binary for the simulated nodes
bash "${ROOT}/scripts/release.sh" >&2
cp "${ROOT}/dist/mini" "${WORK}/mini-sim"

# 2. the profiling link: unstripped, every function on its own page
cat >"${WORK}/spread.ld" <<'EOF'
SECTIONS
{
  .text.spread : SUBALIGN(4096) { *(.text.*) }
}
INSERT BEFORE .text;
EOF
log "linking the profiling binary (every function on its own page)"
(cd "${ROOT}" && PATH="${VENV}/bin:${PATH}" CARGO_TARGET_DIR="${TARGET_DIR}" PROTOC=/bin/false \
    cargo-zigbuild rustc --release --locked -p mini --bin mini --target "${TRIPLE}.${GLIBC_FLOOR}" \
    -- -C strip=none -C "link-arg=-Wl,-T,${WORK}/spread.ld") >&2
PROFILED_PRESENT=1

# 3. a file system whose device reads no more than the page asked for
size=$(stat -c %s "${PROFILED}")
truncate -s $((size + (64 << 20))) "${WORK}/image.ext4"
mkfs.ext4 -q "${WORK}/image.ext4"
mkdir -p "${LOOP_MOUNT}"
mount -o loop "${WORK}/image.ext4" "${LOOP_MOUNT}"
loop_dev=$(findmnt -n -o SOURCE "${LOOP_MOUNT}")
echo 0 >"/sys/block/$(basename "${loop_dev}")/queue/read_ahead_kb"
BIN="${LOOP_MOUNT}/mini"
cp "${PROFILED}" "${BIN}"
nm -n -S --defined-only "${BIN}" | awk '$3 ~ /^[tTwW]$/' >"${WORK}/symbols.txt"
read -r section_addr section_offset < <(readelf -S -W "${BIN}" | awk '$2 == ".text.spread" {print $4, $5}')

start_server() {
    "${BIN}" server --data-dir "${WORK}/data" --bind-address 127.0.0.1 --https-listen-port "${PORT}" \
        --disable-agent >>"${WORK}/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        curl -sk "https://127.0.0.1:${PORT}/readyz" 2>/dev/null | grep -q ok && return 0
        sleep 0.2
    done
    log "the server did not become ready"; tail -20 "${WORK}/server.log" >&2; exit 1
}

# 4. the bench's steady phase
start_server
export KUBECONFIG="${WORK}/data/server/admin.kubeconfig"
log "posting a day of samples for 50 nodes x 30 pods"
"${WORK}/mini-sim" sim samples --kubeconfig "${KUBECONFIG}" --nodes 50 --pods 30 --history 24h \
    --prefix bench-node- >/dev/null
kill -TERM "${SERVER_PID}"; wait "${SERVER_PID}" || true
start_server
log "live samples for ${LIVE}; code paged out after ${PAGEOUT_AFTER} s"
"${WORK}/mini-sim" sim samples --kubeconfig "${KUBECONFIG}" --nodes 50 --pods 30 --history 0 \
    --live "${LIVE}" --prefix bench-node- >/dev/null &
SIM_PID=$!
sleep "${PAGEOUT_AFTER}"
text_map=$(grep " r-xp .* ${BIN}\$" "/proc/${SERVER_PID}/maps" | awk '{print $1, $3}')
python3 - "${SERVER_PID}" "${BIN}" ${text_map} <<'EOF'
import ctypes, os, sys
pid, path, span = int(sys.argv[1]), sys.argv[2], sys.argv[3]
start, end = (int(x, 16) for x in span.split("-"))
libc = ctypes.CDLL(None, use_errno=True)
class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
SYS_PROCESS_MADVISE, MADV_PAGEOUT = 440, 21
pidfd = os.pidfd_open(pid)
for base in range(start, end, 64 << 20):
    iov = IoVec(base, min(64 << 20, end - base))
    if libc.syscall(SYS_PROCESS_MADVISE, pidfd, ctypes.byref(iov), 1, MADV_PAGEOUT, 0) < 0:
        sys.exit("process_madvise: errno %d" % ctypes.get_errno())
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
EOF
wait "${SIM_PID}"
SIM_PID=""

# 5. the resident pages name the functions
python3 - "${SERVER_PID}" ${text_map} "${section_addr}" "${section_offset}" "${WORK}/symbols.txt" \
    >"${WORK}/hot.txt" <<'EOF'
import bisect, struct, sys
pid, span, map_offset, sec_addr, sec_offset, symbols = sys.argv[1:7]
start, end = (int(x, 16) for x in span.split("-"))
# runtime address = link address + bias
bias = start - int(map_offset, 16) - (int(sec_addr, 16) - int(sec_offset, 16))
with open(f"/proc/{pid}/pagemap", "rb") as f:
    f.seek(start // 4096 * 8)
    entries = f.read((end - start) // 4096 * 8)
pages = [start + i * 4096 - bias for i in range(len(entries) // 8)
         if struct.unpack_from("<Q", entries, i * 8)[0] >> 63]
syms = sorted((int(a, 16), int(s, 16), n) for a, s, _, n in (l.split() for l in open(symbols)))
starts = [s[0] for s in syms]
hot, bodies = set(), {}
for page in pages:
    # every name on the page: functions LLVM merged share one body under several names (aliases
    # at one address, in the section of one of them), and a long function reaches in from before
    i = bisect.bisect_left(starts, page)
    while i > 0 and syms[i - 1][0] + max(syms[i - 1][1], 1) > page:
        i -= 1
    while i < len(syms) and syms[i][0] < page + 4096:
        addr, size, name = syms[i]
        if addr + max(size, 1) > page:
            hot.add(name)
            bodies[addr] = size
        i += 1
print("resident code pages %d, functions %d (%d bodies), %d bytes of code"
      % (len(pages), len(hot), len(bodies), sum(bodies.values())), file=sys.stderr)
print("\n".join(sorted(hot)))
EOF
kill -TERM "${SERVER_PID}"; wait "${SERVER_PID}" || true
SERVER_PID=""
remove_profiled
{
    echo "# Functions \`mini server\` runs in the steady state of scripts/bench.sh observe, linked first by"
    echo "# scripts/release.sh. Written by scripts/hot_functions.sh on $(date -u +%Y-%m-%d) ($(cd "${ROOT}" && git rev-parse --short HEAD)); do not edit."
    cat "${WORK}/hot.txt"
} >"${LIST}"
log "wrote ${LIST} ($(grep -vc '^#' "${LIST}") functions); linking them first"
bash "${ROOT}/scripts/release.sh" >&2
