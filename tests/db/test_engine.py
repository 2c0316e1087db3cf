"""The engine factory: SQLite transactions that write lock up front, reads never wait."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from runlane.db.engine import begin_write, create_engine

pytestmark = pytest.mark.anyio


async def test_a_read_does_not_wait_for_a_writer_and_a_writer_locks_up_front(
    sqlite_url: str,
) -> None:
    engine = create_engine(sqlite_url, busy_timeout_ms=100)
    other = create_engine(sqlite_url, busy_timeout_ms=100)
    try:
        async with begin_write(engine) as writer:
            # The write lock is held from BEGIN on, before any statement ran.
            with pytest.raises(OperationalError, match="locked"):
                async with begin_write(other) as second:
                    await second.execute(text("SELECT 1"))
            await writer.execute(text("CREATE TABLE scratch (x INTEGER)"))
            # A plain read on another connection neither waits nor fails.
            async with other.connect() as reader:
                assert (await reader.execute(text("SELECT 1"))).scalar() == 1
        async with other.connect() as reader:
            count = await reader.execute(text("SELECT count(*) FROM scratch"))
            assert count.scalar() == 0
    finally:
        await engine.dispose()
        await other.dispose()
