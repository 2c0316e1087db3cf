"""The run lifecycle core: no HTTP, no LangGraph.

``runlane.runtime.runs`` (manager, schemas, stores) and
``runlane.runtime.stream_bridge`` are public contracts; their module paths are
stable.
"""

from runlane.runtime.runs.manager import RunManager
from runlane.runtime.runs.schemas import DisconnectMode, RunRecord, RunStatus

__all__ = ["DisconnectMode", "RunManager", "RunRecord", "RunStatus"]
