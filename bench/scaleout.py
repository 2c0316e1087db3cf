"""Scale-out benchmark: several ``runlane serve`` processes on one Postgres and one Redis.

Run ``python bench/scaleout.py`` (about 9 minutes) or ``python bench/scaleout.py
--quick`` (1.5-2 minutes). See ``bench/README.md``, section "Scale-out".

1. Runs/s and streamed events/s with 1, 2 and 3 processes (``--processes``). For
   each N: a fresh Postgres database (migrated with ``runlane migrate``), a fresh
   Redis key prefix, N ``runlane serve`` processes on free ports, then
   (a) run overhead: create + stream a ``noop`` run on a fresh thread, requests
   round-robin over the processes, ``--concurrency`` clients at once;
   (b) streaming: K concurrent ``emit`` runs of M custom events each, created on
   one process and streamed (``join_stream``) from another when N > 1.
2. Redis connections of one process while J SSE joiners wait on J active runs
   (``CLIENT LIST``, attributed to the process by its local TCP ports).
3. Lease renewal cost per tick with R active runs of one owner:
   ``SqlRunStore.renew_leases`` in this process, on Postgres and on SQLite.

Every database and Redis key the run creates is removed at the end, also after a
failure or Ctrl-C, and every process it started is stopped. The client and every
server share the machine's cores: with more processes than cores, expect flat
totals; what the figures show is what adding a process costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx
import orjson
import psycopg
import redis
import redis.asyncio as aioredis
from psycopg import sql
from server import (
    CLK_TCK,
    Server,
    clock,
    cpu_seconds,
    free_port,
    pct,
    process_tree,
    rss_bytes,
    run_body,
    sse_chunks,
)

BENCH_DIR = Path(__file__).resolve().parent
GRAPHS_DIR = BENCH_DIR / "graphs"
GRAPH_MODULE = GRAPHS_DIR / "bench_graphs.py"
OWNER = "bench"  # owner_id of the lease rows (part 3)
LEASE_TTL = timedelta(seconds=10)  # runlane's default lease_ttl
TICK_INTERVAL = LEASE_TTL.total_seconds() / 3  # the manager renews every third of the TTL
ADMIN_CONCURRENCY = 16  # concurrent set-up requests (threads, runs), never timed

T = TypeVar("T")


# --- sizes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    concurrency: int  # (1a) clients at once
    overhead_runs: int  # (1a) at most this many runs per N ...
    overhead_seconds: float  # ... or this long, whichever comes first
    stream_runs: int  # (1b) K concurrent runs
    stream_events: int  # (1b) M custom events per run
    joiners: int  # (2) SSE joiners, one waiting run each
    lease_rows: int  # (3) active runs of one owner
    lease_ticks: int  # (3) timed renew_leases calls per store
    run_timeout: float  # seconds one run (or stream) may take before it counts as failed
    idle_seconds: float  # (1c) idle CPU is measured over this long
    passes: int  # (1) the N=1,2,3 sequence runs this often (alternating order); medians


FULL = Sizes(
    concurrency=8,
    overhead_runs=400,
    overhead_seconds=20.0,
    stream_runs=50,
    stream_events=500,
    joiners=1000,
    lease_rows=1000,
    lease_ticks=200,
    run_timeout=60.0,
    idle_seconds=5.0,
    passes=2,
)
QUICK = Sizes(
    concurrency=8,
    overhead_runs=80,
    overhead_seconds=5.0,
    stream_runs=12,
    stream_events=200,
    joiners=150,
    lease_rows=1000,
    lease_ticks=30,
    run_timeout=30.0,
    idle_seconds=1.5,
    passes=1,
)


# --- everything this run creates, and its removal ------------------------------------


def clean_env() -> dict[str, str]:
    """This process's environment without any ``RUNLANE_*`` setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RUNLANE_")}


@dataclass
class Resources:
    """Databases, Redis key prefixes and processes this run created; :meth:`cleanup`
    removes whatever is left (idempotent, synchronous: it also runs after Ctrl-C,
    outside the event loop)."""

    postgres: str  # postgresql://user@host:port (no database)
    redis_url: str
    workdir: Path
    servers: list[Server] = field(default_factory=list)  # not stopped yet
    databases: list[str] = field(default_factory=list)  # not dropped yet
    prefixes: list[str] = field(default_factory=list)  # keys not deleted yet
    started: list[Server] = field(default_factory=list)  # every process ever started
    created_databases: list[str] = field(default_factory=list)
    created_prefixes: list[str] = field(default_factory=list)
    deleted_keys: int = 0
    killed: list[str] = field(default_factory=list)  # processes that needed SIGKILL

    # Postgres

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(f"{self.postgres}/postgres", autocommit=True, connect_timeout=10)

    def create_database(self) -> str:
        name = f"runlane_bench_{uuid.uuid4().hex[:12]}"
        self.databases.append(name)  # listed first: a half-created one is dropped too
        self.created_databases.append(name)
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def database_url(self, name: str) -> str:
        rest = self.postgres.split("://", 1)[1]
        return f"postgresql+asyncpg://{rest}/{name}"

    def drop_database(self, name: str) -> None:
        if name not in self.databases:
            return
        with self._admin() as conn:
            try:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            except psycopg.errors.SyntaxError:  # Postgres < 13: end the sessions first
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        self.databases.remove(name)

    # Redis

    def new_prefix(self) -> str:
        prefix = f"runlane-bench-{uuid.uuid4().hex[:12]}"
        self.prefixes.append(prefix)
        self.created_prefixes.append(prefix)
        return prefix

    def delete_prefix(self, prefix: str) -> int:
        if prefix not in self.prefixes:
            return 0
        deleted = 0
        client = redis.Redis.from_url(self.redis_url, socket_timeout=10)
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(client.delete(*batch))
                    batch.clear()
            if batch:
                deleted += int(client.delete(*batch))
        finally:
            client.close()
        self.prefixes.remove(prefix)
        self.deleted_keys += deleted
        return deleted

    # processes

    def stop_servers(self, servers: list[Server], timeout: float = 20.0) -> None:
        """SIGTERM to each process group (uvicorn shuts down gracefully), SIGKILL after
        ``timeout`` seconds."""
        alive = [s for s in servers if s.proc is not None and s.proc.poll() is None]
        for server in alive:
            assert server.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for server in alive:
            assert server.proc is not None
            try:
                server.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait()
                self.killed.append(f"{server.name} (pid {server.proc.pid})")
        for server in servers:
            if server in self.servers:
                self.servers.remove(server)

    def cleanup(self) -> list[str]:
        """Stop every process, drop every database, delete every key prefix left;
        returns what failed (empty when everything was removed)."""
        problems: list[str] = []
        try:
            self.stop_servers(list(self.servers))
        except Exception as exc:
            problems.append(f"stopping processes: {exc!r}")
        for name in list(self.databases):
            try:
                self.drop_database(name)
            except Exception as exc:
                problems.append(f"database {name} NOT dropped: {exc!r}")
        for prefix in list(self.prefixes):
            try:
                self.delete_prefix(prefix)
            except Exception as exc:
                problems.append(f"Redis keys {prefix}:* NOT deleted: {exc!r}")
        return problems + self.verify()

    def verify(self) -> list[str]:
        """What is still there: processes alive, databases, keys under the prefixes."""
        left: list[str] = []
        alive = [s for s in self.started if s.proc is not None and s.proc.poll() is None]
        left += [f"process {s.name} (pid {s.proc.pid}) STILL RUNNING" for s in alive if s.proc]
        if self.created_databases:
            try:
                with self._admin() as conn:
                    rows = conn.execute(
                        "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                        (self.created_databases,),
                    ).fetchall()
                left += [f"database {row[0]} STILL THERE" for row in rows]
            except Exception as exc:
                left.append(f"could not check the databases: {exc!r}")
        if self.created_prefixes:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=10)
            try:
                for prefix in self.created_prefixes:
                    keys = sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000))
                    if keys:
                        left.append(f"{keys} Redis keys {prefix}:* STILL THERE")
            except Exception as exc:
                left.append(f"could not check the Redis keys: {exc!r}")
            finally:
                client.close()
        return left


