"""Conversions between run rows as the store interface speaks them and SQL values.

The interface (:mod:`runlane.runtime.runs.store.base`) passes timestamps as
ISO-8601 strings with an offset and JSON columns as dicts. The database holds
timezone-aware ``datetime`` values in UTC. SQLite keeps no offset at all, so
every value is converted to UTC before it is written and a naive value read
back is UTC by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import orjson

from runlane.exceptions import InvalidPayloadError
from runlane.runtime.runs.schemas import parse_status
from runlane.runtime.runs.store.base import ROW_FIELDS, check_fields, row_defaults

__all__ = [
    "JSON_FIELDS",
    "TIME_FIELDS",
    "column_value",
    "json_value",
    "new_row_values",
    "now_utc",
    "row_to_dict",
    "to_iso",
    "to_utc",
]

JSON_FIELDS = frozenset({"metadata", "kwargs", "token_usage_by_model"})
TIME_FIELDS = frozenset({"lease_expires_at", "cancel_requested_at", "created_at", "updated_at"})


def now_utc() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime | str | None) -> datetime | None:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def to_iso(value: datetime | None) -> str | None:
    """``value`` in UTC as an ISO-8601 string with its ``+00:00`` offset."""
    utc = to_utc(value)
    return None if utc is None else utc.isoformat()


def json_value(name: str, value: Any) -> Any:
    """``value`` reduced to plain JSON types, or InvalidPayloadError.

    Called before any statement runs, so a bad value writes nothing. orjson
    is the same encoder the memory store and the engine use, so every backend
    accepts and rejects the same values.
    """
    try:
        return orjson.loads(orjson.dumps({} if value is None else value))
    except TypeError as exc:
        raise InvalidPayloadError(f"Run field {name!r} is not JSON-serialisable: {exc}") from None


def column_value(name: str, value: Any) -> Any:
    """One interface value as the column ``name`` stores it."""
    if name in JSON_FIELDS:
        return json_value(name, value)
    if name in TIME_FIELDS:
        return to_utc(value)
    if name == "status":
        return parse_status(value if value is not None else "pending").value
    if name == "queued":
        return bool(value)
    if isinstance(value, Enum):
        return value.value
    return value


def new_row_values(run_id: str, thread_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Column values of a whole new row: defaults, then ``fields``, validated.

    Raises TypeError for an unknown key, InvalidStatusError for an unknown
    status and InvalidPayloadError for a value JSON cannot hold.
    """
    check_fields(fields)
    row = row_defaults()
    row.update(fields)
    values = {name: column_value(name, row[name]) for name in row}
    values["run_id"] = run_id
    values["thread_id"] = thread_id
    values["created_at"] = to_utc(fields.get("created_at")) or now_utc()
    values["updated_at"] = to_utc(fields.get("updated_at")) or values["created_at"]
    return values


def row_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A database row as the interface returns it: ``ROW_FIELDS`` keys, in order."""
    out: dict[str, Any] = {}
    for name in ROW_FIELDS:
        value = row[name]
        if name in TIME_FIELDS:
            value = to_iso(value)
        elif name == "queued":
            value = bool(value)
        elif name in JSON_FIELDS and value is None:
            value = {}
        out[name] = value
    return out
