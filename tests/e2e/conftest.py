"""End-to-end fixtures: a real ``runlane serve`` process, driven only through the official clients.

- ``server`` (one per test module): ``runlane serve --config langgraph.json
  --host 127.0.0.1 --port <free>`` started in a temporary folder holding a copy
  of the example ``langgraph.json`` (plus the test graphs ``nested``, ``gate``
  and ``ticker`` from ``tests/e2e/graphs/``), with ``RUNLANE_DATA_DIR`` in a
  fresh directory (a module's ``SERVER_ENV`` adds settings). Ready once
  ``GET /ok`` answers; stopped with SIGTERM, and the stop must be clean
  (exit code 0, no error-level log line).
- ``client``: a ``langgraph_sdk`` client for that server, closed after the test.
- ``node_project``: the JS client's Node project under ``tests/e2e/js``
  (``npm ci`` once per session if ``node_modules`` is missing). Without
  ``node``/``npm`` its tests are skipped loudly, or fail under ``CI=true``.

Every test in this folder carries the ``e2e`` marker (``-m e2e`` / ``-m "not e2e"``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXAMPLES = REPO / "runlane" / "examples"
TEST_GRAPHS = HERE / "graphs"
JS_DIR = HERE / "js"

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
CLIENT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

EXTRA_GRAPHS = {
    "nested": "./subgraph.py:graph",
    "gate": "./control.py:gate_graph",
    "ticker": "./control.py:ticker_graph",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test against a real `runlane serve` process through the official "
        "Python/JS clients",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_project(folder: Path) -> Path:
    """Copy the example config and graphs into ``folder`` and add the test graphs."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(EXAMPLES / "agent.py", folder / "agent.py")
    shutil.copyfile(TEST_GRAPHS / "subgraph.py", folder / "subgraph.py")
    shutil.copyfile(TEST_GRAPHS / "control.py", folder / "control.py")
    config = json.loads((EXAMPLES / "langgraph.json").read_text())
    config.setdefault("graphs", {}).update(EXTRA_GRAPHS)
    path = folder / "langgraph.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _server_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("runlane")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "runlane.cli"]
    return [
        *base,
        "serve",
        "--config",
        "langgraph.json",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def _server_env(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLANE_")}
    env.update(extra)
    env["RUNLANE_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RunningServer:
    url: str
    port: int
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    gates: Path = field(init=False)

    def __post_init__(self) -> None:
        self.gates = self.workdir / "gates"
        self.gates.mkdir(exist_ok=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def error_lines(self) -> list[str]:
        """Log lines at error level or above (JSON logs) and any traceback text."""
        found: list[str] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if "Traceback" in line:
                    found.append(line)
                continue
            if isinstance(record, dict) and str(record.get("level", "")).lower() in {
                "error",
                "critical",
                "fatal",
            }:
                found.append(line)
        return found


def _wait_ready(proc: subprocess.Popen[bytes], url: str) -> bool:
    """Poll ``GET /ok`` until it answers; False if the process died first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                response = http.get(f"{url}/ok")
            except httpx.TransportError:
                pass
            else:
                if response.status_code == 200 and response.json().get("ok") is True:
                    return True
            time.sleep(0.05)
    raise TimeoutError(f"runlane serve did not answer GET /ok within {START_TIMEOUT_S}s")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
            raise
    return proc.returncode


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A real ``runlane serve`` process for this test module.

    A module may set ``SERVER_ENV = {"RUNLANE_...": "..."}`` to configure its server.
    """
    extra_env = dict(getattr(request.module, "SERVER_ENV", {}))
    root = tmp_path_factory.mktemp("runlane-e2e")
    workdir = root / "project"
    _write_project(workdir)
    data_dir = root / "data"
    data_dir.mkdir()
    log_path = root / "server.log"
    last_log = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            _server_command(port),
            cwd=workdir,
            env=_server_env(data_dir, extra_env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            ready = _wait_ready(proc, url)
        except BaseException:
            _stop(proc)
            raise
        if ready:
            break
        last_log = log_path.read_text(errors="replace")
    else:
        pytest.fail(f"runlane serve exited before it was ready:\n{last_log[-4000:]}")

    running = RunningServer(url=url, port=port, workdir=workdir, log_path=log_path, process=proc)
    try:
        yield running
    finally:
        code = _stop(proc)
    assert code == 0, f"runlane serve exited with {code} after SIGTERM:\n{running.log_tail()}"
    errors = running.error_lines()
    assert not errors, "runlane serve logged errors:\n" + "\n".join(errors[:40])


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[object]:
    from langgraph_sdk import get_client

    sdk = get_client(url=server.url, api_key=None, timeout=CLIENT_TIMEOUT)
    try:
        yield sdk
    finally:
        await sdk.aclose()


# --- Node / the JS client ---------------------------------------------------


def _node_missing(reason: str) -> None:
    message = f"!!! JS CLIENT TESTS NOT RUN: {reason} !!!"
    if IN_CI:
        pytest.fail(message + " (CI=true, so this is a failure)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def node_project() -> Path:
    """``tests/e2e/js`` with its locked npm dependencies installed."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        _node_missing("`node` and `npm` are needed on PATH (Node 18 or later)")
    if not (JS_DIR / "node_modules" / "@langchain" / "langgraph-sdk").is_dir():
        try:
            done = subprocess.run(
                [str(npm), "ci", "--prefix", str(JS_DIR), "--no-audit", "--no-fund"],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("`npm ci --prefix tests/e2e/js` did not finish within 300 s")
        if done.returncode != 0:
            pytest.fail(
                f"`npm ci --prefix tests/e2e/js` failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
    return JS_DIR
