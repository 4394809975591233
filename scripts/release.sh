#!/usr/bin/env bash
# Builds the release binary that runs on older distributions: dist/mini (stripped) and
# dist/mini.sha256 (`<hex>  mini`).
#
# glibc floor: 2.17. The binary is linked by zig (cargo-zigbuild, target
# x86_64-unknown-linux-gnu.2.17) against glibc 2.17's symbol versions, so it loads on any x86_64
# distribution with glibc >= 2.17 (RHEL/CentOS 7, Debian 8+, Ubuntu 14.04+), not only on the
# build machine's glibc. It stays dynamically linked to glibc on purpose: a static glibc breaks
# getaddrinfo/NSS. The C parts of the build (ring, zstd-sys) are compiled by `zig cc` for the
# same target. After the build every versioned GLIBC_ symbol is read back with objdump and the
# build fails when one is newer than the floor.
#
# Heavy things live outside the checkout, in $MINI_BUILD_CACHE (default /var/cache/mini-build):
# a Python venv with zig (PyPI `ziglang`) and cargo-zigbuild (PyPI `cargo-zigbuild`), and the
# cargo target dir. Missing tools are installed (apt for python3-venv/binutils).
#
#   scripts/release.sh                 # build, strip, check the glibc floor, write dist/
#   scripts/release.sh --check FILE    # only check FILE against the glibc floor
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GLIBC_FLOOR=2.17
TRIPLE=x86_64-unknown-linux-gnu
CACHE="${MINI_BUILD_CACHE:-/var/cache/mini-build}"
VENV="${CACHE}/venv"
TARGET_DIR="${CACHE}/target"
DIST="${ROOT}/dist"
HOT_FUNCTIONS="${ROOT}/scripts/hot-functions.txt"
# the versions this script was tested with
ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.1

log() { echo "release: $*" >&2; }