def migrate(url: str, cwd: Path) -> None:
    """``runlane migrate`` against ``url`` (RUNLANE_DATABASE_URL), in a child process."""
    env = {**clean_env(), "RUNLANE_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "runlane.cli", "migrate"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0:
        raise RuntimeError(f"runlane migrate failed ({done.returncode}): {done.stderr[-2000:]}")


def write_config(workdir: Path) -> Path:
    """A ``langgraph.json`` in ``workdir`` naming the bench graphs (copied beside it)."""
    folder = workdir / "graphs"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(GRAPH_MODULE, folder / GRAPH_MODULE.name)
    config = {
        "dependencies": ["."],
        "graphs": {
            "noop": f"./{GRAPH_MODULE.name}:noop",
            "emit": f"./{GRAPH_MODULE.name}:emit",
            "hold": f"./{GRAPH_MODULE.name}:hold",
        },
    }
    path = folder / "langgraph.json"
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    return path


def runlane_process(
    res: Resources, name: str, config: Path, database_url: str, prefix: str
) -> Server:
    """One ``runlane serve`` on a free port, registered for cleanup before it starts."""
    data = res.workdir / name
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **clean_env(),
        "RUNLANE_DATABASE_URL": database_url,
        "RUNLANE_REDIS_URL": res.redis_url,
        "RUNLANE_REDIS_KEY_PREFIX": prefix,
        "RUNLANE_DATA_DIR": str(data),
        "RUNLANE_LOG_LEVEL": "warning",
        "RUNLANE_SHUTDOWN_GRACE": "2",  # only shortens the stop at the end of a phase
    }
    argv = [sys.executable, "-m", "runlane.cli", "serve", "--config", str(config)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    server = Server(name, argv, data, env, port, res.workdir / f"{name}.log")
    res.servers.append(server)
    res.started.append(server)
    return server


async def start_servers(servers: list[Server]) -> None:
    """The first one alone (it creates the checkpointer's tables), then the rest at once."""
    await servers[0].start()
    if len(servers) > 1:
        await asyncio.gather(*(s.start() for s in servers[1:]))


def log_problems(server: Server) -> str | None:
    """Warnings and errors (or tracebacks) in a process's log: counts and the first of
    each, or None when there are none."""
    counts = {"warning": 0, "error": 0}
    first: dict[str, str] = {}
    try:
        lines = server.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if '"level":"warning"' in line:
            kind = "warning"
        elif '"level":"error"' in line or '"level":"critical"' in line or "Traceback" in line:
            kind = "error"
        else:
            continue
        counts[kind] += 1
        if kind not in first:
            try:
                entry = orjson.loads(line)
                first[kind] = f"{entry.get('logger')}: {entry.get('message')}"[:300]
            except orjson.JSONDecodeError:
                first[kind] = line[:300]
    if not any(counts.values()):
        return None
    text = f"{server.name} log: {counts['error']} error(s), {counts['warning']} warning(s)"
    return text + "".join(f"; first {kind}: {msg}" for kind, msg in first.items())


# --- /proc and CLIENT LIST: a process's Redis connections ---------------------------


def tcp_ports_to(pids: Iterable[int], remote_port: int) -> set[int]:
    """Local ports of the established TCP connections the processes hold to ``remote_port``
    (their socket inodes from ``/proc/<pid>/fd``, matched in ``/proc/<pid>/net/tcp*``)."""
    pids = list(pids)
    inodes: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pids[0]}/net/{table}") as fh:
                rows = fh.read().splitlines()[1:]
        except (OSError, IndexError):
            continue
        for row in rows:
            cols = row.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], int(cols[9])
            if (
                inode in inodes
                and state == "01"
                and int(remote.rsplit(":", 1)[1], 16) == remote_port
            ):
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@dataclass
class RedisView:
    clients: int  # CLIENT LIST entries whose address is one of the process's ports
    sockets: int  # the process's established TCP connections to Redis, from /proc
    names: dict[str, int]  # CLIENT SETNAME of those entries

    def show(self) -> str:
        names = ", ".join(f"{n} x{c}" for n, c in sorted(self.names.items()))
        return f"{self.clients} (sockets in /proc: {self.sockets}; names: {names or '-'})"


