from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runlane import cli
from runlane.config import BUNDLED_EXAMPLE

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLANE_")}
    env["RUNLANE_SETTINGS_FILE"] = str(tmp_path / "absent.toml")
    return env


def test_serve_refuses_several_workers_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("RUNLANE_")]:
        monkeypatch.delenv(key)
    code = cli.main(["serve", "--workers", "2", "--config", str(BUNDLED_EXAMPLE)])
    assert code == 2
    err = capsys.readouterr().err
    assert "2 workers need shared storage" in err
    assert "RUNLANE_DATABASE_URL" in err
    assert "RUNLANE_REDIS_URL" in err
    assert not (tmp_path / ".runlane").exists()


def test_serve_refuses_a_missing_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["serve", "--config", str(tmp_path / "nope.json")]) == 2
    assert "No graphs config" in capsys.readouterr().err


def test_flags_override_env_and_paths_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNLANE_PORT", "9999")
    monkeypatch.setenv("RUNLANE_HOST", "0.0.0.0")
    (tmp_path / "graphs").mkdir()
    shutil.copy(BUNDLED_EXAMPLE, tmp_path / "graphs" / "langgraph.json")
    args = cli.build_parser().parse_args(["serve", "--port", "1234", "--config",
                                          "graphs/langgraph.json"])
    settings, env = cli.server_settings(args)
    assert settings.port == 1234
    assert settings.host == "0.0.0.0"
    assert env["RUNLANE_PORT"] == "1234"
    assert env["RUNLANE_CONFIG"] == str(tmp_path / "graphs" / "langgraph.json")
    assert env["RUNLANE_DATABASE_URL"] == (
        f"sqlite+aiosqlite:///{tmp_path / '.runlane' / 'runlane.db'}"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_from_another_folder_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(BUNDLED_EXAMPLE.parent / "agent.py", project / "agent.py")
    config = json.loads(BUNDLED_EXAMPLE.read_text())
    (project / "langgraph.json").write_text(json.dumps(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runlane.cli", "serve", "--config",
         str(project / "langgraph.json"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=elsewhere,
        env=_clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = ""
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        ok = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/ok", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        if ok is None:
            proc.kill()
            output = proc.communicate()[0].decode()
            pytest.fail(f"server never became ready (exit {proc.poll()}):\n{output[-3000:]}")
        assert ok.json() == {"ok": True}
        assistant = httpx.get(f"http://127.0.0.1:{port}/assistants/agent", timeout=5).json()
        assert assistant["graph_id"] == "agent"
        assert (elsewhere / ".runlane" / "runlane.db").is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None and not proc.stdout.closed:
            output = proc.communicate()[0].decode()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any("ready" in line["message"] for line in lines), output
    assert all({"timestamp", "level", "logger", "message"} <= set(line) for line in lines)
    assert not any(line["level"] == "error" for line in lines), output
    assert any("shutdown complete" in line["message"].lower() for line in lines), output


def test_dev_parses_reload_and_refuses_a_missing_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(["dev", "--port", "3000"])
    assert args.reload is True
    assert args.port == 3000
    assert cli.build_parser().parse_args(["dev", "--no-reload"]).reload is False
    assert cli.main(["dev", "--config", str(tmp_path / "missing.json")]) == 2
    assert "No graphs config" in capsys.readouterr().err
