#!/bin/sh
# mini installer: finds the mini binary, verifies its sha256 and hands over to `mini install`,
# which installs and starts the service and waits until it is Ready.
#
#   curl -sfLk https://SERVER:6443/install.sh | MINI_URL=https://SERVER:6443 MINI_TOKEN=K10... sh -
#   MINI_BINARY=./mini sh install.sh
#   MINI_BUNDLE=./mini-bundle.tar.zst sh install.sh
#   sh install.sh [flags of `mini install`] [-- extra flags of `mini server`/`mini agent`]
#
# Environment (all optional; `mini install` records the MINI_* settings for re-runs):
#   MINI_BINARY         a mini binary on this machine; its sha256 comes from MINI_BINARY_SHA256
#                       or from the file MINI_BINARY.sha256 next to it
#   MINI_BINARY_SHA256  the expected sha256 (hex) of MINI_BINARY
#   MINI_BUNDLE         an air-gap bundle (`mini bundle create`): the binary is taken from it
#   MINI_URL            the server to download the binary from and to join as an agent
#   MINI_TOKEN          the join token, K10<sha256 of the server CA>::...: pins the server's CA
#   MINI_TOKEN_FILE     a file holding the join token
#   MINI_NODE_NAME      this node's name
#   MINI_EXEC           extra flags for `mini server` / `mini agent`
#   MINI_BIN_DIR        where the binary goes (default /usr/local/bin)
#   MINI_SKIP_ENABLE    true: don't enable the service
#   MINI_SKIP_START     true: don't start the service
#   MINI_TMP_DIR        where downloads go (default: a new directory under /tmp)
set -eu

BUNDLE_MAGIC="5b2a4d18"
BUNDLE_HEADER_LEN=100
TMP_DIR=""
BIN=""

info() { echo "[install.sh] $*"; }
fatal() {
    echo "[install.sh] error: $*" >&2
    exit 1
}

# check_root: installing a service needs root.
check_root() {
    [ "$(id -u)" -eq 0 ] || fatal "run as root (sudo sh install.sh)"
}

# sha256_of FILE: the file's sha256 in hex.
sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        fatal "neither sha256sum nor shasum is installed: install coreutils"
    fi
}

