"""Read a ``langgraph.json`` the way LangGraph users already write it.

What runlane acts on:

================  ==========================================================
key               effect
================  ==========================================================
``graphs``        ``{"id": "./file.py:attr"}``, ``{"id": "pkg.module:attr"}``
                  or ``{"id": {"path": ..., "description": ...}}``; file
                  paths are relative to the config file's directory
``env``           a path to a ``.env`` file (relative to the config file) or
                  an inline ``{"NAME": "value"}`` object
``dependencies``  entries starting with ``.`` or ``/`` are local directories
                  put on ``sys.path`` (plus their ``src/`` if it exists);
                  other entries name installed distributions and are ignored
================  ==========================================================

Every other key LangGraph's tooling knows (``python_version``, ``http``,
``store``, ``checkpointer``, ``auth``, ``ui``, ``dockerfile_lines``, ...) is
accepted without effect; a key nobody knows is logged as a warning. Neither
ever fails the load, and both are kept in :attr:`LanggraphConfig.extra`.

:func:`load_config` only reads; :func:`apply_config` changes the process
(environment, ``sys.path``); :func:`import_graph_object` imports one graph's
module. Every failure is a :class:`GraphConfigError` naming the file, and the
graph id and target when one is involved.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

from runlane.exceptions import RunlaneError

__all__ = [
    "GraphConfigError",
    "GraphSpec",
    "LanggraphConfig",
    "apply_config",
    "import_graph_object",
    "load_config",
    "parse_config",
]

logger = logging.getLogger(__name__)

#: Keys runlane acts on.
USED_KEYS = frozenset({"graphs", "env", "dependencies"})
#: Keys LangGraph's tooling defines that runlane accepts without acting on them.
ACCEPTED_KEYS = frozenset(
    {
        "$schema",
        "api_version",
        "auth",
        "base_image",
        "checkpointer",
        "dockerfile_lines",
        "encryption",
        "http",
        "image_distro",
        "keep_pkg_tools",
        "node_version",
        "pip_config_file",
        "pip_installer",
        "python_version",
        "store",
        "ui",
        "ui_config",
        "webhooks",
    }
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class GraphConfigError(RunlaneError):
    """The graph configuration (langgraph.json) is invalid or a graph cannot be loaded.

    The message names the file, the graph id and the target; fix that entry
    and restart the server.
    """


@dataclass(frozen=True)
class GraphSpec:
    """Where one graph lives: exactly one of ``path`` (a file) and ``module`` is set."""

    graph_id: str
    target: str
    attribute: str
    path: Path | None = None
    module: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class LanggraphConfig:
    """A parsed ``langgraph.json``. All paths are absolute."""

    base_dir: Path
    graphs: Mapping[str, GraphSpec]
    source: str = "<inline>"
    env: Mapping[str, str] = field(default_factory=dict)
    dependencies: tuple[str, ...] = ()
    local_dependencies: tuple[Path, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


def load_config(path: str | os.PathLike[str]) -> LanggraphConfig:
    """Read and validate the ``langgraph.json`` at ``path`` (relative to the cwd).

    Reads the env file if ``env`` names one; changes nothing in the process.
    """
    file = Path(path).expanduser().resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphConfigError(f"config file {file} does not exist") from None
    except OSError as exc:
        raise GraphConfigError(f"config file {file} cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphConfigError(
            f"config file {file} is not valid JSON: {exc.msg} (line {exc.lineno}, "
            f"column {exc.colno})"
        ) from None
    return parse_config(data, base_dir=file.parent, source=str(file))


def parse_config(data: object, *, base_dir: Path, source: str = "<inline>") -> LanggraphConfig:
    """Validate an already decoded config; relative paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise GraphConfigError(f"{source}: the top level must be a JSON object")
    base_dir = base_dir.resolve()
    for key in data:
        if key not in USED_KEYS and key not in ACCEPTED_KEYS:
            logger.warning("%s: unknown key %r ignored", source, key)
    raw_graphs = data.get("graphs")
    if not isinstance(raw_graphs, dict) or not raw_graphs:
        raise GraphConfigError(f"{source}: 'graphs' must be a non-empty object of id -> path")
    graphs = {
        str(graph_id): _parse_graph(str(graph_id), value, base_dir, source)
        for graph_id, value in raw_graphs.items()
    }
    dependencies = _parse_dependencies(data.get("dependencies", []), source)
    local = tuple((base_dir / dep).resolve() for dep in dependencies if dep.startswith((".", "/")))
    return LanggraphConfig(
        base_dir=base_dir,
        graphs=MappingProxyType(graphs),
        source=source,
        env=MappingProxyType(_parse_env(data.get("env"), base_dir, source)),
        dependencies=dependencies,
        local_dependencies=local,
        extra=MappingProxyType({k: v for k, v in data.items() if k not in USED_KEYS}),
    )


