"""Argument checks shared by the public constructors: one error type per kind of mistake.

The contract every check keeps:

* a value of the wrong *type* raises ``TypeError``; a value of the right type
  but out of range raises ``ValueError``;
* the message starts with the argument's name, says what was expected, and
  shows the value only when it is short enough to print (a 10**5000 int or a
  megabyte string would make the message itself fail or drown the log);
* a check returns the value to keep, so a constructor reads as one line per
  argument.

Nothing here imports anyio or Starlette.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Final, TypeVar

__all__ = (
    "check_awaitable_callable",
    "check_callable",
    "check_count",
    "check_headers",
    "check_instance",
    "check_media_type",
    "check_retry_range",
    "check_seconds",
    "check_status_code",
    "describe",
)

_MAX_SHOWN: Final = 80
_T = TypeVar("_T")


def describe(value: object) -> str:
    """``repr(value)`` when short and printable, else its type: safe in any message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an int of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    if len(text) > _MAX_SHOWN:
        return f"a {type(value).__name__} of {len(text)} characters"
    return text


def check_seconds(name: str, value: object, *, allow_zero: bool, finite: bool = False) -> float:
    """A duration in seconds: int or float, not bool, not NaN, ``> 0`` (or ``>= 0``),
    and not infinite when ``finite`` (a value sent to a server as milliseconds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {describe(value)}")
    if finite and math.isinf(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {describe(value)}")
    return value


def check_retry_range(name: str, value: object, *, maximum: int) -> tuple[int, int] | None:
    """Milliseconds: ``None``, one int, or an inclusive ``(low, high)`` tuple of ints,
    each from 0 to ``maximum``."""
    if value is None:
        return None
    return check_whole_range(name, value, maximum=maximum, unit="milliseconds")


def check_whole_range(name: str, value: object, *, maximum: int, unit: str) -> tuple[int, int]:
    """A whole number of ``unit``: one int, or an inclusive ``(low, high)`` tuple of
    ints, each from 0 to ``maximum``; returned as ``(low, high)``."""
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        low, high = value
    else:
        what = "whole seconds" if unit == "seconds" else unit
        raise TypeError(
            f"{name} must be {what} as an int or a (low, high) tuple of ints, got {describe(value)}"
        )
    if not 0 <= low <= high:
        raise ValueError(f"{name} must satisfy 0 <= low <= high, got {describe(value)}")
    if high > maximum:
        raise ValueError(f"{name} must be at most {maximum} {unit}, got {describe(value)}")
    return (low, high)


def check_count(name: str, value: object, *, minimum: int) -> int:
    """A whole number of things: an int, not bool, at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {describe(value)}")
    return value


def check_instance(name: str, value: object, kind: type[_T]) -> _T:
    """``value`` is a ``kind`` (an enum member, a coordinator, ...)."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {describe(value)}")
    return value


def check_callable(name: str, value: object) -> None:
    """``None`` or something callable."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def check_awaitable_callable(name: str, value: object) -> None:
    """``None``, or a callable whose call returns an awaitable (a coroutine function,
    an object with an ``async def __call__``, or a Starlette ``BackgroundTask``)."""
    if value is None:
        return
    check_callable(name, value)
    call = getattr(type(value), "__call__", None)  # noqa: B004 - the type's, not the value's
    if not (
        inspect.iscoroutinefunction(value)
        or inspect.iscoroutinefunction(call)
        or type(value).__name__ == "BackgroundTask"
        or any(base.__name__ == "BackgroundTask" for base in type(value).__mro__)
    ):
        raise TypeError(
            f"{name} must be awaitable when called (a coroutine function or a "
            f"BackgroundTask), got {describe(value)}"
        )


def check_status_code(name: str, value: object) -> int:
    """An HTTP status: an int from 100 to 599, not bool."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 100 <= value <= 599:
        raise ValueError(f"{name} must be from 100 to 599, got {describe(value)}")
    return value


def _check_header_text(name: str, what: str, text: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name}: every {what} must be a str, got {type(text).__name__}")
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError(f"{name}: a {what} must not contain CR, LF or NUL, got {describe(text)}")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(
            f"{name}: a {what} must be latin-1 text (HTTP/1.1 header bytes), got {describe(text)}"
        ) from None


def check_headers(name: str, value: object) -> Mapping[str, str] | None:
    """``None`` or a mapping of str names to str values that can go on the wire as they are."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a mapping of header names to values, got {type(value).__name__}"
        )
    for key, item in value.items():
        _check_header_text(name, "header name", key)
        if not key:
            raise ValueError(f"{name}: a header name must not be empty")
        _check_header_text(name, "header value", item)
    return value


def check_media_type(name: str, value: object) -> str | None:
    """``None`` (the default) or a non-empty header value."""
    if value is None:
        return None
    _check_header_text(name, "media type", value)
    assert isinstance(value, str)
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value
