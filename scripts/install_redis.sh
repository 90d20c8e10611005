#!/usr/bin/env bash
# Install Debian's redis-server for the Redis backend's tests
# (tests/external/test_redis*.py) and for `python -m bench.hub_redis`, when no
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

# shellcheck source=scripts/_apt_install.sh
source "$(dirname "${BASH_SOURCE[0]}")/_apt_install.sh"
apt_install_missing redis-server "the Redis tests" redis-server
