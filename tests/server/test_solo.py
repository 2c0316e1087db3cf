"""The single-process gate: a second process on SQLite, or on Postgres without Redis, is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from runlane.config import ConfigurationError, Settings
from runlane.db.engine import create_engine
from runlane.server.solo import hold_solo_lock

pytestmark = pytest.mark.anyio


async def test_a_second_process_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/r.db")
    engine = create_engine(settings.database_url)
    try:
        async with hold_solo_lock(settings, engine):
            with pytest.raises(ConfigurationError, match="SQLite serves one process"):
                async with hold_solo_lock(settings, engine):
                    pass
        # Released with its holder: the next start succeeds.
        async with hold_solo_lock(settings, engine):
            pass
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_with_memory_streams_admits_one_process(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=postgres_url)
    first, second = create_engine(postgres_url), create_engine(postgres_url)
    try:
        async with hold_solo_lock(settings, first):
            with pytest.raises(ConfigurationError, match="RUNLANE_REDIS_URL"):
                async with hold_solo_lock(settings, second):
                    pass
        async with hold_solo_lock(settings, second):
            pass
    finally:
        await first.dispose()
        await second.dispose()


@pytest.mark.postgres
async def test_postgres_with_redis_admits_many_processes(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=postgres_url, redis_url="redis://127.0.0.1:6379/0"
    )
    first, second = create_engine(postgres_url), create_engine(postgres_url)
    try:
        async with hold_solo_lock(settings, first), hold_solo_lock(settings, second):
            pass
    finally:
        await first.dispose()
        await second.dispose()
