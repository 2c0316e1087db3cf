"""Server benchmark: runlane and the reference server side by side, as ratios.

Run ``python bench/server.py`` (a few minutes) or ``python bench/server.py
--quick`` (about a minute). See ``bench/README.md``, section "Server".

Both servers load the same graphs (``bench/graphs/langgraph.json``) and are
driven by the same client in this process: a plain ``httpx.AsyncClient`` with
a small SSE reader written here (no SDK), on uvloop. The reference is
``langgraph dev`` from ``langgraph-cli[inmem]``, installed in its own venv
(``--reference-python``) so it never touches runlane's environment.

Scenarios, run on each server in turn (the order alternates), in ``--passes``
passes:

1. run overhead: sequential create + stream of the ``noop`` graph;
2. one run streaming ``N`` custom events: events/s, per-event latency (the
   events carry the producer's ``time.monotonic()``), server CPU per event;
3. 100 concurrent streaming runs x 500 events: aggregate events/s, p99
   latency, lost events;
4. fan-out: one run, 200 joiners (``join_stream``), deliveries/s;
5. resume at 16 cut points: exactly once or not;
6. memory: idle RSS after start and RSS after each pass;
7. a bare-transport ceiling: a minimal ASGI app on uvicorn (uvloop, httptools,
   as runlane) streaming pre-encoded frames, read by the same client.

Client and servers share the machine's cores: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

BENCH_DIR = Path(__file__).resolve().parent
GRAPHS_DIR = BENCH_DIR / "graphs"
GRAPHS_CONFIG = GRAPHS_DIR / "langgraph.json"
# The reference server lives in its own venv (it pins its own langgraph), kept
# beside this file and ignored by git: bench/.venv-ref.
DEFAULT_REFERENCE_PYTHON = Path(__file__).resolve().parent / ".venv-ref" / "bin" / "python"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
START_TIMEOUT = 90.0  # seconds for a server to answer /ok
READ_TIMEOUT = 120.0  # seconds of silence before the client gives up on a stream

clock = time.monotonic  # the graphs stamp events with the same system-wide clock


# --- sizes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    overhead_runs: int  # at most this many sequential runs ...
    overhead_seconds: float  # ... or this long, whichever comes first
    single_events: int
    concurrent_runs: int
    concurrent_events: int
    fanout_joiners: int
    fanout_events: int
    resume_events: int
    bare_events: int
    passes: int


FULL = Sizes(
    overhead_runs=200,
    overhead_seconds=8.0,
    single_events=20_000,
    concurrent_runs=100,
    concurrent_events=500,
    fanout_joiners=200,
    fanout_events=500,
    resume_events=200,
    bare_events=20_000,
    passes=3,
)
QUICK = Sizes(
    overhead_runs=50,
    overhead_seconds=3.0,
    single_events=4_000,
    concurrent_runs=20,
    concurrent_events=200,
    fanout_joiners=50,
    fanout_events=100,
    resume_events=50,
    bare_events=4_000,
    passes=2,
)


# --- /proc: CPU and RSS of a server's process tree --------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (``langgraph dev`` may fork a worker)."""
    tree = _children()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes, from ``/proc/<pid>/stat`` (fields 14, 15)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident set size of the processes, from ``/proc/<pid>/statm``."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except OSError:
            continue
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- servers -------------------------------------------------------------------------


class ServerError(RuntimeError):
    pass


@dataclass
class Server:
    """A server process this benchmark started (and stops)."""

    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.proc

    async def start(self, ok_path: str = "/ok") -> None:
        """Start the process and wait until it answers ``ok_path``."""
        proc = self.spawn()
        deadline = clock() + START_TIMEOUT
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise ServerError(
                        f"{self.name} exited with {proc.returncode} while starting:\n"
                        + self.log_tail()
                    )
                try:
                    if (await client.get(self.url + ok_path)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if clock() > deadline:
                    raise ServerError(
                        f"{self.name} did not answer {ok_path} in {START_TIMEOUT:.0f} s:\n"
                        + self.log_tail()
                    )
                await asyncio.sleep(0.1)
        self.refresh_pids()

    def refresh_pids(self) -> None:
        assert self.proc is not None
        self.pids = process_tree(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pids)

    def rss(self) -> int:
        self.refresh_pids()
        return rss_bytes(self.pids)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text[-lines:])

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def runlane_server(workdir: Path, profile: Path | None) -> Server:
    data = workdir / "runlane-data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "RUNLANE_DATA_DIR": str(data), "RUNLANE_LOG_LEVEL": "warning"}
    serve = ["serve", "--config", str(GRAPHS_CONFIG), "--host", "127.0.0.1", "--port", str(port)]
    if profile is not None:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "runlane.cli", *serve]
    else:
        argv = [sys.executable, "-m", "runlane.cli", *serve]
    return Server("runlane", argv, workdir, env, port, workdir / "runlane.log")


