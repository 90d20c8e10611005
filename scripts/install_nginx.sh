#!/usr/bin/env bash
# Install Debian's nginx for the deployment tests behind a reverse proxy
# (tests/servers/test_deployments.py), when no `nginx` is on PATH.
#
# Non-interactive, quiet and idempotent: it does nothing when nginx is already
# there.  It installs as root, or through `sudo -n` (never a password prompt).
# It always exits 0: a machine where nginx cannot be installed still runs the
# rest of the suite, and the nginx tests skip with a message saying how to get
# it (unless SSE_SM_REQUIRE_NGINX=1, as in CI).
#
#   bash scripts/install_nginx.sh
#
# Only the binary is wanted: each test runs its own nginx with its own
# configuration and prefix in a temporary directory, on loopback ports, and
# stops it by its PID.  Debian's package may also enable a system service on
# port 80; the tests neither use nor need it.  nginx-light is enough (the
# proxy module is in every flavour); plain `nginx` is the fallback where the
# light flavour does not exist.
set -uo pipefail

# shellcheck source=scripts/_apt_install.sh
source "$(dirname "${BASH_SOURCE[0]}")/_apt_install.sh"
if ! PATH="$PATH:/usr/sbin" command -v nginx >/dev/null 2>&1 \
    && apt-cache show nginx-light >/dev/null 2>&1; then
    PATH="$PATH:/usr/sbin" apt_install_missing nginx "the nginx tests" nginx-light
else
    PATH="$PATH:/usr/sbin" apt_install_missing nginx "the nginx tests" nginx
fi
