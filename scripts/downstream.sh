#!/usr/bin/env bash
# Real downstream code against sse_sm: the MCP Python SDK's own tests of its
# SSE and streamable-HTTP server transports, run with sse_sm standing in for
# sse-starlette.
#
#   bash scripts/downstream.sh              # mcp's tests on sse_sm (what CI runs)
#   bash scripts/downstream.sh --control    # the same tests on the real sse-starlette
#   bash scripts/downstream.sh -- -x -k sse # extra arguments after -- go to pytest
#
# What it does, in order:
#   1. downloads the mcp sdist (pinned version and sha256; mcp ships its tests
#      in it) into .cache/downstream/ unless it is already there, and unpacks
#      a fresh copy of it for every run;
#   2. creates .cache/downstream/venv (never the project's .venv) with mcp
#      installed from that sdist and the few test tools its selected tests
#      import, all pinned by scripts/downstream_constraints.txt; then removes
#      the sse-starlette that mcp's dependencies pulled in.  Both steps are
#      skipped when done already (the sdist has the pinned hash, the venv's
#      stamp matches), so a rerun starts in seconds;
#   3. installs this repository's sse_sm and scripts/downstream_shim, which
#      serves the import names sse_starlette, sse_starlette.sse and
#      sse_starlette.event from sse_sm (with --control: uninstalls both and
#      installs the pinned real sse-starlette instead);
#   4. checks that the EventSourceResponse mcp's server transports use is the
#      expected one (sse_sm's, or the real package's with --control) and that
#      sse_starlette.__file__ is the shim's; the run stops if not;
#   5. runs the selected mcp test modules (listed below) with a per-test
#      timeout, so a deadlock fails its test instead of hanging the job, and
#      prints a closing "N passed, N failed" line.
#
# Exit status: 0 when every selected test passed (or was an expected xfail),
# non-zero otherwise, including when pytest collected nothing.  Reads no stdin.
#
# Environment:
#   PYTHON                    interpreter for the venv (default: python3)
#   SSE_SM_DOWNSTREAM_CACHE   cache directory (default: .cache/downstream)
#   SSE_SM_DOWNSTREAM_TIMEOUT seconds one test may take, setup and teardown
#                             included (default: 30; the slowest takes ~5 s)
set -euo pipefail
exec </dev/null

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

# The pinned downstream project.  To move to a newer mcp: change both lines
# (sha256 of the .tar.gz from the registry), regenerate the constraints file
# (see its header), and check the module list below against its tests.
MCP_VERSION="2.3.0"
MCP_SDIST_SHA256="8b147a50441cf059dc88c684e0aeed3687f0aa0f39c6cde7b90330effd2b34d8"
# The control: the sse-starlette release mcp's tests are checked against.
CONTROL_SSE_STARLETTE="3.7.1"

# What mcp's selected tests import beyond mcp itself: its root conftest needs
# blockbuster, logfire (capfire) and httpcore2 (a dependency of mcp's httpx2);
# the modules below need inline-snapshot, dirty-equals, pyjwt (a dependency of
# mcp) and trio; pytest-timeout bounds each test.  Versions come from the
# constraints file.  flit_core builds sse_sm and the shim without isolation.
TEST_TOOLS=(pytest pytest-timeout blockbuster logfire inline-snapshot dirty-equals trio flit_core)

