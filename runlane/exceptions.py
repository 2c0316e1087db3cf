"""Every error runlane raises on purpose derives from :class:`RunlaneError`.

Each subclass's docstring says what happened and what to do about it, and is
its default message (``str(SomeError())`` is the docstring's first paragraph).

Hierarchy::

    RunlaneError
    +-- InvalidInputError (also ValueError)        bad arguments; nothing was written
    |   +-- InvalidThreadIdError
    |   +-- InvalidStatusError
    |   +-- InvalidPayloadError
    |   +-- UnsupportedStrategyError
    +-- ConflictError                              the thread is busy (HTTP 409)
    +-- RunNotFoundError                           no such run (HTTP 404)
    +-- StoreUnavailableError                      persistence failed after retries
    +-- stream_bridge.exceptions.StreamBridgeError
        +-- BridgeClosedError
        +-- StreamCapacityExceededError
        +-- StreamTerminatedError
        +-- StaleWriterError
"""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "InvalidInputError",
    "InvalidPayloadError",
    "InvalidStatusError",
    "InvalidThreadIdError",
    "RunNotFoundError",
    "RunlaneError",
    "StoreUnavailableError",
    "UnsupportedStrategyError",
]


class RunlaneError(Exception):
    """Something went wrong in runlane."""

    def __init__(self, message: str | None = None) -> None:
        if message is None:
            doc = type(self).__doc__ or type(self).__name__
            message = doc.strip().split("\n\n", 1)[0].replace("\n", " ")
        super().__init__(message)
        self.message = message


class InvalidInputError(RunlaneError, ValueError):
    """An argument was malformed; nothing was written. Fix the input and retry."""


class InvalidThreadIdError(InvalidInputError):
    """The thread id is malformed: use 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_'."""


class InvalidStatusError(InvalidInputError):
    """The run status is unknown: use pending, running, success, error, timeout or interrupted."""


class InvalidPayloadError(InvalidInputError):
    """A metadata or kwargs value cannot be stored as JSON: pass only JSON-serialisable values."""


class UnsupportedStrategyError(InvalidInputError):
    """The multitask strategy is unknown: use reject, enqueue, interrupt or rollback."""


class ConflictError(RunlaneError):
    """The thread already has an active run and the multitask strategy is reject.

    Wait for the active run to finish, or create the run with the enqueue,
    interrupt or rollback strategy.
    """


class RunNotFoundError(RunlaneError):
    """No run has this id (or it belongs to another user). Check the id."""


class StoreUnavailableError(RunlaneError):
    """The run store could not be written after all retries; the run was not admitted.

    Check that the database is reachable and retry the request.
    """
