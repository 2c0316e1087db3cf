"""Assistant stores: the contract (``base``), ``memory`` and ``sql`` backends."""

from runlane.runtime.assistants.base import ASSISTANT_FIELDS, VERSION_FIELDS, AssistantStore
from runlane.runtime.assistants.memory import MemoryAssistantStore
from runlane.runtime.assistants.sql import SqlAssistantStore

__all__ = [
    "ASSISTANT_FIELDS",
    "VERSION_FIELDS",
    "AssistantStore",
    "MemoryAssistantStore",
    "SqlAssistantStore",
]