def apply_config(config: LanggraphConfig, *, override_env: bool = False) -> None:
    """Export ``env`` and put local dependencies at the front of ``sys.path``.

    Variables already set in the process win unless ``override_env``. Calling
    this twice is harmless: a path already on ``sys.path`` is not added again.
    """
    for name, value in config.env.items():
        if override_env or name not in os.environ:
            os.environ[name] = value
    for directory in reversed(config.local_dependencies):
        if not directory.is_dir():
            raise GraphConfigError(f"{config.source}: dependency {directory} is not a directory")
        candidates = [directory]
        if (directory / "src").is_dir():
            candidates.append(directory / "src")
        for candidate in reversed(candidates):
            if str(candidate) not in sys.path:
                sys.path.insert(0, str(candidate))


def import_graph_object(spec: GraphSpec) -> object:
    """Import the module ``spec`` points at and return its attribute, unchanged.

    A file is imported once per process (same resolved path, same module),
    under a private module name registered in ``sys.modules``.
    """
    where = f"graph {spec.graph_id!r} ({spec.target})"
    if spec.path is not None:
        module = _import_file(spec.path, where)
    else:
        assert spec.module is not None
        try:
            module = importlib.import_module(spec.module)
        except ModuleNotFoundError as exc:
            if exc.name and (spec.module + ".").startswith(exc.name + "."):
                raise GraphConfigError(f"{where}: no module named {exc.name!r}") from exc
            raise GraphConfigError(f"{where}: importing {spec.module} failed: {exc!r}") from exc
        except Exception as exc:
            raise GraphConfigError(f"{where}: importing {spec.module} failed: {exc!r}") from exc
    try:
        return getattr(module, spec.attribute)
    except AttributeError:
        raise GraphConfigError(
            f"{where}: module {module.__name__} has no attribute {spec.attribute!r}"
        ) from None


def _parse_graph(graph_id: str, value: object, base_dir: Path, source: str) -> GraphSpec:
    description: str | None = None
    if isinstance(value, dict):
        description = value.get("description")
        if description is not None and not isinstance(description, str):
            raise GraphConfigError(f"{source}: graph {graph_id!r}: 'description' must be a string")
        value = value.get("path")
    if not isinstance(value, str):
        raise GraphConfigError(
            f"{source}: graph {graph_id!r} must be a string like './graph.py:graph'"
        )
    location, sep, attribute = value.rpartition(":")
    if not sep or not location or not _IDENTIFIER.fullmatch(attribute):
        raise GraphConfigError(
            f"{source}: graph {graph_id!r} ({value}) must be 'path/to/file.py:attribute' "
            "or 'package.module:attribute'"
        )
    if location.endswith(".py") or "/" in location or "\\" in location:
        path = (base_dir / location).resolve()
        return GraphSpec(graph_id, value, attribute, path=path, description=description)
    if not all(_IDENTIFIER.fullmatch(part) for part in location.split(".")):
        raise GraphConfigError(f"{source}: graph {graph_id!r} ({value}): bad module name")
    return GraphSpec(graph_id, value, attribute, module=location, description=description)


def _parse_dependencies(value: object, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GraphConfigError(f"{source}: 'dependencies' must be a list of strings")
    return tuple(value)


def _parse_env(value: object, base_dir: Path, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        if not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
            raise GraphConfigError(f"{source}: 'env' values must be strings")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
    if isinstance(value, str):
        from dotenv import dotenv_values

        env_file = (base_dir / value).resolve()
        if not env_file.is_file():
            raise GraphConfigError(f"{source}: env file {env_file} does not exist")
        return {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    raise GraphConfigError(f"{source}: 'env' must be a path to a .env file or an object")


def _import_file(path: Path, where: str) -> ModuleType:
    if not path.is_file():
        raise GraphConfigError(f"{where}: file {path} does not exist")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    name = f"_runlane_graph_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
    if (existing := sys.modules.get(name)) is not None:
        return existing
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise GraphConfigError(f"{where}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if not isinstance(exc, Exception):
            raise
        raise GraphConfigError(f"{where}: importing {path} failed: {exc!r}") from exc
    return module
