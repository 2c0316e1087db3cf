"""Ending the runs whose owning process died."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from runlane.runtime.runs.persistence import RunWriter
from runlane.runtime.runs.records import record_from_row
from runlane.runtime.runs.schemas import ORPHAN_RECOVERED, RunRecord, RunStatus

__all__ = ["recover_orphans"]

logger = logging.getLogger(__name__)

# Later than any lease, with room for a TTL on top (the claim writes now + ttl).
_FAR_FUTURE = datetime(9000, 1, 1, tzinfo=UTC)


async def recover_orphans(
    writer: RunWriter,
    *,
    owner_id: str,
    now: datetime | None,
    lease_ttl: timedelta,
    error: str,
    before: str | None,
    sole_process: bool,
    is_live: Callable[[str], bool],
) -> list[RunRecord]:
    """Claim and end as ``error`` the active runs whose lease is missing or expired.

    ``now`` None means the database's clock. ``sole_process`` treats every
    lease as expired and every queued run as an orphan too (nobody else can
    hold one, and their streams died with the previous process). Runs for
    which ``is_live`` is true are skipped. The claim is the decision: a run
    whose owner renewed its lease in time is not claimed.
    """
    store = writer.store
    claim_now = _FAR_FUTURE if sole_process else now
    candidates = await writer.retry(
        store.list_orphan_candidates, now=claim_now, before=before, include_queued=sole_process
    )
    recovered: list[RunRecord] = []
    for row in candidates:
        run_id = row["run_id"]
        if is_live(run_id):
            continue
        try:
            claimed = await writer.retry(
                store.claim_orphan,
                run_id,
                owner_id=owner_id,
                now=claim_now,
                ttl=lease_ttl,
            )
            if not claimed or not await writer.retry(
                store.update_status, run_id, RunStatus.error.value, error=error
            ):
                continue
        except Exception:
            logger.exception("run %s: orphan recovery failed", run_id)
            continue
        record = record_from_row(row)
        record.status, record.error, record.stop_reason = RunStatus.error, error, ORPHAN_RECOVERED
        recovered.append(record)
        logger.warning("run %s: its owner is gone; ended as error (orphan_recovered)", run_id)
    return recovered
