"""``python -m bench.scale.serve SERVER FD``: serve :mod:`bench.scale.app` on a listening socket.

``SERVER`` is ``uvicorn`` (uvloop and httptools: the fastest stack uvicorn
offers) or ``hypercorn-trio`` (hypercorn's trio worker).  ``FD`` is an
inherited TCP socket, bound to 127.0.0.1 and listening, so the parent chose
the port and there is no race for it.  One process, no workers: its CPU
time is the server's.  RLIMIT_NOFILE is raised first.  Stop it with SIGTERM
(SIGKILL if it lingers); uvicorn gives open streams 2 s to end.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, Final

from bench.scale import raise_nofile

__all__ = ("SERVERS", "main")

SERVERS: Final[tuple[str, ...]] = ("uvicorn", "hypercorn-trio")
#: Both servers call ``listen()`` again on the inherited socket with their own
#: backlog (hypercorn's default is 100): thousands of connections arriving at
#: once would overflow it, and a dropped SYN costs a 1 s retransmit.
BACKLOG: Final = 4096


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in SERVERS:
        print(__doc__, file=sys.stderr)
        return 2
    server, fd = argv[1], int(argv[2])
    raise_nofile()
    from bench.scale.app import app as typed_app

    app: Any = typed_app  # each server declares its own ASGI types
    if server == "uvicorn":
        import uvicorn

        config = uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            backlog=BACKLOG,
        )
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])
    else:
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve

        hyper = Config()
        hyper.bind = [f"fd://{fd}"]
        hyper.accesslog = None
        hyper.errorlog = "-"
        hyper.loglevel = "WARNING"
        hyper.graceful_timeout = 2
        hyper.backlog = BACKLOG
        trio.run(serve, app, hyper)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
