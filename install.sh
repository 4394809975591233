#!/bin/sh
# mini installer (minimal form): downloads the mini binary from a running server, checking the
# server's CA against the join token's hash first, and installs it to /usr/local/bin/mini.
# usage: curl -ksf https://SERVER:6443/install.sh | MINI_URL=https://SERVER:6443 MINI_TOKEN=K10... sh -
set -eu

fail() { echo "install.sh: $*" >&2; exit 1; }

[ -n "${MINI_URL:-}" ] || fail "set MINI_URL to the server's URL (https://host:6443)"
[ -n "${MINI_TOKEN:-}" ] || fail "set MINI_TOKEN to a join token (K10<ca hash>::...)"
command -v curl >/dev/null 2>&1 || fail "curl is required"
command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is required"

case "$MINI_TOKEN" in
    K10*::*) ;;
    *) fail "MINI_TOKEN must be the CA-pinned form K10<ca hash>::..." ;;
esac
want_hash=$(printf '%s' "$MINI_TOKEN" | sed 's/^K10\([0-9a-fA-F]*\)::.*/\1/')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

curl -ksSf "$MINI_URL/cacerts" -o "$tmp/ca.crt" || fail "cannot fetch $MINI_URL/cacerts"
have_hash=$(sha256sum "$tmp/ca.crt" | cut -d' ' -f1)
[ "$have_hash" = "$want_hash" ] || fail "the server's CA does not match the token's CA hash: wrong server or wrong token"

auth="Authorization: Bearer $MINI_TOKEN"
curl -sSf --cacert "$tmp/ca.crt" -H "$auth" "$MINI_URL/v1-mini/binary.sha256" -o "$tmp/mini.sha256" \
    || fail "the server refused the token or does not serve its binary"
curl -sSf --cacert "$tmp/ca.crt" -H "$auth" "$MINI_URL/v1-mini/binary" -o "$tmp/mini" \
    || fail "downloading the binary failed"
(cd "$tmp" && sha256sum -c mini.sha256 >/dev/null) || fail "the downloaded binary does not match its sha256"
install -m 0755 "$tmp/mini" "${MINI_INSTALL_DIR:-/usr/local/bin}/mini"
echo "installed ${MINI_INSTALL_DIR:-/usr/local/bin}/mini"
