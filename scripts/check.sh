#!/usr/bin/env bash
# The project's one test command: set up .venv if needed, then run every check
# CI runs, in order, stopping at the first failure.  Extra arguments go to pytest:
#
#   bash scripts/check.sh                 # everything
#   bash scripts/check.sh -k demo -x      # formatting, lint, types, then a subset of tests
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

# Debian's chromium for tests/external/test_browser.py, where it is missing (a no-op
# when it is there; never fails: without it those tests skip, except in CI).
if [[ -z "${SSE_SM_NO_CHROMIUM_INSTALL:-}" ]]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/install_chromium.sh"
fi
# Debian's redis-server for tests/external/test_redis_backend.py, likewise.
if [[ -z "${SSE_SM_NO_REDIS_INSTALL:-}" ]]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/install_redis.sh"
fi
# Debian's nginx for tests/servers/test_deployments.py's proxy deployment, likewise.
if [[ -z "${SSE_SM_NO_NGINX_INSTALL:-}" ]]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/install_nginx.sh"
fi

run_step() {
    local title="$1"
    shift
    printf '\n==> %s\n' "$title"
    local rc=0
    "$@" || rc=$?
    if ((rc != 0)); then
        printf '\n==> FAILED (exit %d): %s\n' "$rc" "$title" >&2
        exit "$rc"
    fi
}

run_step "ruff format --check ." "$VENV_PY" -m ruff format --check .
run_step "ruff check ." "$VENV_PY" -m ruff check .
run_step "mypy --strict (files listed in pyproject.toml)" "$VENV_PY" -m mypy

printf '\n==> pytest%s\n' "${*:+ $*}"
rc=0
"$VENV_PY" -m pytest "$@" || rc=$?
if ((rc == 5)); then
    # pytest's "no tests collected": a suite that silently runs nothing must not pass.
    printf '\n==> FAILED: pytest collected no tests (exit 5)\n' >&2
    exit 5
elif ((rc != 0)); then
    printf '\n==> FAILED (exit %d): pytest\n' "$rc" >&2
    exit "$rc"
fi
printf '\n==> all checks passed\n'