async def redis_view(rc: aioredis.Redis, server: Server, redis_port: int) -> RedisView:
    assert server.proc is not None
    ports = tcp_ports_to(process_tree(server.proc.pid), redis_port)
    clients = await rc.client_list()
    mine = [c for c in clients if int(str(c["addr"]).rsplit(":", 1)[1]) in ports]
    names = Counter(str(c.get("name") or "(no name)") for c in mine)
    return RedisView(len(mine), len(ports), dict(names))


async def sse_subscribers(client: httpx.AsyncClient, server: Server) -> float | None:
    """``runlane_sse_subscribers`` from the process's ``GET /metrics``."""
    try:
        text = (await client.get(f"{server.url}/metrics")).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("runlane_sse_subscribers"):
            return float(line.split()[-1])
    return None


# --- the client -----------------------------------------------------------------------


def make_client(connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(120.0, connect=10.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=100),
    )


@dataclass
class Stream:
    """What one SSE response delivered."""

    indices: list[int] = field(default_factory=list)  # ``i`` of each custom event, in order
    latencies: list[float] = field(default_factory=list)  # arrival - the producer's stamp
    first: float | None = None
    last: float | None = None
    run_id: str | None = None
    end_status: str | None = None  # ``status`` of the ``end`` event; None: no end event
    gaps: int = 0
    errors: list[str] = field(default_factory=list)
    http_status: int = 0


async def read_stream(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    seconds: float,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    on_headers: Callable[[], None] | None = None,
) -> Stream:
    """Read one SSE response to its end, for at most ``seconds``; never raises
    for HTTP or timeout trouble (it is recorded in ``errors``, with what arrived)."""
    result = Stream()

    async def read() -> None:
        request = client.build_request(method, url, json=body, headers=headers)
        response = await client.send(request, stream=True)
        try:
            result.http_status = response.status_code
            if response.status_code != 200:
                await response.aread()
                result.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            if on_headers is not None:
                on_headers()
            async for now, frames in sse_chunks(response):
                for frame in frames:
                    if frame.event == "custom":
                        data = orjson.loads(frame.data)
                        result.indices.append(data["i"])
                        result.latencies.append(now - data["t"])
                        if result.first is None:
                            result.first = now
                        result.last = now
                    elif frame.event == "metadata":
                        result.run_id = orjson.loads(frame.data).get("run_id")
                    elif frame.event == "end":
                        try:
                            result.end_status = str(orjson.loads(frame.data).get("status"))
                        except (orjson.JSONDecodeError, AttributeError):
                            result.end_status = "?"
                    elif frame.event == "gap":
                        result.gaps += 1
                    elif frame.event == "error":
                        result.errors.append(frame.data.decode(errors="replace")[:200])
        finally:
            await response.aclose()

    try:
        async with asyncio.timeout(seconds):
            await read()
    except TimeoutError:
        result.errors.append(f"no end after {seconds:.0f} s")
    except httpx.HTTPError as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}"[:200])
    return result


def problem(result: Stream, expect: int | None = None) -> str | None:
    """Why a run counts as failed, or None."""
    if result.errors:
        return result.errors[0]
    if result.end_status is None:
        return "stream closed without an end event"
    if result.end_status != "success":
        return f"ended with status {result.end_status}"
    if result.gaps:
        return f"{result.gaps} gap event(s)"
    if expect is not None and result.indices != list(range(expect)):
        return f"{len(result.indices)}/{expect} events, not exactly 0..{expect - 1}"
    return None


async def gather_limited(coros: Iterable[Awaitable[T]], limit: int) -> list[T | BaseException]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[T]) -> T:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


async def new_thread(client: httpx.AsyncClient, server: Server) -> str:
    response = await client.post(f"{server.url}/threads", json={})
    if response.status_code != 200:
        raise RuntimeError(f"POST /threads on {server.name}: HTTP {response.status_code}")
    thread_id: str = response.json()["thread_id"]
    return thread_id


async def create_run(
    client: httpx.AsyncClient, server: Server, thread_id: str, body: dict[str, Any]
) -> str:
    response = await client.post(f"{server.url}/threads/{thread_id}/runs", json=body)
    if response.status_code != 200:
        raise RuntimeError(
            f"POST /threads/{{tid}}/runs on {server.name}: HTTP {response.status_code}"
            f" {response.text[:200]}"
        )
    run_id: str = response.json()["run_id"]
    return run_id


def cpu_of(servers: list[Server]) -> float:
    return sum(cpu_seconds(process_tree(s.proc.pid)) for s in servers if s.proc is not None)


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``: all but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def load_average() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


@dataclass
class CpuWindow:
    """Cores busy over a window: the whole machine, the runlane processes, this client."""

    servers: list[Server]
    t0: float = 0.0
    machine0: float = 0.0
    servers0: float = 0.0
    client0: float = 0.0

    def start(self) -> CpuWindow:
        self.t0, self.machine0 = clock(), machine_busy()
        self.servers0, self.client0 = cpu_of(self.servers), time.process_time()
        return self

    def stop(self, out: Figures, prefix: str) -> float:
        """Record ``<prefix>_machine``, ``_servers``, ``_client`` (cores); returns the
        servers' CPU seconds."""
        wall = max(clock() - self.t0, 1e-9)
        servers = cpu_of(self.servers) - self.servers0
        out.values[f"{prefix}_machine"] = (machine_busy() - self.machine0) / wall
        out.values[f"{prefix}_servers"] = servers / wall
        out.values[f"{prefix}_client"] = (time.process_time() - self.client0) / wall
        return servers


def short(reason: str) -> str:
    """A failure reason without the ids that make every one unique."""
    return " ".join(w if len(w) < 30 else "<id>" for w in reason.split())[:160]


# --- part 1: N processes ------------------------------------------------------------


@dataclass
class Figures:
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def warm_up(client: httpx.AsyncClient, servers: list[Server], seconds: float) -> list[str]:
    """Two noop runs per process and one small emit run streamed from the next process;
    returns what went wrong (nothing is measured, but a failure is reported)."""
    failed: list[str] = []
    for i, server in enumerate(servers):
        for _ in range(2):
            tid = await new_thread(client, server)
            result = await read_stream(
                client,
                "POST",
                f"{server.url}/threads/{tid}/runs/stream",
                body=run_body("noop", {"x": 0}, ["values"]),
                seconds=seconds,
            )
            if (why := problem(result)) is not None:
                failed.append(f"warm-up noop run on {server.name} failed: {short(why)}")
        other = servers[(i + 1) % len(servers)]
        tid = await new_thread(client, server)
        rid = await create_run(client, server, tid, run_body("emit", {"n": 20}, ["custom"]))
        result = await read_stream(
            client,
            "GET",
            f"{other.url}/threads/{tid}/runs/{rid}/stream",
            headers={"Last-Event-ID": "-1"},
            seconds=seconds,
        )
        if (why := problem(result, 20)) is not None:
            failed.append(
                f"warm-up emit run created on {server.name}, streamed from {other.name},"
                f" failed: {short(why)}"
            )
    return failed