# mcp's test modules that exercise its SSE and streamable-HTTP server
# transports, found in mcp 2.3.0's tests/ with
#   grep -rlE 'sse_starlette|mcp\.server\.(sse|streamable_http)|SseServerTransport|
#              StreamableHTTP(SessionManager|ServerTransport)|streamable_http_app|sse_app\(' \
#        tests --include='test_*.py'
# plus the interaction suite, whose tests run each behaviour over every
# transport, and the client and docs modules that drive an in-process
# streamable-HTTP app.  MCP_TEST_KEYWORDS then drops the cells and tests that
# never reach an HTTP transport: the interaction suite's in-memory cells and
# the stdio tests (about 20 s of the run).
MCP_TEST_PATHS=(
    tests/shared/test_sse.py
    tests/shared/test_streamable_http.py
    tests/server/test_sse_security.py
    tests/server/test_streamable_http_manager.py
    tests/server/test_streamable_http_modern.py
    tests/server/test_streamable_http_router.py
    tests/server/test_streamable_http_security.py
    tests/server/mcpserver/test_server.py
    tests/client/test_client.py
    tests/client/test_http_unicode.py
    tests/client/test_streamable_http.py
    tests/issues/test_1363_race_condition_streamable_http.py
    tests/docs_src/test_asgi.py
    tests/docs_src/test_authorization.py
    tests/docs_src/test_cancellation.py
    tests/docs_src/test_client_transports.py
    tests/docs_src/test_deploy.py
    tests/docs_src/test_header_parameters.py
    tests/docs_src/test_identity_assertion.py
    tests/docs_src/test_legacy_clients.py
    tests/docs_src/test_troubleshooting.py
    tests/interaction
)
MCP_TEST_IGNORES=(
    tests/interaction/transports/test_stdio.py
    # A meta-test of the suite itself: imports every interaction module, stdio too.
    tests/interaction/test_coverage.py
)
# A `-k` given after `--` replaces this one.
MCP_TEST_KEYWORDS="not in-memory and not stdio"

control=0
pytest_extra=()
while (($#)); do
    case "$1" in
        --control) control=1 ;;
        --)
            shift
            pytest_extra=("$@")
            break
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "error: unknown argument '$1' (see --help)" >&2
            exit 2
            ;;
    esac
    shift
done

started=$SECONDS
if ((control)); then mode="control: sse-starlette $CONTROL_SSE_STARLETTE"; else mode="sse_sm"; fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# Nothing from the caller's environment may change what the tests import.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV

CACHE_DIR="${SSE_SM_DOWNSTREAM_CACHE:-$REPO_ROOT/.cache/downstream}"
mkdir -p "$CACHE_DIR"
CACHE_DIR="$(cd "$CACHE_DIR" && pwd)"
SDIST="$CACHE_DIR/mcp-$MCP_VERSION.tar.gz"
SRC_DIR="$CACHE_DIR/mcp-$MCP_VERSION"
VENV_DIR="$CACHE_DIR/venv"
VENV_PY="$VENV_DIR/bin/python"
CONSTRAINTS="$REPO_ROOT/scripts/downstream_constraints.txt"
SHIM_DIR="$REPO_ROOT/scripts/downstream_shim"

step() { printf '\n==> downstream (%s, %ds): %s\n' "$mode" "$((SECONDS - started))" "$*"; }

BASE_PY="${PYTHON:-python3}"
if ! command -v "$BASE_PY" >/dev/null 2>&1; then
    echo "error: '$BASE_PY' not found; install Python >= 3.10 or set PYTHON" >&2
    exit 1
fi

sha256_of() {
    "$BASE_PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}

# 1. The venv, made anew when anything that decides its contents changes (the
# stamp); filled in step 3, once the sdist is there.  Created first so that
# its own pip downloads the sdist: the base interpreter may have none.
stamp="$(
    {
        echo "$MCP_VERSION $MCP_SDIST_SHA256 ${TEST_TOOLS[*]}"
        cat "$CONSTRAINTS"
        "$BASE_PY" -c 'import sys; print(sys.version)'
    } | "$BASE_PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
)"
stamp_file="$VENV_DIR/.downstream-stamp"
fill_venv=0
if [[ ! -x "$VENV_PY" ]] || [[ ! -f "$stamp_file" ]] || [[ "$(cat "$stamp_file")" != "$stamp" ]]; then
    step "creating $VENV_DIR"
    rm -rf "$VENV_DIR"
    if ! "$BASE_PY" -m venv "$VENV_DIR"; then
        rm -rf "$VENV_DIR"
        echo "error: '$BASE_PY -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
    fill_venv=1