# apt_install PACKAGE...: installs Debian packages (a fresh CI machine).
apt_install() {
    log "installing $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ensure_host_tools: binutils (strip, objdump), python3 with venv.
ensure_host_tools() {
    local missing=()
    command -v objdump >/dev/null 2>&1 || missing+=(binutils)
    command -v strip >/dev/null 2>&1 || missing+=(binutils)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    if [ ${#missing[@]} -gt 0 ]; then
        # shellcheck disable=SC2046
        apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
    fi
}

# ensure_zigbuild: zig and cargo-zigbuild in the cached venv.
ensure_zigbuild() {
    if [ -x "${VENV}/bin/cargo-zigbuild" ] && "${VENV}/bin/python" -m ziglang version >/dev/null 2>&1; then
        return 0
    fi
    log "installing zig ${ZIGLANG_VERSION} and cargo-zigbuild ${ZIGBUILD_VERSION} into ${VENV}"
    mkdir -p "${CACHE}"
    rm -rf "${VENV}"
    python3 -m venv "${VENV}"
    "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check \
        "ziglang==${ZIGLANG_VERSION}" "cargo-zigbuild==${ZIGBUILD_VERSION}"
}

# hot_text_script: prints the linker script that puts the functions of scripts/hot-functions.txt
# (what the server runs in its steady state, listed by scripts/hot_functions.sh) first, next to
# each other, in an output section of their own before the rest of the code. A listed function
# the build no longer has (or whose name's hash changed) matches nothing and stays among the cold
# code; LLVM's `.llvm.N` suffixes of local names are matched whatever N.
hot_text_script() {
    echo "SECTIONS"
    echo "{"
    echo "  .text.hot : {"
    echo "    *("
    grep -v '^#' "${HOT_FUNCTIONS}" | sed -E -e 's/\.llvm\.[0-9]+$/*/' -e 's/^/      .text./' | sort -u
    echo "    )"
    echo "  }"
    echo "}"
    echo "INSERT BEFORE .text;"
}

# build: cargo zigbuild of the `mini` binary for the glibc floor, its hot functions linked first.
build() {
    log "building mini for ${TRIPLE} with glibc ${GLIBC_FLOOR} symbols (target dir ${TARGET_DIR})"
    # the venv first on PATH: cargo-zigbuild runs zig through its python (`python -m ziglang`);
    # `rustc` passes the linker script to the binary's link only (the dependencies stay built)
    local script link_args=()
    if [ -s "${HOT_FUNCTIONS}" ]; then
        # named by its contents: cargo relinks when the argument changes, not when a file does
        mkdir -p "${TARGET_DIR}"
        rm -f "${TARGET_DIR}"/hot-text-*.ld
        hot_text_script >"${TARGET_DIR}/hot-text.ld.tmp"
        script="${TARGET_DIR}/hot-text-$(sha256sum "${TARGET_DIR}/hot-text.ld.tmp" | cut -c1-16).ld"
        mv "${TARGET_DIR}/hot-text.ld.tmp" "${script}"
        link_args=(-C "link-arg=-Wl,-T,${script}")
    fi
    (cd "${ROOT}" && PATH="${VENV}/bin:${PATH}" CARGO_TARGET_DIR="${TARGET_DIR}" PROTOC=/bin/false \
        cargo-zigbuild rustc --release --locked -p mini --bin mini --target "${TRIPLE}.${GLIBC_FLOOR}" \
        -- "${link_args[@]}")
}

# glibc_versions FILE: every GLIBC_x.y symbol version FILE needs, oldest first.
glibc_versions() {
    { objdump -T "$1" 2>/dev/null || true; } | { grep -o 'GLIBC_[0-9][0-9.]*' || true; } | sed 's/^GLIBC_//' | sort -uV
}

# newer_than_floor VERSION: true when VERSION is newer than the glibc floor.
newer_than_floor() {
    [ "$1" != "${GLIBC_FLOOR}" ] && [ "$(printf '%s\n%s\n' "${GLIBC_FLOOR}" "$1" | sort -V | tail -n 1)" = "$1" ]
}

# check_glibc_floor FILE: fails (naming the symbols) when FILE needs a glibc newer than the floor.
check_glibc_floor() {
    local file=$1 newest v bad=0
    newest=$(glibc_versions "${file}" | tail -n 1)
    if [ -z "${newest}" ]; then
        log "${file}: no versioned glibc symbols (is it dynamically linked against glibc?)"
        return 1
    fi
    for v in $(glibc_versions "${file}"); do
        if newer_than_floor "${v}"; then
            bad=1
            objdump -T "${file}" | grep -F "(GLIBC_${v})" | awk -v v="${v}" '{print "  needs GLIBC_" v ": " $NF}' >&2
        fi
    done
    if [ "${bad}" -ne 0 ]; then
        log "${file} needs glibc ${newest}, newer than the floor ${GLIBC_FLOOR}"
        return 1
    fi
    log "${file}: newest glibc symbol version ${newest}, floor ${GLIBC_FLOOR}: ok"
    log "${file}: needs $(readelf -d "${file}" | grep -o 'Shared library: \[[^]]*\]' | sed 's/Shared library: //' | tr '\n' ' ')"
}

# package: strip into dist/ and write the checksum.
package() {
    local built="${TARGET_DIR}/${TRIPLE}/release/mini"
    mkdir -p "${DIST}"
    strip --strip-all -o "${DIST}/mini.tmp" "${built}"
    mv "${DIST}/mini.tmp" "${DIST}/mini"
    (cd "${DIST}" && sha256sum mini >mini.sha256)
    log "wrote ${DIST}/mini ($(stat -c %s "${DIST}/mini") bytes) and ${DIST}/mini.sha256"
}

main() {
    if [ "${1:-}" = "--check" ]; then
        [ $# -eq 2 ] || { echo "usage: $0 [--check FILE]" >&2; exit 2; }
        command -v objdump >/dev/null 2>&1 || apt_install binutils
        check_glibc_floor "$2"
        return
    fi
    [ $# -eq 0 ] || { echo "usage: $0 [--check FILE]" >&2; exit 2; }
    command -v cargo >/dev/null 2>&1 || { echo "release: cargo is required (rustup toolchain)" >&2; exit 1; }
    ensure_host_tools
    ensure_zigbuild
    build
    package
    check_glibc_floor "${DIST}/mini"
    cat "${DIST}/mini.sha256"
}

main "$@"
