"""Resume exactly once: cut a run's stream after every k-th event and resume with Last-Event-ID.

Three ways in, all through the Python ``langgraph-sdk``:

- replay: a finished run, ``runs.join_stream(last_event_id=<id of event k>)``
  for every k gives exactly the events after k;
- cut by the client: ``runs.stream`` closed after k events, then
  ``runs.join_stream`` from the k-th id, one fresh run per k, all at once;
- cut under the client: a TCP proxy kills the connection right after the k-th
  frame and the SDK's own reconnect (``Location`` + ``Last-Event-ID``) must
  still yield every event exactly once, thread-bound and stateless; and a
  ``runs.wait`` body cut after its head is recovered through ``/join``.

Plus: joiners of a live run hand over from replay to live with nothing lost,
and the cursor edge cases (none, ``0``, after ``end``, out of range, garbage).

"Exactly once" is checked two ways: the concatenation equals the run's full
event list (replayed from the start with ``Last-Event-ID: -1``), and for the
``ticker`` graph the payloads themselves count 1..N with no hole or repeat.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import BadRequestError, UnprocessableEntityError

from tests.e2e.conftest import CLIENT_TIMEOUT, RunningServer
from tests.e2e.helpers import (
    assert_well_formed,
    collect,
    first_part,
    gate_input,
    human,
    part_tuple,
    read_until,
)
from tests.e2e.proxy import CuttingProxy

pytestmark = pytest.mark.anyio

AGENT_MODES = ["values", "messages-tuple", "updates", "custom"]
TICKS = 12
PACE_S = 0.08  # paced ticker: a run lasts ~1 s, so cuts land while it is live
RECONNECT_TEST_TIMEOUT_S = 45.0


async def _thread(client: Any) -> str:
    return str((await client.threads.create())["thread_id"])


async def _full(client: Any, tid: str, run_id: str) -> list[tuple[Any, ...]]:
    """The whole event list of a finished run, replayed from the start."""
    parts = await collect(client.runs.join_stream(tid, run_id, last_event_id="-1"))
    assert_well_formed(parts)
    return [part_tuple(p) for p in parts]


def _assert_ticks_once(parts: list[Any]) -> None:
    ticks = [p.data["tick"] for p in parts if p.event == "custom"]
    assert ticks == list(range(1, TICKS + 1)), f"ticks lost or repeated: {ticks}"


async def test_replay_after_every_event_of_a_finished_run(client: Any) -> None:
    tid = await _thread(client)
    streamed = await collect(
        client.runs.stream(tid, "agent", input=human("resume me please"), stream_mode=AGENT_MODES)
    )
    assert_well_formed(streamed)
    full = [part_tuple(p) for p in streamed]
    run_id = streamed[0].data["run_id"]
    assert await _full(client, tid, run_id) == full, "replay from the start equals the live stream"
    assert await _full(client, tid, run_id) == full  # and again: replay is repeatable
    for k in range(1, len(full) + 1):
        after = await collect(client.runs.join_stream(tid, run_id, last_event_id=full[k - 1][0]))
        assert [part_tuple(p) for p in after] == full[k:], f"resume after event {k}/{len(full)}"


async def test_join_stream_cursors_on_a_finished_run(client: Any) -> None:
    tid = await _thread(client)
    streamed = await collect(client.runs.stream(tid, "ticker", input={"n": 3}))
    assert_well_formed(streamed)
    run_id = streamed[0].data["run_id"]
    full = [part_tuple(p) for p in streamed]
    no_cursor = await collect(client.runs.join_stream(tid, run_id))
    assert [part_tuple(p) for p in no_cursor] == full[-1:], "no cursor: live from now, then end"
    from_zero = await collect(client.runs.join_stream(tid, run_id, last_event_id="0"))
    assert [part_tuple(p) for p in from_zero] == full, "0 replays from the start, like -1"
    after_end = await collect(client.runs.join_stream(tid, run_id, last_event_id=full[-1][0]))
    assert after_end == [], "nothing comes after the terminal event"


@pytest.mark.parametrize("cursor", ["99999", "not-an-id"])
async def test_join_stream_bad_cursor_is_a_client_error(client: Any, cursor: str) -> None:
    tid = await _thread(client)
    streamed = await collect(client.runs.stream(tid, "ticker", input={"n": 1}))
    with pytest.raises((BadRequestError, UnprocessableEntityError)):
        await first_part(
            client.runs.join_stream(tid, streamed[0].data["run_id"], last_event_id=cursor)
        )


async def _cut_then_join(
    client: Any, k: int, graph: str, payload: dict[str, Any], modes: list[str]
) -> tuple[str, str, list[Any]]:
    tid = await _thread(client)
    head = await collect(client.runs.stream(tid, graph, input=payload, stream_mode=modes), limit=k)
    assert len(head) == k
    run_id = head[0].data["run_id"]
    tail = await collect(client.runs.join_stream(tid, run_id, last_event_id=head[-1].id))
    return tid, run_id, head + tail


@pytest.mark.parametrize(
    ("graph", "payload", "modes"),
    [
        ("ticker", {"n": TICKS, "pause": PACE_S}, ["custom", "values"]),
        ("agent", human("cut me at every event"), AGENT_MODES),
    ],
    ids=["paced-ticker", "burst-agent"],
)
async def test_client_cut_after_every_kth_event_then_join_stream(
    client: Any, graph: str, payload: dict[str, Any], modes: list[str]
) -> None:
    # how many events a run produces, from one uncut run
    tid = await _thread(client)
    probe = await collect(client.runs.stream(tid, graph, input=payload, stream_mode=modes))
    assert_well_formed(probe)
    total = len(probe)
    results: dict[int, tuple[str, str, list[Any]]] = {}

    async def one(k: int) -> None:
        results[k] = await _cut_then_join(client, k, graph, payload, modes)

    with anyio.fail_after(RECONNECT_TEST_TIMEOUT_S):
        async with anyio.create_task_group() as group:
            for k in range(1, total):
                group.start_soon(one, k)
    for k in range(1, total):
        tid, run_id, joined = results[k]
        assert_well_formed(joined)
        assert [part_tuple(p) for p in joined] == await _full(client, tid, run_id), f"cut at {k}"
        if graph == "ticker":
            _assert_ticks_once(joined)


async def _through_cutting_proxy(
    server: RunningServer,
    direct: Any,
    k: int,
    *,
    graph: str,
    payload: dict[str, Any],
    modes: list[str],
    stateless: bool,
) -> tuple[str | None, list[Any], CuttingProxy]:
    tid = None if stateless else await _thread(direct)
    extra = {"on_completion": "keep"} if stateless else {}
    async with CuttingProxy(server.port, k) as proxy:
        cut_client = get_client(url=proxy.url, api_key=None, timeout=CLIENT_TIMEOUT)
        try:
            stream = cut_client.runs.stream(tid, graph, input=payload, stream_mode=modes, **extra)
            parts = await collect(stream)
        finally:
            await cut_client.aclose()
    return tid, parts, proxy


@pytest.mark.parametrize(
    ("graph", "payload", "modes"),
    [
        ("ticker", {"n": TICKS, "pause": PACE_S}, ["custom", "values"]),
        ("agent", human("kill the wire under me"), AGENT_MODES),
    ],
    ids=["paced-ticker", "burst-agent"],
)
async def test_sdk_reconnects_after_the_connection_is_killed_at_every_k(
    client: Any, server: RunningServer, graph: str, payload: dict[str, Any], modes: list[str]
) -> None:
    tid = await _thread(client)
    probe = await collect(client.runs.stream(tid, graph, input=payload, stream_mode=modes))
    assert_well_formed(probe)
    total = len(probe)
    results: dict[int, tuple[str | None, list[Any], CuttingProxy]] = {}

    async def one(k: int) -> None:
        results[k] = await _through_cutting_proxy(
            server, client, k, graph=graph, payload=payload, modes=modes, stateless=False
        )

    with anyio.fail_after(RECONNECT_TEST_TIMEOUT_S):
        async with anyio.create_task_group() as group:
            for k in range(1, total + 1):
                group.start_soon(one, k)
    for k in range(1, total + 1):
        run_tid, parts, proxy = results[k]
        assert proxy.cut_done, f"k={k}: the proxy never cut the stream"
        assert proxy.connections >= 2, f"k={k}: the SDK did not reconnect"
        assert_well_formed(parts)
        assert run_tid is not None
        full = await _full(client, run_tid, parts[0].data["run_id"])
        assert [part_tuple(p) for p in parts] == full, f"k={k}: not exactly once"
        if graph == "ticker":
            _assert_ticks_once(parts)


async def test_sdk_reconnects_a_stateless_stream(client: Any, server: RunningServer) -> None:
    payload = {"n": TICKS, "pause": PACE_S}
    cuts = [1, 2, 5, TICKS, TICKS + 2]
    results: dict[int, tuple[str | None, list[Any], CuttingProxy]] = {}

    async def one(k: int) -> None:
        results[k] = await _through_cutting_proxy(
            server, client, k, graph="ticker", payload=payload, modes=["custom"], stateless=True
        )

    with anyio.fail_after(RECONNECT_TEST_TIMEOUT_S):
        async with anyio.create_task_group() as group:
            for k in cuts:
                group.start_soon(one, k)
    for k in cuts:
        _, parts, proxy = results[k]
        assert proxy.cut_done, f"k={k}: the proxy never cut the stream"
        assert proxy.connections >= 2, f"k={k}: the SDK did not reconnect"
        assert_well_formed(parts)
        _assert_ticks_once(parts)
        full = await _full(client, parts[0].data["thread_id"], parts[0].data["run_id"])
        assert [part_tuple(p) for p in parts] == full, f"k={k}: not exactly once"


async def test_joiners_of_a_live_run_hand_over_from_replay_to_live(
    client: Any, server: RunningServer
) -> None:
    """Joiners that start mid-run (replaying from the start) and keep reading live
    all see the same complete list, once each; a joiner without a cursor sees a suffix."""
    tid = await _thread(client)
    payload, gate = gate_input(server.gates, "live")
    try:
        run = await client.runs.create(
            tid, "gate", input=payload, stream_mode=["custom", "updates", "values"]
        )
        run_id = run["run_id"]
        joiners = [client.runs.join_stream(tid, run_id, last_event_id="-1") for _ in range(5)]
        heads = [await read_until(j, lambda p: p.event == "custom") for j in joiners]
        live_only = client.runs.join_stream(tid, run_id)  # no cursor: from now on
        gate.touch()
        with anyio.fail_after(RECONNECT_TEST_TIMEOUT_S):
            tails = [await collect(j) for j in joiners]
            suffix = await collect(live_only)
    finally:
        gate.touch()
    full = await _full(client, tid, run_id)
    for head, tail in zip(heads, tails, strict=True):
        assert [part_tuple(p) for p in head + tail] == full
    assert suffix, "a joiner without a cursor still gets the end of the run"
    assert suffix[-1].event == "end"
    tuples = [part_tuple(p) for p in suffix]
    assert tuples == full[len(full) - len(tuples) :], "no cursor: a suffix of the run, in order"


@pytest.mark.parametrize("stateless", [False, True], ids=["thread", "stateless"])
async def test_sdk_wait_reconnects_to_join_when_the_body_is_cut(
    client: Any, server: RunningServer, stateless: bool
) -> None:
    """``runs.wait`` whose response is cut right after its head: the SDK GETs the
    ``Location`` (the run's ``/join``) and still returns the run's output."""
    tid = None if stateless else await _thread(client)
    async with CuttingProxy(server.port, 0) as proxy:
        cut_client = get_client(url=proxy.url, api_key=None, timeout=CLIENT_TIMEOUT)
        try:
            with (
                anyio.fail_after(RECONNECT_TEST_TIMEOUT_S),
                pytest.warns(UserWarning, match="attempting reconnect"),
            ):
                output = await cut_client.runs.wait(
                    tid, "ticker", input={"n": TICKS, "pause": PACE_S / 4}
                )
        finally:
            await cut_client.aclose()
    assert proxy.cut_done
    assert proxy.connections >= 2
    assert output == {"n": TICKS, "pause": PACE_S / 4, "ticks": TICKS}
