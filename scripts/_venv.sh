# shellcheck shell=bash
# Shared set-up for scripts/check.sh and scripts/demo.sh; source it, don't run it.
#
# After sourcing, the current directory is the repository root, ./.venv exists
# and holds the project installed editable with the `test` extra, and $VENV_PY
# is that environment's interpreter.  The install is skipped when pyproject.toml
# has not changed since the last successful install (a stamp file inside .venv
# records its hash), so repeated runs start in a second instead of re-resolving
# every dependency.  Set SSE_SM_REINSTALL=1 to force a fresh install.
#
# Environment:
#   PYTHON            interpreter used to create .venv (default: python3)
#   SSE_SM_REINSTALL  if 1, reinstall even when the stamp matches

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

VENV_DIR="$REPO_ROOT/.venv"
VENV_PY="$VENV_DIR/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

if [[ ! -x "$VENV_PY" ]] || ! "$VENV_PY" -c 'import sys' >/dev/null 2>&1; then
    base_python="${PYTHON:-python3}"
    if ! command -v "$base_python" >/dev/null 2>&1; then
        echo "error: '$base_python' not found; install Python >= 3.10 or set PYTHON" >&2
        exit 1
    fi
    echo "==> creating $VENV_DIR with $("$base_python" --version 2>&1)"
    if ! "$base_python" -m venv --clear "$VENV_DIR"; then
        rm -rf "$VENV_DIR"
        echo "error: '$base_python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
fi

_sse_sm_stamp_file="$VENV_DIR/.sse_sm-install-stamp"
_sse_sm_stamp="$("$VENV_PY" - <<'PY'
import hashlib
import sys

digest = hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest()
print(f"{digest} {sys.version.split()[0]}")
PY
)"
if [[ "${SSE_SM_REINSTALL:-0}" == 1 ]] || [[ ! -f "$_sse_sm_stamp_file" ]] \
    || [[ "$(cat "$_sse_sm_stamp_file")" != "$_sse_sm_stamp" ]]; then
    echo "==> installing sse_sm (editable, with the test extra) into .venv"
    rm -f "$_sse_sm_stamp_file"
    "$VENV_PY" -m pip install --quiet --upgrade pip
    "$VENV_PY" -m pip install --quiet -e '.[test]'
    printf '%s\n' "$_sse_sm_stamp" >"$_sse_sm_stamp_file"
fi
unset _sse_sm_stamp _sse_sm_stamp_file
