"""MemoryAssistantStore: the assistant store of a single process without a database.

It gives every guarantee of :mod:`runlane.runtime.assistants.base` within one
process: no method awaits between its check and its write. Assistants live as
long as the process.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from runlane.exceptions import AssistantExistsError
from runlane.runtime.assistants.base import (
    ASSISTANT_FIELDS,
    ASSISTANT_SORT_KEYS,
    VERSION_FIELDS,
    AssistantSortKey,
    AssistantStore,
    check_assistant_id,
    check_changes,
    check_version,
    put_fields,
    updated_fields,
    version_fields,
)
from runlane.runtime.metadata import check_filter, check_page, contains
from runlane.runtime.threads.base import IfExists, SortOrder, check_sort

__all__ = ["MemoryAssistantStore"]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _sort_key(assistant: dict[str, Any], sort_by: str) -> tuple[Any, str]:
    value = assistant[sort_by]
    if sort_by in ("created_at", "updated_at"):
        value = datetime.fromisoformat(value)
    elif value is None:
        value = ""
    return value, assistant["assistant_id"]


class MemoryAssistantStore(AssistantStore):
    """Assistants and their versions in dicts, with the same contract as the SQL store."""

    def __init__(self) -> None:
        self._assistants: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, dict[int, dict[str, Any]]] = {}

    def _insert(self, assistant_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = _now()
        values = {"assistant_id": assistant_id, **fields, "version": 1, "created_at": now}
        self._versions[assistant_id] = {1: values}
        values = {**values, "updated_at": now}
        assistant = {name: values[name] for name in ASSISTANT_FIELDS}
        self._assistants[assistant_id] = assistant
        return copy.deepcopy(assistant)

    def _write_version(self, assistant_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        versions = self._versions[assistant_id]
        number = max(versions) + 1
        now = _now()
        versions[number] = {
            "assistant_id": assistant_id,
            **fields,
            "version": number,
            "created_at": now,
        }
        assistant = self._assistants[assistant_id]
        assistant.update(copy.deepcopy(fields), version=number, updated_at=now)
        return copy.deepcopy(assistant)

    async def put(self, assistant: Mapping[str, Any]) -> dict[str, Any]:
        assistant_id, fields = put_fields(assistant)
        current = self._assistants.get(assistant_id)
        if current is None:
            return self._insert(assistant_id, fields)
        if all(current[name] == value for name, value in fields.items()):
            return copy.deepcopy(current)
        return self._write_version(assistant_id, fields)

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
        assistant_id = check_assistant_id(
            str(uuid.uuid4()) if assistant_id is None else assistant_id
        )
        fields = version_fields(
            graph_id=graph_id,
            config=config,
            context=context,
            metadata=metadata,
            name=name,
            description=description,
        )
        existing = self._assistants.get(assistant_id)
        if existing is not None:
            if if_exists == "raise":
                raise AssistantExistsError(f"Assistant {assistant_id} already exists.")
            return copy.deepcopy(existing)
        return self._insert(assistant_id, fields)

    async def get(self, assistant_id: str) -> dict[str, Any] | None:
        assistant = self._assistants.get(assistant_id)
        return None if assistant is None else copy.deepcopy(assistant)

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
        changes = {
            "graph_id": graph_id,
            "config": config,
            "context": context,
            "metadata": metadata,
            "name": name,
            "description": description,
        }
        check_changes(changes)
        current = self._assistants.get(assistant_id)
        if current is None:
            return None
        return self._write_version(assistant_id, updated_fields(current, changes))

    async def delete(self, assistant_id: str) -> bool:
        self._versions.pop(assistant_id, None)
        return self._assistants.pop(assistant_id, None) is not None

    def _matching(
        self, graph_id: str | None, name: str | None, metadata: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        want = check_filter(metadata)
        needle = None if name is None else name.lower()
        return [
            assistant
            for assistant in self._assistants.values()
            if (graph_id is None or assistant["graph_id"] == graph_id)
            and (needle is None or needle in (assistant["name"] or "").lower())
            and (want is None or contains(assistant["metadata"], want))
        ]

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
        check_sort(sort_by, sort_order, ASSISTANT_SORT_KEYS)
        check_page(limit, offset)
        found = self._matching(graph_id, name, metadata)
        found.sort(
            key=lambda assistant: _sort_key(assistant, sort_by), reverse=sort_order == "desc"
        )
        return [copy.deepcopy(assistant) for assistant in found[offset : offset + limit]]

    async def count(
        self,
        *,
        graph_id: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        return len(self._matching(graph_id, name, metadata))

    async def versions(
        self,
        assistant_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        want = check_filter(metadata)
        check_page(limit, offset)
        versions = self._versions.get(assistant_id, {})
        found = [
            versions[number]
            for number in sorted(versions, reverse=True)
            if want is None or contains(versions[number]["metadata"], want)
        ]
        return [
            {name: copy.deepcopy(version[name]) for name in VERSION_FIELDS}
            for version in found[offset : offset + limit]
        ]

    async def set_latest(self, assistant_id: str, version: int) -> dict[str, Any] | None:
        check_version(version)
        assistant = self._assistants.get(assistant_id)
        chosen = self._versions.get(assistant_id, {}).get(version)
        if assistant is None or chosen is None:
            return None
        fields = {name: copy.deepcopy(chosen[name]) for name in chosen if name != "created_at"}
        assistant.update(fields, updated_at=_now())
        return copy.deepcopy(assistant)
