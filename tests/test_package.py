"""Rules about the package itself: its imports, its public surface, its typing marker."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sse_sm

PACKAGE = Path(sse_sm.__file__).resolve().parent
#: Runtime dependencies; trio is imported lazily, only when already running under trio.
ALLOWED_THIRD_PARTY = {"anyio", "starlette", "trio"}
#: Optional extras, each confined to its own module that ``sse_sm`` never imports.
EXTRAS = {"redis.py": {"coredis"}}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_never_imports_asyncio() -> None:
    for path in PACKAGE.glob("*.py"):
        assert "asyncio" not in imported_modules(path), f"{path.name} imports asyncio"


def test_the_package_imports_only_the_stdlib_starlette_and_anyio() -> None:
    for path in PACKAGE.glob("*.py"):
        third_party = imported_modules(path) - set(sys.stdlib_module_names) - {"sse_sm"}
        allowed = ALLOWED_THIRD_PARTY | EXTRAS.get(path.name, set())
        assert third_party <= allowed, f"{path.name} imports {third_party}"


def test_importing_sse_sm_loads_no_optional_extra() -> None:
    code = (
        "import sys, sse_sm, sse_sm.testing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'coredis'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_pure_state_machine_knows_nothing_of_anyio_or_starlette() -> None:
    for name in ("_state.py", "_events.py", "_diagram.py"):
        assert not imported_modules(PACKAGE / name) & ALLOWED_THIRD_PARTY, name


def test_public_names_exist_and_the_package_is_typed() -> None:
    assert isinstance(sse_sm.__all__, tuple)
    for name in sse_sm.__all__:
        assert hasattr(sse_sm, name), name
    assert (PACKAGE / "py.typed").exists()
