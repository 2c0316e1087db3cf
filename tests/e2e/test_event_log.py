"""The run event log end to end: the ``agent`` graph (scripted model + tool) runs through a real
``runlane serve`` and the event log endpoints return what it did, in order, with token counts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CLIENT_TIMEOUT, RunningServer
from tests.e2e.helpers import AGENT_TOOL_CALL_TEXT, agent_answer, assert_well_formed, collect, human

pytestmark = pytest.mark.anyio

TEXT = "the event log keeps every message"
ANSWER = agent_answer(TEXT)
MODEL = "runlane-scripted-1"


async def get(server: RunningServer, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT) as http:
        response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_messages_endpoint_returns_the_runs_messages_with_token_counts(
    client: Any, server: RunningServer
) -> None:
    tid = str((await client.threads.create())["thread_id"])
    parts = await collect(
        client.runs.stream(tid, "agent", input=human(TEXT), stream_mode=["values"])
    )
    assert_well_formed(parts)
    rid = parts[0].data["run_id"]

    page = await get(server, f"/threads/{tid}/messages")
    assert page["has_more"] is False
    items = page["items"]
    assert [(m["event_type"], m["content"]) for m in items] == [
        ("human_input", TEXT),
        ("ai_message", AGENT_TOOL_CALL_TEXT),
        ("tool_end", str(len(TEXT.split()))),
        ("ai_message", ANSWER),
    ]
    seqs = [m["seq"] for m in items]
    assert seqs == sorted(set(seqs)), "ascending, no seq twice"
    assert {m["run_id"] for m in items} == {rid}
    words = len(TEXT.split())
    first_in, first_out = words, len(AGENT_TOOL_CALL_TEXT.split())
    second_in = words + first_out + 1  # the conversation so far, one token per word
    second_out = len(ANSWER.split())
    assert items[1]["metadata"]["usage"] == {
        "input_tokens": first_in,
        "output_tokens": first_out,
        "total_tokens": first_in + first_out,
    }
    assert items[3]["metadata"]["usage"]["total_tokens"] == second_in + second_out
    assert {items[i]["metadata"]["model"] for i in (1, 3)} == {MODEL}

    total = first_in + first_out + second_in + second_out
    run = await client.runs.get(tid, rid)
    assert (run["total_tokens"], run["llm_call_count"], run["message_count"]) == (total, 2, 4)
    assert (run["first_human_message"], run["last_ai_message"]) == (TEXT, ANSWER)
    usage = await get(server, f"/threads/{tid}/token-usage")
    assert usage["total"]["total_tokens"] == total
    assert usage["by_model"][MODEL]["llm_calls"] == 2
    assert set(usage["by_caller"]) == {"lead_agent"}

    events = await get(server, f"/threads/{tid}/runs/{rid}/events", types="run.delivery")
    assert [e["content"]["status"] for e in events["items"]] == ["success"]
