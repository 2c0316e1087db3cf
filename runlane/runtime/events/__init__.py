"""The durable run event log: the contract (``base``) and its backends.

``memory`` (one process, nothing on disk), ``sql`` (SQLite or Postgres, the
run store's engine) and ``jsonl`` (files under a directory, one process).
"""

from runlane.runtime.events.base import CATEGORIES, EVENT_FIELDS, EventPage, EventStore, NewEvent
from runlane.runtime.events.jsonl import JsonlEventStore
from runlane.runtime.events.memory import MemoryEventStore
from runlane.runtime.events.sql import SqlEventStore

__all__ = [
    "CATEGORIES",
    "EVENT_FIELDS",
    "EventPage",
    "EventStore",
    "JsonlEventStore",
    "MemoryEventStore",
    "NewEvent",
    "SqlEventStore",
]
