"""Fixtures that give every test its own real services.

- ``sqlite_url``: a fresh SQLite file (migrated copy of a session template).
- ``postgres_url``: a fresh Postgres database cloned from a migrated template.
- ``redis_url`` / ``redis_prefix``: the local Redis and a key prefix no other
  test uses; the prefix's keys are deleted afterwards.

When Postgres or Redis is unreachable the run says so in its header and in
its summary, and the tests that need it are skipped; with ``CI=true`` they
fail instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_HOST = os.environ.get("RUNLANE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("RUNLANE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("RUNLANE_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("RUNLANE_TEST_PG_DB", "test")
REDIS_HOST = os.environ.get("RUNLANE_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("RUNLANE_TEST_REDIS_PORT", "6379"))

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


SERVICES = {
    "postgres": _reachable(PG_HOST, PG_PORT),
    "redis": _reachable(REDIS_HOST, REDIS_PORT),
}
_MISSING = [name for name, up in SERVICES.items() if not up]
_BANNER = (
    "!!! SERVICES DOWN: "
    + ", ".join(_MISSING)
    + (" -- CI=true, so their tests FAIL" if IN_CI else " -- their tests are SKIPPED")
    + " !!!"
)


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"services: postgres={PG_HOST}:{PG_PORT} {'up' if SERVICES['postgres'] else 'DOWN'}, "
             f"redis={REDIS_HOST}:{REDIS_PORT} {'up' if SERVICES['redis'] else 'DOWN'}"]
    if _MISSING:
        lines.append(_BANNER)
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _MISSING:
        terminalreporter.section("services", sep="!", red=True, bold=True)
        terminalreporter.write_line(_BANNER, red=True, bold=True)


def require_service(name: str) -> None:
    """Skip the calling test when ``name`` is down, or fail it under CI."""
    if SERVICES[name]:
        return
    message = f"{name} is unreachable; start it (see the machine notes in the README)"
    if IN_CI:
        pytest.fail(message + " -- CI=true, so this is a failure", pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in ("postgres", "redis"):
            if item.get_closest_marker(name) and not SERVICES[name]:
                if IN_CI:
                    item.add_marker(pytest.mark.usefixtures(f"_require_{name}"))
                else:
                    item.add_marker(pytest.mark.skip(reason=f"{name} is unreachable"))


@pytest.fixture
def _require_postgres() -> None:
    require_service("postgres")


@pytest.fixture
def _require_redis() -> None:
    require_service("redis")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- Postgres ---------------------------------------------------------------


def _pg_dsn(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def _pg_admin(*statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_dsn(PG_ADMIN_DB))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def _postgres_template() -> Iterator[str]:
    """A migrated Postgres database that per-test databases are cloned from."""
    require_service("postgres")
    from runlane.db.migrate import upgrade

    name = f"runlane_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        upgrade(f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")
        yield name
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(_postgres_template: str) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, migrated Postgres database for this test only."""
    name = f"runlane_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- SQLite -----------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from runlane.db.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """SQLAlchemy URL of a fresh, migrated SQLite file for this test only."""
    import shutil

    path = tmp_path / "runlane.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


# --- Redis ------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    require_service("redis")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"rltest:{uuid.uuid4().hex[:12]}"
    yield prefix

    async def _purge() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(_purge())