fi

# 2. The sdist, downloaded once and checked against the pinned hash.
if [[ ! -f "$SDIST" ]] || [[ "$(sha256_of "$SDIST")" != "$MCP_SDIST_SHA256" ]]; then
    step "downloading the mcp $MCP_VERSION sdist"
    rm -rf "$SDIST" "$CACHE_DIR"/download.* # and what an interrupted download left
    download_dir="$(mktemp -d "$CACHE_DIR/download.XXXXXX")"
    # --no-binary mcp: the sdist, which has the tests; its build backend may
    # still come as a wheel (":all:" would build hatchling from source too).
    "$VENV_PY" -m pip download --quiet --no-deps --no-binary mcp --dest "$download_dir" "mcp==$MCP_VERSION"
    got="$(sha256_of "$download_dir/mcp-$MCP_VERSION.tar.gz")"
    if [[ "$got" != "$MCP_SDIST_SHA256" ]]; then
        echo "error: mcp-$MCP_VERSION.tar.gz has sha256 $got, expected $MCP_SDIST_SHA256" >&2
        rm -rf "$download_dir"
        exit 1
    fi
    mv "$download_dir/mcp-$MCP_VERSION.tar.gz" "$SDIST"
    rm -rf "$download_dir"
fi

# A fresh tree every run, so nothing a previous run wrote can change this one.
rm -rf "$SRC_DIR"
tar -xzf "$SDIST" -C "$CACHE_DIR"

# 3. mcp from the sdist and its test tools; then away with the sse-starlette
# that mcp's dependencies pulled in.  The stamp goes last, so an install that
# fails half-way is redone next time.
if ((fill_venv)); then
    step "installing mcp $MCP_VERSION and its test tools into $VENV_DIR"
    "$VENV_PY" -m pip install --quiet --constraint "$CONSTRAINTS" "$SDIST" "${TEST_TOOLS[@]}"
    "$VENV_PY" -m pip uninstall --quiet --yes sse-starlette
    printf '%s\n' "$stamp" >"$stamp_file"
fi

# 4. Who answers `import sse_starlette`: sse_sm through the shim, or the real
# package for the control.  Both are (re)installed every run, so the tests
# always see this checkout's sse_sm.
if ((control)); then
    step "installing sse-starlette $CONTROL_SSE_STARLETTE (and removing sse_sm and the shim)"
    "$VENV_PY" -m pip uninstall --quiet --yes sse-sm-downstream-shim sse_sm 2>/dev/null || true
    # --force-reinstall: the shim and the real package own the same file
    # paths, so removing one may have taken files of the other with it.
    "$VENV_PY" -m pip install --quiet --no-deps --force-reinstall "sse-starlette==$CONTROL_SSE_STARLETTE"
else
    step "installing sse_sm from this checkout and the sse_starlette shim"
    "$VENV_PY" -m pip uninstall --quiet --yes sse-starlette 2>/dev/null || true
    # --no-deps: sse_sm's own dependencies (starlette, anyio) are already
    # there for mcp; --no-build-isolation: flit_core is in the venv.
    "$VENV_PY" -m pip install --quiet --no-deps --no-build-isolation --force-reinstall \
        "$REPO_ROOT" "$SHIM_DIR"
fi

# 5. Prove it before running anything: mcp's transports must hold the expected
# EventSourceResponse, and a shim must not be shadowed by the real package.
# (From the unpacked tree, as pytest runs, so this checkout's sse_sm/ is not
# on sys.path ahead of the installed copy.)
(cd "$SRC_DIR" && "$VENV_PY" - "$control" "$SHIM_DIR" "$CONTROL_SSE_STARLETTE") <<'PY'
import importlib.metadata
import os
import sys

control = sys.argv[1] == "1"
shim_dir, control_version = sys.argv[2], sys.argv[3]

