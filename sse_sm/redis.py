"""The hub's backend on Redis Streams: ``pip install sse_sm[redis]``.

The public path of :mod:`sse_sm.hub.redis`, where the backend lives beside
the other backends.  Like that module it needs the optional ``coredis``
dependency, so ``import sse_sm`` never imports it.
"""

from __future__ import annotations

from .hub.redis import RedisBackend as RedisBackend
from .hub.redis import RedisBackendStatistics as RedisBackendStatistics
from .hub.redis import RedisUnavailableError as RedisUnavailableError
from .hub.redis import parse_stream_id as parse_stream_id

__all__ = ("RedisBackend", "RedisBackendStatistics", "RedisUnavailableError", "parse_stream_id")
