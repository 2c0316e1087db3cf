"""The run executor: drives a graph for one run and publishes what it streams.

- ``checkpointer``: :func:`open_checkpointer` and the rollback surgery;
- ``request``: :class:`RunRequest` (a run's stored kwargs) and the run config;
- ``serialize``: one-pass JSON encoding of LangChain/LangGraph objects;
- ``streaming``: stream-mode mapping and the wait/join output;
- ``finalize``: the ordered finalisation pipeline;
- ``journal``: :class:`RunJournal`, a run's producer for the event log
  (``journal_writer``: its batching writer; ``journal_fields``: its parsing);
- ``state``: ThreadState helpers (state, history, update, copy, delete) for the HTTP layer;
- ``views``: :class:`ThreadViews`, a thread's graph, state, status and a run's wait output;
- ``executor``: :class:`RunExecutor`.
"""

from runlane.executor.checkpointer import open_checkpointer
from runlane.executor.executor import RunExecutor
from runlane.executor.request import RunRequest
from runlane.executor.views import ThreadViews

__all__ = ["RunExecutor", "RunRequest", "ThreadViews", "open_checkpointer"]
