"""The test proxy's frame counting, checked on its own (no server), so a green resume test
means the server resumed correctly and not that the proxy cut in the wrong place."""

from __future__ import annotations

import pytest

from tests.e2e.proxy import FrameCutter

FRAMES = [
    b'event: metadata\ndata: {"run_id":"r"}\nid: 1\n\n',
    b": heartbeat\n\n",
    b'event: values\r\ndata: {"a":1}\r\nid: 2\r\n\r\n',
    b'event: end\ndata: {"status":"success"}\nid: 3\n\n',
]
BODY = b"".join(FRAMES)
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunked(body: bytes, size: int) -> bytes:
    out = b""
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def _cut_offset(raw: bytes, k: int, feed_size: int) -> int | None:
    cutter = FrameCutter(k)
    for start in range(0, len(raw), feed_size):
        cut = cutter.feed(raw[start : start + feed_size])
        if cut is not None:
            return start + cut
    return None


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
@pytest.mark.parametrize("feed_size", [1, 5, 100_000])
@pytest.mark.parametrize(("k", "frames_through"), [(1, 1), (2, 3), (3, 4)])
def test_cut_lands_right_after_the_kth_event(
    chunk_size: int, feed_size: int, k: int, frames_through: int
) -> None:
    raw = HEAD + _chunked(BODY, chunk_size)
    offset = _cut_offset(raw, k, feed_size)
    assert offset is not None
    # decode what the client would receive and compare with the frames up to k
    received = raw[len(HEAD) : offset]
    decoded = b""
    rest = received
    while rest:
        line_end = rest.find(b"\r\n")
        if line_end < 0:
            break
        size = int(rest[:line_end], 16)
        data = rest[line_end + 2 : line_end + 2 + size]
        decoded += data
        rest = rest[line_end + 2 + size + 2 :]
    assert decoded == b"".join(FRAMES[:frames_through])


def test_plain_body_and_missing_event() -> None:
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + BODY
    assert _cut_offset(raw, 2, 3) == raw.index(FRAMES[2]) + len(FRAMES[2])
    assert _cut_offset(raw, 4, 3) is None


def test_k_zero_cuts_right_after_the_head() -> None:
    raw = HEAD + _chunked(BODY, 5)
    assert _cut_offset(raw, 0, 1) == len(HEAD)
    assert _cut_offset(raw, 0, 100_000) == len(HEAD)
