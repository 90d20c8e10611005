#!/usr/bin/env bash
# Install Debian's redis-server for the Redis backend's tests
# (tests/test_redis*.py) and for `python -m bench.hub_redis`, when no
# `redis-server` is on PATH.
#
# Non-interactive, quiet and idempotent: it does nothing when redis-server is
# already there.  It installs as root, or through `sudo -n` (never a password
# prompt).  It always exits 0: a machine where Redis cannot be installed still
# runs the rest of the suite, and the Redis tests skip with a message saying
# how to get it (unless SSE_SM_REQUIRE_REDIS=1, as in CI).
#
#   bash scripts/install_redis.sh
#
# Only the binary is wanted: the tests start their own servers on free
# loopback ports.  Debian's package also enables a system service on port
# 6379; the tests neither use nor need it.
set -uo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "==> redis-server is installed: $(redis-server --version 2>/dev/null | head -n 1)"
    exit 0
fi

skip() {
    echo "==> redis-server not installed ($1); the Redis tests will be skipped" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || skip "no apt-get on this machine"

if [[ "$(id -u)" == 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    skip "not root, and sudo -n is not available"
fi

echo "==> installing redis-server with apt-get"
apt_log="$(mktemp)"
trap 'rm -f "$apt_log"' EXIT
apt() {
    # Quiet unless it fails; then apt's own words say why.
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -y -o DPkg::Lock::Timeout=120 "$@" >"$apt_log" 2>&1 \
        || { tail -n 20 "$apt_log" >&2; return 1; }
}
apt update || skip "apt-get update failed"
apt install --no-install-recommends redis-server || skip "apt-get install redis-server failed"

if command -v redis-server >/dev/null 2>&1; then
    echo "==> installed: $(redis-server --version 2>/dev/null | head -n 1)"
else
    skip "the package installed no redis-server command"
fi
