#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (tests/external/test_browser.py) and
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

# shellcheck source=scripts/_apt_install.sh
source "$(dirname "${BASH_SOURCE[0]}")/_apt_install.sh"
apt_install_missing chromium "the browser tests" chromium fonts-liberation
