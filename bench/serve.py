"""``python -m bench.serve SERVER FD``: serve :mod:`bench.server_app` on a listening socket.

``SERVER`` is ``uvicorn`` (asyncio loop, h11), ``hypercorn-asyncio`` or
``hypercorn-trio``; ``FD`` is an inherited, bound and listening TCP socket on
127.0.0.1, so the port is chosen by the parent and there is no race for it.
The server runs in this one process (no worker processes), so its CPU time is
this process's.  Stop it with SIGTERM (SIGKILL if it lingers).
"""

from __future__ import annotations

import socket
import sys
from typing import Any, Final

__all__ = ("SERVERS", "main")

SERVERS: Final[tuple[str, ...]] = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")


def _hypercorn_config(fd: int) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{fd}"]
    config.accesslog = None
    config.errorlog = "-"
    config.loglevel = "WARNING"
    return config


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in SERVERS:
        print(__doc__, file=sys.stderr)
        return 2
    server, fd = argv[1], int(argv[2])
    from bench.server_app import app as starlette_typed_app

    # Hypercorn declares its own ASGI types; the app is the same callable.
    app: Any = starlette_typed_app

    if server == "uvicorn":
        import uvicorn

        config = uvicorn.Config(
            app,
            loop="asyncio",
            http="h11",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])
    elif server == "hypercorn-asyncio":
        import asyncio

        from hypercorn.asyncio import serve

        asyncio.run(serve(app, _hypercorn_config(fd)))
    else:
        import trio
        from hypercorn.trio import serve as trio_serve

        trio.run(trio_serve, app, _hypercorn_config(fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
