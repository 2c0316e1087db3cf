"""Alembic environment for runlane.

Normally driven by :mod:`runlane.db.migrate`, which opens the connection
itself and hands it over in ``config.attributes["connection"]``. Run through
the ``alembic`` command instead (with ``sqlalchemy.url`` set), it opens an
async engine from :func:`runlane.db.engine.create_engine`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from runlane.db.engine import create_engine
from runlane.db.tables import metadata

__all__: list[str] = []

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        # Only for `alembic revision --autogenerate`; migrations never use it.
        target_metadata=metadata,
        # SQLite alters tables by copying them; batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_new_engine(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("Set sqlalchemy.url, or migrate through runlane.db.migrate.")
    return url


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
    else:
        asyncio.run(_run_with_new_engine(_url()))
