"""Runs through the Python ``langgraph-sdk``: create/join/wait, every stream mode, subgraphs,
stateless runs and human in the loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langgraph_sdk.errors import NotFoundError

from tests.e2e.helpers import (
    AGENT_TOOL_CALL_TEXT,
    agent_answer,
    assert_well_formed,
    collect,
    events,
    human,
)

pytestmark = pytest.mark.anyio

TEXT = "one two three"
ANSWER = agent_answer(TEXT)
TOOL_PROGRESS = [{"tool": "count_words", "counted": i, "total": 3} for i in (1, 2, 3)]


async def _new_thread(client: Any) -> str:
    return str((await client.threads.create())["thread_id"])


# --- create, join, wait ------------------------------------------------------------


async def test_create_then_join_returns_final_values(client: Any) -> None:
    tid = await _new_thread(client)
    run = await client.runs.create(tid, "agent", input=human(TEXT), metadata={"tag": "e2e"})
    assert run["thread_id"] == tid
    assert run["status"] in {"pending", "running"}
    assert run["metadata"].get("tag") == "e2e"
    assert run["multitask_strategy"] == "enqueue", "enqueue is the default strategy"
    output = await client.runs.join(tid, run["run_id"])
    assert [m["content"] for m in output["messages"]] == [TEXT, AGENT_TOOL_CALL_TEXT, "3", ANSWER]
    got = await client.runs.get(tid, run["run_id"])
    assert got["status"] == "success"
    assert [r["run_id"] for r in await client.runs.list(tid)] == [run["run_id"]]
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_wait_returns_final_values_and_honours_context(client: Any) -> None:
    tid = await _new_thread(client)
    output = await client.runs.wait(
        tid, "agent", input=human(TEXT), context={"signature": "-- e2e"}
    )
    assert output["messages"][-1]["content"] == f"{ANSWER} -- e2e"
    state = await client.threads.get_state(tid)
    assert state["values"] == output
    # a second turn on the same thread continues the conversation
    again = await client.runs.wait(tid, "agent", input=human("four"))
    assert len(again["messages"]) == 8
    assert again["messages"][-1]["content"] == agent_answer("four")


async def test_runs_list_is_newest_first(client: Any) -> None:
    tid = await _new_thread(client)
    first = await client.runs.create(tid, "agent", input=human("a"))
    second = await client.runs.create(tid, "agent", input=human("b"))
    await client.runs.join(tid, second["run_id"])
    listed = await client.runs.list(tid)
    assert [r["run_id"] for r in listed] == [second["run_id"], first["run_id"]]
    assert {r["status"] for r in listed} == {"success"}


# --- stream modes ------------------------------------------------------------------


def _check_values(parts: list[Any]) -> None:
    values = [p.data for p in parts if p.event == "values"]
    assert [len(v["messages"]) for v in values] == [1, 2, 3, 4]
    assert values[-1]["messages"][-1]["content"] == ANSWER


def _check_updates(parts: list[Any]) -> None:
    updates = [p.data for p in parts if p.event == "updates"]
    assert [next(iter(u)) for u in updates] == ["agent", "tools", "agent"]
    assert updates[-1]["agent"]["messages"][-1]["content"] == ANSWER


def _check_messages_tuple(parts: list[Any]) -> None:
    tuples = [p.data for p in parts if p.event == "messages"]
    assert tuples
    assert all(isinstance(t, list) and len(t) == 2 for t in tuples)
    streamed = "".join(m["content"] for m, meta in tuples if meta.get("langgraph_node") == "agent")
    assert streamed == AGENT_TOOL_CALL_TEXT + ANSWER
    tokens = [m["content"] for m, _ in tuples if m["type"] == "AIMessageChunk" and m["content"]]
    assert tokens[:2] == ["Let", " me"], "token by token, not whole messages"
    assert any(m["type"] == "tool" and m["content"] == "3" for m, _ in tuples)


def _check_messages_legacy(parts: list[Any]) -> None:
    names = set(events(parts))
    assert "messages/metadata" in names
    assert "messages/partial" in names
    assert not names & {"messages"}, "legacy mode never sends the tuple event"
    partials = [p.data for p in parts if p.event == "messages/partial"]
    final_texts = {chunk[0]["content"] for chunk in partials if chunk and chunk[0].get("content")}
    assert ANSWER in final_texts, "partials accumulate into the whole answer"
    meta = [p.data for p in parts if p.event == "messages/metadata"]
    assert all(isinstance(m, dict) and m for m in meta)


def _check_custom(parts: list[Any]) -> None:
    assert [p.data for p in parts if p.event == "custom"] == TOOL_PROGRESS


def _check_debug(parts: list[Any]) -> None:
    debug = [p.data for p in parts if p.event == "debug"]
    kinds = {d["type"] for d in debug}
    assert {"checkpoint", "task", "task_result"} <= kinds, kinds
    assert all({"type", "step", "payload"} <= set(d) for d in debug)


def _check_tasks(parts: list[Any]) -> None:
    tasks = [p.data for p in parts if p.event == "tasks"]
    started = [t["name"] for t in tasks if "input" in t]
    finished = [t["name"] for t in tasks if "result" in t]
    assert started == ["agent", "tools", "agent"]
    assert finished == ["agent", "tools", "agent"]


def _check_checkpoints(parts: list[Any]) -> None:
    checkpoints = [p.data for p in parts if p.event == "checkpoints"]
    assert checkpoints
    assert all({"config", "metadata", "values", "next"} <= set(c) for c in checkpoints)
    assert checkpoints[-1]["next"] == []
    assert checkpoints[-1]["values"]["messages"][-1]["content"] == ANSWER


def _check_events(parts: list[Any]) -> None:
    raw = [p.data for p in parts if p.event == "events"]
    kinds = {e["event"] for e in raw}
    assert {"on_chain_start", "on_chat_model_stream", "on_chain_end"} <= kinds, kinds
    tokens = "".join(
        e["data"]["chunk"]["content"] for e in raw if e["event"] == "on_chat_model_stream"
    )
    assert tokens == AGENT_TOOL_CALL_TEXT + ANSWER


MODES: dict[str, tuple[set[str], Callable[[list[Any]], None]]] = {
    "values": ({"values"}, _check_values),
    "updates": ({"updates"}, _check_updates),
    "messages-tuple": ({"messages"}, _check_messages_tuple),
    "messages": (
        {"messages/metadata", "messages/partial", "messages/complete"},
        _check_messages_legacy,
    ),
    "custom": ({"custom"}, _check_custom),
    "debug": ({"debug"}, _check_debug),
    "tasks": ({"tasks"}, _check_tasks),
    "checkpoints": ({"checkpoints"}, _check_checkpoints),
    "events": ({"events"}, _check_events),
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_stream_each_mode(client: Any, mode: str) -> None:
    tid = await _new_thread(client)
    parts = await collect(client.runs.stream(tid, "agent", input=human(TEXT), stream_mode=mode))
    assert_well_formed(parts)
    assert parts[0].data["thread_id"] == tid
    allowed, check = MODES[mode]
    produced = set(events(parts)) - {"metadata", "end"}
    assert produced, f"mode {mode} produced no events"
    assert produced <= allowed, f"mode {mode} produced {produced - allowed}"
    check(parts)


async def test_stream_several_modes_at_once(client: Any) -> None:
    tid = await _new_thread(client)
    modes = ["values", "updates", "messages-tuple", "custom", "tasks"]
    parts = await collect(client.runs.stream(tid, "agent", input=human(TEXT), stream_mode=modes))
    assert_well_formed(parts)
    assert set(events(parts)) == {
        "metadata",
        "values",
        "updates",
        "messages",
        "custom",
        "tasks",
        "end",
    }
    for mode in modes:
        MODES[mode][1](parts)
    # chunks arrive in execution order: the tool's progress comes after the tool call
    names = events(parts)
    first_custom = names.index("custom")
    first_update = names.index("updates")
    assert first_update < first_custom


async def test_stream_default_mode_is_values(client: Any) -> None:
    tid = await _new_thread(client)
    parts = await collect(client.runs.stream(tid, "agent", input=human(TEXT)))
    assert_well_formed(parts)
    assert set(events(parts)) == {"metadata", "values", "end"}
    _check_values(parts)


async def test_stream_run_id_matches_run_and_headers(client: Any) -> None:
    tid = await _new_thread(client)
    created: list[Any] = []
    parts = await collect(
        client.runs.stream(tid, "agent", input=human(TEXT), on_run_created=created.append)
    )
    assert_well_formed(parts)
    assert len(created) == 1, "Content-Location names the run"
    assert created[0]["run_id"] == parts[0].data["run_id"]
    assert created[0]["thread_id"] == tid
    run = await client.runs.get(tid, created[0]["run_id"])
    assert run["status"] == "success"


# --- subgraphs -------------------------------------------------------------------


async def test_stream_subgraphs_namespaces_inner_events(client: Any) -> None:
    tid = await _new_thread(client)
    parts = await collect(
        client.runs.stream(
            tid,
            "nested",
            input={"text": "  hello "},
            stream_mode=["updates", "custom", "values"],
            stream_subgraphs=True,
        )
    )
    assert_well_formed(parts)
    root_updates = [next(iter(p.data)) for p in parts if p.event == "updates"]
    assert root_updates == ["prepare", "inner", "finish"]
    inner_names = [p.event for p in parts if "|" in p.event]
    assert inner_names, "subgraph events carry a namespace"
    for name in inner_names:
        mode, *namespace = name.split("|")
        assert mode in {"updates", "custom", "values"}
        assert len(namespace) == 1, name
        assert namespace[0].startswith("inner:"), name
    inner_updates = [next(iter(p.data)) for p in parts if p.event.startswith("updates|inner:")]
    assert inner_updates == ["shout", "sign"]
    customs = [
        (p.event.split("|")[0], p.data["node"]) for p in parts if p.event.startswith("custom")
    ]
    assert [node for _, node in customs] == ["prepare", "shout", "sign", "finish"]
    assert {p.event for p in parts if p.event.startswith("custom|")} == {
        n for n in inner_names if n.startswith("custom|")
    }
    final = [p.data for p in parts if p.event == "values"][-1]
    assert final == {"text": "<HELLO!>", "trail": ["prepare", "shout", "sign", "finish"]}


async def test_stream_without_subgraphs_has_no_namespaces(client: Any) -> None:
    tid = await _new_thread(client)
    parts = await collect(
        client.runs.stream(tid, "nested", input={"text": "hi"}, stream_mode=["updates", "custom"])
    )
    assert_well_formed(parts)
    assert not [p.event for p in parts if "|" in p.event]
    nodes = [p.data["node"] for p in parts if p.event == "custom"]
    assert nodes in (["prepare", "finish"], ["prepare", "shout", "sign", "finish"]), nodes


# --- stateless runs ----------------------------------------------------------------


async def test_stateless_stream(client: Any) -> None:
    parts = await collect(
        client.runs.stream(None, "agent", input=human(TEXT), stream_mode=["values", "custom"])
    )
    assert_well_formed(parts)
    assert parts[0].data["thread_id"], "a stateless run still reports its temporary thread"
    _check_values(parts)
    _check_custom(parts)


async def test_stateless_wait(client: Any) -> None:
    output = await client.runs.wait(None, "agent", input=human(TEXT))
    assert [m["content"] for m in output["messages"]] == [TEXT, AGENT_TOOL_CALL_TEXT, "3", ANSWER]


async def test_stateless_keep_leaves_the_thread(client: Any) -> None:
    parts = await collect(
        client.runs.stream(None, "agent", input=human(TEXT), on_completion="keep")
    )
    assert_well_formed(parts)
    tid = parts[0].data["thread_id"]
    state = await client.threads.get_state(tid)
    assert state["values"]["messages"][-1]["content"] == ANSWER


async def test_failed_run_reports_error_then_end(client: Any) -> None:
    tid = await _new_thread(client)
    parts = await collect(client.runs.stream(tid, "ticker", input={"n": "not-a-number"}))
    assert_well_formed(parts, status="error")
    assert events(parts)[-2] == "error"
    error = parts[-2].data
    assert error["error"] == "ValueError"
    assert isinstance(error["message"], str)
    run = await client.runs.get(tid, parts[0].data["run_id"])
    assert run["status"] == "error"
    assert (await client.threads.get(tid))["status"] == "error"
    joined = await client.runs.join(tid, run["run_id"])
    assert joined["__error__"]["error"] == "ValueError"
    output = await client.runs.wait(tid, "ticker", input={"n": "x"}, raise_error=False)
    assert output["__error__"]["error"] == "ValueError"


# --- human in the loop -------------------------------------------------------------

QUESTION = {"question": "Approve this action?", "action": "I am about to: drop the table. Approve?"}


async def _pause_hitl(client: Any) -> tuple[str, dict[str, Any]]:
    tid = await _new_thread(client)
    output = await client.runs.wait(tid, "hitl", input=human("drop the table"))
    return tid, output


async def test_interrupt_pauses_the_thread(client: Any) -> None:
    tid, output = await _pause_hitl(client)
    interrupts = output["__interrupt__"]
    assert len(interrupts) == 1
    assert interrupts[0]["value"] == QUESTION
    assert interrupts[0]["id"]
    thread = await client.threads.get(tid)
    assert thread["status"] == "interrupted"
    state = await client.threads.get_state(tid)
    assert state["next"] == ["review"]
    assert [i["value"] for i in state["interrupts"]] == [QUESTION]


async def test_join_of_an_interrupted_run_carries_the_interrupt(client: Any) -> None:
    tid = await _new_thread(client)
    run = await client.runs.create(tid, "hitl", input=human("drop the table"))
    output = await client.runs.join(tid, run["run_id"])
    assert [i["value"] for i in output["__interrupt__"]] == [QUESTION]
    assert output["messages"][-1]["content"] == QUESTION["action"]
    assert (await client.runs.get(tid, run["run_id"]))["status"] == "success", (
        "a run that stops at interrupt() ends as success; the thread is interrupted"
    )
    assert (await client.threads.get(tid))["status"] == "interrupted"
    interrupted = await client.threads.search(ids=[tid], status="interrupted")
    assert [t["thread_id"] for t in interrupted] == [tid]


@pytest.mark.parametrize(
    ("decision", "approved"),
    [("yes", True), (True, True), ({"approved": True}, True), ("no", False)],
)
async def test_resume_with_command(client: Any, decision: Any, approved: bool) -> None:
    tid, _ = await _pause_hitl(client)
    output = await client.runs.wait(tid, "hitl", command={"resume": decision})
    assert output["approved"] is approved
    verdict = "Approved, done." if approved else "Rejected, nothing was done."
    assert output["messages"][-1]["content"] == verdict
    assert "__interrupt__" not in output
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_interrupt_and_resume_streamed(client: Any) -> None:
    tid = await _new_thread(client)
    parts = await collect(
        client.runs.stream(
            tid, "hitl", input=human("drop the table"), stream_mode=["values", "updates"]
        )
    )
    assert_well_formed(parts)
    updates = [p.data for p in parts if p.event == "updates"]
    assert updates[-1].keys() == {"__interrupt__"}
    assert updates[-1]["__interrupt__"][0]["value"] == QUESTION
    values = [p.data for p in parts if p.event == "values"]
    assert values[-1]["__interrupt__"][0]["value"] == QUESTION
    resumed = await collect(
        client.runs.stream(tid, "hitl", command={"resume": "yes"}, stream_mode="updates")
    )
    assert_well_formed(resumed)
    assert [next(iter(p.data)) for p in resumed if p.event == "updates"] == ["review"]


async def test_interrupt_before_then_continue(client: Any) -> None:
    tid = await _new_thread(client)
    paused = await client.runs.wait(tid, "agent", input=human(TEXT), interrupt_before=["tools"])
    assert [m["content"] for m in paused["messages"]] == [TEXT, AGENT_TOOL_CALL_TEXT]
    assert (await client.threads.get(tid))["status"] == "interrupted"
    assert (await client.threads.get_state(tid))["next"] == ["tools"]
    done = await client.runs.wait(tid, "agent", input=None)
    assert done["messages"][-1]["content"] == ANSWER
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_update_state_then_run(client: Any) -> None:
    tid, _ = await _pause_hitl(client)
    result = await client.threads.update_state(tid, {"approved": False}, as_node="review")
    assert result["checkpoint"]["thread_id"] == tid
    state = await client.threads.get_state(tid)
    assert state["values"]["approved"] is False
    assert state["next"] == []


# --- run bookkeeping ---------------------------------------------------------------


async def test_runs_list_status_filter_and_delete(client: Any) -> None:
    tid = await _new_thread(client)
    run = await client.runs.create(tid, "agent", input=human(TEXT))
    await client.runs.join(tid, run["run_id"])
    assert [r["run_id"] for r in await client.runs.list(tid, status="success")] == [run["run_id"]]
    assert await client.runs.list(tid, status="pending") == []
    await client.runs.delete(tid, run["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, run["run_id"])
    assert await client.runs.list(tid) == []


async def test_join_stream_filters_to_the_requested_modes(client: Any) -> None:
    tid = await _new_thread(client)
    parts = await collect(
        client.runs.stream(tid, "agent", input=human(TEXT), stream_mode=["values", "custom"])
    )
    run_id = parts[0].data["run_id"]
    only_custom = await collect(
        client.runs.join_stream(tid, run_id, stream_mode="custom", last_event_id="-1")
    )
    assert_well_formed(only_custom)
    assert set(events(only_custom)) == {"metadata", "custom", "end"}
    assert [p.data for p in only_custom if p.event == "custom"] == TOOL_PROGRESS
    expected = [(p.id, p.event) for p in parts if p.event in {"metadata", "custom", "end"}]
    assert [(p.id, p.event) for p in only_custom] == expected, "same ids as the full stream"


async def test_cancel_a_finished_run_is_not_found(client: Any) -> None:
    tid = await _new_thread(client)
    run = await client.runs.create(tid, "ticker", input={"n": 1})
    await client.runs.join(tid, run["run_id"])
    with pytest.raises(NotFoundError):
        await client.runs.cancel(tid, run["run_id"])
    assert (await client.runs.get(tid, run["run_id"]))["status"] == "success"


async def test_stream_resumable_flag_changes_nothing_visible(client: Any) -> None:
    tid = await _new_thread(client)
    parts = await collect(
        client.runs.stream(tid, "agent", input=human(TEXT), stream_resumable=True)
    )
    assert_well_formed(parts)
    _check_values(parts)
