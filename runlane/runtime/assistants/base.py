"""The assistant store: assistants and every version of each.

An assistant is a plain ``dict`` with the keys of :data:`ASSISTANT_FIELDS`,
shaped like the API's Assistant object: ``config``, ``context`` and
``metadata`` are JSON objects, ``created_at`` / ``updated_at`` ISO-8601
strings in UTC. ``version`` is the *current* version, the one whose fields the
assistant shows. :meth:`AssistantStore.versions` returns version dicts
(:data:`VERSION_FIELDS`: the same keys without ``updated_at``).

Guarantees every backend gives (``tests/runtime/test_assistant_store_contract.py``
checks each one on memory, SQLite and Postgres):

- **Versions.** :meth:`~AssistantStore.create` writes version 1;
  :meth:`~AssistantStore.update` writes version ``max + 1`` (even after
  :meth:`~AssistantStore.set_latest` went back) and makes it current. A version,
  once written, never changes. Version writes on one assistant are serialised.
- **Idempotent startup upsert.** :meth:`~AssistantStore.put` writes nothing
  when the current version already has exactly the given fields.
- **Validation before writing.** A bad id, a missing graph id or a value JSON
  cannot hold raise an :class:`~runlane.exceptions.InvalidInputError` subclass
  and write nothing.
- **Metadata.** ``update`` merges metadata at the top level (a given key
  replaces its whole value); the other fields are replaced when given (not
  None). Filters use containment (:mod:`runlane.runtime.metadata`); ``name``
  filters by case-insensitive substring.
- **Ordering.** Searches sort by ``sort_by`` (a missing name sorts as ``""``)
  and break ties by ``assistant_id`` in the same direction; versions are
  newest first.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, Literal, get_args

from runlane.exceptions import InvalidInputError
from runlane.runtime.metadata import json_document
from runlane.runtime.threads.base import IfExists, SortOrder

__all__ = [
    "ASSISTANT_FIELDS",
    "ASSISTANT_SORT_KEYS",
    "VERSIONED_FIELDS",
    "VERSION_FIELDS",
    "AssistantSortKey",
    "AssistantStore",
    "check_assistant_id",
    "check_changes",
    "check_version",
    "put_fields",
    "updated_fields",
    "version_fields",
]

AssistantSortKey = Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"]

ASSISTANT_FIELDS = (
    "assistant_id",
    "graph_id",
    "config",
    "context",
    "created_at",
    "updated_at",
    "metadata",
    "version",
    "name",
    "description",
)
"""Keys of every assistant a store returns, in this order."""
VERSION_FIELDS = tuple(name for name in ASSISTANT_FIELDS if name != "updated_at")
"""Keys of every version :meth:`AssistantStore.versions` returns, in this order."""
VERSIONED_FIELDS = ("graph_id", "config", "context", "metadata", "name", "description")
"""The fields one version fixes."""
ASSISTANT_SORT_KEYS: tuple[str, ...] = get_args(AssistantSortKey)
_STORE_ASSIGNED = frozenset({"created_at", "updated_at", "version"})


def check_assistant_id(assistant_id: object) -> str:
    """``assistant_id`` if it is a string of 1 to 128 characters, else InvalidInputError."""
    if not isinstance(assistant_id, str) or not 1 <= len(assistant_id) <= 128:
        raise InvalidInputError(f"Invalid assistant id {assistant_id!r}: use 1 to 128 characters.")
    return assistant_id


def check_version(version: object) -> int:
    """``version`` if it is a positive integer, else InvalidInputError."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError(f"Invalid assistant version {version!r}: use an integer >= 1.")
    return version


