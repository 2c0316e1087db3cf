"""A tiny in-process metrics registry rendered in the Prometheus text format (0.0.4).

Only what runlane needs: labelled counters, labelled gauges, and gauges
computed at scrape time by a callback. No dependency: the exposition format
is a few lines of text. Values are process-local (with several workers, each
worker reports its own; scrape them per process or aggregate downstream).

Guarantees: rendering never raises because of a failing callback (the
callback's samples are skipped and the failure logged); label values are
escaped as the format requires; names are validated when a metric is made.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from threading import Lock
from typing import TypeVar

__all__ = [
    "HTTP_REQUESTS",
    "PROCESS_METRICS",
    "RUNS_CREATED",
    "RUNS_FINISHED",
    "Counter",
    "Gauge",
    "MetricsRegistry",
    "Sample",
    "ScrapeCallback",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Sample = tuple[str, str, Mapping[str, str], float]
ScrapeCallback = Callable[[], Iterable[Sample] | Awaitable[Iterable[Sample]]]
"""Returns (or, if async, resolves to) ``(name, help, labels, value)`` gauge samples."""

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: LabelKey) -> str:
    if not key:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in key) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...] = ()) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.fullmatch(label):
                raise ValueError(f"invalid label name {label!r}")
        self.name = name
        self.help = help_text
        self.labelnames = labelnames
        self._values: dict[LabelKey, float] = {}
        self._lock = Lock()

    def _key(self, labels: Mapping[str, str]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple((name, str(labels[name])) for name in self.labelnames)

    def value(self, **labels: str) -> float:
        """The current value for ``labels`` (0 if never touched)."""
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        lines.extend(f"{self.name}{_labels(key)} {_number(value)}" for key, value in items)
        return lines


_M = TypeVar("_M", bound=_Metric)


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Metric):
    """A value that goes up and down, per label set."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)


class MetricsRegistry:
    """Named metrics plus scrape-time callbacks; :meth:`render` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._callbacks: list[ScrapeCallback] = []

    def counter(self, name: str, help_text: str, labelnames: tuple[str, ...] = ()) -> Counter:
        return self._add(Counter(name, help_text, labelnames))

    def gauge(self, name: str, help_text: str, labelnames: tuple[str, ...] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labelnames))

    def on_scrape(self, callback: ScrapeCallback) -> None:
        """Add gauges computed at each scrape."""
        self._callbacks.append(callback)

    def _add(self, metric: _M) -> _M:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} already exists")
        self._metrics[metric.name] = metric
        return metric

    async def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())
        dynamic: dict[str, tuple[str, list[tuple[LabelKey, float]]]] = {}
        for callback in self._callbacks:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    result = await result
                samples = list(result)
            except Exception:
                logger.exception("a metrics callback failed; its samples are skipped")
                continue
            for name, help_text, labels, value in samples:
                if not _NAME.fullmatch(name) or name in self._metrics:
                    continue
                key = tuple(sorted((k, str(v)) for k, v in labels.items()))
                dynamic.setdefault(name, (help_text, []))[1].append((key, float(value)))
        for name, (help_text, values) in dynamic.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines.extend(f"{name}{_labels(key)} {_number(value)}" for key, value in values)
        return "\n".join(lines) + "\n"


PROCESS_METRICS = MetricsRegistry()
"""Counters of this process, rendered first by ``GET /metrics``."""

RUNS_CREATED = PROCESS_METRICS.counter(
    "runlane_runs_created_total", "Runs admitted by this process."
)
RUNS_FINISHED = PROCESS_METRICS.counter(
    "runlane_runs_finished_total", "Runs this process ended, by final status.", ("status",)
)
HTTP_REQUESTS = PROCESS_METRICS.counter(
    "runlane_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ("method", "route", "status"),
)
"""Counted by :class:`~runlane.server.middleware.RequestMiddleware`."""
