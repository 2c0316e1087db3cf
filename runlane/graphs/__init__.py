"""Graphs and assistants: the ``langgraph.json`` loader, the graph registry, and
the default assistants with their schemas and drawings. No HTTP, no database.

Typical start-up::

    config = load_config("langgraph.json")
    registry = GraphRegistry.from_config(config)   # env, sys.path, imports
    graph = await registry.get_graph("agent", run_config, checkpointer=saver)
"""

from runlane.graphs.assistants import (
    NAMESPACE_SYSTEM_ASSISTANT,
    AssistantNotFoundError,
    default_assistant,
    default_assistant_id,
    draw_graph,
    graph_schemas,
    resolve_assistant_id,
    subgraph_schemas,
)
from runlane.graphs.config import (
    GraphConfigError,
    GraphSpec,
    LanggraphConfig,
    apply_config,
    import_graph_object,
    load_config,
    parse_config,
)
from runlane.graphs.registry import GraphNotFoundError, GraphRegistry, RegisteredGraph

__all__ = [
    "NAMESPACE_SYSTEM_ASSISTANT",
    "AssistantNotFoundError",
    "GraphConfigError",
    "GraphNotFoundError",
    "GraphRegistry",
    "GraphSpec",
    "LanggraphConfig",
    "RegisteredGraph",
    "apply_config",
    "default_assistant",
    "default_assistant_id",
    "draw_graph",
    "graph_schemas",
    "import_graph_object",
    "load_config",
    "parse_config",
    "resolve_assistant_id",
    "subgraph_schemas",
]
