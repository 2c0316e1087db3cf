"""Errors the stream bridge raises on purpose.

Each docstring says what happened and what to do, and is the default message.

Hierarchy::

    RunlaneError
    +-- StreamBridgeError
        +-- BridgeClosedError              every call after close()
        +-- StreamCapacityExceededError    max_active_streams reached, nothing evictable
        +-- StreamTerminatedError          publish after the terminal entry
        +-- StaleWriterError               another writer owns the sequence (Redis)
    +-- InvalidInputError (ValueError)
        +-- InvalidPayloadError
            +-- EventDataError (also TypeError)  event data is not JSON

Other bad arguments (a malformed cursor, a non-terminal kind) raise plain
``ValueError``. Bad arguments never write anything.
"""

from __future__ import annotations

from runlane.exceptions import InvalidPayloadError, RunlaneError

__all__ = [
    "BridgeClosedError",
    "EventDataError",
    "RedisUnavailableError",
    "StaleWriterError",
    "StreamBridgeError",
    "StreamCapacityExceededError",
    "StreamTerminatedError",
]


class StreamBridgeError(RunlaneError):
    """The stream bridge refused the operation. See the subclass for the reason."""


class BridgeClosedError(StreamBridgeError):
    """The stream bridge is closed and accepts no more calls.

    This happens during shutdown; build a new bridge if the process keeps running.
    """


class StreamCapacityExceededError(StreamBridgeError):
    """The bridge holds max_active_streams streams and may not make room for another.

    Wait for runs to finish, raise max_active_streams, or use the lru eviction policy.
    """


class StreamTerminatedError(StreamBridgeError):
    """The run's stream already ended with its terminal entry; nothing more can be published.

    Events of a finished run belong to a new run; stop the producer.
    """


class StaleWriterError(StreamBridgeError):
    """Another writer has already used this sequence number for the run's stream.

    This process no longer owns the run: stop publishing for it.
    """


class EventDataError(InvalidPayloadError, TypeError):
    """The event data cannot be encoded as JSON; nothing was written.

    Publish only JSON values (dict, list, str, int, float, bool, None; orjson
    also encodes datetimes, UUIDs, enums and dataclasses).
    """


class RedisUnavailableError(StreamBridgeError):
    """Redis did not answer after all retries; the stream position is unchanged.

    Check that Redis is reachable, then resume with the last event id received.
    """