def _text(name: str, value: object, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise InvalidInputError(f"Assistant {name} must be a {'non-empty ' * required}string.")
    return value


def version_fields(
    *,
    graph_id: object,
    config: object,
    context: object,
    metadata: object,
    name: object,
    description: object,
) -> dict[str, Any]:
    """The :data:`VERSIONED_FIELDS` of a new version, validated (None objects mean ``{}``)."""
    graph = _text("graph_id", graph_id, required=True)
    if graph is not None and len(graph) > 255:
        raise InvalidInputError("Assistant graph_id must be at most 255 characters.")
    return {
        "graph_id": graph,
        "config": json_document("Assistant config", config),
        "context": json_document("Assistant context", context),
        "metadata": json_document("Assistant metadata", metadata),
        "name": _text("name", name),
        "description": _text("description", description),
    }


def put_fields(assistant: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The id and versioned fields of a :meth:`AssistantStore.put` argument.

    Raises TypeError for a key that is not an assistant field; ``created_at``,
    ``updated_at`` and ``version`` are accepted and ignored (the store assigns them).
    """
    unknown = set(assistant) - set(ASSISTANT_FIELDS)
    if unknown:
        raise TypeError(f"unknown assistant fields: {', '.join(sorted(unknown))}")
    fields = {name: assistant.get(name) for name in VERSIONED_FIELDS}
    return check_assistant_id(assistant.get("assistant_id")), version_fields(**fields)


def updated_fields(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of the version an update writes: ``current`` with the non-None ``changes``.

    ``changes["metadata"]`` is merged into the current metadata at the top level.
    """
    fields = {name: current[name] for name in VERSIONED_FIELDS}
    for name, value in changes.items():
        if value is not None:
            fields[name] = value
    if changes.get("metadata") is not None:
        fields["metadata"] = {**current["metadata"], **changes["metadata"]}
    return version_fields(**fields)


def check_changes(changes: Mapping[str, Any]) -> None:
    """Validate the values of an update, whether or not the assistant exists."""
    blank = {"graph_id": "-", "config": {}, "context": {}, "metadata": {}}
    updated_fields({**blank, "name": None, "description": None}, changes)


class AssistantStore(abc.ABC):
    """Durable storage of assistants. See the module docstring for guarantees."""

    @abc.abstractmethod
    async def put(self, assistant: Mapping[str, Any]) -> dict[str, Any]:
        """Make ``assistant`` exist with exactly its versioned fields; return it.

        ``assistant`` needs ``assistant_id`` and ``graph_id``; a missing
        config, context or metadata means ``{}``, a missing name or
        description None. A new assistant gets version 1; an existing one is
        returned unchanged when its current version has these fields, else a
        new version with them is written and made current (metadata is
        replaced, not merged). Used at startup for each graph's default assistant.
        """

    @abc.abstractmethod
    async def create(
        self,
        *,
        assistant_id: str | None,
        graph_id: str,
        config: dict[str, Any],
        context: dict[str, Any],
        metadata: dict[str, Any],
        name: str | None,
        description: str | None,
        if_exists: IfExists = "raise",
    ) -> dict[str, Any]:
        """Insert an assistant at version 1 (a new uuid4 id when ``assistant_id`` is None).

        If the id exists: ``if_exists="raise"`` raises
        :class:`~runlane.exceptions.AssistantExistsError`; ``"do_nothing"``
        returns the existing assistant unchanged.
        """

    @abc.abstractmethod
    async def get(self, assistant_id: str) -> dict[str, Any] | None:
        """The assistant as its current version reads, or None."""

    @abc.abstractmethod
    async def update(
        self,
        assistant_id: str,
        *,
        graph_id: str | None = None,
        config: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any] | None:
        """Write a new version (see :func:`updated_fields`) and make it current.

        Returns the updated assistant, or None when it does not exist.
        """

    @abc.abstractmethod
    async def delete(self, assistant_id: str) -> bool:
        """Remove the assistant and all its versions; False if there was none."""

    @abc.abstractmethod
    async def search(
        self,
        *,
        graph_id: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        sort_by: AssistantSortKey = "created_at",
        sort_order: SortOrder = "desc",
    ) -> list[dict[str, Any]]:
        """Assistants matching every given filter, sorted, one page of them."""

    @abc.abstractmethod
    async def count(
        self,
        *,
        graph_id: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """How many assistants :meth:`search` with the same filters would find in all."""

    @abc.abstractmethod
    async def versions(
        self,
        assistant_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """The assistant's versions, newest first (``[]`` when it does not exist)."""

    @abc.abstractmethod
    async def set_latest(self, assistant_id: str, version: int) -> dict[str, Any] | None:
        """Make ``version`` current; the assistant, or None if it or the version is missing."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The default does nothing."""
