"""Scale-out fixtures: three real ``runlane serve`` processes on one Postgres and one Redis.

- ``cluster`` (one per test module, for tests that leave every process
  running): its own Postgres database cloned from the migrated template, its
  own Redis key prefix, the ``counter`` graph's executions table, and three
  processes ``A``, ``B``, ``C`` (see ``tests/scaleout/cluster.py``).
- ``fresh_cluster`` (one per test, for tests that kill or stop a process):
  the same on the per-test ``postgres_url`` and ``redis_prefix``.
- ``clients``: one ``langgraph_sdk`` client per process of ``cluster``.

A module may set ``CLUSTER_ENV = {"RUNLANE_...": "..."}`` to add settings
(``RUNLANE_SHUTDOWN_GRACE``, say). On teardown every process still running
gets SIGTERM and must exit 0 without an error-level log line.

Every test in this folder carries the ``scaleout`` marker (``-m scaleout`` /
``-m "not scaleout"``) and the ``postgres`` and ``redis`` markers: with either
service down the tests are skipped, or fail under ``CI=true``, like the rest
of the suite.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PG_HOST, PG_PORT, PG_USER, REDIS_HOST, REDIS_PORT, require_service
from tests.scaleout.cluster import (
    Cluster,
    create_executions_table,
    plain_dsn,
    running_cluster,
    sdk_clients,
)

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "scaleout: several real `runlane serve` processes sharing Postgres and Redis",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.scaleout)
            item.add_marker(pytest.mark.postgres)
            item.add_marker(pytest.mark.redis)


def _redis_url() -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture(scope="module")
def scaleout_database(_postgres_template: str) -> Iterator[str]:
    """A fresh migrated Postgres database for this module, with the executions table."""
    from tests.conftest import _pg_admin

    name = f"runlane_so_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template}"'))
    try:
        url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        asyncio.run(create_executions_table(plain_dsn(url)))
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def scaleout_redis_prefix() -> Iterator[str]:
    """A Redis key prefix for this module; its keys are deleted afterwards."""
    require_service("redis")
    prefix = f"rltest:{uuid.uuid4().hex[:12]}"
    yield prefix

    async def _purge() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(_redis_url())
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(_purge())


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scaleout_database: str,
    scaleout_redis_prefix: str,
) -> Iterator[Cluster]:
    """Three processes shared by the tests of one module."""
    require_service("redis")
    with running_cluster(
        tmp_path_factory.mktemp("runlane-cluster"),
        database_url=scaleout_database,
        redis_url=_redis_url(),
        redis_prefix=scaleout_redis_prefix,
        extra_env=dict(getattr(request.module, "CLUSTER_ENV", {})),
    ) as running:
        yield running


@pytest.fixture
def fresh_cluster(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
) -> Iterator[Cluster]:
    """Three processes for one test, which may kill or stop them."""
    asyncio.run(create_executions_table(plain_dsn(postgres_url)))
    with running_cluster(
        tmp_path,
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        extra_env=dict(getattr(request.module, "CLUSTER_ENV", {})),
    ) as running:
        yield running


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[list[Any]]:
    """``[A, B, C]`` as ``langgraph_sdk`` clients."""
    async with sdk_clients(cluster) as sdks:
        yield sdks
