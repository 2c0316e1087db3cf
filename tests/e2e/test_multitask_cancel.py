"""Multitask strategies, cancellation and disconnects, through the Python ``langgraph-sdk``.

The ``gate`` test graph keeps a run ``running`` until the test creates its gate
file, so "a run is in flight" is a fact the test establishes (the run's own
``custom`` event says it is waiting), never a timing guess.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from langgraph_sdk.errors import ConflictError, NotFoundError

from tests.e2e.conftest import RunningServer
from tests.e2e.helpers import collect, first_part, gate_input, read_until

pytestmark = pytest.mark.anyio

WAIT_S = 15.0


class Held:
    """A ``gate`` run known to be executing its node, with its open SSE stream."""

    def __init__(self, run_id: str, gate: Path, stream: AsyncIterator[Any], first: list[Any]):
        self.run_id = run_id
        self.gate = gate
        self.stream = stream
        self.first = first

    def release(self) -> None:
        self.gate.touch()

    async def rest(self) -> list[Any]:
        return self.first + await collect(self.stream)


@contextlib.asynccontextmanager
async def held_run(
    client: Any, server: RunningServer, tid: str, label: str, **kwargs: Any
) -> AsyncIterator[Held]:
    payload, gate = gate_input(server.gates, label)
    stream = client.runs.stream(tid, "gate", input=payload, stream_mode="custom", **kwargs)
    try:
        first = await read_until(stream, lambda p: p.event == "custom")
        assert first[0].event == "metadata"
        assert first[-1].data == {"waiting": label}
        yield Held(first[0].data["run_id"], gate, stream, first)
    finally:
        gate.touch()  # never leave a run waiting on a gate
        await stream.aclose()


async def _thread(client: Any) -> str:
    return str((await client.threads.create())["thread_id"])


async def _log(client: Any, tid: str) -> list[str]:
    return list((await client.threads.get_state(tid))["values"].get("log", []))


async def _finished_run(client: Any, server: RunningServer, tid: str, label: str) -> None:
    payload, _ = gate_input(server.gates, label, opened=True)
    await client.runs.wait(tid, "gate", input=payload)


# --- multitask strategies ---------------------------------------------------------


async def test_reject_refuses_a_second_run_with_409(client: Any, server: RunningServer) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a") as held:
        assert (await client.threads.get(tid))["status"] == "busy"
        assert (await client.runs.get(tid, held.run_id))["status"] == "running"
        other, _ = gate_input(server.gates, "b", opened=True)
        with pytest.raises(ConflictError):
            await client.runs.create(tid, "gate", input=other, multitask_strategy="reject")
        rejected = client.runs.stream(tid, "gate", input=other, multitask_strategy="reject")
        with pytest.raises(ConflictError):  # before any event
            await first_part(rejected)
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await client.runs.wait(tid, "gate", input=other, multitask_strategy="reject")
        assert caught.value.response.status_code == 409
        held.release()
        parts = await held.rest()
    assert parts[-1].event == "end"
    assert parts[-1].data["status"] == "success"
    assert [r["run_id"] for r in await client.runs.list(tid)] == [held.run_id], (
        "a rejected run leaves nothing behind"
    )
    assert await _log(client, tid) == ["a:in", "a:done"]


async def test_enqueue_runs_in_order(client: Any, server: RunningServer) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a") as held:
        b_input, _ = gate_input(server.gates, "b", opened=True)
        c_input, _ = gate_input(server.gates, "c", opened=True)
        run_b = await client.runs.create(tid, "gate", input=b_input)  # enqueue is the default
        run_c = await client.runs.create(tid, "gate", input=c_input, multitask_strategy="enqueue")
        assert (await client.runs.get(tid, run_b["run_id"]))["status"] == "pending"
        assert (await client.runs.get(tid, run_c["run_id"]))["status"] == "pending"
        assert (await client.runs.get(tid, held.run_id))["status"] == "running"
        held.release()
        with anyio.fail_after(WAIT_S):
            output = await client.runs.join(tid, run_c["run_id"])
    assert output["log"] == ["a:in", "a:done", "b:in", "b:done", "c:in", "c:done"]
    for run_id in (held.run_id, run_b["run_id"], run_c["run_id"]):
        assert (await client.runs.get(tid, run_id))["status"] == "success"
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_interrupt_stops_the_running_run_and_keeps_its_checkpoints(
    client: Any, server: RunningServer
) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a") as held:
        b_input, _ = gate_input(server.gates, "b", opened=True)
        run_b = await client.runs.create(tid, "gate", input=b_input, multitask_strategy="interrupt")
        with anyio.fail_after(WAIT_S):
            output = await client.runs.join(tid, run_b["run_id"])
            parts = await held.rest()
    assert parts[-1].event == "end"
    assert parts[-1].data["status"] == "interrupted"
    assert (await client.runs.get(tid, held.run_id))["status"] == "interrupted"
    assert (await client.runs.get(tid, run_b["run_id"]))["status"] == "success"
    assert "a:in" in output["log"], "the interrupted run's checkpoints are kept"
    assert "a:done" not in output["log"]
    assert output["log"][-2:] == ["b:in", "b:done"]


async def test_rollback_deletes_the_running_run_and_its_checkpoints(
    client: Any, server: RunningServer
) -> None:
    tid = await _thread(client)
    await _finished_run(client, server, tid, "x")
    async with held_run(client, server, tid, "a") as held:
        b_input, _ = gate_input(server.gates, "b", opened=True)
        run_b = await client.runs.create(tid, "gate", input=b_input, multitask_strategy="rollback")
        with anyio.fail_after(WAIT_S):
            output = await client.runs.join(tid, run_b["run_id"])
            parts = await held.rest()
    assert parts[-1].event == "end", "the rolled-back run's stream still ends"
    assert output["log"] == ["x:in", "x:done", "b:in", "b:done"]
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, held.run_id)
    assert held.run_id not in {r["run_id"] for r in await client.runs.list(tid)}


# --- cancel ---------------------------------------------------------------------


async def test_cancel_interrupt_and_wait(client: Any, server: RunningServer) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a") as held:
        with anyio.fail_after(WAIT_S):
            output = await client.runs.cancel(tid, held.run_id, wait=True, action="interrupt")
            parts = await held.rest()
    assert isinstance(output, dict)
    assert parts[-1].event == "end"
    assert parts[-1].data["status"] == "interrupted"
    assert (await client.runs.get(tid, held.run_id))["status"] == "interrupted"
    assert (await client.threads.get(tid))["status"] != "busy"
    assert await _log(client, tid) == ["a:in"], "an interrupted run keeps what it wrote"


async def test_cancel_rollback_and_wait(client: Any, server: RunningServer) -> None:
    tid = await _thread(client)
    await _finished_run(client, server, tid, "x")
    async with held_run(client, server, tid, "a") as held:
        with anyio.fail_after(WAIT_S):
            await client.runs.cancel(tid, held.run_id, wait=True, action="rollback")
            parts = await held.rest()
    assert parts[-1].event == "end"
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, held.run_id)
    assert await _log(client, tid) == ["x:in", "x:done"], "rollback restores the thread"
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_cancel_without_wait_then_join(client: Any, server: RunningServer) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a") as held:
        assert await client.runs.cancel(tid, held.run_id) is None
        with anyio.fail_after(WAIT_S):
            await client.runs.join(tid, held.run_id)
        assert (await client.runs.get(tid, held.run_id))["status"] == "interrupted"


async def test_cancel_a_pending_run(client: Any, server: RunningServer) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a") as held:
        b_input, _ = gate_input(server.gates, "b", opened=True)
        run_b = await client.runs.create(tid, "gate", input=b_input)
        await client.runs.cancel(tid, run_b["run_id"])
        assert (await client.runs.get(tid, run_b["run_id"]))["status"] == "interrupted"
        held.release()
        with anyio.fail_after(WAIT_S):
            output = await client.runs.join(tid, held.run_id)
    assert output["log"] == ["a:in", "a:done"], "a cancelled pending run never starts"


# --- disconnects ----------------------------------------------------------------


async def test_disconnect_with_on_disconnect_cancel_interrupts(
    client: Any, server: RunningServer
) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a", on_disconnect="cancel") as held:
        await held.stream.aclose()  # the creating connection goes away
        with anyio.fail_after(WAIT_S):
            await client.runs.join(tid, held.run_id)
        assert (await client.runs.get(tid, held.run_id))["status"] == "interrupted"


async def test_disconnect_by_default_lets_the_run_continue(
    client: Any, server: RunningServer
) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a") as held:
        await held.stream.aclose()
        # the gate is still shut, so the run can only be running (or wrongly cancelled)
        assert (await client.runs.get(tid, held.run_id))["status"] == "running"
        held.release()
        with anyio.fail_after(WAIT_S):
            output = await client.runs.join(tid, held.run_id)
    assert output["log"] == ["a:in", "a:done"]
    assert (await client.runs.get(tid, held.run_id))["status"] == "success"


async def test_only_the_creating_connection_cancels_on_disconnect(
    client: Any, server: RunningServer
) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a", on_disconnect="cancel") as held:
        joiner = client.runs.join_stream(tid, held.run_id, last_event_id="-1")
        await read_until(joiner, lambda p: p.event == "custom")
        await joiner.aclose()  # a joiner leaving does not cancel the run
        assert (await client.runs.get(tid, held.run_id))["status"] == "running"
        held.release()
        parts = await held.rest()
    assert parts[-1].event == "end"
    assert parts[-1].data["status"] == "success", "the joiner's disconnect cancelled the run"


async def test_cancel_rollback_of_a_pending_run_deletes_it(
    client: Any, server: RunningServer
) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a") as held:
        b_input, _ = gate_input(server.gates, "b", opened=True)
        run_b = await client.runs.create(tid, "gate", input=b_input)
        with anyio.fail_after(WAIT_S):
            await client.runs.cancel(tid, run_b["run_id"], wait=True, action="rollback")
        with pytest.raises(NotFoundError):
            await client.runs.get(tid, run_b["run_id"])
        held.release()
        with anyio.fail_after(WAIT_S):
            output = await client.runs.join(tid, held.run_id)
    assert output["log"] == ["a:in", "a:done"]


async def test_rollback_strategy_also_removes_pending_runs(
    client: Any, server: RunningServer
) -> None:
    tid = await _thread(client)
    await _finished_run(client, server, tid, "x")
    async with held_run(client, server, tid, "a") as held:
        b_input, _ = gate_input(server.gates, "b", opened=True)
        c_input, _ = gate_input(server.gates, "c", opened=True)
        run_b = await client.runs.create(tid, "gate", input=b_input)
        run_c = await client.runs.create(tid, "gate", input=c_input, multitask_strategy="rollback")
        with anyio.fail_after(WAIT_S):
            output = await client.runs.join(tid, run_c["run_id"])
    assert output["log"] == ["x:in", "x:done", "c:in", "c:done"]
    remaining = {r["run_id"] for r in await client.runs.list(tid)}
    assert held.run_id not in remaining
    assert run_b["run_id"] not in remaining
    assert run_c["run_id"] in remaining


async def test_interrupt_strategy_also_stops_pending_runs(
    client: Any, server: RunningServer
) -> None:
    tid = await _thread(client)
    async with held_run(client, server, tid, "a") as held:
        b_input, _ = gate_input(server.gates, "b", opened=True)
        c_input, _ = gate_input(server.gates, "c", opened=True)
        run_b = await client.runs.create(tid, "gate", input=b_input)
        run_c = await client.runs.create(tid, "gate", input=c_input, multitask_strategy="interrupt")
        with anyio.fail_after(WAIT_S):
            output = await client.runs.join(tid, run_c["run_id"])
    assert "b:in" not in output["log"], "the pending run never started"
    assert output["log"][-2:] == ["c:in", "c:done"]
    assert (await client.runs.get(tid, held.run_id))["status"] == "interrupted"
    assert (await client.runs.get(tid, run_b["run_id"]))["status"] == "interrupted"
