"""A run executes statements built once, not rebuilt per call.

Building a SQLAlchemy statement and computing its cache key costs more CPU
than SQLite takes to run it, so every statement of a run's admission and end
is a named statement built once with bind parameters. The check: the second
run on a new thread executes only statement objects (by identity) that the
first run already executed. A statement built per call is a new object every
time, and fails it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from runlane.db import single_write
from tests.server import runs_support
from tests.server.runs_support import data_frames

pytestmark = pytest.mark.anyio

settings = runs_support.settings
_gates = runs_support._gates


async def _one_run(client: httpx.AsyncClient, app: FastAPI) -> None:
    created = await client.post("/threads", json={})
    assert created.status_code == 200, created.text
    tid = created.json()["thread_id"]
    body = {"assistant_id": "emit", "input": {"n": 1}, "stream_mode": ["values", "custom"]}
    response = await client.post(f"/threads/{tid}/runs/stream", json=body)
    assert response.status_code == 200, response.text
    frames = data_frames(response.content)
    assert frames[-1].event == "end"
    record = await app.state.services.manager.get(frames[0].data["run_id"])
    if record is not None and record.task is not None:
        await record.task  # the run's end (lane release included) is part of the run


async def test_a_run_executes_only_statements_built_once(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = app.state.services.engine.sync_engine
    executed: list[Any] = []

    def record(_conn: Any, statement: Any, *_args: Any) -> None:
        executed.append(statement)

    plan = single_write._plan

    def record_single_write(statement: Any, dialect: Any) -> Any:
        executed.append(statement)  # single writes on SQLite skip SQLAlchemy's events
        return plan(statement, dialect)

    monkeypatch.setattr(single_write, "_plan", record_single_write)

    await _one_run(client, app)  # statements built lazily are built here
    event.listen(engine, "before_execute", record)
    try:
        await _one_run(client, app)
        first = list(executed)
        executed.clear()
        await _one_run(client, app)
    finally:
        event.remove(engine, "before_execute", record)

    assert len(first) >= 8  # admission, start, journal, end: the check has teeth
    known = {id(statement) for statement in first}
    rebuilt = [str(s).split("\n")[0] for s in executed if id(s) not in known]
    assert rebuilt == []
