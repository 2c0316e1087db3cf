"""Request bodies of the assistants and threads routes, as the SDK sends them.

Every model forbids unknown keys, so a field runlane does not know is a 422
naming it. Fields the SDK can send but runlane does not implement are
declared, and :func:`reject_unsupported` turns their presence into a 422
naming them too: nothing is silently dropped. A key the SDK leaves out (it
drops ``None`` values) takes the reference server's default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runlane.exceptions import InvalidInputError

__all__ = [
    "AssistantCount",
    "AssistantCreate",
    "AssistantLatest",
    "AssistantPatch",
    "AssistantSearch",
    "AssistantVersions",
    "Body",
    "ThreadCount",
    "ThreadCreate",
    "ThreadHistory",
    "ThreadPatch",
    "ThreadPrune",
    "ThreadSearch",
    "ThreadStateAtCheckpoint",
    "ThreadStateUpdate",
    "reject_unsupported",
]

JsonObject = dict[str, Any]


class Body(BaseModel):
    """Base of every request body: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


def reject_unsupported(body: BaseModel, *fields: str) -> None:
    """InvalidInputError (422) naming each of ``fields`` the client set to a value."""
    used = [
        name for name in fields if name in body.model_fields_set and getattr(body, name) is not None
    ]
    if used:
        raise InvalidInputError(
            f"runlane does not support {', '.join(used)}; remove "
            f"{'this field' if len(used) == 1 else 'these fields'} from the request."
        )


# --- assistants ---------------------------------------------------------------

AssistantSortKey = Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"]


class AssistantCreate(Body):
    graph_id: str
    assistant_id: str | None = None
    config: JsonObject | None = None
    context: JsonObject | None = None
    metadata: JsonObject | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    name: str | None = None
    description: str | None = None


class AssistantPatch(Body):
    graph_id: str | None = None
    config: JsonObject | None = None
    context: JsonObject | None = None
    metadata: JsonObject | None = None
    name: str | None = None
    description: str | None = None


class AssistantSearch(Body):
    metadata: JsonObject | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(default=10, ge=0, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: AssistantSortKey = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[str] | None = None


class AssistantCount(Body):
    metadata: JsonObject | None = None
    graph_id: str | None = None
    name: str | None = None


class AssistantVersions(Body):
    metadata: JsonObject | None = None
    limit: int = Field(default=10, ge=0, le=1000)
    offset: int = Field(default=0, ge=0)


class AssistantLatest(Body):
    version: int = Field(ge=1)


# --- threads --------------------------------------------------------------------

ThreadStatusName = Literal["idle", "busy", "interrupted", "error"]
ThreadSortKey = Literal["thread_id", "status", "created_at", "updated_at"]


class ThreadCreate(Body):
    thread_id: str | None = None
    metadata: JsonObject | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    supersteps: list[Any] | None = None
    ttl: Any = None


class ThreadPatch(Body):
    metadata: JsonObject | None = None
    ttl: Any = None


class ThreadSearch(Body):
    metadata: JsonObject | None = None
    values: JsonObject | None = None
    ids: list[str] | None = None
    status: ThreadStatusName | None = None
    limit: int = Field(default=10, ge=0, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: ThreadSortKey = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[str] | None = None
    extract: JsonObject | None = None


class ThreadCount(Body):
    metadata: JsonObject | None = None
    values: JsonObject | None = None
    status: ThreadStatusName | None = None


class ThreadPrune(Body):
    thread_ids: list[str]
    strategy: Literal["delete", "keep_latest"] = "delete"


class ThreadStateAtCheckpoint(Body):
    checkpoint: JsonObject
    subgraphs: bool = False
    select: list[str] | None = None


class ThreadStateUpdate(Body):
    values: Any = None
    as_node: str | None = None
    checkpoint_id: str | None = None
    checkpoint: JsonObject | None = None


class ThreadHistory(Body):
    limit: int = Field(default=10, ge=1, le=1000)
    before: JsonObject | str | None = None
    metadata: JsonObject | None = None
    checkpoint: JsonObject | None = None
    select: list[str] | None = None
