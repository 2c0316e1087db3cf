"""The per-run event log between a run's producer and its SSE readers.

Backends live in their own modules: ``.memory.MemoryStreamBridge`` (one
process) and ``.redis.RedisStreamBridge`` (many processes); errors in
``.exceptions``.
"""

from runlane.runtime.stream_bridge.base import (
    CANCELLED_SENTINEL,
    END_SENTINEL,
    HEARTBEAT_SENTINEL,
    TERMINAL_STATES,
    StreamBridge,
    StreamEvent,
    StreamGap,
    StreamStatus,
)

__all__ = [
    "CANCELLED_SENTINEL",
    "END_SENTINEL",
    "HEARTBEAT_SENTINEL",
    "TERMINAL_STATES",
    "StreamBridge",
    "StreamEvent",
    "StreamGap",
    "StreamStatus",
]
