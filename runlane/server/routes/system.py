"""``GET /ok``, ``GET /info`` and ``GET /metrics``.

``/ok`` answers as soon as the lifespan has finished starting, so it is the
readiness probe. ``/info`` advertises what this server implements, in the
reference server's shape. ``/metrics`` is Prometheus text: this process's
counters, then gauges read at scrape time (runs by status from the database,
the stream bridge's statistics, local run records).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select

import runlane
from runlane.db.tables import runs as runs_table
from runlane.server.deps import ServicesDep
from runlane.server.metrics import PROCESS_METRICS, MetricsRegistry, Sample
from runlane.server.permissions import requires
from runlane.server.services import Services

__all__ = [
    "INFO_FLAGS",
    "PROMETHEUS_CONTENT_TYPE",
    "info",
    "metrics",
    "ok",
    "router",
]

logger = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

INFO_FLAGS: dict[str, bool] = {
    "assistants": True,
    "crons": False,
    "langsmith": False,
    "langsmith_tracing_replicas": False,
    "store": False,
    "thread_ttl": False,
}
"""What ``/info`` says this server supports (reference server's flag names)."""

router = APIRouter(tags=["system"])


@router.get("/ok", dependencies=[requires("system", "read")])
async def ok() -> dict[str, bool]:
    """Liveness and readiness: 200 ``{"ok": true}`` once the server has started."""
    return {"ok": True}


@router.get("/info", dependencies=[requires("system", "read")])
async def info() -> dict[str, Any]:
    """Server version and feature flags."""
    return {"version": runlane.__version__, "flags": dict(INFO_FLAGS)}


@router.get(
    "/metrics",
    dependencies=[requires("system", "read")],
    response_class=PlainTextResponse,
)
async def metrics(services: ServicesDep) -> PlainTextResponse:
    """Prometheus text exposition of this process's metrics."""
    scrape = MetricsRegistry()
    scrape.on_scrape(lambda: _runs_by_status(services))
    scrape.on_scrape(lambda: _bridge_samples(services))
    scrape.on_scrape(lambda: _local_samples(services))
    body = await PROCESS_METRICS.render() + await scrape.render()
    return PlainTextResponse(body, media_type=PROMETHEUS_CONTENT_TYPE)


async def _runs_by_status(services: Services) -> list[Sample]:
    query = select(runs_table.c.status, func.count()).group_by(runs_table.c.status)
    async with services.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    counts = {str(status): int(n) for status, n in rows}
    help_text = "Runs in the database, by status (all processes)."
    samples: list[Sample] = [
        ("runlane_runs", help_text, {"status": status}, float(n))
        for status, n in sorted(counts.items())
    ]
    active = counts.get("pending", 0) + counts.get("running", 0)
    samples.append(
        ("runlane_runs_active", "Runs pending or running (all processes).", {}, float(active))
    )
    return samples


def _bridge_samples(services: Services) -> Iterable[Sample]:
    stats = services.bridge.get_stats()
    subscribers = stats.get("total_subscribers", 0)
    yield ("runlane_sse_subscribers", "Stream readers attached in this process.", {}, subscribers)
    for key, value in sorted(stats.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        yield (f"runlane_stream_bridge_{key}", f"Stream bridge statistic {key}.", {}, value)


def _local_samples(services: Services) -> Iterable[Sample]:
    yield (
        "runlane_local_run_records",
        "Run records held by this process (active or awaiting eviction).",
        {},
        services.manager.local_run_count,
    )
    manager = services.manager
    for key, value in sorted(manager.counters.items()):
        yield (f"runlane_{key}_total", f"Ownership counter {key} of this process.", {}, value)
    yield (
        "runlane_lease_unconfirmed_seconds",
        "Seconds since the database last confirmed this process's leases.",
        {},
        manager.lease_unconfirmed_for,
    )
