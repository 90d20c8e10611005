#!/usr/bin/env bash
# Shared by scripts/install_*.sh: install Debian packages for a test program
# that is missing, quietly and without ever failing the caller.
#
#   apt_install_missing COMMAND WHAT_SKIPS PACKAGE...
#
# Does nothing when COMMAND is on PATH.  Installs as root, or through
# `sudo -n` (never a password prompt).  Returns 0 in every case: a machine
# where the packages cannot be installed still runs the rest of the suite,
# and the tests that need COMMAND skip with a message (CI requires them
# wherever the program is installed).

apt_install_missing() {
    local command="$1" skips="$2"
    shift 2
    if command -v "$command" >/dev/null 2>&1; then
        echo "==> $command is installed: $(_apt_version "$command")"
        return 0
    fi
    local skip="==> $command not installed (%s); $skips will be skipped\n"
    if ! command -v apt-get >/dev/null 2>&1; then
        printf "$skip" "no apt-get on this machine" >&2
        return 0
    fi
    local as_root=()
    if [[ "$(id -u)" != 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
            as_root=(sudo -n)
        else
            printf "$skip" "not root, and sudo -n is not available" >&2
            return 0
        fi
    fi
    echo "==> installing $* with apt-get"
    local log
    log="$(mktemp)"
    # Quiet unless it fails; then apt's own words say why.
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -y -o DPkg::Lock::Timeout=120 update >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        printf "$skip" "apt-get update failed" >&2
        return 0
    fi
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -y -o DPkg::Lock::Timeout=120 install --no-install-recommends "$@" \
        >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        rm -f "$log"
        printf "$skip" "apt-get install $* failed" >&2
        return 0
    fi
    rm -f "$log"
    if command -v "$command" >/dev/null 2>&1; then
        echo "==> installed: $(_apt_version "$command")"
    else
        printf "$skip" "the packages installed no $command command" >&2
    fi
}

_apt_version() {
    "$1" --version 2>/dev/null | head -n 1 || command -v "$1"
}
