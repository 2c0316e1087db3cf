"""Writes of run state to the store, with retries and row recreation.

Every write here is best effort after admission: a failure is logged and
reported as ``False``, never raised, because the run itself already happened
and the caller cannot undo it. Transient errors are retried by the policy;
a row found missing is recreated from the local record.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from runlane.runtime.runs.records import row_from_record
from runlane.runtime.runs.retry import PersistenceRetryPolicy, call_with_retry
from runlane.runtime.runs.schemas import RunRecord, RunStatus, can_transition
from runlane.runtime.runs.store.base import RunStore

__all__ = ["RunWriter"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RunWriter:
    """Persists the status and completion of local run records."""

    def __init__(self, store: RunStore, policy: PersistenceRetryPolicy) -> None:
        self.store = store
        self.policy = policy

    async def retry(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` under the retry policy (transient errors only)."""
        return await call_with_retry(self.policy, fn, *args, **kwargs)

    async def recreate(self, record: RunRecord) -> None:
        """Put the whole record back as a row."""
        logger.warning("run %s: row missing, recreating it", record.run_id)
        await self.retry(
            self.store.put, record.run_id, thread_id=record.thread_id, **row_from_record(record)
        )

    async def status(self, record: RunRecord) -> bool:
        """Persist ``record.status`` (and ``record.error``).

        True when the store holds that status afterwards.
        """
        run_id, status = record.run_id, record.status.value
        try:
            if await self.retry(self.store.update_status, run_id, status, error=record.error):
                return True
            row = await self.retry(self.store.get, run_id)
            if row is None:
                await self.recreate(record)
                return True
        except Exception:
            logger.exception("run %s: could not persist status %s", run_id, status)
            return False
        if row["status"] == status:
            return True
        logger.warning("run %s: store keeps status %s, refused %s", run_id, row["status"], status)
        # The store is the truth: the local record follows it.
        record.status = RunStatus(row["status"])
        record.error = row["error"]
        return False

    async def completion(self, record: RunRecord, status: str, stats: dict[str, Any]) -> bool:
        """Persist the final status and statistics; True when the store holds them."""
        run_id, store = record.run_id, self.store
        try:
            if await self.retry(store.update_run_completion, run_id, status=status, **stats):
                return True
            row = await self.retry(store.get, run_id)
            if row is None:
                await self.recreate(record)
            elif not can_transition(row["status"], status):
                logger.warning(
                    "run %s: store keeps status %s, completion %s skipped",
                    run_id,
                    row["status"],
                    status,
                )
                return False
            if await self.retry(store.update_run_completion, run_id, status=status, **stats):
                return True
        except Exception:
            logger.exception("run %s: could not persist completion", run_id)
            return False
        logger.warning("run %s: completion write affected no rows after row recreation", run_id)
        return False
