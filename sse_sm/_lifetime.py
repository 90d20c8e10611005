"""The ``max_lifetime`` argument: its check and each stream's draw from it.

Kept apart from the response, which only calls these two, and pure: no
anyio, no Starlette.  What the lifetime does once drawn is the driver's
(``_connection.Connection._arm_lifetime``) and the watcher's deadline
(``_deadlines``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from ._validation import check_seconds, describe

__all__ = ("check_lifetime_range", "draw_lifetime")


def check_lifetime_range(name: str, value: object) -> tuple[float, float] | None:
    """Seconds: ``None``, a number, or a ``(min, max)`` tuple of numbers with
    ``0 < min <= max``; returns the range to draw from, ``None`` for no limit.

    One number ``inf`` means no limit, like ``None`` (as ``inf`` means "no
    deadline" everywhere in the watcher); a range needs finite bounds, since
    a uniform draw from an unbounded one means nothing.  NaN, zero, negative
    values and bools are refused.
    """
    if value is None:
        return None
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TypeError(
                f"{name} must be seconds as a number or a (min, max) tuple, got {describe(value)}"
            )
        low = check_seconds(f"{name}[0]", value[0], allow_zero=False, finite=True)
        high = check_seconds(f"{name}[1]", value[1], allow_zero=False, finite=True)
        if low > high:
            raise ValueError(f"{name} must satisfy min <= max, got {describe(value)}")
        return (low, high)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be seconds as a number or a (min, max) tuple, got {describe(value)}"
        )
    seconds = check_seconds(name, value, allow_zero=False)
    if math.isinf(seconds):
        return None
    return (seconds, seconds)


def draw_lifetime(
    bounds: tuple[float, float], uniform: Callable[[float, float], float] | None = None
) -> float:
    """One stream's lifetime, uniform in ``bounds`` (exactly ``min`` when min == max).

    ``uniform`` defaults to ``random.uniform``, looked up at each call (so
    ``random.seed`` makes draws repeatable); a test may pass a seeded
    ``random.Random().uniform``.
    """
    low, high = bounds
    if low == high:
        return float(low)
    drawn = (random.uniform if uniform is None else uniform)(low, high)
    return min(max(drawn, low), high)  # a + (b - a) * random() may round past b
