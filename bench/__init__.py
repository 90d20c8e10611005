"""Benchmarks: sse_sm against sse-starlette and a raw ASGI loop.

Run ``python -m bench`` (about 6 minutes on 2 cores) or ``python -m bench
--quick`` (under a minute).  See ``bench/README.md`` for what each section
measures and ``docs/performance.md`` for the numbers.
"""

from __future__ import annotations

from typing import Final

__all__ = ("IMPLS",)

#: The implementations compared, in the order each repetition runs them.
IMPLS: Final[tuple[str, ...]] = ("raw", "sse_sm", "sse_starlette")