async def scenario_overhead(
    client: httpx.AsyncClient, servers: list[Server], sizes: Sizes, out: Figures
) -> None:
    """(1a) create + stream a noop run on a fresh thread, round-robin, ``concurrency`` clients."""
    n = len(servers)
    made = await gather_limited(
        (new_thread(client, servers[i % n]) for i in range(sizes.overhead_runs)),
        ADMIN_CONCURRENCY,
    )
    threads = [(i, t) for i, t in enumerate(made) if isinstance(t, str)]
    if len(threads) != len(made):
        bad = next(t for t in made if not isinstance(t, str))
        out.notes.append(f"(a) {len(made) - len(threads)} threads not created: {bad!r}")
    pending = iter(threads)
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    window = CpuWindow(servers).start()
    t0 = clock()
    deadline = t0 + sizes.overhead_seconds

    async def one_client() -> None:
        for i, tid in pending:  # one iterator shared by every client
            if clock() > deadline:
                return
            server = servers[i % n]
            started = clock()
            result = await read_stream(
                client,
                "POST",
                f"{server.url}/threads/{tid}/runs/stream",
                body=run_body("noop", {"x": 1}, ["values"]),
                seconds=sizes.run_timeout,
            )
            elapsed = clock() - started
            why = problem(result)
            if why is None:
                latencies.append(elapsed)
            else:
                failures[f"{server.name}: {short(why)}"] += 1

    await asyncio.gather(*(one_client() for _ in range(sizes.concurrency)))
    wall = clock() - t0
    cpu = window.stop(out, "oh")
    done = len(latencies) + sum(failures.values())
    out.values["oh_rps"] = len(latencies) / wall if wall > 0 else 0.0
    out.values["oh_p50_ms"] = pct(latencies, 0.5) * 1e3
    out.values["oh_p99_ms"] = pct(latencies, 0.99) * 1e3
    out.values["oh_cpu_ms"] = cpu / max(done, 1) * 1e3
    out.values["oh_ok"] = len(latencies)
    out.values["oh_failed"] = sum(failures.values())
    for reason, count in failures.most_common(3):
        out.notes.append(f"(a) {count} run(s) failed: {reason}")


async def scenario_stream(
    client: httpx.AsyncClient, servers: list[Server], sizes: Sizes, out: Figures, workdir: Path
) -> None:
    """(1b) K gated emit runs, each created on process i and joined from process i+1."""
    n, k, m = len(servers), sizes.stream_runs, sizes.stream_events
    gate = workdir / f"gate-{uuid.uuid4().hex[:8]}"
    body = run_body("emit", {"n": m, "gate": str(gate)}, ["custom"])

    async def create(i: int) -> tuple[str, str]:
        tid = await new_thread(client, servers[i % n])
        return tid, await create_run(client, servers[i % n], tid, body)

    created = await gather_limited((create(i) for i in range(k)), ADMIN_CONCURRENCY)
    failures: Counter[str] = Counter()
    for item in created:
        if isinstance(item, BaseException):
            failures[f"create: {short(str(item))}"] += 1
    attached = 0
    all_attached = asyncio.get_running_loop().create_future()
    expected = sum(1 for item in created if not isinstance(item, BaseException))

    def on_headers() -> None:
        nonlocal attached
        attached += 1
        if attached == expected and not all_attached.done():
            all_attached.set_result(None)

    tasks: list[tuple[Server, asyncio.Task[Stream]]] = []
    for i, item in enumerate(created):
        if isinstance(item, BaseException):
            continue
        tid, rid = item
        streamer = servers[(i + 1) % n]
        task = asyncio.create_task(
            read_stream(
                client,
                "GET",
                f"{streamer.url}/threads/{tid}/runs/{rid}/stream",
                headers={"Last-Event-ID": "-1"},  # from the first event, whenever it attaches
                on_headers=on_headers,
                seconds=sizes.run_timeout + 60,  # the graph waits up to 60 s for the gate
            )
        )
        tasks.append((streamer, task))
    try:
        async with asyncio.timeout(30):
            if expected:
                await all_attached
    except TimeoutError:
        out.notes.append(f"(b) only {attached}/{expected} streams attached in 30 s")
    await asyncio.sleep(0.3)
    window = CpuWindow(servers).start()
    t0 = clock()
    gate.touch()
    results = [await task for _, task in tasks]
    cpu = window.stop(out, "st")
    gate.unlink(missing_ok=True)
    received = sum(len(r.indices) for r in results)
    lasts = [r.last for r in results if r.last is not None]
    window = max(lasts) - t0 if lasts else 0.0
    latencies = [x for r in results for x in r.latencies]
    lost = sum(m - len({i for i in r.indices if 0 <= i < m}) for r in results)
    not_exact = sum(1 for r in results if r.indices != list(range(m)))
    for (streamer, _), result in zip(tasks, results, strict=True):
        why = problem(result, m)
        if why is not None:
            failures[f"streamed from {streamer.name}: {short(why)}"] += 1
    out.values["st_eps"] = received / window if window > 0 else 0.0
    out.values["st_p50_ms"] = pct(latencies, 0.5) * 1e3
    out.values["st_p99_ms"] = pct(latencies, 0.99) * 1e3
    out.values["st_cpu_us"] = cpu / max(received, 1) * 1e6
    out.values["st_lost"] = lost
    out.values["st_not_exact"] = not_exact
    out.values["st_failed"] = sum(failures.values())
    out.values["st_cross"] = len(results) if n > 1 else 0
    for reason, count in failures.most_common(3):
        out.notes.append(f"(b) {count} run(s) failed: {reason}")


