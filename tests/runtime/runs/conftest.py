"""Fixtures shared by the RunManager suites.

Each module chooses its stores by defining ``store_url`` (see
``_manager_support.STORE_KINDS``); ``"none"`` means a manager without a store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from runlane.runtime import RunManager
from runlane.runtime.runs.store.base import RunStore
from tests.runtime.runs._manager_support import open_store


@pytest.fixture
async def store(store_url: str | None) -> AsyncIterator[RunStore | None]:
    if store_url == "none":
        yield None
        return
    async with open_store(store_url) as run_store:
        yield run_store


@pytest.fixture
def manager_options() -> dict[str, Any]:
    """Defaults every manager of a test gets (a module may override this fixture)."""
    return {}


@pytest.fixture
async def make_manager(
    store: RunStore | None, manager_options: dict[str, Any]
) -> AsyncIterator[Callable[..., RunManager]]:
    managers: list[RunManager] = []

    def factory(**options: Any) -> RunManager:
        manager = RunManager(store, **{**manager_options, **options})
        managers.append(manager)
        return manager

    yield factory
    for manager in managers:
        await manager.close()
