"""Thread operations that span several services (store, runs, checkpointer, streams).

The routes call these so that each multi-step operation has one ordering,
stated here:

- :func:`delete_thread_everywhere`: cancel the thread's active runs and wait
  (bounded) for this process's ones to stop, then delete its runs, its
  checkpoints, and last the thread row. A thread that cannot be found is
  404 before anything is touched; if a step fails the thread row still
  exists, so the delete can be retried.
- :func:`thread_view`: a stored thread plus ``values`` and ``interrupts``
  read from the checkpointer (``values`` is None for a thread with no
  checkpoint yet); ``user_id`` is never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from runlane.exceptions import ConflictError, ThreadNotFoundError
from runlane.runtime.runs.schemas import CancelAction
from runlane.server.services import Services
from runlane.server.state_access import state as read_state

__all__ = [
    "RUN_STOP_TIMEOUT",
    "delete_thread_everywhere",
    "require_thread",
    "thread_view",
    "thread_views",
]

logger = logging.getLogger(__name__)

RUN_STOP_TIMEOUT = 10.0
"""Seconds a thread delete waits for this process's cancelled runs to stop."""


async def require_thread(services: Services, thread_id: str) -> dict[str, Any]:
    """The stored thread, or ThreadNotFoundError (404)."""
    thread = await services.threads.get(thread_id)
    if thread is None:
        raise ThreadNotFoundError(f"no thread has the id {thread_id!r}")
    return thread


async def thread_view(services: Services, thread: dict[str, Any]) -> dict[str, Any]:
    """``thread`` as the API shows it, with its current ``values`` and ``interrupts``."""
    view = {key: value for key, value in thread.items() if key != "user_id"}
    try:
        state = await read_state(services, thread["thread_id"])
    except Exception:
        logger.exception("thread %s: reading its state failed", thread["thread_id"])
        state = None
    values, interrupts = None, {}
    if state and state.get("checkpoint") and state["checkpoint"].get("checkpoint_id"):
        values = state.get("values")
        for task in state.get("tasks") or ():
            if task.get("interrupts"):
                interrupts[task["id"]] = task["interrupts"]
    view["values"] = values
    view["interrupts"] = interrupts
    return view


async def thread_views(services: Services, threads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`thread_view` of each thread, read concurrently, in order."""
    return list(await asyncio.gather(*(thread_view(services, t) for t in threads)))


async def delete_thread_everywhere(services: Services, thread_id: str) -> None:
    """Delete the thread, its runs, their streams and its checkpoints (see module doc)."""
    await require_thread(services, thread_id)
    records = await services.manager.list_by_thread(thread_id, limit=10_000)
    tasks = []
    for record in records:
        if record.is_active:
            await services.manager.cancel(record.run_id, action=CancelAction.interrupt)
            if record.task is not None and not record.task.done():
                tasks.append(record.task)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=RUN_STOP_TIMEOUT)
        if pending:
            logger.warning("thread %s: %d runs still stopping at delete", thread_id, len(pending))
    for _ in range(3):  # a run admitted meanwhile is caught by the next pass
        if not records:
            break
        for record in records:
            with contextlib.suppress(ConflictError):  # admitted meanwhile: the next pass
                await services.manager.delete(record.run_id)
            await services.bridge.cleanup(record.run_id)
        records = await services.manager.list_by_thread(thread_id, limit=10_000)
    await services.checkpointer.adelete_thread(thread_id)
    await services.events.delete_by_thread(thread_id)
    if not await services.threads.delete(thread_id):
        raise ThreadNotFoundError(f"no thread has the id {thread_id!r}")