async def measure_processes(
    res: Resources, sizes: Sizes, n: int, config: Path, redis_port: int
) -> Figures:
    """Part 1 for N processes: fresh database and prefix, start, measure, stop, remove."""
    out = Figures()
    out.values["load"] = load_average()
    database = res.create_database()
    url = res.database_url(database)
    prefix = res.new_prefix()
    servers: list[Server] = []
    try:
        migrate(url, res.workdir)
        servers = [runlane_process(res, f"n{n}-p{i + 1}", config, url, prefix) for i in range(n)]
        t0 = clock()
        await start_servers(servers)
        print(f"  N={n}: migrated, {n} process(es) up in {clock() - t0:4.1f} s", flush=True)
        await asyncio.sleep(1.0)
        out.values["rss_mb"] = (
            statistics.mean(
                rss_bytes(process_tree(s.proc.pid)) for s in servers if s.proc is not None
            )
            / 1e6
        )
        async with make_client(200) as client:
            out.notes += await warm_up(client, servers, sizes.run_timeout)
            await asyncio.sleep(1.0)
            cpu0, t0 = cpu_of(servers), clock()
            await asyncio.sleep(sizes.idle_seconds)
            out.values["idle_cpu"] = (cpu_of(servers) - cpu0) / (clock() - t0) / n * 100
            for label, run in (
                ("(a) run overhead", lambda: scenario_overhead(client, servers, sizes, out)),
                (
                    "(b) streaming",
                    lambda: scenario_stream(client, servers, sizes, out, res.workdir),
                ),
            ):
                t0 = clock()
                try:
                    await run()
                except Exception as exc:  # a failing scenario is a finding: report, go on
                    out.notes.append(f"{label} failed: {exc!r}")
                print(f"  N={n}: {label:<18} {clock() - t0:5.1f} s", flush=True)
                await asyncio.sleep(0.5)
        async with aioredis.Redis.from_url(res.redis_url) as rc:
            views = [await redis_view(rc, s, redis_port) for s in servers]
        out.values["redis_conns"] = max(v.clients for v in views)
        out.notes.append(
            "Redis connections per process after the runs: "
            + "; ".join(f"{s.name} {v.show()}" for s, v in zip(servers, views, strict=True))
        )
    finally:
        for server in servers:
            if server.proc is not None and server.proc.poll() is not None:
                out.notes.append(
                    f"{server.name} EXITED with {server.proc.returncode} during the run"
                )
        t0 = clock()
        res.stop_servers(servers)
        print(f"  N={n}: stopped in {clock() - t0:4.1f} s", flush=True)
        for server in servers:
            if (found := log_problems(server)) is not None:
                out.notes.append(found)
        res.drop_database(database)
        res.delete_prefix(prefix)
    return out


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    fmt: str
    agg: str = "median"  # over passes: "median", "sum" (counts) or "max"
    ratio: bool = True  # show the ratio to the first N


SECTIONS: list[tuple[str, list[Row]]] = [
    (
        "(a) run overhead: create + stream a noop run on a fresh thread, round-robin",
        [
            Row("oh_rps", "runs/s", "{:,.1f}"),
            Row("oh_p50_ms", "latency p50 (ms)", "{:,.1f}"),
            Row("oh_p99_ms", "latency p99 (ms)", "{:,.1f}"),
            Row("oh_cpu_ms", "server CPU per run (ms)", "{:,.2f}"),
            Row("oh_machine", "cores busy: whole machine", "{:,.2f}"),
            Row("oh_servers", "cores busy: runlane procs", "{:,.2f}"),
            Row("oh_client", "cores busy: this client", "{:,.2f}"),
            Row("oh_ok", "runs ok", "{:,.0f}", "sum", False),
            Row("oh_failed", "runs failed", "{:,.0f}", "sum", False),
        ],
    ),
    (
        "(b) streaming: concurrent emit runs, each streamed from another process (N > 1)",
        [
            Row("st_eps", "aggregate events/s", "{:,.0f}"),
            Row("st_p50_ms", "event latency p50 (ms)", "{:,.1f}"),
            Row("st_p99_ms", "event latency p99 (ms)", "{:,.1f}"),
            Row("st_cpu_us", "server CPU per event (us)", "{:,.1f}"),
            Row("st_machine", "cores busy: whole machine", "{:,.2f}"),
            Row("st_servers", "cores busy: runlane procs", "{:,.2f}"),
            Row("st_client", "cores busy: this client", "{:,.2f}"),
            Row("st_cross", "runs streamed cross-process", "{:,.0f}", "sum", False),
            Row("st_lost", "lost events", "{:,.0f}", "sum", False),
            Row("st_not_exact", "runs not exactly 0..M-1", "{:,.0f}", "sum", False),
            Row("st_failed", "runs failed", "{:,.0f}", "sum", False),
        ],
    ),
    (
        "(c) per process, and the machine",
        [
            Row("rss_mb", "idle RSS per process (MB)", "{:,.0f}"),
            Row("idle_cpu", "idle CPU per process (%)", "{:,.1f}", ratio=False),
            Row("redis_conns", "Redis connections (max)", "{:,.0f}", "max", False),
            Row("load", "load average at start", "{:,.2f}", ratio=False),
        ],
    ),
]


def aggregate(figures: list[Figures], row: Row) -> float | None:
    values = [f.values[row.key] for f in figures if row.key in f.values]
    values = [v for v in values if v == v]  # drop NaN (nothing measured)
    if not values:
        return None
    if row.agg == "max":
        return max(values)
    return sum(values) if row.agg == "sum" else statistics.median(values)


