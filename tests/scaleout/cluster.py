"""A cluster of real ``runlane serve`` processes sharing one Postgres database and one Redis prefix.

Each process is ``runlane serve --config langgraph.json --host 127.0.0.1
--port <free>`` in one shared project folder (the example graphs, the e2e
test graphs and ``tests/scaleout/graphs/cluster.py``), with its own
``RUNLANE_DATA_DIR`` and log file. The processes are started concurrently and
are ready once ``GET /ok`` answers on each.

Besides process control this module holds what the tests observe the cluster
with, all from the outside: a raw SSE reader (it sees ``retry:`` hints and
connection closes that the SDK hides), SQL reads of the ``runs`` table and of
the ``counter`` graph's executions table, and :func:`wait_until`, which polls
a condition with a short interval until a deadline (cross-process facts can
only be observed, not awaited).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.e2e.conftest import (
    CLIENT_TIMEOUT,
    EXAMPLES,
    EXTRA_GRAPHS,
    TEST_GRAPHS,
    _free_port,
    _server_command,
    _server_env,
)
from tests.scaleout.graphs.cluster import COUNTER_DSN_ENV, EXECUTIONS_DDL, EXECUTIONS_TABLE

HERE = Path(__file__).resolve().parent
SCALEOUT_GRAPHS = HERE / "graphs"

CLUSTER_SIZE = 3
NODE_NAMES = ("A", "B", "C")
LEASE_TTL_S = 3.0
SWEEP_INTERVAL_S = 1.0
DEFAULT_SHUTDOWN_GRACE_S = 3.0
POLL_S = 0.05
START_TIMEOUT_S = 90.0
"""Three processes start at once on two cores shared with the rest of the machine."""
STOP_TIMEOUT_S = 30.0
"""From SIGTERM to exit: the shutdown grace plus generous slack."""

CLUSTER_GRAPHS = {
    **EXTRA_GRAPHS,
    "relay": "./cluster.py:relay_graph",
    "counter": "./cluster.py:counter_graph",
}

TERMINAL = frozenset({"success", "error", "timeout", "interrupted"})


# --- the project folder -------------------------------------------------------------


def write_project(folder: Path) -> Path:
    """The shared project folder: example graphs, the e2e graphs and the scale-out graphs."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(EXAMPLES / "agent.py", folder / "agent.py")
    for name in ("subgraph.py", "control.py"):
        shutil.copyfile(TEST_GRAPHS / name, folder / name)
    shutil.copyfile(SCALEOUT_GRAPHS / "cluster.py", folder / "cluster.py")
    config = json.loads((EXAMPLES / "langgraph.json").read_text())
    config.setdefault("graphs", {}).update(CLUSTER_GRAPHS)
    path = folder / "langgraph.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def params(**values: Any) -> dict[str, Any]:
    """A run's ``config`` carrying the graph parameters ``values`` (None values left out)."""
    return {"configurable": {k: v for k, v in values.items() if v is not None}}


def plain_dsn(database_url: str) -> str:
    """``postgresql+asyncpg://...`` as the plain ``postgresql://...`` DSN asyncpg takes."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def create_executions_table(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(EXECUTIONS_DDL)
    finally:
        await conn.close()


# --- processes ----------------------------------------------------------------------


@dataclass
class Node:
    """One ``runlane serve`` process of the cluster."""

    name: str
    url: str
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    stopped_by_test: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def __str__(self) -> str:
        return f"{self.name}(pid {self.pid}, port {self.port})"

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> int:
        """SIGKILL: the process dies at once, without any cleanup."""
        self.stopped_by_test = True
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self) -> None:
        """SIGTERM, without waiting: the test observes the shutdown."""
        self.stopped_by_test = True
        self.process.send_signal(signal.SIGTERM)

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_lines()[-lines:])

    def error_lines(self) -> list[str]:
        """Log lines at error level or above (JSON logs) and any traceback text."""
        found: list[str] = []
        for line in self.log_lines():
            try:
                record = json.loads(line)
            except ValueError:
                if "Traceback" in line:
                    found.append(line)
                continue
            if isinstance(record, dict) and str(record.get("level", "")).lower() in {
                "error",
                "critical",
                "fatal",
            }:
                found.append(line)
        return found

    def lines_about(self, *needles: str, limit: int = 30) -> str:
        """This node's log lines that mention any of ``needles`` (for failure messages)."""
        hits = [line for line in self.log_lines() if any(n in line for n in needles)]
        return f"--- {self} log, lines about {needles}:\n" + "\n".join(hits[-limit:])


