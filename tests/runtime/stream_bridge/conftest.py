"""Fixtures for the stream bridge contract suite.

Every contract test runs once per backend:

- ``memory``: ``MemoryStreamBridge(**limits)``;
- ``redis``: ``RedisStreamBridge(redis_url=..., key_prefix=..., **limits)`` on
  the local Redis, with a key prefix no other test uses (marked ``redis``, so
  it is skipped, or fails under ``CI=true``, when Redis is down).

Both get a :class:`FakeClock` so housekeeping can be driven with ``sweep()``
instead of sleeping through timeouts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

BridgeFactory = Callable[..., Any]


class FakeClock:
    """A monotonic clock that the test can move forward.

    It follows the real monotonic clock plus a manual offset, so it never
    stands still (an implementation that also uses the injected clock for
    short waits keeps working) while ``advance()`` jumps over timeouts.
    Housekeeping tests use timeouts of tens of seconds, far longer than a
    test's real duration, so the real drift never decides an outcome.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Which backend this test runs against."""
    return str(request.param)


@pytest.fixture
def backend_config(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Connection arguments for the backend (Redis URL and a private key prefix)."""
    if backend == "redis":
        return {
            "redis_url": request.getfixturevalue("redis_url"),
            "key_prefix": request.getfixturevalue("redis_prefix"),
        }
    return {}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_bridge(
    backend: str, backend_config: dict[str, Any], clock: FakeClock
) -> AsyncIterator[BridgeFactory]:
    """``await make_bridge(**limits)``: a started bridge of this test's backend.

    The bridge gets this test's :class:`FakeClock` unless ``clock=`` is given.
    Every bridge made here is closed on teardown (a test may close it first).
    """
    from runlane.runtime.stream_bridge.exceptions import BridgeClosedError

    made: list[Any] = []

    async def factory(**limits: Any) -> Any:
        limits.setdefault("clock", clock)
        if backend == "memory":
            from runlane.runtime.stream_bridge.memory import MemoryStreamBridge

            instance: Any = MemoryStreamBridge(**limits)
        else:
            from runlane.runtime.stream_bridge.redis import RedisStreamBridge

            instance = RedisStreamBridge(
                redis_url=backend_config["redis_url"],
                key_prefix=backend_config["key_prefix"],
                **limits,
            )
        made.append(instance)
        await instance.start()
        return instance

    yield factory

    for instance in reversed(made):
        with anyio.fail_after(10):
            with contextlib.suppress(BridgeClosedError):
                await instance.close()


@pytest.fixture
async def bridge(make_bridge: BridgeFactory) -> Any:
    """A started bridge with default limits (closed on teardown)."""
    return await make_bridge()