def reference_server(workdir: Path, python: Path, jobs: int) -> Server:
    """``langgraph dev`` on a copy of bench/graphs: it resolves graph paths against its
    working directory and writes ``.langgraph_api/`` there, so it runs in a temp folder."""
    folder = workdir / "reference-graphs"
    shutil.copytree(GRAPHS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    langgraph = python.parent / "langgraph"
    port = free_port()
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "VIRTUAL_ENV": str(python.parent.parent),
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("PYTHONPATH", None)
    argv = [
        str(langgraph), "dev", "--no-browser", "--no-reload", "--allow-blocking",
        "--host", "127.0.0.1", "--port", str(port), "--config", str(folder / "langgraph.json"),
        "--n-jobs-per-worker", str(jobs), "--server-log-level", "WARNING",
    ]
    return Server("reference", argv, folder, env, port, workdir / "reference.log")


def bare_server(workdir: Path, events: int) -> Server:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--bare-serve", str(port),
            "--bare-events", str(events)]
    return Server("bare", argv, workdir, dict(os.environ), port, workdir / "bare.log")


def python_exists(python: Path) -> bool:
    return python.exists()


def reference_version(python: Path) -> str:
    code = (
        "import importlib.metadata as m;"
        "print(', '.join(f'{p} {m.version(p)}' for p in "
        "('langgraph-cli','langgraph-api','langgraph-runtime-inmem','langgraph')))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or out.stderr.strip()


# --- the bare-transport ceiling (runs in its own process) ----------------------------


def bare_serve(port: int, events: int) -> None:
    """A minimal ASGI app: ``GET /stream`` sends ``events`` pre-encoded SSE frames,
    one ``http.response.body`` message each; uvicorn with runlane's loop/http settings."""
    import uvicorn

    frames = [
        b'event: custom\ndata: {"i":%d,"t":0.0}\nid: %d\n\n' % (i, i + 2) for i in range(events)
    ]
    head = b'event: metadata\ndata: {"run_id":"bare"}\nid: 1\n\n'
    tail = b'event: end\ndata: {"status":"success"}\nid: %d\n\n' % (events + 2)
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/ok":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b'{"ok":true}'})
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": head, "more_body": True})
        for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    uvicorn.run(app, host="127.0.0.1", port=port, loop="auto", http="auto", log_level="warning")


# --- the client: httpx + a small SSE reader --------------------------------------------


@dataclass
class Frame:
    event: str
    data: bytes
    id: str | None


async def sse_chunks(response: httpx.Response) -> AsyncIterator[tuple[float, list[Frame]]]:
    """The frames of an SSE response, a batch per network read, with the read's time.

    Handles ``\\n`` and ``\\r\\n`` line ends (runlane sends the first, sse-starlette
    the second); comments (heartbeats) are dropped."""
    buffer = b""
    async for chunk in response.aiter_raw():
        now = clock()
        buffer += chunk
        if b"\r" in buffer:
            carry = buffer.endswith(b"\r")
            if carry:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n")
            if carry:
                buffer += b"\r"
        if b"\n\n" not in buffer:
            continue
        *raw_frames, buffer = buffer.split(b"\n\n")
        frames: list[Frame] = []
        for raw in raw_frames:
            event, data, event_id = "message", b"", None
            for line in raw.split(b"\n"):
                if line.startswith(b"data:"):
                    data = line[6:] if line[5:6] == b" " else line[5:]
                elif line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                elif line.startswith(b"id:"):
                    event_id = line[3:].strip().decode()
            if raw and not raw.startswith(b":"):
                frames.append(Frame(event, data, event_id))
        if frames:
            yield now, frames


@dataclass
class StreamResult:
    """What one SSE connection delivered."""

    indices: list[int] = field(default_factory=list)  # ``i`` of each custom event, in order
    latencies: list[float] = field(default_factory=list)  # receive time - producer's stamp
    first: float | None = None  # receive time of the first custom event
    last: float | None = None  # receive time of the last custom event
    run_id: str | None = None
    last_id: str | None = None
    ended: bool = False  # an ``end`` event arrived (runlane sends one, the reference does not)
    closed: bool = False  # the server closed the response normally
    gaps: int = 0
    errors: list[str] = field(default_factory=list)
    status: int = 0


async def consume(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    cut_after: int | None = None,
    on_headers: Callable[[], None] | None = None,
    latency: bool = True,
) -> StreamResult:
    """Read one SSE response to its end (or close it after ``cut_after`` frames with an id)."""
    result = StreamResult()
    seen = 0
    request = client.build_request(method, url, json=body, headers=headers)
    response = await client.send(request, stream=True)
    try:
        result.status = response.status_code
        if response.status_code != 200:
            await response.aread()
            result.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
            return result
        if on_headers is not None:
            on_headers()
        async for now, frames in sse_chunks(response):
            for frame in frames:
                if frame.id is not None:
                    result.last_id = frame.id
                    seen += 1
                name = frame.event
                if name == "custom":
                    data = orjson.loads(frame.data)
                    result.indices.append(data["i"])
                    if latency:
                        result.latencies.append(now - data["t"])
                    if result.first is None:
                        result.first = now
                    result.last = now
                elif name == "metadata":
                    result.run_id = orjson.loads(frame.data).get("run_id")
                elif name == "end":
                    result.ended = True
                elif name == "gap":
                    result.gaps += 1
                elif name == "error":
                    result.errors.append(frame.data.decode(errors="replace")[:200])
                if cut_after is not None and seen >= cut_after:
                    return result
        result.closed = True
        return result
    finally:
        await response.aclose()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_body(graph: str, graph_input: dict[str, Any], modes: list[str]) -> dict[str, Any]:
    return {
        "assistant_id": graph,
        "input": graph_input,
        "stream_mode": modes,
        "stream_resumable": True,  # the reference keeps events for join/resume only then
        "on_disconnect": "continue",
    }


async def new_thread(client: httpx.AsyncClient, base: str) -> str:
    response = await client.post(f"{base}/threads", json={})
    response.raise_for_status()
    thread_id: str = response.json()["thread_id"]
    return thread_id


# --- scenarios ---------------------------------------------------------------------------


@dataclass
class Figures:
    """One server's figures in one pass, by name."""

    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def scenario_overhead(
    client: httpx.AsyncClient, server: Server, sizes: Sizes, out: Figures
) -> None:
    base = server.url
    latencies: list[float] = []
    for warm in range(2):
        tid = await new_thread(client, base)
        await consume(client, "POST", f"{base}/threads/{tid}/runs/stream",
                      body=run_body("noop", {"x": warm}, ["values"]), latency=False)
    started = clock()
    while len(latencies) < sizes.overhead_runs and clock() - started < sizes.overhead_seconds:
        tid = await new_thread(client, base)  # not timed
        t0 = clock()
        result = await consume(client, "POST", f"{base}/threads/{tid}/runs/stream",
                               body=run_body("noop", {"x": 1}, ["values"]), latency=False)
        latencies.append(clock() - t0)
        if result.errors or not result.closed:
            out.notes.append(f"overhead run failed: {result.errors[:1]}")
            break
    out.values["overhead_runs"] = len(latencies)
    out.values["overhead_rps"] = len(latencies) / sum(latencies) if latencies else 0.0
    out.values["overhead_p50_ms"] = pct(latencies, 0.5) * 1e3
    out.values["overhead_p99_ms"] = pct(latencies, 0.99) * 1e3


async def scenario_single(
    client: httpx.AsyncClient, server: Server, sizes: Sizes, out: Figures
) -> None:
    base = server.url
    n = sizes.single_events
    tid = await new_thread(client, base)
    gc.collect()
    cpu0, client0, t0 = server.cpu(), time.process_time(), clock()
    result = await consume(client, "POST", f"{base}/threads/{tid}/runs/stream",
                           body=run_body("emit", {"n": n}, ["custom"]))
    wall = clock() - t0
    server_cpu, client_cpu = server.cpu() - cpu0, time.process_time() - client0
    received = len(result.indices)
    window = (result.last or 0.0) - (result.first or 0.0)
    out.values["single_eps"] = received / window if window > 0 else 0.0
    out.values["single_wall_s"] = wall
    out.values["single_first_ms"] = ((result.first or t0) - t0) * 1e3
    out.values["single_p50_ms"] = pct(result.latencies, 0.5) * 1e3
    out.values["single_p99_ms"] = pct(result.latencies, 0.99) * 1e3
    out.values["single_cpu_us"] = server_cpu / n * 1e6
    out.values["single_client_cpu_us"] = client_cpu / n * 1e6
    out.values["single_lost"] = n - len(set(result.indices))
    if result.gaps or result.errors or received != n:
        out.notes.append(
            f"single run: {received}/{n} events, {result.gaps} gap(s), errors {result.errors[:1]}"
        )


async def scenario_concurrent(
    client: httpx.AsyncClient, server: Server, sizes: Sizes, out: Figures
) -> None:
    base = server.url
    runs, n = sizes.concurrent_runs, sizes.concurrent_events
    threads = await asyncio.gather(*(new_thread(client, base) for _ in range(runs)))
    gc.collect()
    cpu0, t0 = server.cpu(), clock()
    results = await asyncio.gather(
        *(
            consume(client, "POST", f"{base}/threads/{tid}/runs/stream",
                    body=run_body("emit", {"n": n}, ["custom"]))
            for tid in threads
        )
    )
    server_cpu = server.cpu() - cpu0
    firsts = [r.first for r in results if r.first is not None]
    lasts = [r.last for r in results if r.last is not None]
    received = sum(len(r.indices) for r in results)
    window = max(lasts) - min(firsts) if firsts else 0.0
    latencies = [x for r in results for x in r.latencies]
    lost = sum(max(0, n - len(set(r.indices))) for r in results)
    bad = [r for r in results if r.indices != list(range(n))]
    out.values["conc_eps"] = received / window if window > 0 else 0.0
    out.values["conc_wall_s"] = clock() - t0
    out.values["conc_p50_ms"] = pct(latencies, 0.5) * 1e3
    out.values["conc_p99_ms"] = pct(latencies, 0.99) * 1e3
    out.values["conc_lost"] = lost
    out.values["conc_bad_runs"] = len(bad)
    out.values["conc_cpu_us"] = server_cpu / (runs * n) * 1e6
    if bad:
        sample = bad[0]
        out.notes.append(
            f"concurrent: {len(bad)} run(s) not exactly 0..{n - 1}; e.g. {len(sample.indices)}"
            f" events, {sample.gaps} gap(s), errors {sample.errors[:1]}"
        )


async def scenario_fanout(
    client: httpx.AsyncClient, server: Server, sizes: Sizes, out: Figures, workdir: Path
) -> None:
    base = server.url
    joiners, n = sizes.fanout_joiners, sizes.fanout_events
    gate = workdir / f"gate-{uuid.uuid4().hex[:8]}"
    tid = await new_thread(client, base)
    created = await client.post(
        f"{base}/threads/{tid}/runs",
        json={**run_body("emit", {"n": n, "gate": str(gate)}, ["custom"])},
    )
    created.raise_for_status()
    run_id = created.json()["run_id"]
    attached = 0
    all_attached = asyncio.get_running_loop().create_future()

    def on_headers() -> None:
        nonlocal attached
        attached += 1
        if attached == joiners and not all_attached.done():
            all_attached.set_result(None)

    tasks = [
        asyncio.create_task(
            consume(client, "GET", f"{base}/threads/{tid}/runs/{run_id}/stream",
                    on_headers=on_headers, latency=False)
        )
        for _ in range(joiners)
    ]
    try:
        async with asyncio.timeout(60):
            await all_attached
    except TimeoutError:
        out.notes.append(f"fan-out: only {attached}/{joiners} joiners attached in 60 s")
    await asyncio.sleep(0.3)  # headers are out; let every subscription settle
    gc.collect()
    cpu0, t0 = server.cpu(), clock()
    gate.touch()
    results = await asyncio.gather(*tasks)
    server_cpu = server.cpu() - cpu0
    gate.unlink(missing_ok=True)
    lasts = [r.last for r in results if r.last is not None]
    delivered = sum(len(r.indices) for r in results)
    complete = sum(1 for r in results if r.indices == list(range(n)))
    window = max(lasts) - t0 if lasts else 0.0
    out.values["fan_dps"] = delivered / window if window > 0 else 0.0
    out.values["fan_complete"] = complete
    out.values["fan_cpu_us"] = server_cpu / max(delivered, 1) * 1e6
    if complete != joiners:
        counts = sorted({len(r.indices) for r in results})
        errors = [e for r in results for e in r.errors][:1]
        out.notes.append(
            f"fan-out: {complete}/{joiners} joiners saw all {n} events; counts seen {counts[:6]};"
            f" errors {errors}"
        )


@dataclass(frozen=True)
class Cut:
    paced: bool
    finished: bool
    after: int  # frames with an id (metadata included) before the connection is cut

    def label(self) -> str:
        return (
            f"{'paced' if self.paced else 'burst'}/{'finished' if self.finished else 'live'}"
            f"/k={self.after}"
        )


def cut_points(n: int) -> list[Cut]:
    """16 cases: burst and paced runs, resumed live and after the run finished, each cut
    after the metadata frame, the first event, the middle one and the last one."""
    afters = (1, 2, 1 + n // 2, 1 + n)
    return [
        Cut(paced, finished, k) for paced in (False, True) for finished in (False, True)
        for k in afters
    ]


async def resume_case(
    client: httpx.AsyncClient, base: str, cut: Cut, n: int
) -> tuple[bool, str]:
    tid = await new_thread(client, base)
    graph_input: dict[str, Any] = {"n": n, "pace": 0.005 if cut.paced else 0.0}
    first = await consume(client, "POST", f"{base}/threads/{tid}/runs/stream",
                          body=run_body("emit", graph_input, ["custom"]), cut_after=cut.after,
                          latency=False)
    if first.run_id is None or first.last_id is None:
        return False, f"no metadata/id before the cut ({first.errors[:1]})"
    if cut.finished:
        joined = await client.get(f"{base}/threads/{tid}/runs/{first.run_id}/join")
        if joined.status_code != 200:
            return False, f"join answered {joined.status_code}"
    second = await consume(
        client, "GET", f"{base}/threads/{tid}/runs/{first.run_id}/stream",
        headers={"Last-Event-ID": first.last_id}, latency=False,
    )
    seen = first.indices + second.indices
    if seen == list(range(n)) and second.closed and not second.errors and not second.gaps:
        return True, ""
    missing = len(set(range(n)) - set(seen))
    duplicates = len(seen) - len(set(seen))
    return False, (
        f"{len(seen)} events: {missing} missing, {duplicates} duplicated"
        f"{', out of order' if seen != sorted(seen) else ''}, resumed from id {first.last_id!r}"
        f"{', HTTP ' + str(second.status) if second.status != 200 else ''}"
    )


async def scenario_resume(
    client: httpx.AsyncClient, server: Server, sizes: Sizes, out: Figures
) -> None:
    cuts = cut_points(sizes.resume_events)
    outcomes = await asyncio.gather(
        *(resume_case(client, server.url, cut, sizes.resume_events) for cut in cuts),
        return_exceptions=True,
    )
    good = 0
    failed: list[str] = []
    for cut, outcome in zip(cuts, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failed.append(f"{cut.label()}: {outcome!r}")
        elif outcome[0]:
            good += 1
        else:
            failed.append(f"{cut.label()}: {outcome[1]}")
    out.values["resume_ok"] = good
    out.values["resume_cases"] = len(cuts)
    if failed:
        out.notes.append("resume failures: " + "; ".join(failed[:4])
                         + (f"; +{len(failed) - 4} more" if len(failed) > 4 else ""))


async def scenario_bare(
    client: httpx.AsyncClient, server: Server, sizes: Sizes, out: Figures
) -> None:
    cpu0, client0 = server.cpu(), time.process_time()
    result = await consume(client, "GET", f"{server.url}/stream", latency=False)
    server_cpu, client_cpu = server.cpu() - cpu0, time.process_time() - client0
    n = sizes.bare_events
    window = (result.last or 0.0) - (result.first or 0.0)
    out.values["bare_eps"] = len(result.indices) / window if window > 0 else 0.0
    out.values["bare_cpu_us"] = server_cpu / n * 1e6
    out.values["bare_client_cpu_us"] = client_cpu / n * 1e6
    if result.indices != list(range(n)):
        out.notes.append(f"bare: {len(result.indices)}/{n} events")


# --- the driver ----------------------------------------------------------------------------


Scenario = Callable[[httpx.AsyncClient, Server, Sizes, Figures], Awaitable[None]]


def make_client() -> httpx.AsyncClient:
    # Idle connections are dropped after 2 s, well before both servers' keep-alive
    # timeout (uvicorn's 5 s; httpx's default is also 5 s): reusing a connection the
    # server closes at that very moment fails the request ("Server disconnected
    # without sending a response"), which measures the race, not the server.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(READ_TIMEOUT, connect=10.0),
        limits=httpx.Limits(
            max_connections=1000, max_keepalive_connections=100, keepalive_expiry=2.0
        ),
    )


def mb(value: float) -> str:
    return f"{value / 1e6:,.0f} MB"


SCENARIOS = ("overhead", "single", "concurrent", "fanout", "resume")
"""The names ``--scenarios`` takes, in the order a pass runs them."""


async def run_pass(
    servers: list[Server],
    bare: Server,
    sizes: Sizes,
    pass_no: int,
    workdir: Path,
    results: dict[str, list[Figures]],
    selected: frozenset[str] = frozenset(SCENARIOS),
) -> None:
    order = servers if pass_no % 2 == 0 else list(reversed(servers))
    figures = {s.name: Figures() for s in servers}
    bare_fig = Figures()

    async def fanout(c: httpx.AsyncClient, s: Server, z: Sizes, f: Figures) -> None:
        await scenario_fanout(c, s, z, f, workdir)

    scenarios: list[tuple[str, str, Scenario]] = [
        ("overhead", "run overhead", scenario_overhead),
        ("single", "single run", scenario_single),
        ("concurrent", "concurrent runs", scenario_concurrent),
        ("fanout", "fan-out", fanout),
        ("resume", "resume", scenario_resume),
    ]
    async with make_client() as client:
        for name, label, scenario in scenarios:
            if name not in selected:
                continue
            for server in order:
                t0 = clock()
                try:
                    await scenario(client, server, sizes, figures[server.name])
                except Exception as exc:  # report and go on: one server failing is a finding
                    figures[server.name].notes.append(f"{label} failed: {exc!r}")
                print(f"  pass {pass_no + 1}: {label:<16} {server.name:<10}"
                      f" {clock() - t0:6.1f} s", flush=True)
                await asyncio.sleep(0.5)  # let background work of the last scenario settle
        try:
            if "single" in selected:  # the ceiling the single run is compared with
                await scenario_bare(client, bare, sizes, bare_fig)
        except Exception as exc:
            bare_fig.notes.append(f"bare transport failed: {exc!r}")
    await asyncio.sleep(1.0)
    for server in servers:
        figures[server.name].values["rss"] = server.rss()
        results[server.name].append(figures[server.name])
    results["bare"].append(bare_fig)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    fmt: str = "{:,.0f}"
    agg: str = "median"  # or "min" / "max"


METRICS: list[tuple[str, list[Metric]]] = [
    ("[1] run overhead: sequential create + stream of the noop graph", [
        Metric("overhead_rps", "runs/s", "runs/s", True, "{:,.1f}"),
        Metric("overhead_p50_ms", "latency p50", "ms", False, "{:,.1f}"),
        Metric("overhead_p99_ms", "latency p99", "ms", False, "{:,.1f}"),
        Metric("overhead_runs", "runs timed", "runs", True),
    ]),
    ("[2] one run, custom events (events/s from first to last event received)", [
        Metric("single_eps", "events/s", "ev/s", True),
        Metric("single_p50_ms", "latency p50", "ms", False, "{:,.2f}"),
        Metric("single_p99_ms", "latency p99", "ms", False, "{:,.2f}"),
        Metric("single_cpu_us", "server CPU/event", "us", False, "{:,.1f}"),
        Metric("single_client_cpu_us", "client CPU/event", "us", False, "{:,.1f}"),
        Metric("single_first_ms", "first event after", "ms", False, "{:,.1f}"),
        Metric("single_lost", "lost events", "events", False, "{:,.0f}", "max"),
    ]),
    ("[3] concurrent streaming runs", [
        Metric("conc_eps", "aggregate events/s", "ev/s", True),
        Metric("conc_p50_ms", "latency p50", "ms", False, "{:,.1f}"),
        Metric("conc_p99_ms", "latency p99", "ms", False, "{:,.1f}"),
        Metric("conc_cpu_us", "server CPU/event", "us", False, "{:,.1f}"),
        Metric("conc_lost", "lost events", "events", False, "{:,.0f}", "max"),
        Metric("conc_bad_runs", "runs not exact", "runs", False, "{:,.0f}", "max"),
    ]),
    ("[4] fan-out: one run, joiners via join_stream", [
        Metric("fan_dps", "deliveries/s", "del/s", True),
        Metric("fan_cpu_us", "server CPU/delivery", "us", False, "{:,.1f}"),
        Metric("fan_complete", "joiners saw all", "joiners", True, "{:,.0f}", "min"),
    ]),
    ("[5] resume after a cut with Last-Event-ID (worst pass)", [
        Metric("resume_ok", "exactly once", "cases", True, "{:,.0f}", "min"),
    ]),
]


def aggregate(values: list[float], how: str) -> float:
    if not values:
        return float("nan")
    if how == "min":
        return min(values)
    if how == "max":
        return max(values)
    return statistics.median(values)


def collect(figs: list[Figures], key: str, how: str) -> float:
    return aggregate([f.values[key] for f in figs if key in f.values], how)


@dataclass(frozen=True)
class Target:
    key: str
    text: str
    check: Callable[[float, float | None, float | None], bool | None]


def ratio_at_least(x: float) -> Callable[[float, float | None, float | None], bool | None]:
    return lambda run, ref, _bare: None if ref in (None, 0) else run / ref >= x


def ratio_at_most(x: float) -> Callable[[float, float | None, float | None], bool | None]:
    return lambda run, ref, _bare: None if not ref else run / ref <= x


TARGETS = [
    Target("overhead_rps", ">= 50x reference runs/s", ratio_at_least(50)),
    Target("single_eps", ">= 8x reference events/s", ratio_at_least(8)),
    Target("single_eps", ">= 30% of the bare ceiling",
           lambda run, _ref, bare: None if not bare else run / bare >= 0.3),
    Target("conc_eps", ">= 4x reference aggregate events/s", ratio_at_least(4)),
    Target("conc_p99_ms", "p99 <= 1/5 of reference", ratio_at_most(0.2)),
    Target("conc_lost", "0 lost", lambda run, _ref, _bare: run == 0),
    Target("fan_dps", ">= 3x reference deliveries/s", ratio_at_least(3)),
    Target("fan_complete", "every joiner sees every event", lambda run, _r, _b: None),
    Target("resume_ok", "16/16 exactly once", lambda run, _ref, _bare: run == 16),
    Target("rss_idle", "idle RSS <= reference", ratio_at_most(1.0)),
    Target("rss_growth", "no growth across passes", lambda run, _r, _b: None),
]


def report(
    results: dict[str, list[Figures]], idle: dict[str, int], names: list[str], sizes: Sizes
) -> None:
    has_ref = "reference" in names and bool(results.get("reference"))
    has_run = "runlane" in names and bool(results.get("runlane"))
    width = 22
    head = f"{'figure':<26}" + "".join(f"{n:>{width}}" for n in names)
    if has_ref and has_run:
        head += f"{'runlane/reference':>20}"
    print()
    for title, metrics in METRICS:
        if not any(metrics[0].key in f.values for name in names for f in results[name]):
            continue  # a scenario --scenarios left out
        print(title)
        print(head)
        for metric in metrics:
            row = f"  {metric.label + ' (' + metric.unit + ')':<24}"
            values: dict[str, float] = {}
            for name in names:
                value = collect(results[name], metric.key, metric.agg)
                values[name] = value
                row += f"{metric.fmt.format(value):>{width}}"
            if has_ref and has_run and values["reference"]:
                ratio = values["runlane"] / values["reference"]
                row += f"{ratio:>19,.2f}x"
            print(row)
        print()
    bare = collect(results["bare"], "bare_eps", "median")
    if bare == bare:  # not NaN: the single-run scenario ran
        print("[7] bare-transport ceiling: minimal ASGI app on uvicorn (uvloop + httptools),"
              f" {sizes.bare_events:,} pre-encoded frames, one send each")
        bare_cpu = collect(results["bare"], "bare_cpu_us", "median")
        bare_client = collect(results["bare"], "bare_client_cpu_us", "median")
        print(f"  events/s {bare:>14,.0f}   server CPU/event {bare_cpu:,.1f} us"
              f"   client CPU/event {bare_client:,.1f} us")
        if has_run:
            single = collect(results["runlane"], "single_eps", "median")
            print(f"  runlane single-run events/s = {single / bare:.0%} of the ceiling")
        print()
    print("[6] memory: RSS of the server process tree (/proc/<pid>/statm)")
    for name in names:
        passes = [f.values.get("rss", 0.0) for f in results[name]]
        growth = [b - a for a, b in zip([float(idle[name]), *passes], passes, strict=False)]
        print(f"  {name:<10} idle {mb(idle[name]):>8}   after pass "
              + ", ".join(f"{mb(p)}" for p in passes)
              + "   growth per pass " + ", ".join(f"{g / 1e6:+,.0f} MB" for g in growth))
    print()
    for name in [*names, "bare"]:
        notes = [f"pass {i + 1}: {note}" for i, f in enumerate(results[name]) for note in f.notes]
        for note in notes:
            print(f"  note ({name}) {note}")
    if not (has_ref and has_run):
        return
    print("\nTargets (issue 5), runlane against the reference in this run:")
    run_figs, ref_figs = results["runlane"], results["reference"]
    for target in TARGETS:
        if target.key == "rss_idle":
            run_v, ref_v = float(idle["runlane"]), float(idle["reference"])
            shown = f"{mb(run_v)} vs {mb(ref_v)}"
        elif target.key == "rss_growth":
            run_passes = [f.values.get("rss", 0.0) for f in run_figs]
            ref_passes = [f.values.get("rss", 0.0) for f in ref_figs]
            run_v = run_passes[-1] - run_passes[0] if len(run_passes) > 1 else 0.0
            ref_v = ref_passes[-1] - ref_passes[0] if len(ref_passes) > 1 else 0.0
            shown = (f"runlane {run_v / 1e6:+,.0f} MB, reference {ref_v / 1e6:+,.0f} MB"
                     " from pass 1 to the last")
            verdict = "ok " if run_v < 10e6 else "HIGH"
            print(f"  {verdict:<5}{target.text:<40}{shown}")
            continue
        else:
            agg = next(m.agg for _, ms in METRICS for m in ms if m.key == target.key)
            run_v, ref_v = collect(run_figs, target.key, agg), collect(ref_figs, target.key, agg)
            if run_v != run_v:  # NaN: its scenario was left out
                continue
            shown = f"{run_v:,.1f} vs {ref_v:,.1f}"
            if ref_v:
                shown += f" ({run_v / ref_v:,.2f}x)"
        if target.key == "fan_complete":
            ok: bool | None = run_v == sizes.fanout_joiners
        elif target.key == "resume_ok":
            ok = run_v == len(cut_points(sizes.resume_events))
        else:
            ok = target.check(run_v, ref_v, bare)
        if target.key == "single_eps" and "ceiling" in target.text:
            shown = f"{run_v:,.0f} vs ceiling {bare:,.0f} ({run_v / bare:.0%})"
        verdict = "?" if ok is None else ("ok" if ok else "MISS")
        print(f"  {verdict:<5}{target.text:<40}{shown}")


async def main_async(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    if args.passes:
        sizes = Sizes(**{**sizes.__dict__, "passes": args.passes})
    workdir = Path(tempfile.mkdtemp(prefix="runlane-bench-server-"))
    servers: list[Server] = []
    names: list[str] = []
    idle: dict[str, int] = {}
    bare = bare_server(workdir, sizes.bare_events)
    try:
        if args.only in (None, "runlane"):
            servers.append(runlane_server(workdir, args.profile_runlane))
        if args.only in (None, "reference"):
            python = Path(args.reference_python)
            if not python_exists(python):
                print(
                    f"reference NOT run: {python} does not exist. Install it with\n"
                    "  python -m venv bench/.venv-ref && bench/.venv-ref/bin/pip install"
                    ' "langgraph-cli[inmem]"\nor pass --reference-python.'
                )
            else:
                print(f"reference: {reference_version(python)} ({python})")
                servers.append(reference_server(workdir, python, args.reference_jobs))
        started: list[Server] = []
        for server in servers:
            try:
                await server.start()
                started.append(server)
            except ServerError as exc:
                print(f"{server.name} NOT run: {exc}")
        servers = started
        if not servers:
            return 1
        await bare.start()
        await asyncio.sleep(2.0)  # let start-up work finish before the idle reading
        for server in servers:
            idle[server.name] = server.rss()
            names.append(server.name)
            print(f"  {server.name}: pid {server.pids}, idle RSS {mb(idle[server.name])}")
        results: dict[str, list[Figures]] = {s.name: [] for s in servers}
        results["bare"] = []
        selected = frozenset(args.scenarios.split(","))
        for pass_no in range(sizes.passes):
            await run_pass(servers, bare, sizes, pass_no, workdir, results, selected)
        report(results, idle, names, sizes)
        return 0
    finally:
        for server in [*servers, bare]:
            server.stop()
        for server in servers:
            if server.proc is not None and server.proc.returncode not in (0, None):
                print(f"  {server.name} exited with {server.proc.returncode}")
        if args.keep:
            print(f"  logs and data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _scenario_list(text: str) -> str:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; use {','.join(SCENARIOS)}"
        )
    return ",".join(names)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, about a minute")
    parser.add_argument("--passes", type=int, default=0, help="passes (default 3, quick 2)")
    parser.add_argument("--only", choices=("runlane", "reference"), default=None)
    parser.add_argument(
        "--reference-python", default=str(DEFAULT_REFERENCE_PYTHON),
        help="python of the venv holding langgraph-cli[inmem] (its langgraph script is used)",
    )
    parser.add_argument(
        "--reference-jobs", type=int, default=100,
        help="langgraph dev --n-jobs-per-worker (default 100: every concurrent run at once)",
    )
    parser.add_argument("--profile-runlane", type=Path, default=None,
                        help="run runlane under cProfile and write the stats to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), type=_scenario_list,
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all; memory always)",
    )
    parser.add_argument("--bare-serve", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bare-events", type=int, default=20_000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_serve:
        bare_serve(args.bare_serve, args.bare_events)
        return 0
    sizes = QUICK if args.quick else FULL
    print(
        f"runlane server benchmark: python {platform.python_version()}, {os.cpu_count()} cores"
        f" shared by the servers and the client, {'quick' if args.quick else 'full'} sizes,"
        f" {args.passes or sizes.passes} passes (figures: median over passes)."
    )
    print("Client: httpx.AsyncClient + the SSE reader in this file, on uvloop, for every server.")
    try:
        import uvloop
    except ImportError:
        with asyncio.Runner() as runner:
            return runner.run(main_async(args))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main_async(args))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