@dataclass
class Cluster:
    nodes: list[Node]
    database_url: str
    dsn: str
    redis_prefix: str
    workdir: Path
    gates: Path
    env: dict[str, str] = field(default_factory=dict)
    start_failures: list[str] = field(default_factory=list)
    """Start-up attempts that died for another reason than a taken port (then retried)."""
    issued_gates: list[Path] = field(default_factory=list)

    def node_of_pid(self, pid: int) -> Node:
        for node in self.nodes:
            if node.pid == pid:
                return node
        raise AssertionError(f"no cluster process has pid {pid}: {[str(n) for n in self.nodes]}")

    def others(self, node: Node) -> list[Node]:
        return [other for other in self.nodes if other is not node]

    def gate(self, label: str) -> Path:
        """A fresh gate path in the folder every process shares (not yet opened)."""
        path = self.gates / f"{label}-{uuid.uuid4().hex}"
        self.issued_gates.append(path)
        return path

    def logs_about(self, *needles: str) -> str:
        return "\n".join(node.lines_about(*needles) for node in self.nodes)


def _cluster_env(
    *, database_url: str, redis_url: str, redis_prefix: str, extra: dict[str, str]
) -> dict[str, str]:
    env = {
        "RUNLANE_DATABASE_URL": database_url,
        "RUNLANE_REDIS_URL": redis_url,
        "RUNLANE_REDIS_KEY_PREFIX": redis_prefix,
        "RUNLANE_LEASE_TTL": str(LEASE_TTL_S),
        "RUNLANE_SWEEP_INTERVAL": str(SWEEP_INTERVAL_S),
        "RUNLANE_SHUTDOWN_GRACE": str(DEFAULT_SHUTDOWN_GRACE_S),
        "RUNLANE_LOG_FORMAT": "json",
        COUNTER_DSN_ENV: plain_dsn(database_url),
    }
    env.update(extra)
    return env


