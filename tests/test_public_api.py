"""Every runlane module declares its public names in ``__all__``, truthfully."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import runlane


def _modules() -> list[str]:
    names = ["runlane"]
    for info in pkgutil.walk_packages(runlane.__path__, prefix="runlane."):
        if ".migrations." in info.name or info.name.endswith(".migrations"):
            continue  # Alembic scripts are loaded by Alembic, not imported.
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what does not exist: {missing}"
    defined_here = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == name
    }
    unlisted = sorted(defined_here - set(exported))
    assert not unlisted, f"{name} defines public names missing from __all__: {unlisted}"


def test_the_documented_entry_points_import() -> None:
    from runlane.runtime import DisconnectMode, RunManager, RunStatus
    from runlane.runtime.runs.manager import PersistenceRetryPolicy
    from runlane.runtime.runs.schemas import DisconnectMode as SchemaDisconnectMode
    from runlane.runtime.runs.store.memory import MemoryRunStore

    assert DisconnectMode is SchemaDisconnectMode
    assert RunStatus.pending == "pending"
    assert {RunManager, PersistenceRetryPolicy, MemoryRunStore}
