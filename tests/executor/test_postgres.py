"""The executor on the Postgres checkpointer: runs, human in the loop, rollback."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import anyio
import pytest

from runlane.executor import open_checkpointer
from runlane.executor.state import get_history
from tests.executor.conftest import close_stack, make_stack

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_postgres_checkpointer_runs_resumes_and_rolls_back(
    postgres_url: str, tmp_path: Path
) -> None:
    async with open_checkpointer(postgres_url, tmp_path) as checkpointer:
        assert type(checkpointer).__name__ == "AsyncPostgresSaver"
        stack, _ = await make_stack(checkpointer)
        try:
            first = await stack.start("t1", "ask_then_block", input={"log": []})
            assert (await stack.events(first.run_id))[-1].data["status"] == "success"
            before = await stack.executor.thread_state("t1")
            assert before["next"] == ["ask"]
            assert before["interrupts"]
            assert await stack.thread_status("t1") == "interrupted"
            async with stack.executor.graph_for_thread("t1") as graph:
                history = await get_history(graph, "t1", limit=100)

            resume = await stack.start("t1", "ask_then_block", command={"resume": "one"})
            with anyio.fail_after(10):
                await stack.gate.started.wait()
            assert await stack.manager.cancel(resume.run_id, action="rollback")
            assert (await stack.events(resume.run_id))[-1].event == "cancel"
            assert await stack.executor.thread_state("t1") == before
            async with stack.executor.graph_for_thread("t1") as graph:
                assert await get_history(graph, "t1", limit=100) == history
            assert await stack.store.get(resume.run_id) is None

            stack.gate.release.set()
            again = await stack.start("t1", "ask_then_block", command={"resume": "two"})
            assert (await stack.events(again.run_id))[-1].data["status"] == "success"
            output = await stack.executor.wait_output(again.run_id, thread_id="t1")
            assert output == {"log": ["answer:two", "blocked"]}
            assert await stack.thread_status("t1") == "idle"
        finally:
            await close_stack(stack)


async def test_processes_starting_together_all_set_up_the_checkpointer(
    postgres_url: str, tmp_path: Path
) -> None:
    # Several processes migrate the checkpoint tables at once on a fresh database.
    async with contextlib.AsyncExitStack() as stack:
        savers = await asyncio.gather(
            *(
                stack.enter_async_context(open_checkpointer(postgres_url, tmp_path / str(n)))
                for n in range(4)
            )
        )
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        assert [await saver.aget_tuple(config) for saver in savers] == [None] * 4
