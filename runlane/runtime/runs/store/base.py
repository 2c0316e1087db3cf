"""The run store: the durable, cross-process truth about every run.

A store holds one row per run, as a plain ``dict`` (see :data:`ROW_FIELDS`).
Timestamps cross this interface as ISO-8601 strings with a UTC offset. Lease
arithmetic takes ``now`` from the caller's clock, or, when ``now`` is None,
from the database's own clock (Postgres ``now()``), so that processes on
hosts whose clocks disagree still agree on whose lease has expired. JSON columns
(``metadata``, ``kwargs``, ``token_usage_by_model``) come back as dicts.

Guarantees every backend gives (the contract suite in
``tests/runtime/runs/test_store_contract.py`` checks each one):

- **The lane.** At most one *lane holder* per thread: a row that is
  ``pending`` or ``running`` with ``queued`` false. Other active rows of the
  thread are ``pending`` with ``queued`` true and wait their turn. On SQL this
  is a partial unique index, so it holds across processes.
- **Atomic admission.** :meth:`RunStore.admit` decides and writes in one step;
  two concurrent admissions can never both hold a lane.
- **Guarded status writes.** :meth:`update_status`,
  :meth:`update_run_completion` and :meth:`start_run` apply only transitions
  that :func:`runlane.runtime.runs.schemas.can_transition` allows; a terminal
  status is never overwritten by a different one.
- **Ordering.** Lists are newest first by ``created_at``; rows with equal
  ``created_at`` keep insertion order (older insert first).
- **User scoping.** Reads that take ``user_id`` return only that user's rows
  when it is given; ``None`` means an unscoped, internal read.
- **Ownership.** A lane holder belongs to one process (``owner_id``) with a
  lease; a queued run belongs to nobody until a process claims it
  (:meth:`claim_next`, :meth:`claim_stalled`), so a queued run outlives the
  process that admitted it.
- :meth:`put` is an upsert of a whole snapshot (used to recreate a lost row).
  It does not consult the lane; a SQL store may refuse it with ConflictError.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from runlane.runtime.runs.schemas import CancelAction, MultitaskStrategy

__all__ = ["ROW_FIELDS", "Admission", "LeaseRenewal", "RunStore", "check_fields", "row_defaults"]

ROW_FIELDS = (
    "run_id",
    "thread_id",
    "assistant_id",
    "user_id",
    "status",
    "on_disconnect",
    "multitask_strategy",
    "metadata",
    "kwargs",
    "model_name",
    "error",
    "stop_reason",
    "queued",
    "owner_id",
    "lease_expires_at",
    "cancel_action",
    "cancel_requested_at",
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
    "created_at",
    "updated_at",
)
"""Keys of every row a store returns, in this order."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`RunStore.admit` did.

    ``queued`` is true when the new run waits behind an active run of its
    thread. ``preempted`` lists the runs the new one ended (interrupt and
    rollback strategies), now ``interrupted`` with ``cancel_action`` set.
    """

    queued: bool
    preempted: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    """One run whose lease was renewed, with any cancel requested durably."""

    run_id: str
    cancel_action: CancelAction | None


class RunStore(abc.ABC):
    """Durable storage of run rows. See the module docstring for guarantees."""

    @abc.abstractmethod
    async def put(self, run_id: str, *, thread_id: str, **fields: Any) -> None:
        """Insert or replace the whole row of ``run_id``.

        ``fields`` are keys of :data:`ROW_FIELDS`; missing ones take their
        defaults (zeros, empty dicts, ``None``; ``created_at`` and
        ``updated_at`` default to now). Unknown keys raise TypeError.
        """

    @abc.abstractmethod
    async def get(self, run_id: str, *, user_id: str | None = None) -> dict[str, Any] | None:
        """The row of ``run_id``, or None (also when it belongs to another user)."""

    @abc.abstractmethod
    async def list_by_thread(
        self,
        thread_id: str,
        *,
        user_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """The thread's runs, newest first (ties: insertion order)."""

    @abc.abstractmethod
    async def delete(self, run_id: str) -> bool:
        """Remove the row; False if there was none."""

    @abc.abstractmethod
    async def admit(
        self, run_id: str, *, thread_id: str, strategy: MultitaskStrategy, **fields: Any
    ) -> Admission:
        """Atomically insert a new ``pending`` run under its thread's lane rule.

        - ``reject``: insert as lane holder if the thread has no active run,
          else raise :class:`runlane.exceptions.ConflictError` and write nothing.
        - ``enqueue``: insert as lane holder if the thread has no active run,
          else insert with ``queued`` true, without owner or lease.
        - ``interrupt`` / ``rollback``: end every active run of the thread as
          ``interrupted`` (``cancel_action`` = the strategy, ``error`` saying
          it was superseded), then insert the new run as lane holder; both in
          one transaction.
        """

    @abc.abstractmethod
    async def claim_next(
        self, thread_id: str, *, owner_id: str, ttl: timedelta, now: datetime | None = None
    ) -> dict[str, Any] | None:
        """If the lane is free, make the thread's oldest queued run its holder, for ``owner_id``.

        One atomic step: the run stops being queued and gets ``owner_id`` and a
        lease until ``now + ttl``. Returns the claimed row, or None when the
        lane is held or nothing waits. Two claimers never get the same run.
        """

    @abc.abstractmethod
    async def claim_stalled(
        self, *, owner_id: str, ttl: timedelta, now: datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """:meth:`claim_next` for up to ``limit`` threads whose lane is free but whose queue is not.

        A queue stalls when the process that freed the lane died before it
        claimed the next run, or when an admission raced the lane's release.
        On Postgres, threads another claimer is busy with are skipped
        (``SKIP LOCKED``), never waited for.
        """

    @abc.abstractmethod
    async def start_run(self, run_id: str) -> bool:
        """Move a ``pending`` lane holder to ``running``; False if it is not one."""

    @abc.abstractmethod
    async def update_status(self, run_id: str, status: str, *, error: str | None = None) -> bool:
        """Set the status (and ``error`` when given) if the transition is allowed.

        False when the row is missing or the transition is refused.
        """

    @abc.abstractmethod
    async def update_run_completion(self, run_id: str, *, status: str, **stats: Any) -> bool:
        """Write the final status and completion statistics in one step.

        ``stats`` keys are ``COMPLETION_FIELDS`` plus ``error`` and
        ``stop_reason``. Nothing is written (False) when the row is missing or
        the status transition is refused.
        """

    @abc.abstractmethod
    async def has_active(self, thread_id: str) -> bool:
        """Whether the thread has a ``pending`` or ``running`` run."""

    @abc.abstractmethod
    async def list_orphan_candidates(
        self,
        *,
        now: datetime | None = None,
        before: str | None = None,
        limit: int = 1000,
        include_queued: bool = False,
    ) -> list[dict[str, Any]]:
        """Active lane holders whose lease is missing or expired at ``now``, oldest first.

        Queued runs are not orphans (they have not started; any process may
        claim them) unless ``include_queued``. With ``before``, only rows
        created strictly before it. The list is a hint: :meth:`claim_orphan`
        decides.
        """

    @abc.abstractmethod
    async def claim_orphan(
        self, run_id: str, *, owner_id: str, ttl: timedelta, now: datetime | None = None
    ) -> bool:
        """Take over an active run whose lease is missing or expired at ``now``.

        Atomically sets ``owner_id``, a lease until ``now + ttl`` and
        ``stop_reason="orphan_recovered"``. False when the run is no longer
        active or its owner's lease is still valid (the owner is alive).
        """

    @abc.abstractmethod
    async def renew_leases(
        self, owner_id: str, *, ttl: timedelta, now: datetime | None = None
    ) -> list[LeaseRenewal]:
        """Extend to ``now + ttl`` the lease of every lane holder ``owner_id`` owns, at once.

        Queued runs hold no lease. The returned list is what the store
        confirms: a run of the owner missing from it was ended, pre-empted
        or taken over by someone else.
        """

    @abc.abstractmethod
    async def request_cancel(
        self, run_id: str, action: CancelAction, *, now: datetime
    ) -> CancelAction | None:
        """Durably record a cancel request on an active run; the first action wins.

        Returns the winning action, or None when the run is not active (the
        cancel came too late and nothing was written).
        """

    async def announce_free_lanes(self, thread_ids: Sequence[str]) -> None:  # noqa: B027
        """Tell other processes that these threads' lanes are free and their queues wait.

        A hint (Postgres ``NOTIFY``); stores that serve one process do nothing.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The default does nothing."""


def row_defaults() -> dict[str, Any]:
    """Default values of a new row, without identity and timestamps."""
    return {
        "assistant_id": None,
        "user_id": None,
        "status": "pending",
        "on_disconnect": None,
        "multitask_strategy": None,
        "metadata": {},
        "kwargs": {},
        "model_name": None,
        "error": None,
        "stop_reason": None,
        "queued": False,
        "owner_id": None,
        "lease_expires_at": None,
        "cancel_action": None,
        "cancel_requested_at": None,
        "total_input_tokens": 0,
        "total_output_tokens": 0,
        "total_tokens": 0,
        "llm_call_count": 0,
        "lead_agent_tokens": 0,
        "subagent_tokens": 0,
        "middleware_tokens": 0,
        "token_usage_by_model": {},
        "message_count": 0,
        "first_human_message": None,
        "last_ai_message": None,
    }


def check_fields(fields: Mapping[str, Any]) -> None:
    """Raise TypeError for keys that are not row fields."""
    unknown = set(fields) - set(ROW_FIELDS)
    if unknown:
        raise TypeError(f"unknown run row fields: {', '.join(sorted(unknown))}")
