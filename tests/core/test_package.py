"""Rules about the package itself: its imports, its public surface, its typing marker."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sse_sm

PACKAGE = Path(sse_sm.__file__).resolve().parent
#: Runtime dependencies; trio is imported lazily, only when already running under trio.
ALLOWED_THIRD_PARTY = {"anyio", "starlette", "trio"}
#: Optional extras, each confined to its own module that ``sse_sm`` never imports.
EXTRAS = {
    "hub/redis.py": {"coredis"},
    "otel.py": {"opentelemetry"},
    "fastapi.py": {"fastapi"},
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_never_imports_asyncio() -> None:
    for path in _modules():
        assert "asyncio" not in imported_modules(path), f"{path.name} imports asyncio"


def test_the_package_imports_only_the_stdlib_starlette_and_anyio() -> None:
    for path in _modules():
        third_party = imported_modules(path) - set(sys.stdlib_module_names) - {"sse_sm"}
        allowed = ALLOWED_THIRD_PARTY | EXTRAS.get(path.relative_to(PACKAGE).as_posix(), set())
        assert third_party <= allowed, f"{path.name} imports {third_party}"


def test_importing_sse_sm_loads_no_optional_extra() -> None:
    code = (
        "import sys, sse_sm, sse_sm.testing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('coredis', 'opentelemetry', 'fastapi', 'pydantic')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_pure_state_machine_knows_nothing_of_anyio_or_starlette() -> None:
    for name in ("_state.py", "_events.py", "_diagram.py", "_deadlines.py", "testing/_parser.py"):
        assert not imported_modules(PACKAGE / name) & ALLOWED_THIRD_PARTY, name


def test_public_names_exist_and_the_package_is_typed() -> None:
    assert isinstance(sse_sm.__all__, tuple)
    for name in sse_sm.__all__:
        assert hasattr(sse_sm, name), name
    assert (PACKAGE / "py.typed").exists()


#: The public names, pinned: adding or removing one is a decision, made here too.
PUBLIC_NAMES = {
    "Arc",
    "CloseReason",
    "CoordinatorStatistics",
    "DrainCoordinator",
    "Entry",
    "EventSourceResponse",
    "GAP_EVENT",
    "Gap",
    "GapReason",
    "Hub",
    "HubBackend",
    "HubStatistics",
    "JSONServerSentEvent",
    "MemoryBackend",
    "MemoryReplayStore",
    "Replay",
    "ReplayStatistics",
    "ReplayStore",
    "SendTimeoutError",
    "ServerSentEvent",
    "SlowConsumerError",
    "SlowConsumerPolicy",
    "SseSmError",
    "State",
    "StateMachine",
    "StreamStatistics",
    "Subscription",
    "SubscriptionStatistics",
    "TRANSITIONS",
    "TopicStatistics",
    "Transition",
    "TransitionError",
    "Trigger",
    "default_drain_coordinator",
    "drain_coordinator_for",
    "ensure_bytes",
    "set_sync_source_threads",
    "SyncSourceThreadError",
    "last_event_id",
}

#: Public classes meant to be subclassed (sse-starlette users subclass the
#: response and the event), and the exceptions users may refine.
SUBCLASSABLE = {
    "EventSourceResponse",
    "ServerSentEvent",
    "JSONServerSentEvent",
    "SseSmError",
    "SendTimeoutError",
    "SlowConsumerError",
    "SyncSourceThreadError",
    "TransitionError",
}


def test_the_public_names_are_pinned() -> None:
    assert set(sse_sm.__all__) == PUBLIC_NAMES


#: ``sse_sm.otel`` (the ``sse_sm[otel]`` extra), pinned the same way.
OTEL_PUBLIC_NAMES = {"METER_NAME", "instrument", "is_instrumented", "uninstrument"}


def test_the_otel_public_names_are_pinned() -> None:
    pytest.importorskip("opentelemetry.metrics", reason="the sse_sm[otel] extra")
    import sse_sm.otel

    assert set(sse_sm.otel.__all__) == OTEL_PUBLIC_NAMES
    for name in sse_sm.otel.__all__:
        assert hasattr(sse_sm.otel, name), name


def _public_classes() -> list[tuple[str, type]]:
    import enum
    import inspect
    from typing import Protocol

    classes = []
    for name in sse_sm.__all__:
        obj = getattr(sse_sm, name)
        if not inspect.isclass(obj) or issubclass(obj, enum.Enum) or name in SUBCLASSABLE:
            continue
        if Protocol in getattr(obj, "__mro__", ()) or getattr(obj, "_is_protocol", False):
            continue  # an interface to implement, not a class to use
        if issubclass(obj, tuple):
            continue  # a NamedTuple: subclassing it changes nothing of ours
        classes.append((name, obj))
    return classes


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.final sets __final__ from 3.11")
def test_every_other_public_class_is_final() -> None:
    """As trio does: a public class not designed for subclassing says so
    (``@final``, which mypy --strict enforces on users' code too)."""
    missing = [name for name, cls in _public_classes() if not getattr(cls, "__final__", False)]
    assert missing == []


def test_every_exception_derives_from_the_common_base() -> None:
    for name in sse_sm.__all__:
        obj = getattr(sse_sm, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, sse_sm.SseSmError), name


def test_nothing_cites_files_outside_the_repository() -> None:
    """Notes kept beside the repository are not part of it: the code and docs
    state the facts they rely on instead of pointing at them."""
    root = PACKAGE.parent
    for folder in ("sse_sm", "tests", "docs", "bench", "examples", "scripts", "README.md"):
        for path in [root / folder] if folder.endswith(".md") else (root / folder).rglob("*"):
            if path.suffix not in {".py", ".md", ".sh", ".html", ".toml"}:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for marker in ("FIELD" + "-NOTES", "../" + "shared/", "STYLE" + ".md"):
                assert marker not in text, f"{path.relative_to(root)} cites {marker}"


def test_a_module_over_about_400_lines_says_why_at_its_top() -> None:
    for path in _modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) <= 430:
            continue
        docstring = ast.get_docstring(ast.parse("\n".join(lines))) or ""
        assert "Why one module of this length" in docstring, (
            f"{path.relative_to(PACKAGE)} has {len(lines)} lines and no reason at its top"
        )


def _package_imports(path: Path) -> set[str]:
    """The sse_sm modules ``path`` imports at run time (not under TYPE_CHECKING)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        if not target.startswith("sse_sm"):
            continue
        found.add(target)
        # "from . import x" imports the submodule x, not only the package.
        found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def test_no_import_cycle_in_the_package() -> None:
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in _modules()
    }
    graph = {
        name: {t for t in _package_imports(path) if t in modules} for name, path in modules.items()
    }
    # A package's __init__ re-exporting its submodules is not a cycle to worry about.
    graph = {
        name: {
            t
            for t in targets
            if not (name.startswith(t + ".") and modules[t].name == "__init__.py")
        }
        for name, targets in graph.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, " -> ".join([*visiting[visiting.index(name) :], name])
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