def report_processes(results: dict[int, list[Figures]], sizes: Sizes) -> None:
    ns = sorted(results)
    width = 12
    print()
    print(
        f"[1] scale-out: N runlane serve processes, one Postgres database and one Redis prefix"
        f" (fresh for each N); (a) {sizes.concurrency} clients, up to {sizes.overhead_runs} runs"
        f" or {sizes.overhead_seconds:.0f} s; (b) {sizes.stream_runs} runs x"
        f" {sizes.stream_events} custom events; {sizes.passes} pass(es): medians"
        f"{', counts summed' if sizes.passes > 1 else ''}"
    )
    head = f"{'figure':<32}" + "".join(f"{'N=' + str(n):>{width}}" for n in ns)
    base = ns[0]
    head += "".join(f"{f'N={n}/N={base}':>{width}}" for n in ns[1:])
    for title, rows in SECTIONS:
        print(f"  {title}")
        print("  " + head)
        for row in rows:
            values = [aggregate(results[n], row) for n in ns]
            line = f"    {row.label:<30}"
            for value in values:
                line += f"{'-' if value is None else row.fmt.format(value):>{width}}"
            first = values[0]
            for value in values[1:]:
                if row.ratio and first and value is not None:
                    line += f"{value / first:>{width - 1},.2f}x"
                else:
                    line += f"{'':>{width}}"
            print(line.rstrip())
        print()
    cores = os.cpu_count() or 0
    print(
        f"  Read this right: the {cores} cores of this machine are shared by every runlane"
        " process, Postgres, Redis, this client and whatever else runs (see 'cores busy' and"
        " the load average). More processes than cores cannot add throughput here: the point"
        " is that adding a process costs little (server CPU per run and per event near 1.00x,"
        " 0 lost, 0 failed), not linear scaling. When other programs keep the machine busy,"
        " N processes simply get a larger share of it than one ('cores busy: runlane procs'),"
        " so runs/s and events/s can rise with N without any real scaling."
    )
    for n in ns:
        for k, figures in enumerate(results[n]):
            label = f"N={n}" + (f" pass {k + 1}" if len(results[n]) > 1 else "")
            for note in figures.notes:
                print(f"  note {label}: {note}")


# --- part 2: Redis connections with J joiners ------------------------------------------


async def measure_joiners(res: Resources, sizes: Sizes, config: Path, redis_port: int) -> None:
    j = sizes.joiners
    print()
    print(
        f"[2] Redis connections of one process: {j:,} SSE joiners (GET .../runs/{{rid}}/stream,"
        f" no cursor) on {j:,} active runs of the hold graph, all in that process"
    )
    database = res.create_database()
    url = res.database_url(database)
    prefix = res.new_prefix()
    servers: list[Server] = []
    gate = res.workdir / f"hold-gate-{uuid.uuid4().hex[:8]}"

    def say(line: str) -> None:
        print(f"  {line}", flush=True)

    try:
        migrate(url, res.workdir)
        server = runlane_process(res, "joiners-p1", config, url, prefix)
        servers = [server]
        await start_servers(servers)
        await asyncio.sleep(1.0)
        async with aioredis.Redis.from_url(res.redis_url) as rc, make_client(j + 100) as client:
            say(
                f"after start, idle:            {(await redis_view(rc, server, redis_port)).show()}"
            )
            for line in await warm_up(client, servers, sizes.run_timeout):
                say(line)
            await asyncio.sleep(0.5)
            before = await redis_view(rc, server, redis_port)
            say(f"before (after a warm-up run): {before.show()}")
            t0 = clock()
            body = run_body("hold", {"gate": str(gate), "poll": 0.5, "hold": 600.0}, ["custom"])

            spans: list[float] = []  # POST /threads + POST .../runs, in completion order

            async def create() -> tuple[str, str]:
                started = clock()
                tid = await new_thread(client, server)
                rid = await create_run(client, server, tid, body)
                spans.append(clock() - started)
                return tid, rid

            cpu0 = cpu_of(servers)
            created = await gather_limited((create() for _ in range(j)), ADMIN_CONCURRENCY)
            runs = [c for c in created if not isinstance(c, BaseException)]
            if len(runs) != j:
                bad = next(c for c in created if isinstance(c, BaseException))
                say(f"NOT all runs created: {len(runs)}/{j}; e.g. {bad!r}")
            tenth = max(1, len(spans) // 10)
            say(
                f"{len(runs):,} hold runs created in {clock() - t0:.1f} s"
                f" ({ADMIN_CONCURRENCY} at a time; server CPU {cpu_of(servers) - cpu0:.1f} s);"
                f" thread + run creation p50 {pct(spans[:tenth], 0.5) * 1e3:,.0f} ms for the"
                f" first {tenth}, {pct(spans[-tenth:], 0.5) * 1e3:,.0f} ms for the last {tenth}"
            )
            attached = 0
            all_attached = asyncio.get_running_loop().create_future()

            def on_headers() -> None:
                nonlocal attached
                attached += 1
                if attached == len(runs) and not all_attached.done():
                    all_attached.set_result(None)

            tasks = [
                asyncio.create_task(
                    read_stream(
                        client,
                        "GET",
                        f"{server.url}/threads/{tid}/runs/{rid}/stream",
                        on_headers=on_headers,
                        seconds=600.0,
                    )
                )
                for tid, rid in runs
            ]
            t0 = clock()
            try:
                async with asyncio.timeout(max(60.0, j * 0.1)):
                    if runs:
                        await all_attached
            except TimeoutError:
                say(f"only {attached}/{len(runs)} joiners got their response headers")
            say(f"{attached:,} joiners attached in {clock() - t0:.1f} s")
            await asyncio.sleep(1.0)
            during = await redis_view(rc, server, redis_port)
            subscribers = await sse_subscribers(client, server)
            say(
                f"during, {attached:,} joiners attached: {during.show()};"
                f" the process reports runlane_sse_subscribers = {subscribers}"
            )
            gate.touch()
            try:
                async with asyncio.timeout(sizes.run_timeout + 30):
                    results = await asyncio.gather(*tasks)
            except TimeoutError:
                for task in tasks:
                    task.cancel()
                results = [t.result() for t in tasks if t.done() and not t.cancelled()]
                say(f"joiners still open {sizes.run_timeout + 30:.0f} s after the gate")
            complete = sum(1 for r in results if problem(r, 1) is None)
            reasons = Counter(short(p) for r in results if (p := problem(r, 1)) is not None)
            say(
                f"joiners that got the run's event and its end (success):"
                f" {complete:,}/{len(runs):,}"
                + "".join(f"; {c} x {why}" for why, c in reasons.most_common(3))
            )
            await asyncio.sleep(1.0)
            say(
                f"after the runs ended:         {(await redis_view(rc, server, redis_port)).show()}"
            )
            say(
                f"=> Redis connections of the process: {before.clients} before,"
                f" {during.clients} with {attached:,} joiners"
            )
    except Exception as exc:
        say(f"FAILED: {exc!r}")
    finally:
        gate.touch()
        for server in servers:
            if server.proc is not None and server.proc.poll() is not None:
                say(f"{server.name} EXITED with {server.proc.returncode} during the run")
        res.stop_servers(servers)
        for server in servers:
            if (found := log_problems(server)) is not None:
                say(found)
        gate.unlink(missing_ok=True)
        res.drop_database(database)
        res.delete_prefix(prefix)


# --- part 3: lease renewal ----------------------------------------------------------------


def renewal(store: Any) -> tuple[str, Callable[[], Awaitable[list[Any]]]]:
    """The tick to time, against the store's ``renew_leases`` signature: the new
    ``(owner_id, *, ttl, now=None)`` (now=None: the database's clock), else the old
    ``(owner_id, *, lease_expires_at)``."""
    signature = inspect.signature(store.renew_leases)
    if "ttl" in signature.parameters:
        return (
            "ttl=10 s, now=None",
            lambda: store.renew_leases(OWNER, ttl=LEASE_TTL),
        )
    if "lease_expires_at" in signature.parameters:
        return (
            "lease_expires_at=now+10 s (old)",
            lambda: store.renew_leases(OWNER, lease_expires_at=datetime.now(UTC) + LEASE_TTL),
        )
    raise RuntimeError(f"renew_leases{signature}: takes neither ttl nor lease_expires_at")


RAW_RENEW = (
    "UPDATE runs SET lease_expires_at = now() + $2::interval"
    " WHERE owner_id = $1 AND status = ANY($3::text[]) AND queued IS false"
    " RETURNING seq, run_id, cancel_action"
)
"""The store's Postgres renewal written by hand, for the raw-asyncpg baseline."""


async def lease_ticks(
    url: str, sizes: Sizes, concurrency: int, raw_dsn: str | None = None
) -> dict[str, Any]:
    """Insert the rows, then time the store's ticks; with ``raw_dsn`` (Postgres) a raw
    asyncpg tick of the same UPDATE runs after each store tick (before it, every other
    tick), and the table's HOT-update counters are read at the end."""
    import asyncpg

    from runlane.runtime.runs.store.sql import SqlRunStore

    store = SqlRunStore.from_url(url)
    raw: asyncpg.Connection | None = None
    try:
        lease = (datetime.now(UTC) + LEASE_TTL).isoformat()
        run_ids = [str(uuid.uuid4()) for _ in range(sizes.lease_rows)]
        t0 = clock()
        put = await gather_limited(
            (
                store.put(
                    run_id,
                    thread_id=str(uuid.uuid4()),
                    status="running",
                    owner_id=OWNER,
                    lease_expires_at=lease,
                )
                for run_id in run_ids
            ),
            concurrency,
        )
        failed_puts = [p for p in put if isinstance(p, BaseException)]
        if failed_puts:
            raise RuntimeError(f"{len(failed_puts)} puts failed, e.g. {failed_puts[0]!r}")
        insert_s = clock() - t0
        label, tick = renewal(store)
        raw_tick: Callable[[], Awaitable[list[Any]]] | None = None
        if raw_dsn is not None:
            raw = await asyncpg.connect(raw_dsn)
            statement = await raw.prepare(RAW_RENEW)

            async def raw_tick() -> list[Any]:
                rows = await statement.fetch(OWNER, LEASE_TTL, ["pending", "running"])
                return sorted(tuple(row) for row in rows)

        ticks = {"store": tick, **({"raw": raw_tick} if raw_tick else {})}
        for call in ticks.values():  # warm-up: connections, statement caches
            for _ in range(3):
                await call()
        times: dict[str, list[float]] = {name: [] for name in ticks}
        renewed: dict[str, list[int]] = {name: [] for name in ticks}
        for k in range(sizes.lease_ticks):
            for name in list(ticks) if k % 2 == 0 else list(reversed(ticks)):
                started = time.perf_counter()
                confirmed = await ticks[name]()
                times[name].append(time.perf_counter() - started)
                renewed[name].append(len(confirmed))
        row = await store.get(run_ids[0])
        moved = row["lease_expires_at"] if row else None
        advanced = bool(moved and datetime.fromisoformat(moved) > datetime.fromisoformat(lease))
        hot = None
        if raw is not None:
            await store.close()  # its sessions report their statistics as they end
            await raw.close()
            raw = await asyncpg.connect(raw_dsn)
            await asyncio.sleep(1.0)
            hot = await raw.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'runs'"
            )
        return {
            "signature": label,
            "insert_s": insert_s,
            "times": times,
            "renewed": renewed,
            "advanced": advanced,
            "hot": tuple(hot) if hot is not None else None,
        }
    finally:
        await store.close()
        if raw is not None:
            await raw.close()


