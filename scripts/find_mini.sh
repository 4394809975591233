# shellcheck shell=bash
# Sourced by the benchmark scripts that build nothing: `find_mini NAME` sets MINI_BIN to
# $MINI_BIN if set, else the newest `mini` among the release and debug builds of
# $CARGO_TARGET_DIR, of the checkout's own target/ (a plain `cargo build [--release]`), of CI's
# shared target dir and scripts/release.sh's dist/; exits with a one-line message when there is none.
find_mini() {
    local name=$1 root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [[ -z "${MINI_BIN:-}" ]]; then
        MINI_BIN=$(ls -t \
            ${CARGO_TARGET_DIR:+"${CARGO_TARGET_DIR}/release/mini" "${CARGO_TARGET_DIR}/debug/mini"} \
            "${root}/target/release/mini" "${root}/target/debug/mini" "${root}/dist/mini" \
            /var/tmp/mini-cargo-target/release/mini /var/tmp/mini-cargo-target/debug/mini \
            2>/dev/null | head -n 1 || true)
    fi
    if [[ -z "${MINI_BIN:-}" || ! -x "${MINI_BIN}" ]]; then
        echo "bench ${name}: no mini binary: run cargo build --release (or set MINI_BIN)" >&2
        exit 1
    fi
    MINI_BIN=$(readlink -f "${MINI_BIN}")
}