# setup_tmp: a private directory for downloads, removed on exit.
setup_tmp() {
    TMP_DIR=$(mktemp -d "${MINI_TMP_DIR:-/tmp}/mini-install.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

cleanup() {
    [ -n "$TMP_DIR" ] && rm -rf "$TMP_DIR"
}

# verify_sha256 FILE WANT: fails unless FILE's sha256 is WANT.
verify_sha256() {
    got=$(sha256_of "$1")
    want=$(echo "$2" | tr 'A-F' 'a-f')
    [ "$got" = "$want" ] || fatal "sha256 of $1 is $got, expected $want: the file is damaged or not the one you meant"
    info "verified sha256 $got"
}

# binary_from_path: MINI_BINARY, checked against MINI_BINARY_SHA256 or MINI_BINARY.sha256.
binary_from_path() {
    [ -f "$MINI_BINARY" ] || fatal "MINI_BINARY=$MINI_BINARY is not a file"
    want=${MINI_BINARY_SHA256:-}
    if [ -z "$want" ]; then
        [ -f "$MINI_BINARY.sha256" ] || fatal "no sha256 for $MINI_BINARY: set MINI_BINARY_SHA256 or put it in $MINI_BINARY.sha256"
        want=$(cut -d' ' -f1 <"$MINI_BINARY.sha256")
    fi
    verify_sha256 "$MINI_BINARY" "$want"
    BIN=$MINI_BINARY
    chmod +x "$BIN" 2>/dev/null || true
}

# le32 FILE OFFSET: the little-endian 32-bit number at OFFSET.
le32() {
    od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '
}

# binary_from_bundle: the binary in the bundle's leading zstd skippable frame.
binary_from_bundle() {
    [ -f "$MINI_BUNDLE" ] || fatal "MINI_BUNDLE=$MINI_BUNDLE is not a file"
    magic=$(od -An -tx1 -N4 "$MINI_BUNDLE" | tr -d ' \n')
    [ "$magic" = "$BUNDLE_MAGIC" ] || fatal "$MINI_BUNDLE is not a mini bundle (it does not start with a zstd skippable frame)"
    frame_len=$(le32 "$MINI_BUNDLE" 4)
    header=$(head -c $((8 + BUNDLE_HEADER_LEN)) "$MINI_BUNDLE" | tail -c "$BUNDLE_HEADER_LEN")
    set -- $header
    [ "$#" -eq 4 ] && [ "$1" = mini-bundle ] && [ "$2" = 1 ] || fatal "$MINI_BUNDLE: unknown bundle header (made by a newer mini?)"
    want=$3
    size=$(echo "$4" | sed 's/^0*//')
    size=${size:-0}
    [ "$frame_len" -eq $((BUNDLE_HEADER_LEN + size)) ] || fatal "$MINI_BUNDLE: the header says the binary has $size bytes, the frame holds $((frame_len - BUNDLE_HEADER_LEN)): the file is damaged"
    tail -c +$((8 + BUNDLE_HEADER_LEN + 1)) "$MINI_BUNDLE" | head -c "$size" >"$TMP_DIR/mini"
    verify_sha256 "$TMP_DIR/mini" "$want"
    chmod 755 "$TMP_DIR/mini"
    BIN=$TMP_DIR/mini
}

# token: MINI_TOKEN or the content of MINI_TOKEN_FILE.
token() {
    if [ -n "${MINI_TOKEN:-}" ]; then
        echo "$MINI_TOKEN"
    elif [ -n "${MINI_TOKEN_FILE:-}" ]; then
        tr -d ' \n' <"$MINI_TOKEN_FILE"
    fi
}

# binary_from_server: the server's CA (checked against the hash in the token), then the binary
# and its sha256 over TLS trusting only that CA.
binary_from_server() {
    command -v curl >/dev/null 2>&1 || fatal "curl is needed to download mini from $MINI_URL"
    tok=$(token)
    [ -n "$tok" ] || fatal "MINI_URL is set but there is no MINI_TOKEN or MINI_TOKEN_FILE: print the token on the server with \`cat /var/lib/mini/server/node-token\`"
    case $tok in
        K10*::*) ;;
        *) fatal "the token has no CA hash (expected K10<sha256>::...): use the full token the server prints" ;;
    esac
    ca_hash=${tok#K10}
    ca_hash=${ca_hash%%::*}
    url=${MINI_URL%/}
    info "fetching the CA of $url"
    curl -sfk --max-time 30 "$url/cacerts" -o "$TMP_DIR/ca.crt" || fatal "cannot reach $url/cacerts: is the server running and reachable?"
    got=$(sha256_of "$TMP_DIR/ca.crt")
    [ "$got" = "$ca_hash" ] || fatal "the CA of $url (sha256 $got) is not the one the token pins ($ca_hash): wrong server, or someone in between"
    info "the server's CA matches the token"
    curl -sf --max-time 60 --cacert "$TMP_DIR/ca.crt" -H "Authorization: Bearer $tok" \
        "$url/v1-mini/binary.sha256" -o "$TMP_DIR/mini.sha256" || fatal "downloading $url/v1-mini/binary.sha256 failed (is the token valid?)"
    info "downloading mini from $url"
    curl -sf --max-time 600 --cacert "$TMP_DIR/ca.crt" -H "Authorization: Bearer $tok" \
        "$url/v1-mini/binary" -o "$TMP_DIR/mini" || fatal "downloading $url/v1-mini/binary failed"
    verify_sha256 "$TMP_DIR/mini" "$(cut -d' ' -f1 <"$TMP_DIR/mini.sha256")"
    chmod 755 "$TMP_DIR/mini"
    BIN=$TMP_DIR/mini
}

# find_binary: MINI_BINARY, else MINI_BUNDLE, else download from MINI_URL.
find_binary() {
    if [ -n "${MINI_BINARY:-}" ]; then
        binary_from_path
    elif [ -n "${MINI_BUNDLE:-}" ]; then
        binary_from_bundle
    elif [ -n "${MINI_URL:-}" ]; then
        binary_from_server
    else
        fatal "no binary: set MINI_BINARY=path, MINI_BUNDLE=path, or MINI_URL and MINI_TOKEN to download it from a server"
    fi
}

# run_install ARGS...: hands over to `mini install` (the environment passes through).
run_install() {
    info "running $BIN install $*"
    if [ -n "${MINI_BUNDLE:-}" ] && [ -z "${MINI_BINARY:-}" ]; then
        "$BIN" install --bundle "$MINI_BUNDLE" "$@"
    else
        "$BIN" install "$@"
    fi
}

check_root
setup_tmp
find_binary
run_install "$@"