async def measure_leases(res: Resources, sizes: Sizes) -> None:
    r = sizes.lease_rows
    print()
    print(
        f"[3] lease renewal: SqlRunStore.renew_leases in this process, {r:,} active runs of one"
        f" owner, {sizes.lease_ticks} ticks back to back (after 3 unmeasured), fresh migrated"
        " database"
    )
    head = (
        f"  {'store':<10}{'signature':<34}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'mean ms':>9}{'us/run p50':>12}{'renewed/tick':>14}{'p99/interval':>14}"
    )
    print(head)
    database = res.create_database()
    sqlite_path = res.workdir / f"lease-{uuid.uuid4().hex[:8]}.db"
    raw_dsn = f"postgresql://{res.postgres.split('://', 1)[1]}/{database}"
    targets = [
        ("postgres", res.database_url(database), 8, raw_dsn),
        ("sqlite", f"sqlite+aiosqlite:///{sqlite_path}", 1, None),
    ]
    notes: list[str] = []
    try:
        for name, url, concurrency, raw in targets:
            try:
                migrate(url, res.workdir)
                got = await lease_ticks(url, sizes, concurrency, raw)
            except Exception as exc:
                print(f"  {name:<10}FAILED: {exc!r}")
                continue
            for kind, times in got["times"].items():
                counts = Counter(got["renewed"][kind])
                renewed = ", ".join(f"{c:,}" for c in sorted(counts))
                p50, p99 = pct(times, 0.5), pct(times, 0.99)
                label = got["signature"] if kind == "store" else "raw asyncpg, same UPDATE"
                print(
                    f"  {name:<10}{label:<34}{p50 * 1e3:>9.2f}{p99 * 1e3:>9.2f}"
                    f"{max(times) * 1e3:>9.2f}{statistics.mean(times) * 1e3:>9.2f}"
                    f"{p50 / r * 1e6:>12.2f}{renewed:>14}{p99 / TICK_INTERVAL:>13.2%}"
                )
                if set(counts) != {r}:
                    notes.append(f"{name} {kind}: a tick confirmed {renewed} runs, not {r:,}")
            if not got["advanced"]:
                notes.append(f"{name}: the first run's lease_expires_at did NOT move")
            notes.append(f"{name}: {r:,} rows inserted with store.put in {got['insert_s']:.1f} s")
            if got["hot"] is not None:
                updated, hot = got["hot"]
                notes.append(
                    f"{name}: {hot:,} of {updated:,} row updates were HOT (pg_stat_user_tables;"
                    " lease_expires_at has a B-tree index, so an update that changes it"
                    " cannot be HOT)"
                )
    finally:
        res.drop_database(database)
    print(
        f"  p99/interval: the p99 tick against the manager's renewal interval"
        f" ({TICK_INTERVAL:.1f} s = lease_ttl/3 with the default 10 s TTL). On Postgres the"
        " store's tick and a raw asyncpg tick of the same UPDATE alternate."
    )
    for note in notes:
        print(f"  note: {note}")


