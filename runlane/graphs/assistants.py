"""Default assistants and what the assistants API reports about a graph.

Pure functions: no I/O, no database. Storing assistants is the server's job;
this module says what the default ones look like, how an ``assistant_id``
given as a graph name resolves, and how a compiled graph's schemas and
drawing are computed.

The default assistant of graph ``g`` has the id
``uuid5(NAMESPACE_SYSTEM_ASSISTANT, g)``, the id the reference server uses,
so clients that hard-code either the uuid or the graph name keep working.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid5

from langgraph.channels.base import BaseChannel
from langgraph.pregel import Pregel
from langgraph.warnings import LangGraphDeprecatedSinceV10
from pydantic import create_model

from runlane.exceptions import RunlaneError

__all__ = [
    "NAMESPACE_SYSTEM_ASSISTANT",
    "AssistantNotFoundError",
    "default_assistant",
    "default_assistant_id",
    "draw_graph",
    "graph_schemas",
    "resolve_assistant_id",
    "subgraph_schemas",
]

logger = logging.getLogger(__name__)

#: uuid5 namespace of the default ("system") assistants.
NAMESPACE_SYSTEM_ASSISTANT = UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")

AnyPregel = Pregel[Any, Any, Any, Any]


class AssistantNotFoundError(RunlaneError, LookupError):
    """No assistant has this id: pass an assistant's uuid or a graph id from langgraph.json."""


def default_assistant_id(graph_id: str) -> str:
    """The default assistant's id for ``graph_id`` (lower-case canonical uuid string)."""
    return str(uuid5(NAMESPACE_SYSTEM_ASSISTANT, graph_id))


def resolve_assistant_id(assistant_id: str, graph_ids: Iterable[str]) -> str:
    """The canonical uuid string ``assistant_id`` stands for.

    A graph id resolves to its default assistant's id (graph ids win over
    uuid parsing, so a graph named like a uuid still resolves to its
    assistant); a uuid in any form :class:`uuid.UUID` accepts is returned in
    canonical form without checking that such an assistant exists. Anything
    else raises :class:`AssistantNotFoundError`.
    """
    if assistant_id in set(graph_ids):
        return default_assistant_id(assistant_id)
    try:
        return str(UUID(assistant_id))
    except (ValueError, TypeError, AttributeError):
        raise AssistantNotFoundError(f"no assistant or graph has the id {assistant_id!r}") from None


def default_assistant(
    graph_id: str,
    *,
    description: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The default assistant of ``graph_id``, shaped like the API's Assistant object.

    ``created_at`` and ``updated_at`` are ``now`` (default: the current UTC
    time), as timezone-aware datetimes; every other field is deterministic.
    """
    stamp = now or datetime.now(UTC)
    return {
        "assistant_id": default_assistant_id(graph_id),
        "graph_id": graph_id,
        "config": {},
        "context": {},
        "created_at": stamp,
        "updated_at": stamp,
        "metadata": {"created_by": "system"},
        "version": 1,
        "name": graph_id,
        "description": description,
    }


def graph_schemas(graph: AnyPregel, graph_id: str) -> dict[str, Any]:
    """``{graph_id, input_schema, output_schema, state_schema, config_schema, context_schema}``.

    Each schema is a JSON Schema dict, or ``None`` when the graph has none or
    it cannot be computed (logged at debug level): one bad schema never hides
    the others.
    """
    return {
        "graph_id": graph_id,
        "input_schema": _best_effort(graph_id, "input", graph.get_input_jsonschema),
        "output_schema": _best_effort(graph_id, "output", graph.get_output_jsonschema),
        "state_schema": _best_effort(graph_id, "state", lambda: _state_jsonschema(graph)),
        "config_schema": _best_effort(graph_id, "config", lambda: _config_jsonschema(graph)),
        "context_schema": _best_effort(graph_id, "context", graph.get_context_jsonschema),
    }


def subgraph_schemas(
    graph: AnyPregel, graph_id: str, *, namespace: str | None = None, recurse: bool = False
) -> dict[str, dict[str, Any]]:
    """Schemas of ``graph``'s subgraphs by namespace, as ``GET .../subgraphs`` returns them."""
    return {
        ns: graph_schemas(sub, graph_id)
        for ns, sub in graph.get_subgraphs(namespace=namespace, recurse=recurse)
        if isinstance(sub, Pregel)
    }


def draw_graph(graph: AnyPregel, *, xray: bool | int = False) -> dict[str, Any]:
    """The drawable graph ``{"nodes": [...], "edges": [...]}``, JSON-serialisable.

    ``xray`` expands subgraphs (``True`` fully, an int to that depth), as
    ``GET /assistants/{id}/graph?xray=`` asks.
    """
    return dict(graph.get_graph(xray=xray).to_json())


def _best_effort(graph_id: str, kind: str, compute: Callable[[], Any]) -> dict[str, Any] | None:
    try:
        schema = compute()
    except Exception:
        logger.debug("graph %r: no %s schema", graph_id, kind, exc_info=True)
        return None
    return schema if isinstance(schema, dict) else None


def _state_jsonschema(graph: AnyPregel) -> dict[str, Any]:
    fields: dict[str, Any] = {
        name: (channel.ValueType, None)
        for name in graph.stream_channels_list
        if isinstance(channel := graph.channels[name], BaseChannel)
    }
    model = create_model(graph.get_name("State"), **fields)
    schema: dict[str, Any] = model.model_json_schema()
    return schema


def _config_jsonschema(graph: AnyPregel) -> dict[str, Any]:
    # The reference still reports the legacy config schema; langgraph marks the
    # method deprecated in favour of the context schema, which we report too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangGraphDeprecatedSinceV10)
        schema: dict[str, Any] = graph.config_schema().model_json_schema()
    return schema
