"""Apply the schema migrations that ship inside the package.

No ``alembic.ini`` is needed: the Alembic configuration is built here and the
connection is handed to the environment, so the same code serves the CLI
(``runlane migrate``), the server on start, and the test fixtures.

Upgrading is idempotent: a database already at ``revision`` is left alone.
A database already at :data:`HEAD` is recognised by one ``SELECT`` without
loading Alembic. The server upgrades with :func:`upgrade_in_child`: Alembic
(~8 MB of modules) runs in a short-lived child process, so a server never
carries the migration tooling for its whole life.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Column, MetaData, String, Table, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db.engine import create_engine
from runlane.exceptions import MigrationError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD",
    "SCRIPT_LOCATION",
    "alembic_config",
    "current_revisions",
    "downgrade",
    "downgrade_async",
    "upgrade",
    "upgrade_async",
    "upgrade_in_child",
]

SCRIPT_LOCATION = "runlane.db:migrations"
"""The migrations folder, as a package resource (works from a wheel too)."""

HEAD = "0003"
"""The newest revision in the migrations folder (a test holds the two equal)."""

# Alembic's bookkeeping table, as Alembic creates it; read here, never written.
_alembic_version = Table(
    "alembic_version", MetaData(), Column("version_num", String(32), primary_key=True)
)


def _read_revisions(connection: Connection) -> set[str]:
    if not inspect(connection).has_table(_alembic_version.name):
        return set()
    return {row[0] for row in connection.execute(select(_alembic_version.c.version_num))}


async def current_revisions(engine: AsyncEngine) -> set[str]:
    """The revisions the database at ``engine`` is at; empty when it has no runlane schema."""
    async with engine.connect() as connection:
        return await connection.run_sync(_read_revisions)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at runlane's migrations (and ``url``, if given)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if url is not None:
        # ConfigParser interpolates '%', which a password may contain.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _apply(
    connection: Connection, direction: Literal["upgrade", "downgrade"], revision: str
) -> None:
    from alembic import command

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
        upgrading_to_head = direction == "upgrade" and revision in ("head", HEAD)
        if upgrading_to_head and await current_revisions(engine) == {HEAD}:
            return
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


async def upgrade_in_child(engine: AsyncEngine, database_url: str) -> None:
    """Bring the database at ``engine`` to :data:`HEAD` with ``runlane migrate`` in a child.

    A database already at :data:`HEAD` costs one ``SELECT`` and no child.
    The URL reaches the child through its environment, never its argv
    (visible to every user of the machine). A failed migration raises
    :class:`~runlane.exceptions.MigrationError` carrying the child's output.
    """
    if await current_revisions(engine) == {HEAD}:
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runlane.cli",
        "migrate",
        env={**os.environ, "RUNLANE_DATABASE_URL": database_url},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await child.communicate()
    if child.returncode != 0:
        tail = "\n".join(output.decode(errors="replace").strip().splitlines()[-20:])
        raise MigrationError(
            "The database schema could not be brought up to date: "
            f"`runlane migrate` exited with {child.returncode}:\n{tail}"
        )
