"""Redis backend metrics of ``sse_sm.otel`` against a real ``redis-server``.

Reconnects, errors and lag, read through the hub that uses the backend, and
checked against ``RedisBackend.statistics()``; a restart of the server shows
as errors and a reconnect.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from sse_sm import Hub
from tests._redis import require_coredis, running_redis
from tests.otel._metrics import Metrics

require_coredis()

from sse_sm.redis import RedisBackend, RedisUnavailableError  # noqa: E402  (needs coredis)

pytestmark = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")

WAIT = 20.0
FAST: dict[str, Any] = {"reconnect_delay": (0.02, 0.2), "read_block": 0.2, "command_timeout": 2.0}


@pytest.fixture(autouse=True)
def _collect_refused_connections() -> Iterator[None]:
    yield
    gc.collect()


async def received(hub: Hub, count: int) -> None:
    backend = hub.backend
    assert isinstance(backend, RedisBackend)
    while backend.statistics().received < count:  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
        await anyio.sleep(0.005)


async def test_redis_lag_reconnects_and_errors_are_reported(
    metrics: Metrics, tmp_path: Path
) -> None:
    with running_redis(tmp_path, durable=True) as server, anyio.fail_after(WAIT):
        async with RedisBackend(server.url, topics=["t"], **FAST) as backend:
            hub = Hub(backend)
            await hub.publish("t", "one")
            await received(hub, 1)
            first = metrics.read()
            assert first.units["sse_sm.redis.lag"] == "s"
            assert first.units["sse_sm.redis.reconnects"] == "{reconnect}"
            assert first.units["sse_sm.redis.errors"] == "{error}"
            lag = first.get("sse_sm.redis.lag")
            assert lag is not None
            assert 0 <= lag < WAIT
            assert first.value("sse_sm.redis.reconnects") == backend.statistics().reconnects == 0
            assert first.value("sse_sm.redis.errors") == backend.statistics().errors == 0

            server.kill()
            with pytest.raises(RedisUnavailableError):
                await hub.publish("t", "refused")
            server.start()
            while not backend.statistics().reconnects:  # noqa: ASYNC110 - Redis and the reader run outside this task; bounded by fail_after
                await anyio.sleep(0.01)
            stats = backend.statistics()
            second = metrics.read()
            hub.close()
    assert second.value("sse_sm.redis.reconnects") == stats.reconnects >= 1
    assert second.value("sse_sm.redis.errors") == stats.errors >= 2  # the publish and the reader


async def test_the_lag_is_zero_once_the_reader_waited_and_found_nothing(
    metrics: Metrics, tmp_path: Path
) -> None:
    with running_redis(tmp_path) as server, anyio.fail_after(WAIT):
        async with RedisBackend(server.url, topics=["t"], **FAST) as backend:
            hub = Hub(backend)
            assert metrics.read().get("sse_sm.redis.lag") is None, "nothing read yet"
            await hub.publish("t", "one")
            await received(hub, 1)
            while backend.statistics().lag != 0.0:  # noqa: ASYNC110 - the next blocking read ends after read_block; bounded by fail_after
                await anyio.sleep(0.02)
            assert metrics.read().get("sse_sm.redis.lag") == 0.0
            hub.close()


async def test_no_redis_metric_without_a_redis_backend(metrics: Metrics) -> None:
    hub = Hub()
    await hub.publish("t", "memory only")
    names = metrics.read().names()
    assert "sse_sm.hub.published" in names
    assert not {name for name in names if name.startswith("sse_sm.redis.")}
    hub.close()