def _spawn(name: str, workdir: Path, root: Path, env: dict[str, str]) -> Node:
    port = _free_port()
    data_dir = root / f"data-{name}"
    data_dir.mkdir(exist_ok=True)
    log_path = root / f"server-{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            _server_command(port),
            cwd=workdir,
            env=_server_env(data_dir, env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Node(
        name=name,
        url=f"http://127.0.0.1:{port}",
        port=port,
        data_dir=data_dir,
        log_path=log_path,
        process=proc,
    )


def _wait_all_ready(nodes: Sequence[Node]) -> dict[str, bool]:
    """Poll ``GET /ok`` on every node until each answers or dies; name -> ready."""
    deadline = time.monotonic() + START_TIMEOUT_S
    ready: dict[str, bool] = {}
    with httpx.Client(timeout=2.0) as http:
        while len(ready) < len(nodes):
            if time.monotonic() > deadline:
                waiting = [str(n) for n in nodes if n.name not in ready]
                raise TimeoutError(f"no answer on GET /ok within {START_TIMEOUT_S}s: {waiting}")
            for node in nodes:
                if node.name in ready:
                    continue
                if not node.alive():
                    ready[node.name] = False
                    continue
                try:
                    response = http.get(f"{node.url}/ok")
                except httpx.TransportError:
                    continue
                if response.status_code == 200 and response.json().get("ok") is True:
                    ready[node.name] = True
            time.sleep(POLL_S)
    return ready


def _stop_all(nodes: Sequence[Node]) -> dict[str, int | None]:
    """SIGTERM every live node at once (a draining process must not delay the others'
    signal) and wait for all of them; a node still alive after ``STOP_TIMEOUT_S`` is
    killed and reported as None. Never raises, so no process is left behind."""
    for node in nodes:
        if node.alive():
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    codes: dict[str, int | None] = {}
    for node in nodes:
        try:
            codes[node.name] = node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            codes[node.name] = None
    for node in nodes:
        if codes[node.name] is None:
            node.process.kill()
            node.process.wait()
    return codes


@contextlib.contextmanager
def running_cluster(
    root: Path,
    *,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """Start the cluster; on exit SIGTERM every live process and check each stopped cleanly.

    Clean means exit code 0 and no error-level log line, for every process the
    test did not kill or stop itself.
    """
    workdir = root / "project"
    write_project(workdir)
    gates = root / "gates"
    gates.mkdir(exist_ok=True)
    env = _cluster_env(
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        extra=dict(extra_env or {}),
    )
    nodes: dict[str, Node] = {}
    start_failures: list[str] = []
    try:
        pending = list(NODE_NAMES[:CLUSTER_SIZE])
        for attempt in range(3):
            for name in pending:
                nodes[name] = _spawn(name, workdir, root, env)
            ready = _wait_all_ready([nodes[name] for name in pending])
            pending = [name for name, ok in ready.items() if not ok]
            for name in pending:
                # Kept apart so the retried process's log is its own; a start that
                # failed for any reason but a taken port is recorded (start_failures).
                failed = nodes[name].log_path.rename(root / f"server-{name}-failed-{attempt}.log")
                text = failed.read_text(errors="replace")
                if "address already in use" not in text.lower():
                    start_failures.append(f"{nodes[name]} exited during start-up:\n{text[-3000:]}")
            if not pending:
                break
        else:
            raise AssertionError(
                "runlane serve exited before it was ready:\n" + "\n".join(start_failures)
            )
    except BaseException:
        _stop_all(list(nodes.values()))
        raise

    cluster = Cluster(
        nodes=[nodes[name] for name in NODE_NAMES[:CLUSTER_SIZE]],
        database_url=database_url,
        dsn=plain_dsn(database_url),
        redis_prefix=redis_prefix,
        workdir=workdir,
        gates=gates,
        env=env,
        start_failures=start_failures,
    )
    try:
        yield cluster
    finally:
        for path in cluster.issued_gates:  # never leave a run waiting on a gate
            path.touch()
        codes = _stop_all(cluster.nodes)
    problems = []
    for node in cluster.nodes:
        if node.stopped_by_test:
            continue
        if codes[node.name] is None:
            problems.append(
                f"{node} did not exit within {STOP_TIMEOUT_S}s of SIGTERM (killed):\n"
                + node.log_tail(15)
            )
        elif codes[node.name] != 0:
            problems.append(f"{node} exited with {codes[node.name]}:\n{node.log_tail(15)}")
        errors = node.error_lines()
        if errors:
            first = "\n".join(line[:800] for line in errors[:3])
            problems.append(f"{node} logged {len(errors)} error lines; the first:\n{first}")
    assert not problems, "\n\n".join(problems)


@contextlib.asynccontextmanager
async def sdk_clients(cluster: Cluster) -> AsyncIterator[list[Any]]:
    """One ``langgraph_sdk`` client per node, in node order."""
    from langgraph_sdk import get_client

    clients = [get_client(url=n.url, api_key=None, timeout=CLIENT_TIMEOUT) for n in cluster.nodes]
    try:
        yield clients
    finally:
        for sdk in clients:
            await sdk.aclose()


# --- waiting --------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], Any],
    *,
    within: float,
    what: str,
    interval: float = POLL_S,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` (sync or async) until it returns a truthy value (returned) or
    ``within`` seconds passes (AssertionError naming ``what``)."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(
                f"timed out after {within}s waiting for {what}; last: {last!r}{extra}"
            )
        await anyio.sleep(interval)


# --- SSE, raw ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    event: str
    id: str | None
    data: Any


@dataclass
class SseRead:
    """Everything one SSE connection delivered, and how it ended."""

    node: Node
    frames: list[Frame] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    status_code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    closed: bool = False
    transport_error: str | None = None

    @property
    def ended(self) -> bool:
        return any(frame.event == "end" for frame in self.frames)

    @property
    def end(self) -> Frame | None:
        ends = [frame for frame in self.frames if frame.event == "end"]
        return ends[-1] if ends else None

    @property
    def last_id(self) -> str | None:
        ids = [frame.id for frame in self.frames if frame.id]
        return ids[-1] if ids else None

    def custom(self) -> list[Any]:
        return [frame.data for frame in self.frames if frame.event == "custom"]

    def waiting_pid(self) -> int | None:
        for data in self.custom():
            if isinstance(data, dict) and "waiting" in data:
                return int(data["pid"])
        return None


def _parse_frames(lines: list[str]) -> tuple[Frame | None, int | None]:
    event = "message"
    ident: str | None = None
    data: list[str] = []
    retry: int | None = None
    for line in lines:
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            ident = value
        elif name == "retry":
            with contextlib.suppress(ValueError):
                retry = int(value)
    if not data and ident is None and event == "message":
        return None, retry
    text = "\n".join(data)
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return Frame(event=event, id=ident, data=parsed), retry


async def read_sse(
    node: Node,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    last_event_id: str | None = None,
    read: SseRead | None = None,
    until: Callable[[SseRead], bool] | None = None,
) -> SseRead:
    """Read one SSE response from ``node`` until the server closes it (or ``until`` holds).

    A connection the server drops (reset, process exit) is recorded in
    ``transport_error``, not raised: how a stream ended is what tests check.
    """
    read = read or SseRead(node=node)
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    timeout = httpx.Timeout(None, connect=5.0)
    try:
        async with (
            httpx.AsyncClient(base_url=node.url, timeout=timeout) as http,
            http.stream(method, path, json=body, headers=headers) as response,
        ):
            read.status_code = response.status_code
            read.headers = dict(response.headers)
            if response.status_code != 200:
                await response.aread()
                read.frames.append(Frame("http_error", None, response.text))
                read.closed = True
                return read
            lines: list[str] = []
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
                    continue
                frame, retry = _parse_frames(lines)
                lines = []
                if retry is not None:
                    read.retry.append(retry)
                if frame is not None:
                    read.frames.append(frame)
                    if until is not None and until(read):
                        return read
            if lines:
                frame, retry = _parse_frames(lines)
                if retry is not None:
                    read.retry.append(retry)
                if frame is not None:
                    read.frames.append(frame)
            read.closed = True
    except httpx.TransportError as exc:
        read.transport_error = f"{type(exc).__name__}: {exc}"
        read.closed = True
    return read


def stream_path(thread_id: str, run_id: str) -> str:
    return f"/threads/{thread_id}/runs/{run_id}/stream"


def frame_tuples(frames: Sequence[Frame]) -> list[tuple[str | None, str, str]]:
    """(id, event, data as canonical JSON) of each frame: the unit exactly-once compares."""
    return [(f.id, f.event, json.dumps(f.data, sort_keys=True)) for f in frames]


def assert_dense_ids(frames: Sequence[Frame], what: str) -> None:
    """Every data frame has an id; ids are 1, 2, 3, ... with no hole or repeat."""
    ids = [f.id for f in frames if f.event != "gap"]
    assert all(ids), f"{what}: a frame without an id: {[(f.id, f.event) for f in frames]}"
    numbers = [int(i) for i in ids if i]
    assert numbers == list(range(1, len(numbers) + 1)), f"{what}: ids not dense: {numbers}"
    assert not [f for f in frames if f.event == "gap"], f"{what}: got a gap frame"


# --- SQL reads ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def pg(dsn: str) -> AsyncIterator[Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def run_rows(dsn: str, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``runs`` rows by run id: status, stop_reason, error, owner_id, queued, seq."""
    async with pg(dsn) as conn:
        rows = await conn.fetch(
            "SELECT run_id, thread_id, status, stop_reason, error, owner_id, queued, seq, "
            "created_at FROM runs WHERE run_id = ANY($1::text[])",
            list(run_ids),
        )
    return {row["run_id"]: dict(row) for row in rows}


async def executions(dsn: str, run_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of the ``counter`` graph's executions table, in insertion order."""
    async with pg(dsn) as conn:
        if run_ids is None:
            rows = await conn.fetch(f"SELECT * FROM {EXECUTIONS_TABLE} ORDER BY id")
        else:
            rows = await conn.fetch(
                f"SELECT * FROM {EXECUTIONS_TABLE} WHERE run_id = ANY($1::text[]) ORDER BY id",
                list(run_ids),
            )
    return [dict(row) for row in rows]


async def statuses(dsn: str, run_ids: Sequence[str]) -> dict[str, str | None]:
    rows = await run_rows(dsn, run_ids)
    return {run_id: (rows[run_id]["status"] if run_id in rows else None) for run_id in run_ids}


async def wait_terminal(
    cluster: Cluster, run_ids: Sequence[str], *, within: float, what: str
) -> dict[str, dict[str, Any]]:
    """Wait until every run's row is terminal (or gone); returns the rows. On timeout the
    AssertionError carries :func:`diagnose` of the runs still active."""

    async def check() -> dict[str, dict[str, Any]] | None:
        rows = await run_rows(cluster.dsn, run_ids)
        if all(rows.get(r) is None or rows[r]["status"] in TERMINAL for r in run_ids):
            return rows
        return None

    try:
        result: dict[str, dict[str, Any]] = await wait_until(check, within=within, what=what)
    except AssertionError as exc:
        rows = await run_rows(cluster.dsn, run_ids)
        left = [r for r in run_ids if r in rows and rows[r]["status"] not in TERMINAL]
        raise AssertionError(
            f"{exc}\n{len(left)} runs not terminal; the first ones:\n"
            + await diagnose(cluster, left[:5])
        ) from None
    return result


async def diagnose(cluster: Cluster, run_ids: Sequence[str]) -> str:
    """The runs' rows and every log line that names them: for failure messages."""
    try:
        rows = await run_rows(cluster.dsn, run_ids)
    except Exception as exc:  # the report must not hide the failure it explains
        rows = {"<unreadable>": {"error": repr(exc)}}
    keep = ("status", "stop_reason", "error", "owner_id", "queued", "seq")
    lines = [
        f"run {run_id}: "
        + (str({k: rows[run_id].get(k) for k in keep}) if run_id in rows else "no row")
        for run_id in run_ids
    ]
    try:
        done = await executions(cluster.dsn, run_ids)
    except Exception as exc:
        done = [{"error": repr(exc)}]
    for row in done:
        lines.append(
            f"execution of {row.get('run_id')}: pid {row.get('pid')}, "
            f"{row.get('started_at')} -> {row.get('finished_at')}"
        )
    lines.append(f"processes: {[f'{n} alive={n.alive()}' for n in cluster.nodes]}")
    return "\n".join(lines) + "\n" + cluster.logs_about(*run_ids)
