"""``python -m bench.scale``: idle capacity, broadcast fan-out and churn on a real server.

See ``bench/README.md`` (section "bench.scale") for what is measured, the
sizes and how the processes are organised.  Modules:

* :mod:`bench.scale.app`: the ASGI app the server process serves, one path
  family per implementation (``raw``, ``sse_sm``, ``sse_starlette``,
  ``fastapi``);
* :mod:`bench.scale.serve`: ``python -m bench.scale.serve SERVER FD``, the
  server process (uvicorn with uvloop and httptools, or hypercorn on trio);
* :mod:`bench.scale.client`: ``python -m bench.scale.client SPEC``, one load
  client process, driven line by line over its stdin;
* :mod:`bench.scale.procs`: starting, talking to and stopping those processes;
* :mod:`bench.scale.driver`: the sections, the repetitions and the tables.
"""

from __future__ import annotations

import resource
from typing import Final

__all__ = ("IMPLS", "NOFILE", "REDIS_ENV", "raise_nofile")

#: The implementations compared, in the order each repetition runs them.
IMPLS: Final[tuple[str, ...]] = ("raw", "sse_sm", "sse_starlette", "fastapi")
#: The environment variable that gives a server process its Redis URL (cross-process section).
REDIS_ENV: Final = "BENCH_SCALE_REDIS_URL"
#: File descriptors every bench.scale process asks for (20,000 streams plus slack).
NOFILE: Final = 65_536


def raise_nofile(wanted: int = NOFILE) -> int:
    """Raise this process's RLIMIT_NOFILE towards ``wanted``; return the soft limit now.

    Raises the hard limit too when the process may (root); otherwise the soft
    limit goes as high as the hard one.  Children inherit the result.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
