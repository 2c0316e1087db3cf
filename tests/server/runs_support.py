"""Helpers for the runs tests: settings with the test graphs, an SSE parser,
and a raw ASGI driver for tests that need to control the client side."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from runlane.config import BUNDLED_EXAMPLE, Settings
from tests.server import runs_graphs

EXAMPLES = BUNDLED_EXAMPLE.parent


def write_config(directory: Path) -> Path:
    config = {
        "graphs": {
            "agent": str(EXAMPLES / "agent.py") + ":graph",
            "hitl": str(EXAMPLES / "agent.py") + ":hitl_graph",
            "emit": "tests.server.runs_graphs:emit",
            "fail": "tests.server.runs_graphs:fail",
            "gate": "tests.server.runs_graphs:gate",
        }
    }
    path = directory / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


def make_settings(tmp_path: Path, sqlite_url: str, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "config": write_config(tmp_path),
        "data_dir": tmp_path / "data",
        "database_url": sqlite_url,
        "max_body_bytes": 64 * 1024,
    }
    options.update(overrides)
    return Settings(**options)


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path, sqlite_url)


@pytest.fixture(autouse=True)
def _gates() -> Iterator[None]:
    runs_graphs.reset()
    yield
    for gate in runs_graphs.GATES.values():
        gate.set()


@dataclass
class Frame:
    event: str | None = None
    data: Any = None
    id: str | None = None
    comments: list[str] = field(default_factory=list)
    retry: int | None = None


def parse_sse(body: bytes) -> list[Frame]:
    """Frames as written (a frame of only comments is kept, with ``event=None``)."""
    frames = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        frame = Frame()
        for line in block.split("\n"):
            if line.startswith(":"):
                frame.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            if name == "event":
                frame.event = value
            elif name == "data":
                frame.data = orjson.loads(value)
            elif name == "id":
                frame.id = value
            elif name == "retry":
                frame.retry = int(value)
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        frames.append(frame)
    return frames


def data_frames(body: bytes) -> list[Frame]:
    """The frames with an event name (heartbeat comments dropped)."""
    return [f for f in parse_sse(body) if f.event is not None]


class RawExchange:
    """One HTTP exchange driven straight through the ASGI app.

    ``leave()`` disconnects the client; ``messages`` records what the app sent;
    ``got(n)`` waits until at least ``n`` body bytes with content arrived.
    """

    def __init__(
        self, app: FastAPI, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None, query: str = "",
    ) -> None:
        raw = b"" if body is None else orjson.dumps(body)
        hdrs = [(b"host", b"runlane.test")]
        if body is not None:
            hdrs += [(b"content-type", b"application/json"),
                     (b"content-length", str(len(raw)).encode())]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": hdrs, "client": ("127.0.0.1", 1), "server": ("runlane.test", 80),
        }
        self._body = raw
        self._body_sent = False
        self.app = app
        self.gone = asyncio.Event()
        self.messages: list[MutableMapping[str, Any]] = []
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(message)
        self.changed.set()

    def start(self) -> RawExchange:
        self.task = asyncio.create_task(self.app(self.scope, self._receive, self._send))
        return self

    @property
    def status(self) -> int | None:
        for message in self.messages:
            if message["type"] == "http.response.start":
                return int(message["status"])
        return None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages
                        if m["type"] == "http.response.body")

    async def wait_for(self, predicate: Any) -> None:
        while not predicate(self):
            self.changed.clear()
            await self.changed.wait()

    def leave(self) -> None:
        self.gone.set()

    async def finished(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)
