"""The langgraph.json loader: paths, module form, env, dependencies, unknown keys, errors."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from langgraph.pregel import Pregel

from runlane.graphs import GraphConfigError, apply_config, import_graph_object, load_config
from tests.graphs.conftest import GRAPH_SOURCE


def _project(root: Path, config: dict[str, Any], *, graph_file: str = "src/graph.py") -> Path:
    (root / graph_file).parent.mkdir(parents=True, exist_ok=True)
    (root / graph_file).write_text(GRAPH_SOURCE)
    path = root / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


def test_file_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _project(tmp_path / "app", {"graphs": {"agent": "./src/graph.py:graph"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(os.path.relpath(path, elsewhere))

    spec = config.graphs["agent"]
    assert config.base_dir == (tmp_path / "app").resolve()
    assert spec.path == (tmp_path / "app" / "src" / "graph.py").resolve()
    assert spec.module is None
    assert spec.attribute == "graph"
    assert isinstance(import_graph_object(spec), Pregel)


def test_the_same_file_is_imported_once(tmp_path: Path) -> None:
    path = _project(tmp_path, {"graphs": {"a": "./src/graph.py:graph", "b": "src/graph.py:graph"}})
    config = load_config(path)
    assert import_graph_object(config.graphs["a"]) is import_graph_object(config.graphs["b"])


def test_module_form_with_a_local_dependency(tmp_path: Path) -> None:
    package = tmp_path / "rl_test_pkg_mod"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "graphs.py").write_text(GRAPH_SOURCE)
    path = tmp_path / "langgraph.json"
    path.write_text(
        json.dumps(
            {"graphs": {"agent": "rl_test_pkg_mod.graphs:graph"}, "dependencies": [".", "numpy"]}
        )
    )

    config = load_config(path)
    apply_config(config)

    spec = config.graphs["agent"]
    assert (spec.module, spec.path) == ("rl_test_pkg_mod.graphs", None)
    assert config.dependencies == (".", "numpy")
    assert config.local_dependencies == (tmp_path.resolve(),)
    assert str(tmp_path.resolve()) in sys.path
    assert isinstance(import_graph_object(spec), Pregel)


def test_a_src_layout_dependency_puts_src_on_the_path(tmp_path: Path) -> None:
    path = _project(tmp_path, {"graphs": {"agent": "./src/graph.py:graph"}, "dependencies": ["."]})
    apply_config(load_config(path))
    assert str((tmp_path / "src").resolve()) in sys.path


def test_graph_entry_as_an_object_with_a_description(tmp_path: Path) -> None:
    path = _project(
        tmp_path,
        {"graphs": {"agent": {"path": "./src/graph.py:graph", "description": "counts"}}},
    )
    assert load_config(path).graphs["agent"].description == "counts"


def test_env_file_is_read_relative_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / ".env").write_text(
        "RL_TEST_A=from-file\nexport RL_TEST_B='quoted value'\n"
    )
    path = _project(tmp_path, {"graphs": {"agent": "./src/graph.py:graph"}, "env": "conf/.env"})
    monkeypatch.chdir(tmp_path / "src")

    config = load_config(path)
    assert dict(config.env) == {"RL_TEST_A": "from-file", "RL_TEST_B": "quoted value"}
    assert "RL_TEST_A" not in os.environ, "loading alone must not touch the environment"

    apply_config(config)
    assert os.environ["RL_TEST_A"] == "from-file"
    assert os.environ["RL_TEST_B"] == "quoted value"


def test_inline_env_does_not_override_the_process_unless_asked(tmp_path: Path) -> None:
    os.environ["RL_TEST_KEEP"] = "process"
    path = _project(
        tmp_path,
        {"graphs": {"agent": "./src/graph.py:graph"}, "env": {"RL_TEST_KEEP": "file", "RL_N": 3}},
    )
    config = load_config(path)

    apply_config(config)
    assert (os.environ["RL_TEST_KEEP"], os.environ["RL_N"]) == ("process", "3")
    apply_config(config, override_env=True)
    assert os.environ["RL_TEST_KEEP"] == "file"


def test_known_keys_are_kept_and_unknown_keys_only_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _project(
        tmp_path,
        {
            "graphs": {"agent": "./src/graph.py:graph"},
            "python_version": "3.11",
            "http": {"cors": {}},
            "store": {"index": {}},
            "dockerfile_lines": [],
            "frobnicate": True,
        },
    )
    with caplog.at_level(logging.WARNING, logger="runlane.graphs.config"):
        config = load_config(path)

    assert set(config.extra) == {
        "python_version",
        "http",
        "store",
        "dockerfile_lines",
        "frobnicate",
    }
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1
    assert "'frobnicate'" in warned[0]
    assert str(path.resolve()) in warned[0]


# --- errors -------------------------------------------------------------------


def _load_everything(path: Path) -> None:
    config = load_config(path)
    apply_config(config)
    for spec in config.graphs.values():
        import_graph_object(spec)


def _error(path: Path) -> str:
    with pytest.raises(GraphConfigError) as info:
        _load_everything(path)
    return str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "langgraph.json")


def test_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "langgraph.json"
    path.write_text('{"graphs": {"agent": ')
    message = _error(path)
    assert "not valid JSON" in message
    assert str(path.resolve()) in message


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ([], "top level must be a JSON object"),
        ({}, "'graphs' must be a non-empty object"),
        ({"graphs": {"agent": 3}}, "graph 'agent' must be a string"),
        ({"graphs": {"agent": "./graph.py"}}, "graph 'agent' (./graph.py) must be"),
        ({"graphs": {"agent": "bad-module:graph"}}, "bad module name"),
        ({"graphs": {"agent": "m:g"}, "env": 3}, "'env' must be a path"),
        ({"graphs": {"agent": "m:g"}, "env": {"A": [1]}}, "'env' values must be strings"),
        ({"graphs": {"agent": "m:g"}, "dependencies": [1]}, "'dependencies' must be a list"),
    ],
)
def test_malformed_config(tmp_path: Path, config: object, expected: str) -> None:
    path = tmp_path / "langgraph.json"
    path.write_text(json.dumps(config))
    assert expected in _error(path)


def test_missing_env_file(tmp_path: Path) -> None:
    path = _project(tmp_path, {"graphs": {"agent": "./src/graph.py:graph"}, "env": ".env"})
    assert f"env file {(tmp_path / '.env').resolve()} does not exist" in _error(path)


def test_missing_local_dependency(tmp_path: Path) -> None:
    path = _project(
        tmp_path, {"graphs": {"agent": "./src/graph.py:graph"}, "dependencies": ["./nope"]}
    )
    assert "is not a directory" in _error(path)


def test_missing_graph_file(tmp_path: Path) -> None:
    path = _project(tmp_path, {"graphs": {"agent": "./src/missing.py:graph"}})
    message = _error(path)
    assert "graph 'agent' (./src/missing.py:graph)" in message
    assert str((tmp_path / "src" / "missing.py").resolve()) in message


def test_missing_module(tmp_path: Path) -> None:
    path = _project(tmp_path, {"graphs": {"agent": "rl_test_pkg_absent.graphs:graph"}})
    message = _error(path)
    assert "graph 'agent' (rl_test_pkg_absent.graphs:graph)" in message
    assert "no module named 'rl_test_pkg_absent'" in message


def test_missing_attribute(tmp_path: Path) -> None:
    path = _project(tmp_path, {"graphs": {"agent": "./src/graph.py:nothing_here"}})
    message = _error(path)
    assert "graph 'agent' (./src/graph.py:nothing_here)" in message
    assert "no attribute 'nothing_here'" in message


def test_a_graph_file_that_fails_to_import(tmp_path: Path) -> None:
    path = _project(tmp_path, {"graphs": {"agent": "./broken.py:graph"}})
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    message = _error(path)
    assert "graph 'agent' (./broken.py:graph)" in message
    assert "boom at import" in message
    assert not any(name.startswith("_runlane_graph_broken") for name in sys.modules)
