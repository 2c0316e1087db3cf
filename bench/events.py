"""Event store benchmark: ``put_batch`` throughput on SQLite and Postgres, next to a bare insert.

Run ``python bench/events.py`` (about a minute) or ``--quick`` (seconds). See
``bench/README.md``.

For each database, batch size (1, 10, 100) and writer count (1 or 4) it
times ``SqlEventStore.put_batch`` writing a fixed number of events, and the
same rows written by a *bare insert*: one transaction per batch holding only
the ``INSERT`` of the rows, with seqs numbered by the client (no counter
row, no validation, no truncation check, no retry wrapper). The ratio prices
what the store adds, mostly the seq reservation. With 4 writers, each writes
to its own thread ("own") or all four share one thread ("one"), where the
store queues them on the thread's counter row.

Every figure is the best of ``--repeat`` runs, each on freshly emptied tables.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from runlane.db.engine import create_engine
from runlane.db.migrate import upgrade_async
from runlane.db.tables import event_seq, run_events
from runlane.runtime.events import NewEvent, SqlEventStore

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
CONTENT = {
    "type": "ai",
    "content": "The answer is forty-two, as computed by the deep thought tool. " * 2,
    "usage": {"input_tokens": 120, "output_tokens": 18, "total_tokens": 138},
}

perf = time.perf_counter


def make_events(thread_id: str, count: int) -> list[NewEvent]:
    return [
        NewEvent(
            thread_id=thread_id,
            run_id=f"{thread_id}-run",
            event_type="ai_message",
            category="message",
            content=CONTENT,
            metadata={"i": index, "model": "fake"},
        )
        for index in range(count)
    ]


async def run_store(engine: AsyncEngine, batch: int, threads: list[str], per_writer: int) -> float:
    store = SqlEventStore(engine)
    work = [make_events(thread_id, per_writer) for thread_id in threads]

    async def writer(events: list[NewEvent]) -> None:
        for start in range(0, len(events), batch):
            await store.put_batch(events[start : start + batch])

    started = perf()
    await asyncio.gather(*(writer(events) for events in work))
    return perf() - started


async def run_bare(engine: AsyncEngine, batch: int, threads: list[str], per_writer: int) -> float:
    counters = {thread_id: itertools.count(1) for thread_id in set(threads)}
    content = orjson.dumps(CONTENT).decode()
    work = [make_events(thread_id, per_writer) for thread_id in threads]

    async def writer(events: list[NewEvent]) -> None:
        for start in range(0, len(events), batch):
            now = datetime.now(UTC)
            rows = [
                {
                    "thread_id": event.thread_id,
                    "seq": next(counters[event.thread_id]),
                    "run_id": event.run_id,
                    "event_type": event.event_type,
                    "category": event.category,
                    "content": content,
                    "metadata": event.metadata,
                    "user_id": None,
                    "singleton": False,
                    "created_at": now,
                }
                for event in events[start : start + batch]
            ]
            async with engine.begin() as conn:
                await conn.execute(insert(run_events), rows)

    started = perf()
    await asyncio.gather(*(writer(events) for events in work))
    return perf() - started


async def empty(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(run_events))
        await conn.execute(delete(event_seq))


Runner = Callable[[AsyncEngine, int, list[str], int], Awaitable[float]]


async def best_rate(
    engine: AsyncEngine,
    runner: Runner,
    batch: int,
    threads: list[str],
    per_writer: int,
    repeat: int,
) -> float:
    best = 0.0
    for _ in range(repeat):
        await empty(engine)
        seconds = await runner(engine, batch, threads, per_writer)
        best = max(best, len(threads) * per_writer / seconds)
    return best


async def bench_database(name: str, url: str, args: argparse.Namespace) -> None:
    await upgrade_async(url)
    engine = create_engine(url, pool_size=8, max_overflow=0)
    try:
        for batch in (1, 10, 100):
            total = args.events * batch if batch < 100 else args.events * 50
            for writers, mode in ((1, "-"), (4, "own"), (4, "one")):
                threads = (
                    [f"t{index}" for index in range(writers)] if mode != "one" else ["t0"] * writers
                )
                per_writer = max(batch, total // writers // batch * batch)
                bare = await best_rate(engine, run_bare, batch, threads, per_writer, args.repeat)
                store = await best_rate(engine, run_store, batch, threads, per_writer, args.repeat)
                print(
                    f"{name:<9}{batch:>6}{writers:>8}  {mode:<7}{writers * per_writer:>8}"
                    f"{bare:>14,.0f}{store:>14,.0f}{store / bare:>8.0%}",
                    flush=True,
                )
    finally:
        await engine.dispose()


async def main_async(args: argparse.Namespace) -> None:
    print(f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}")
    print(
        f"{'database':<9}{'batch':>6}{'writers':>8}  {'thread':<7}{'events':>8}"
        f"{'bare ev/s':>14}{'store ev/s':>14}{'ratio':>8}"
    )
    with tempfile.TemporaryDirectory() as directory:
        await bench_database("sqlite", f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}", args)
    if args.no_postgres:
        return
    name = f"runlane_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(args.pg_admin)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = args.pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            await bench_database("postgres", f"{base}/{name}", args)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few events, one run each")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is shown)")
    parser.add_argument(
        "--events", type=int, default=400, help="batches of each size (x50 for 100)"
    )
    parser.add_argument(
        "--pg-admin", default=PG_ADMIN, help="Postgres DSN to create a database from"
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.events = 1, 40
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