# --- the driver -----------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, sizes: Sizes, res: Resources) -> int:
    config = write_config(res.workdir)
    redis_port = urlparse(res.redis_url).port or 6379
    parts = set(args.parts.split(","))
    if "scaleout" in parts:
        results: dict[int, list[Figures]] = {n: [] for n in args.processes}
        for pass_no in range(sizes.passes):
            order = args.processes if pass_no % 2 == 0 else list(reversed(args.processes))
            for n in order:
                t0 = clock()
                try:
                    figures = await measure_processes(res, sizes, n, config, redis_port)
                except Exception as exc:
                    figures = Figures(notes=[f"NOT measured: {exc!r}"])
                results[n].append(figures)
                print(f"  pass {pass_no + 1}, N={n}: done in {clock() - t0:.1f} s", flush=True)
        report_processes(results, sizes)
    if "redis" in parts:
        await measure_joiners(res, sizes, config, redis_port)
    if "lease" in parts:
        await measure_leases(res, sizes)
    return 0


def parse_processes(text: str) -> list[int]:
    values = sorted({int(x) for x in text.split(",") if x.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of process counts >= 1")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: 1.5-2 minutes")
    parser.add_argument(
        "--processes", type=parse_processes, default=[1, 2, 3], help="default 1,2,3"
    )
    parser.add_argument(
        "--parts", default="scaleout,redis,lease", help="any of scaleout,redis,lease (default all)"
    )
    parser.add_argument("--passes", type=int, help="(1) passes over N (default 2, quick 1)")
    parser.add_argument("--concurrency", type=int, help="(1a) clients at once (default 8)")
    parser.add_argument("--overhead-runs", type=int, help="(1a) runs per N (default 400, quick 80)")
    parser.add_argument(
        "--stream-runs", type=int, help="(1b) concurrent runs (default 50, quick 12)"
    )
    parser.add_argument(
        "--stream-events", type=int, help="(1b) events per run (default 500, quick 200)"
    )
    parser.add_argument("--joiners", type=int, help="(2) SSE joiners (default 1000, quick 150)")
    parser.add_argument("--lease-rows", type=int, help="(3) active runs (default 1000)")
    parser.add_argument("--lease-ticks", type=int, help="(3) timed ticks (default 200, quick 30)")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="Postgres server, no database (databases are created on it and dropped)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (server logs)")
    args = parser.parse_args()
    unknown = set(args.parts.split(",")) - {"scaleout", "redis", "lease"}
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    overrides = {
        "passes": args.passes,
        "concurrency": args.concurrency,
        "overhead_runs": args.overhead_runs,
        "stream_runs": args.stream_runs,
        "stream_events": args.stream_events,
        "joiners": args.joiners,
        "lease_rows": args.lease_rows,
        "lease_ticks": args.lease_ticks,
    }
    sizes = Sizes(**{**sizes.__dict__, **{k: v for k, v in overrides.items() if v}})
    print(
        f"runlane scale-out benchmark: python {platform.python_version()},"
        f" {os.cpu_count()} cores shared by every server process, Postgres, Redis and this"
        f" client; {'quick' if args.quick else 'full'} sizes; processes"
        f" {','.join(map(str, args.processes))}."
    )
    postgres = args.postgres.rstrip("/")
    try:  # fail early and plainly when a service is missing
        psycopg.connect(f"{postgres}/postgres", connect_timeout=5).close()
        redis.Redis.from_url(args.redis_url, socket_timeout=5).ping()
    except Exception as exc:
        print(
            f"needs Postgres at {postgres} and Redis at {args.redis_url}:"
            f" {type(exc).__name__}: {exc}"
        )
        return 2
    res = Resources(
        postgres=postgres,
        redis_url=args.redis_url,
        workdir=Path(tempfile.mkdtemp(prefix="runlane-bench-scaleout-")),
    )

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    code = 1
    started = time.monotonic()
    try:
        try:
            import uvloop

            factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
        except ImportError:
            factory = None
        with asyncio.Runner(loop_factory=factory) as runner:
            code = runner.run(main_async(args, sizes, res))
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up itself is not interrupted
        problems = res.cleanup()
        print()
        print(
            f"clean-up: this run started {len(res.started)} runlane processes"
            f" ({len(res.killed)} needed SIGKILL), created {len(res.created_databases)}"
            f" databases and {len(res.created_prefixes)} Redis key prefixes; deleted"
            f" {res.deleted_keys:,} keys. Checked afterwards (processes, pg_database, SCAN):"
            f" {'nothing left' if not problems else 'NOT ALL REMOVED, see below'}."
        )
        for line in [f"killed: {k}" for k in res.killed] + problems:
            print(f"  {line}")
        if args.keep:
            print(f"  logs kept in {res.workdir}")
        else:
            shutil.rmtree(res.workdir, ignore_errors=True)
        print(f"total {time.monotonic() - started:.0f} s")
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return code


if __name__ == "__main__":
    sys.exit(main())
