#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (tests/test_browser.py) and
# for `python -m examples.screenshot`, when no `chromium` is on PATH.
#
# Non-interactive, quiet and idempotent: it does nothing when chromium is
# already there.  It installs as root, or through `sudo -n` (never a password
# prompt).  It always exits 0: a machine where chromium cannot be installed
# still runs the rest of the suite, and the browser tests skip with a message
# saying how to get it.
#
#   bash scripts/install_chromium.sh
#
# Only Debian's package is used, never a browser downloaded by a test tool.
# fonts-liberation is named because it is only a recommendation of the
# package, and without any font the pages render as boxes.
set -uo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "==> chromium is installed: $(chromium --version 2>/dev/null || echo "$(command -v chromium)")"
    exit 0
fi

skip() {
    echo "==> chromium not installed ($1); the browser tests will be skipped" >&2
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

echo "==> installing chromium with apt-get"
apt_log="$(mktemp)"
trap 'rm -f "$apt_log"' EXIT
apt() {
    # Quiet unless it fails; then apt's own words say why.
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -y -o DPkg::Lock::Timeout=120 "$@" >"$apt_log" 2>&1 \
        || { tail -n 20 "$apt_log" >&2; return 1; }
}
apt update || skip "apt-get update failed"
apt install --no-install-recommends chromium fonts-liberation \
    || skip "apt-get install chromium failed"

if command -v chromium >/dev/null 2>&1; then
    echo "==> installed: $(chromium --version 2>/dev/null || echo chromium)"
else
    skip "the package installed no chromium command"
fi
