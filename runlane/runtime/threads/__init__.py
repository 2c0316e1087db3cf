"""Thread stores: the contract (``base``), ``memory`` and ``sql`` backends."""

from runlane.runtime.threads.base import THREAD_FIELDS, THREAD_STATUSES, ThreadStore
from runlane.runtime.threads.memory import MemoryThreadStore
from runlane.runtime.threads.sql import SqlThreadStore

__all__ = ["THREAD_FIELDS", "THREAD_STATUSES", "MemoryThreadStore", "SqlThreadStore", "ThreadStore"]
