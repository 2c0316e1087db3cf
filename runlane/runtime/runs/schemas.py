"""Run lifecycle vocabulary: statuses, strategies, and the local run record.

Status rules (every store enforces them, see :func:`can_transition`):

- ``pending`` and ``running`` are *active*; the others are *terminal*.
- A terminal status is never overwritten by a different one: ``success`` and
  ``error`` written by a late writer lose. Writing the same status again is
  accepted and changes nothing.
- ``running`` is reachable only from ``pending``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runlane.exceptions import InvalidStatusError, InvalidThreadIdError, UnsupportedStrategyError

__all__ = [
    "ACTIVE_STATUSES",
    "COMPLETION_FIELDS",
    "ORPHAN_RECOVERED",
    "SUPERSEDED_ERROR",
    "TERMINAL_STATUSES",
    "CancelAction",
    "DisconnectMode",
    "MultitaskStrategy",
    "RunRecord",
    "RunStatus",
    "can_transition",
    "parse_status",
    "parse_strategy",
    "validate_thread_id",
]


class RunStatus(StrEnum):
    pending = "pending"
    running = "running"
    success = "success"
    error = "error"
    timeout = "timeout"
    interrupted = "interrupted"


class DisconnectMode(StrEnum):
    cancel = "cancel"
    continue_ = "continue"


class MultitaskStrategy(StrEnum):
    reject = "reject"
    enqueue = "enqueue"
    interrupt = "interrupt"
    rollback = "rollback"


class CancelAction(StrEnum):
    interrupt = "interrupt"
    rollback = "rollback"


ACTIVE_STATUSES = frozenset({RunStatus.pending, RunStatus.running})
TERMINAL_STATUSES = frozenset(set(RunStatus) - ACTIVE_STATUSES)

SUPERSEDED_ERROR = "Cancelled by a newer run on the same thread."
"""``error`` of a run ended by a newer run's interrupt or rollback strategy."""

ORPHAN_RECOVERED = "orphan_recovered"
"""``stop_reason`` of a run ended because the process that owned it died."""

COMPLETION_FIELDS = (
    "total_input_tokens",
    "total_output_tokens",
    "total_tokens",
    "llm_call_count",
    "lead_agent_tokens",
    "subagent_tokens",
    "middleware_tokens",
    "token_usage_by_model",
    "message_count",
    "first_human_message",
    "last_ai_message",
)
"""Statistics written once at the end of a run by ``update_run_completion``."""

_THREAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_thread_id(thread_id: object) -> str:
    """Return ``thread_id`` if it is well formed, else raise InvalidThreadIdError."""
    if not isinstance(thread_id, str) or not _THREAD_ID.fullmatch(thread_id):
        raise InvalidThreadIdError(
            f"Invalid thread id {thread_id!r}: use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_'."
        )
    return thread_id


def parse_status(status: object) -> RunStatus:
    """Return ``status`` as a RunStatus, else raise InvalidStatusError."""
    if isinstance(status, str) and status in RunStatus._value2member_map_:
        return RunStatus(status)
    raise InvalidStatusError(f"Unknown run status {status!r}: use one of {', '.join(RunStatus)}.")


def parse_strategy(strategy: object) -> MultitaskStrategy:
    """Return ``strategy`` as a MultitaskStrategy, else raise UnsupportedStrategyError."""
    if isinstance(strategy, str) and strategy in MultitaskStrategy._value2member_map_:
        return MultitaskStrategy(strategy)
    raise UnsupportedStrategyError(
        f"Unknown multitask strategy {strategy!r}: use one of {', '.join(MultitaskStrategy)}."
    )


def can_transition(current: RunStatus | str | None, new: RunStatus | str) -> bool:
    """Whether a stored run in ``current`` may be moved to ``new``.

    ``None`` (a row written without a status) counts as ``pending``.
    """
    cur = RunStatus.pending if current is None else RunStatus(current)
    nxt = RunStatus(new)
    if cur == nxt:
        return True
    if cur in TERMINAL_STATUSES:
        return False
    if nxt == RunStatus.running:
        return cur == RunStatus.pending
    return nxt != RunStatus.pending


@dataclass(eq=False)
class RunRecord:
    """One run as this process sees it.

    The store row is the durable truth. A record created here also carries the
    process-local controls (``task``, ``abort_event``); a record read back from
    the store has ``store_only=True`` and no controls that do anything.
    """

    run_id: str
    thread_id: str
    assistant_id: str | None = None
    user_id: str | None = None
    status: RunStatus = RunStatus.pending
    on_disconnect: DisconnectMode = DisconnectMode.cancel
    multitask_strategy: str = MultitaskStrategy.reject.value
    metadata: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None
    error: str | None = None
    stop_reason: str | None = None
    created_at: str = ""
    updated_at: str = ""
    queued: bool = False
    owner_id: str | None = None
    lease_expires_at: str | None = None
    cancel_action: CancelAction | None = None
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_tokens: int = 0
    llm_call_count: int = 0
    lead_agent_tokens: int = 0
    subagent_tokens: int = 0
    middleware_tokens: int = 0
    token_usage_by_model: dict[str, Any] = field(default_factory=dict)
    message_count: int = 0
    first_human_message: str | None = None
    last_ai_message: str | None = None
    store_only: bool = False
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    abort_event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    abort_action: CancelAction | None = None
    preempted: tuple[str, ...] = ()
    """Runs this one ended on admission (interrupt/rollback strategies)."""
    unstarted_end_called: bool = False
    """The executor already ended this never-started run's stream (called once only)."""
    fenced: bool = False
    """This process lost the run (its lease lapsed, or another process ended
    or took it): the run's work is stopped and nothing more is written for it."""

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES
