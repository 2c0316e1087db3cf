"""Every error runlane raises on purpose derives from :class:`RunlaneError`.

Each subclass's docstring says what happened and what to do about it, and is
its default message (``str(SomeError())`` is the docstring's first paragraph).

Hierarchy::

    RunlaneError
    +-- InvalidInputError (also ValueError)        bad arguments; nothing was written
    |   +-- InvalidThreadIdError
    |   +-- InvalidStatusError
    |   +-- InvalidThreadStatusError
    |   +-- InvalidPayloadError
    |   +-- UnsupportedStrategyError
    +-- ConflictError                              the thread is busy (HTTP 409)
    +-- RunNotFoundError                           no such run (HTTP 404)
    +-- ThreadExistsError                          the thread id is taken (HTTP 409)
    +-- ThreadNotFoundError                        no such thread (HTTP 404)
    +-- AssistantExistsError                       the assistant id is taken (HTTP 409)
    +-- BadRequestError                            a well-formed but unusable request (HTTP 400)
    +-- PayloadTooLargeError                       the request body is over the limit (HTTP 413)
    +-- StoreUnavailableError                      persistence failed after retries
    +-- MigrationError                             the schema could not be brought up to date
    +-- ShuttingDownError                          this process takes no new runs (HTTP 503)
    +-- stream_bridge.exceptions.StreamBridgeError
        +-- BridgeClosedError
        +-- StreamCapacityExceededError
        +-- StreamTerminatedError
        +-- StaleWriterError
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "AssistantExistsError",
    "ConflictError",
    "InvalidInputError",
    "InvalidPayloadError",
    "InvalidStatusError",
    "InvalidThreadIdError",
    "InvalidThreadStatusError",
    "MigrationError",
    "PayloadTooLargeError",
    "RunNotFoundError",
    "RunlaneError",
    "ShuttingDownError",
    "StoreUnavailableError",
    "ThreadExistsError",
    "ThreadNotFoundError",
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


class InvalidThreadStatusError(InvalidInputError):
    """The thread status is unknown: use idle, busy, interrupted or error."""


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


class ThreadExistsError(RunlaneError):
    """A thread with this id already exists.

    Use another id, or create the thread with ``if_exists="do_nothing"`` to get
    the existing one.
    """


class ThreadNotFoundError(RunlaneError, LookupError):
    """No thread has this id (or it belongs to another user). Check the id."""


class AssistantExistsError(RunlaneError):
    """An assistant with this id already exists.

    Use another id, update the existing assistant, or create it with
    ``if_exists="do_nothing"`` to get the existing one.
    """


class StoreUnavailableError(RunlaneError):
    """The run store could not be written after all retries; the run was not admitted.

    Check that the database is reachable and retry the request.
    """


class ShuttingDownError(RunlaneError):
    """This server process is shutting down and takes no new runs; nothing was written.

    Retry the request: a load balancer sends it to another process.
    """


class BadRequestError(RunlaneError):
    """The request cannot be served as asked (for example a malformed stream cursor).

    Nothing was written. Correct the request as the message says and retry.
    """


class PayloadTooLargeError(RunlaneError):
    """The request body is larger than the server accepts (``RUNLANE_MAX_BODY_BYTES``).

    Send a smaller body, or raise the limit on the server.
    """


class MigrationError(RunlaneError):
    """The database schema could not be brought up to date, so nothing was started.

    Run ``runlane migrate`` against the same database to see Alembic's whole
    error, fix what it names, and start again.
    """