import sse_starlette
import sse_starlette.event
import sse_starlette.sse
from mcp.server import sse as mcp_sse
from mcp.server import streamable_http as mcp_streamable_http

installed = {d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()}
used = {mcp_sse.EventSourceResponse, mcp_streamable_http.EventSourceResponse}
if control:
    problems = []
    if installed & {"sse-sm", "sse-sm-downstream-shim"}:
        problems.append("sse_sm or its shim is installed")
    if importlib.metadata.version("sse-starlette") != control_version:
        problems.append(f"sse-starlette is {importlib.metadata.version('sse-starlette')}")
    if {c.__module__ for c in used} != {"sse_starlette.sse"}:
        problems.append(f"mcp uses {used}")
    where = os.path.dirname(sse_starlette.__file__)
else:
    import sse_sm

    problems = []
    if "sse-starlette" in installed:
        problems.append("the real sse-starlette is installed")
    shim_pkg = os.path.join(os.path.realpath(shim_dir), "sse_starlette")
    # The shim is installed (not editable), so compare its files, not paths.
    for mod in (sse_starlette, sse_starlette.sse, sse_starlette.event):
        name = mod.__name__.split(".", 1)[1] if "." in mod.__name__ else "__init__"
        with open(mod.__file__, "rb") as got, open(os.path.join(shim_pkg, name + ".py"), "rb") as want:
            if got.read() != want.read():
                problems.append(f"{mod.__name__} is {mod.__file__}, not the shim")
    if used != {sse_sm.EventSourceResponse}:
        problems.append(f"mcp uses {used}, not sse_sm.EventSourceResponse")
    where = f"{sse_starlette.__file__} -> sse_sm {sse_sm.__version__} at {os.path.dirname(sse_sm.__file__)}"
if problems:
    sys.exit("error: wrong sse_starlette in the downstream venv: " + "; ".join(problems))
print(f"sse_starlette: {where}")
PY

# 6. The tests, from the unpacked tree so mcp's own pytest configuration
# applies, with three overrides: its addopts load pytest-examples (for
# tests not selected here) and force colour, so only its `-p anyio` is kept;
# live logging would bury the result; the cache provider would write into the
# tree.  pytest-timeout fails a test that hangs (by SIGALRM, so the run goes
# on with the next test); `timeout` is the backstop should pytest itself hang,
# for instance on a thread that never ends at exit.
step "pytest on mcp $MCP_VERSION's SSE and streamable-HTTP tests"
junit="$CACHE_DIR/junit.xml"
rm -f "$junit"
ignores=()
for path in "${MCP_TEST_IGNORES[@]}"; do ignores+=("--ignore=$path"); done
rc=0
(
    cd "$SRC_DIR"
    exec timeout --kill-after=30 900 \
        "$VENV_PY" -m pytest -p no:cacheprovider -o addopts='-p anyio' -o log_cli=false \
        --timeout="${SSE_SM_DOWNSTREAM_TIMEOUT:-30}" --tb=short -q -rfE \
        --junitxml="$junit" "${ignores[@]}" -k "$MCP_TEST_KEYWORDS" \
        "${MCP_TEST_PATHS[@]}" "${pytest_extra[@]}"
) || rc=$?

# The closing line, counted from pytest's JUnit report (not its console text).
summary="$("$VENV_PY" - "$junit" <<'PY'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("0 passed, 0 failed (no report)")
    raise SystemExit
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
tests = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(f"{tests - failed - skipped} passed, {failed} failed, {skipped} skipped")
PY
)"
elapsed=$((SECONDS - started))
if ((rc == 124 || rc == 137)); then
    echo "==> downstream ($mode): FAILED, pytest still running after 900 s and was stopped" >&2
elif ((rc == 5)); then
    echo "==> downstream ($mode): FAILED, pytest collected no tests" >&2
    rc=5
elif ((rc != 0)); then
    echo "==> downstream ($mode): FAILED (pytest exit $rc) after ${elapsed}s" >&2
fi
echo "downstream: $summary"
exit "$rc"
