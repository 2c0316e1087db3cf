"""What a server on the embedded defaults keeps loaded.

The Postgres drivers, LangGraph's Postgres saver and Alembic are ~20 MB of
modules; a server on SQLite and memory streams must not carry them, even on
its very first start (when the schema is created in a child process). The
check runs in a fresh interpreter, since this test process imports all of
them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runlane.config import BUNDLED_EXAMPLE

HEAVY = ("alembic", "asyncpg", "psycopg", "psycopg_pool", "langgraph.checkpoint.postgres")

_PROBE = """
import asyncio, json, sys
from pathlib import Path
from runlane.config import Settings
from runlane.server.app import create_app

async def main():
    data = Path(sys.argv[1])
    app = create_app(Settings(config=Path(sys.argv[2]), data_dir=data))
    async with app.router.lifespan_context(app):
        services = app.state.services
        assert await services.assistants.search(limit=10)
        print(json.dumps(sorted(sys.modules)))

asyncio.run(main())
"""


def _modules_of_a_started_server(data: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(data), str(BUNDLED_EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_embedded_defaults_load_no_postgres_driver_and_no_alembic(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for start in ("first (the schema is created)", "second (the schema is current)"):
        loaded = _modules_of_a_started_server(data)
        assert "runlane.executor.executor" in loaded, start
        heavy = sorted(name for name in loaded if name.startswith(HEAVY))
        assert heavy == [], f"{start} start loaded {heavy}"
    assert (data / "runlane.db").is_file()
