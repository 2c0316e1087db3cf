"""Thread state as the API returns it, over a compiled graph and a checkpointer.

Every function here returns plain JSON values (ThreadState dicts:
``values, next, checkpoint, metadata, created_at, parent_checkpoint, tasks,
interrupts``), encoded once through :mod:`runlane.executor.serialize`. The
config each one builds addresses exactly one thread's root namespace: the
caller's thread id is the only identity that reaches the checkpointer.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointMetadata
from langgraph.pregel import Pregel
from langgraph.types import StateSnapshot

from runlane.executor.serialize import to_jsonable

__all__ = [
    "checkpoint_dict",
    "copy_thread",
    "delete_thread_checkpoints",
    "empty_state",
    "get_history",
    "get_state",
    "snapshot_to_dict",
    "thread_config",
    "update_state",
]

Graph = Pregel[Any, Any, Any, Any]


def thread_config(
    thread_id: str,
    checkpoint_id: str | None = None,
    *,
    checkpoint_map: dict[str, Any] | None = None,
) -> RunnableConfig:
    """The config addressing ``thread_id``'s root namespace (at ``checkpoint_id``)."""
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    if checkpoint_map:
        configurable["checkpoint_map"] = checkpoint_map
    return {"configurable": configurable}


def checkpoint_dict(config: RunnableConfig | None) -> dict[str, Any] | None:
    """The API's Checkpoint object for a checkpoint config (None for None)."""
    if not config:
        return None
    conf = config.get("configurable") or {}
    return {
        "thread_id": conf.get("thread_id"),
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "checkpoint_id": conf.get("checkpoint_id"),
        "checkpoint_map": conf.get("checkpoint_map"),
    }


def _error_text(error: Exception | None) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"


def _snapshot(snapshot: StateSnapshot) -> dict[str, Any]:
    tasks = []
    for task in snapshot.tasks:
        nested = task.state
        tasks.append(
            {
                "id": task.id,
                "name": task.name,
                "path": task.path,
                "error": _error_text(task.error),
                "interrupts": list(task.interrupts),
                "checkpoint": None
                if nested is None or isinstance(nested, StateSnapshot)
                else checkpoint_dict(nested),
                "state": _snapshot(nested) if isinstance(nested, StateSnapshot) else None,
                "result": task.result,
            }
        )
    return {
        "values": snapshot.values,
        "next": list(snapshot.next),
        "checkpoint": checkpoint_dict(snapshot.config),
        "metadata": snapshot.metadata or {},
        "created_at": snapshot.created_at,
        "parent_checkpoint": checkpoint_dict(snapshot.parent_config),
        "tasks": tasks,
        "interrupts": list(snapshot.interrupts),
    }


def snapshot_to_dict(snapshot: StateSnapshot) -> dict[str, Any]:
    """A StateSnapshot as the API's ThreadState (JSON values only)."""
    return cast(dict[str, Any], to_jsonable(_snapshot(snapshot)))


def empty_state(thread_id: str) -> dict[str, Any]:
    """The ThreadState of a thread without checkpoints."""
    return {
        "values": {},
        "next": [],
        "checkpoint": None,
        "metadata": {},
        "created_at": None,
        "parent_checkpoint": None,
        "tasks": [],
        "interrupts": [],
    }


async def get_state(
    graph: Graph,
    thread_id: str,
    *,
    checkpoint_id: str | None = None,
    subgraphs: bool = False,
) -> dict[str, Any]:
    """The thread's state (at ``checkpoint_id``), or :func:`empty_state`."""
    snapshot = await graph.aget_state(thread_config(thread_id, checkpoint_id), subgraphs=subgraphs)
    if not snapshot.config or not snapshot.created_at:
        return empty_state(thread_id)
    return snapshot_to_dict(snapshot)


async def get_history(
    graph: Graph,
    thread_id: str,
    *,
    limit: int = 10,
    before: str | None = None,
    metadata: dict[str, Any] | None = None,
    checkpoint_id: str | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` states, newest first, older than checkpoint ``before`` if given."""
    states = [
        _snapshot(snapshot)
        async for snapshot in graph.aget_state_history(
            thread_config(thread_id, checkpoint_id),
            filter=metadata or None,
            before=thread_config(thread_id, before) if before else None,
            limit=limit,
        )
    ]
    return cast(list[dict[str, Any]], to_jsonable(states))


async def update_state(
    graph: Graph,
    thread_id: str,
    values: Any,
    *,
    as_node: str | None = None,
    checkpoint_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``values`` as if ``as_node`` produced them; returns ``{"checkpoint": ...}``.

    ``metadata`` goes into the new checkpoint's metadata (the executor
    records the ``graph_id`` there, as runs do).
    """
    config = thread_config(thread_id, checkpoint_id)
    if metadata:
        config["metadata"] = dict(metadata)
    config = await graph.aupdate_state(config, values, as_node=as_node)
    return {"checkpoint": to_jsonable(checkpoint_dict(config))}


async def delete_thread_checkpoints(saver: BaseCheckpointSaver[Any], thread_id: str) -> None:
    """Delete every checkpoint and write of the thread, in every namespace."""
    await saver.adelete_thread(thread_id)


async def copy_thread(saver: BaseCheckpointSaver[Any], source: str, target: str) -> None:
    """Copy every checkpoint (all namespaces) and pending write of ``source`` to ``target``.

    Uses the saver's ``acopy_thread`` when it has one; otherwise replays the
    checkpoints oldest first through ``aput``/``aput_writes`` (the SQLite
    and Postgres savers implement no copy of their own).
    """
    try:
        await saver.acopy_thread(source, target)
        return
    except NotImplementedError:
        pass
    tuples = [t async for t in saver.alist({"configurable": {"thread_id": source}})]
    for item in reversed(tuples):
        conf = item.config["configurable"]
        parent = (item.parent_config or {}).get("configurable", {}).get("checkpoint_id")
        put_config: RunnableConfig = {
            "configurable": {
                "thread_id": target,
                "checkpoint_ns": conf.get("checkpoint_ns", ""),
                **({"checkpoint_id": parent} if parent else {}),
            }
        }
        metadata = dict(item.metadata)
        if "thread_id" in metadata:
            metadata["thread_id"] = target
        new_config = await saver.aput(
            put_config,
            item.checkpoint,
            cast(CheckpointMetadata, metadata),
            dict(item.checkpoint["channel_versions"]),
        )
        by_task: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for task_id, channel, value in item.pending_writes or ():
            by_task[task_id].append((channel, value))
        for task_id, writes in by_task.items():
            await saver.aput_writes(new_config, writes, task_id)
