"""The run journal's write path: a bounded buffer drained in batches by a background task.

The producer (the callback handler in :mod:`runlane.executor.journal`) only
appends to the buffer; it never awaits the store, so a slow or failing store
cannot slow the run or its SSE stream. One writer task per run takes up to
``batch_size`` rows at a time and hands them to ``EventStore.put_batch``.

Failures: a batch that fails is retried with exponential backoff
(``retry_initial`` doubling up to ``retry_max``) until it is written or the
run's final flush gives up; it is never dropped silently. Delivery is
at least once: a batch whose write failed after the store committed it is
written again.

When the buffer is full (``max_buffer`` rows, the batch in flight included),
the producer is never blocked and message rows are never dropped:

- an incoming ``trace`` row is dropped;
- an incoming ``message`` or ``lifecycle`` row evicts the oldest buffered
  ``trace`` row, or, when the buffer holds none, is kept beyond the bound
  (these rows are few: one per model response, tool result or error).

Every drop is counted (``dropped``); a warning is logged when the buffer
fills, once until it has drained below half again. :meth:`EventWriter.close`
flushes within a deadline and logs an error naming the rows it could not
write.

The producer may call :meth:`EventWriter.add` from another thread (LangChain
runs async handlers of synchronous model calls on a helper thread); the
buffer is guarded by a lock and the writer is woken thread-safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass

from runlane.exceptions import InvalidInputError
from runlane.runtime.events.base import EventStore, NewEvent

__all__ = ["EventWriter", "WriterLimits"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriterLimits:
    """Sizes and timings of one run's writer (defaults suit a production run)."""

    max_buffer: int = 2000
    """Rows held in memory, the batch in flight included (see the module doc when full)."""
    batch_size: int = 100
    """Rows per ``put_batch`` call."""
    retry_initial: float = 0.05
    """Seconds before the first retry of a failed batch; doubles each time."""
    retry_max: float = 2.0
    """Longest wait between two retries."""
    flush_timeout: float = 10.0
    """Seconds the end of a run waits for the buffer to be written."""


class EventWriter:
    """Buffers one run's events and writes them in batches from a background task."""

    def __init__(
        self, store: EventStore, *, label: str, limits: WriterLimits | None = None
    ) -> None:
        self._store = store
        self._label = label
        self.limits = limits or WriterLimits()
        self._buffer: deque[NewEvent] = deque()
        self._inflight: list[NewEvent] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._full = False
        self.written = 0
        """Rows the store accepted."""
        self.dropped = 0
        """Trace rows dropped because the buffer was full."""
        self.overflow = 0
        """Message/lifecycle rows kept beyond the bound."""
        self.rejected = 0
        """Rows the store refused as invalid (logged as errors; never retried)."""
        self.failures = 0
        """Failed ``put_batch`` calls (each was retried)."""
        self.unwritten = 0
        """Rows still unwritten when :meth:`close` gave up."""

    # -- producer side ----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows buffered or in flight."""
        with self._lock:
            return len(self._buffer) + len(self._inflight)

    def start(self) -> None:
        """Start the writer task on the running loop (call once, from that loop)."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"journal-{self._label}")
        if self.pending:
            self._wake.set()

    def add(self, event: NewEvent) -> None:
        """Buffer ``event``; never blocks and never awaits (see the module doc when full)."""
        with self._lock:
            if len(self._buffer) + len(self._inflight) >= self.limits.max_buffer:
                if not self._full:
                    self._full = True
                    logger.warning(
                        "run journal %s: event buffer full (%d rows, store behind); "
                        "dropping trace rows, keeping message rows",
                        self._label,
                        self.limits.max_buffer,
                    )
                if event.category == "trace":
                    self.dropped += 1
                    return
                if not self._evict_trace():
                    self.overflow += 1
            self._buffer.append(event)
        self._notify()

    def _evict_trace(self) -> bool:
        for index, queued in enumerate(self._buffer):
            if queued.category == "trace":
                del self._buffer[index]
                self.dropped += 1
                return True
        return False

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    # -- writer side --------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()
            if self._closing and not self.pending:
                return

    async def _drain(self) -> None:
        while True:
            with self._lock:
                size = min(self.limits.batch_size, len(self._buffer))
                self._inflight = [self._buffer.popleft() for _ in range(size)]
                if self._full and len(self._buffer) < self.limits.max_buffer // 2:
                    self._full = False
            if not self._inflight:
                return
            refused = self.rejected
            await self._write(self._inflight)
            with self._lock:
                self.written += len(self._inflight) - (self.rejected - refused)
                self._inflight = []

    async def _write(self, batch: list[NewEvent]) -> None:
        """Write ``batch``, retrying with backoff until it is stored (or the task is cancelled)."""
        delay = self.limits.retry_initial
        attempt = 0
        while True:
            try:
                await self._store.put_batch(batch)
            except InvalidInputError as exc:
                # Not transient: the same batch would fail forever. Split it to keep
                # the valid rows; a row refused on its own is logged and counted.
                if len(batch) > 1:
                    for event in batch:
                        await self._write([event])
                    return
                self.rejected += 1
                logger.error(
                    "run journal %s: the store refused a %s event: %s",
                    self._label,
                    batch[0].event_type,
                    exc,
                )
                return
            except Exception as exc:
                attempt += 1
                self.failures += 1
                logger.warning(
                    "run journal %s: writing %d events failed (attempt %d, retry in %.2fs): %r",
                    self._label,
                    len(batch),
                    attempt,
                    delay,
                    exc,
                )
            else:
                if attempt:
                    logger.info(
                        "run journal %s: %d events written after %d retries",
                        self._label,
                        len(batch),
                        attempt,
                    )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.limits.retry_max)

    async def close(self) -> bool:
        """Write what is buffered within ``flush_timeout`` seconds, then stop the task.

        Returns True when every row was written. Rows still unwritten at the
        deadline are counted in ``unwritten`` and named in an error log.
        """
        timeout = self.limits.flush_timeout
        self._closing = True
        if self._task is None:
            self.start()
        assert self._task is not None
        assert self._wake is not None
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        except Exception:
            logger.exception("run journal %s: writer failed", self._label)
        self.unwritten = self.pending
        if self.unwritten:
            logger.error(
                "run journal %s: %d events not written within %.1fs (store unavailable)",
                self._label,
                self.unwritten,
                timeout,
            )
        return self.unwritten == 0

    async def put_singleton(self, event: NewEvent) -> bool:
        """``put_if_absent(event)`` with the batch retry policy, within ``flush_timeout``.

        True once stored (or already present); False, with an error log, when
        the store refused it or the deadline passed.
        """
        delay = self.limits.retry_initial
        try:
            async with asyncio.timeout(self.limits.flush_timeout):
                while True:
                    try:
                        await self._store.put_if_absent(event)
                        return True
                    except InvalidInputError:
                        raise
                    except Exception as exc:
                        self.failures += 1
                        logger.warning(
                            "run journal %s: writing %s failed (retry in %.2fs): %r",
                            self._label,
                            event.event_type,
                            delay,
                            exc,
                        )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.limits.retry_max)
        except (TimeoutError, InvalidInputError) as exc:
            logger.error("run journal %s: %s not written: %r", self._label, event.event_type, exc)
            return False
