"""Conversions between store rows (dicts) and RunRecords."""

from __future__ import annotations

from typing import Any

from runlane.runtime.runs.schemas import (
    CancelAction,
    DisconnectMode,
    MultitaskStrategy,
    RunRecord,
    RunStatus,
)
from runlane.runtime.runs.store.base import ROW_FIELDS

__all__ = ["record_from_row", "row_from_record"]

_PLAIN_FIELDS = tuple(
    name
    for name in ROW_FIELDS
    if name
    not in {
        "status",
        "on_disconnect",
        "multitask_strategy",
        "cancel_action",
        "cancel_requested_at",
        "metadata",
        "kwargs",
        "token_usage_by_model",
    }
)


def record_from_row(row: dict[str, Any]) -> RunRecord:
    """A ``store_only`` record from a store row.

    A NULL status reads as ``pending``, a NULL ``on_disconnect`` as ``cancel``
    and a NULL strategy as ``reject``; NULL counters read as zero.
    """
    values: dict[str, Any] = {}
    for name in _PLAIN_FIELDS:
        if row.get(name) is not None:
            values[name] = row[name]
    return RunRecord(
        **values,
        status=RunStatus(row.get("status") or RunStatus.pending),
        on_disconnect=DisconnectMode(row.get("on_disconnect") or DisconnectMode.cancel),
        multitask_strategy=row.get("multitask_strategy") or MultitaskStrategy.reject.value,
        cancel_action=CancelAction(row["cancel_action"]) if row.get("cancel_action") else None,
        metadata=dict(row.get("metadata") or {}),
        kwargs=dict(row.get("kwargs") or {}),
        token_usage_by_model=dict(row.get("token_usage_by_model") or {}),
        store_only=True,
    )


def row_from_record(record: RunRecord) -> dict[str, Any]:
    """Every row field of ``record`` except ``run_id`` and ``thread_id``."""
    row = {name: getattr(record, name) for name in _PLAIN_FIELDS}
    del row["run_id"], row["thread_id"]
    row.update(
        status=record.status.value,
        on_disconnect=record.on_disconnect.value,
        multitask_strategy=record.multitask_strategy,
        cancel_action=record.cancel_action.value if record.cancel_action else None,
        metadata=record.metadata,
        kwargs=record.kwargs,
        token_usage_by_model=record.token_usage_by_model,
    )
    return row
