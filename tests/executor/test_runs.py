"""Run lifecycles through the executor: errors, human in the loop, cancel, rollback."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from runlane.executor.request import RunRequest, build_config
from runlane.executor.state import get_history, thread_config
from runlane.runtime.runs.schemas import RunStatus
from runlane.runtime.stream_bridge.exceptions import BridgeClosedError
from tests.executor.conftest import Stack

pytestmark = pytest.mark.anyio


async def values_of(stack: Stack, thread_id: str) -> dict[str, object]:
    state = await stack.executor.thread_state(thread_id)
    values = state["values"]
    assert isinstance(values, dict)
    return values


async def test_a_failing_graph_publishes_error_then_terminal_error(stack: Stack) -> None:
    record = await stack.start("t1", "failing", input={"log": []}, stream_mode=["updates"])
    events = await stack.events(record.run_id)
    assert [e.event for e in events] == ["metadata", "updates", "error", "error"]
    assert events[2].data == {"error": "ValueError", "message": "boom"}
    assert not events[2].terminal
    assert events[3].terminal
    assert events[3].data == {"run_id": record.run_id, "status": "error", "error": "boom"}
    stored = await stack.store.get(record.run_id)
    assert stored is not None
    assert stored["status"] == "error"
    assert await stack.thread_status("t1") == "error"
    assert await stack.executor.wait_output(record.run_id, thread_id="t1") == {
        "__error__": {"error": "ValueError", "message": "boom"}
    }


async def test_interrupt_then_resume(stack: Stack) -> None:
    first = await stack.start("t1", "hitl", input={"messages": [{"role": "user", "content": "x"}]})
    events = await stack.events(first.run_id)
    assert events[-1].data["status"] == "success"
    assert events[-1].event == "end"
    last_values = [e for e in events if e.event == "values"][-1].data
    (pending,) = last_values["__interrupt__"]
    assert pending["value"] == {
        "question": "Approve this action?", "action": "I am about to: x. Approve?"
    }
    assert set(pending) == {"id", "value"}
    assert await stack.thread_status("t1") == "interrupted"
    assert (await stack.store.get(first.run_id) or {})["status"] == "success"
    output = await stack.executor.wait_output(first.run_id, thread_id="t1")
    assert output["__interrupt__"] == [pending]
    state = await stack.executor.thread_state("t1")
    assert state["next"] == ["review"]
    assert state["interrupts"] == [pending]

    second = await stack.start("t1", "hitl", command={"resume": "yes"})
    events = await stack.events(second.run_id)
    assert events[-1].data["status"] == "success"
    output = await stack.executor.wait_output(second.run_id, thread_id="t1")
    assert output["approved"] is True
    assert "__interrupt__" not in output
    assert output["messages"][-1]["content"] == "Approved, done."
    assert await stack.thread_status("t1") == "idle"


async def test_cancel_before_start_never_invokes_the_graph(stack: Stack) -> None:
    blocker = await stack.start("t1", "slow", input={"log": []})
    with anyio.fail_after(10):
        await stack.gate.started.wait()
    waiting = await stack.start("t1", "slow", input={"log": []})
    assert waiting.queued
    assert await stack.manager.cancel(waiting.run_id)
    events = await stack.events(waiting.run_id)
    assert [e.event for e in events] == ["metadata", "cancel"]
    assert events[-1].data == {"run_id": waiting.run_id, "status": "interrupted", "error": None}
    assert await stack.thread_status("t1") == "busy"  # the blocker still runs
    stack.gate.release.set()
    done = await stack.events(blocker.run_id)
    assert done[-1].data["status"] == "success"
    assert stack.gate.calls == 1
    assert await stack.thread_status("t1") == "idle"


async def test_cancel_during_after_seconds_never_invokes_the_graph(stack: Stack) -> None:
    record = await stack.start("t1", "slow", input={"log": []}, after_seconds=3600)
    run = await stack.manager.get(record.run_id)
    with anyio.fail_after(10):
        while run is not None and run.status != RunStatus.running:
            await anyio.wait_all_tasks_blocked()
    assert await stack.manager.cancel(record.run_id)
    events = await stack.events(record.run_id)
    assert [e.event for e in events] == ["metadata", "cancel"]
    assert stack.gate.calls == 0
    assert await stack.thread_status("t1") == "idle"


async def test_cancel_mid_run_with_interrupt_keeps_checkpoints(stack: Stack) -> None:
    record = await stack.start("t1", "slow", input={"log": ["before"]})
    with anyio.fail_after(10):
        await stack.gate.started.wait()
    assert await stack.manager.cancel(record.run_id, action="interrupt")
    events = await stack.events(record.run_id)
    assert events[-1].event == "cancel"
    assert events[-1].data["status"] == "interrupted"
    assert await values_of(stack, "t1") == {"log": ["before", "first"]}
    assert await stack.store.get(record.run_id) is not None
    assert await stack.thread_status("t1") == "interrupted"  # "blocked" is still next


async def test_cancel_mid_run_with_rollback_restores_the_thread(stack: Stack) -> None:
    done = await stack.start("t1", "echo", input={"log": []})
    await stack.events(done.run_id)
    before = await stack.executor.thread_state("t1")
    async with stack.executor.graph_for_thread("t1") as graph:
        history_before = await get_history(graph, "t1", limit=100)

    record = await stack.start("t1", "slow", input={"log": ["x"]})
    with anyio.fail_after(10):
        await stack.gate.started.wait()
    assert await stack.manager.cancel(record.run_id, action="rollback")
    events = await stack.events(record.run_id)
    assert events[-1].event == "cancel"
    assert events[-1].data["status"] == "interrupted"

    after = await stack.executor.thread_state("t1")
    assert after == before
    async with stack.executor.graph_for_thread("t1") as graph:
        assert await get_history(graph, "t1", limit=100) == history_before
    assert await stack.store.get(record.run_id) is None
    assert await stack.manager.get(record.run_id) is None
    assert await stack.thread_status("t1") == "idle"


async def test_rollback_of_a_resume_restores_the_pending_interrupt(stack: Stack) -> None:
    first = await stack.start("t1", "ask_then_block", input={"log": []})
    await stack.events(first.run_id)
    before = await stack.executor.thread_state("t1")
    assert before["next"] == ["ask"]
    assert before["interrupts"]

    resume = await stack.start("t1", "ask_then_block", command={"resume": "one"})
    with anyio.fail_after(10):
        await stack.gate.started.wait()
    assert await stack.manager.cancel(resume.run_id, action="rollback")
    await stack.events(resume.run_id)
    assert await stack.executor.thread_state("t1") == before
    assert await stack.thread_status("t1") == "interrupted"

    # The resume write of the rolled-back run is gone: a new resume decides.
    stack.gate.release.set()
    again = await stack.start("t1", "ask_then_block", command={"resume": "two"})
    events = await stack.events(again.run_id)
    assert events[-1].data["status"] == "success"
    assert await values_of(stack, "t1") == {"log": ["answer:two", "blocked"]}


async def test_multitask_rollback_strategy_restores_before_the_next_run(stack: Stack) -> None:
    record = await stack.start("t1", "slow", input={"log": ["a"]})
    with anyio.fail_after(10):
        await stack.gate.started.wait()
    newer = await stack.start("t1", "echo", input={"log": ["b"]}, strategy="rollback")
    events = await stack.events(newer.run_id)
    assert events[-1].data["status"] == "success"
    assert (await stack.events(record.run_id))[-1].event == "cancel"
    values = await values_of(stack, "t1")
    assert values["log"][0] == "b"
    assert len(values["log"]) == 2
    assert await stack.store.get(record.run_id) is None


async def test_enqueued_runs_execute_in_order(stack: Stack) -> None:
    records = [await stack.start("t1", "echo", input={"log": [f"run{i}"]}) for i in range(3)]
    for record in records:
        assert (await stack.events(record.run_id))[-1].data["status"] == "success"
    log = (await values_of(stack, "t1"))["log"]
    assert isinstance(log, list)
    assert [entry for entry in log if entry.startswith("run")] == ["run0", "run1", "run2"]
    echoed = [entry.split("|")[2] for entry in log if "|" in entry]
    assert echoed == [r.run_id for r in records]
    assert await stack.thread_status("t1") == "idle"


async def test_identity_comes_from_the_server(stack: Stack) -> None:
    victim = await stack.start("victim", "echo", input={"log": []})
    await stack.events(victim.run_id)
    victim_before = await stack.executor.thread_state("victim")

    forged = {
        "configurable": {
            "thread_id": "victim", "checkpoint_ns": "x", "run_id": "forged",
            "checkpoint_id": victim_before["checkpoint"]["checkpoint_id"],
            "__pregel_checkpointer": None, "user_id": "mallory", "graph_id": "hitl",
        },
        "metadata": {"run_id": "forged", "thread_id": "victim"},
    }
    attack = await stack.start("attacker", "echo", input={"log": []}, config=forged)
    assert (await stack.events(attack.run_id))[-1].data["status"] == "success"
    assert await stack.executor.thread_state("victim") == victim_before
    (line,) = (await values_of(stack, "attacker"))["log"]
    thread_id, task_ns, run_id = line.split("|")
    # inside a node LangGraph sets the task's namespace under the root "" we forced
    assert (thread_id, task_ns.split(":")[0], run_id) == ("attacker", "echo", attack.run_id)


def test_build_config_overwrites_identity_keys() -> None:
    request = RunRequest(
        graph_id="g", assistant_id="a",
        config={"configurable": {"thread_id": "other", "user_id": "x", "model": "m",
                                 "__pregel_store": 1},
                "metadata": {"run_id": "r0", "tag": 1}, "recursion_limit": 5},
        checkpoint={"checkpoint_id": "c1"},
    )
    config = build_config(request, thread_id="t", run_id="r", user_id=None)
    assert config["configurable"] == {
        "thread_id": "t", "checkpoint_ns": "", "run_id": "r", "assistant_id": "a",
        "graph_id": "g", "user_id": None, "model": "m", "checkpoint_id": "c1",
    }
    assert config["metadata"] == {
        "run_id": "r", "tag": 1, "thread_id": "t", "assistant_id": "a", "graph_id": "g",
        "user_id": None,
    }
    assert config["recursion_limit"] == 5
    assert thread_config("t") == {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}


async def test_wait_output_success_and_thread_fallback(stack: Stack) -> None:
    record = await stack.start("t1", "echo", input={"log": []}, stream_mode=["updates"])
    output = await stack.executor.wait_output(record.run_id, thread_id="t1")
    # no values were streamed: the thread's values answer
    assert [line.split("|")[2] for line in output["log"]] == [record.run_id]
    streamed = await stack.start("t1", "echo", input={"log": []})
    output = await stack.executor.wait_output(streamed.run_id, thread_id="t1")
    assert len(output["log"]) == 2
    assert await stack.executor.wait_output("no-such-run") == {}


async def test_temporary_thread_is_deleted_after_the_terminal_entry(stack: Stack) -> None:
    record = await stack.start("tmp", "echo", input={"log": []}, temporary=True)
    events = await stack.events(record.run_id)
    assert events[-1].data["status"] == "success"
    output = await stack.executor.wait_output(record.run_id, thread_id="tmp")
    assert [line.split("|")[2] for line in output["log"]] == [record.run_id]
    with anyio.fail_after(10):
        while await stack.threads.get("tmp") is not None:
            await anyio.wait_all_tasks_blocked()
    assert await stack.checkpointer.aget_tuple(thread_config("tmp")) is None
    assert await stack.store.get(record.run_id) is None


async def test_submit_that_cannot_open_the_stream_ends_the_run(stack: Stack) -> None:
    await stack.bridge.close()
    with pytest.raises(BridgeClosedError):
        await stack.start("t1", "echo", input={"log": []})
    (record,) = await stack.manager.list_by_thread("t1")
    assert record.status == RunStatus.interrupted
    assert stack.gate.calls == 0


async def test_interrupt_before_context_and_durability(stack: Stack) -> None:
    hello = {"messages": [{"role": "user", "content": "one two"}]}
    record = await stack.start(
        "t1", "agent", input=hello, interrupt_before=["tools"], durability="sync",
        context={"signature": "-- rl"},
    )
    assert (await stack.events(record.run_id))[-1].data["status"] == "success"
    assert (await stack.executor.thread_state("t1"))["next"] == ["tools"]
    assert await stack.thread_status("t1") == "interrupted"
    resumed = await stack.start("t1", "agent", context={"signature": "-- rl"})
    output = await stack.executor.wait_output(resumed.run_id, thread_id="t1")
    assert output["messages"][-1]["content"] == 'Your message "one two" has 2 words. -- rl'
    assert await stack.thread_status("t1") == "idle"


async def test_fork_from_an_earlier_checkpoint(stack: Stack) -> None:
    first = await stack.start("t1", "echo", input={"log": ["a"]})
    await stack.events(first.run_id)
    fork_at = (await stack.executor.thread_state("t1"))["checkpoint"]["checkpoint_id"]
    second = await stack.start("t1", "echo", input={"log": ["b"]})
    await stack.events(second.run_id)
    assert len((await values_of(stack, "t1"))["log"]) == 4
    forked = await stack.start("t1", "echo", input={"log": ["c"]},
                               checkpoint={"checkpoint_id": fork_at})
    await stack.events(forked.run_id)
    state = await stack.executor.thread_state("t1")
    log = state["values"]["log"]
    assert [entry for entry in log if "|" not in entry] == ["a", "c"]
    async with stack.executor.graph_for_thread("t1") as graph:
        history = await get_history(graph, "t1", limit=100)
    assert fork_at in {h["parent_checkpoint"]["checkpoint_id"] for h in history
                       if h["parent_checkpoint"]}


async def test_shutdown_ends_the_streams_of_running_and_queued_runs(stack: Stack) -> None:
    running = await stack.start("t1", "slow", input={"log": []})
    with anyio.fail_after(10):
        await stack.gate.started.wait()
    queued = await stack.start("t1", "slow", input={"log": []})
    await stack.manager.close()
    assert [e.event for e in await stack.events(queued.run_id)] == ["metadata", "cancel"]
    assert (await stack.events(running.run_id))[-1].event == "cancel"
    assert stack.gate.calls == 1


async def test_a_rolled_back_run_is_gone_before_its_terminal_entry(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_at_terminal: list[object] = []
    publish_terminal = stack.bridge.publish_terminal

    async def recording(run_id: str, kind: Any, data: Any = None) -> str:
        seen_at_terminal.append(await stack.store.get(run_id))
        return await publish_terminal(run_id, kind, data)

    monkeypatch.setattr(stack.bridge, "publish_terminal", recording)
    record = await stack.start("t1", "slow", input={"log": ["x"]})
    with anyio.fail_after(10):
        await stack.gate.started.wait()
    assert await stack.manager.cancel(record.run_id, action="rollback")
    assert (await stack.events(record.run_id))[-1].event == "cancel"
    assert seen_at_terminal == [None]
