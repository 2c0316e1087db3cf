"""Apply the schema migrations that ship inside the package.

No ``alembic.ini`` is needed: the Alembic configuration is built here and the
connection is handed to the environment, so the same code serves the CLI
(``runlane migrate``), the server on start, and the test fixtures.

Upgrading is idempotent: a database already at ``revision`` is left alone.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db.engine import create_engine

__all__ = [
    "SCRIPT_LOCATION",
    "alembic_config",
    "downgrade",
    "downgrade_async",
    "upgrade",
    "upgrade_async",
]

SCRIPT_LOCATION = "runlane.db:migrations"
"""The migrations folder, as a package resource (works from a wheel too)."""


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at runlane's migrations (and ``url``, if given)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        # ConfigParser interpolates '%', which a password may contain.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _apply(
    connection: Connection, direction: Literal["upgrade", "downgrade"], revision: str
) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    if direction == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


async def _migrate(
    target: str | AsyncEngine, direction: Literal["upgrade", "downgrade"], revision: str
) -> None:
    engine = create_engine(target) if isinstance(target, str) else target
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_apply, direction, revision)
    finally:
        if engine is not target:
            await engine.dispose()


async def upgrade_async(target: str | AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database at ``target`` (a URL or an engine, left open) to ``revision``."""
    await _migrate(target, "upgrade", revision)


async def downgrade_async(target: str | AsyncEngine, revision: str = "base") -> None:
    """Downgrade the database at ``target`` to ``revision`` (``base``: drop everything)."""
    await _migrate(target, "downgrade", revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``. Call it outside an event loop."""
    asyncio.run(upgrade_async(url, revision))


def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the database at ``url`` to ``revision``. Call it outside an event loop."""
    asyncio.run(downgrade_async(url, revision))
