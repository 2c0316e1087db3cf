from __future__ import annotations

import pytest

from runlane.server.metrics import MetricsRegistry
from tests.server.prometheus import parse_prometheus


@pytest.mark.anyio
async def test_counters_gauges_and_callbacks_render_as_prometheus_text() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("t_requests_total", "Requests.", ("route", "status"))
    gauge = registry.gauge("t_depth", "Depth.")
    counter.inc(route='/a"b\\c', status="200")
    counter.inc(2, route="/x", status="500")
    gauge.set(3)
    gauge.dec()

    async def more() -> list[tuple[str, str, dict[str, str], float]]:
        return [("t_dynamic", "Dynamic.", {"kind": "x"}, 1.5)]

    registry.on_scrape(lambda: [("t_sync", "Sync.", {}, 7)])
    registry.on_scrape(more)
    samples = parse_prometheus(await registry.render())
    assert samples["t_requests_total"] == [
        ({"route": '/a\\"b\\\\c', "status": "200"}, 1.0),
        ({"route": "/x", "status": "500"}, 2.0),
    ]
    assert samples["t_depth"] == [({}, 2.0)]
    assert samples["t_sync"] == [({}, 7.0)]
    assert samples["t_dynamic"] == [({"kind": "x"}, 1.5)]


@pytest.mark.anyio
async def test_a_failing_callback_is_skipped() -> None:
    registry = MetricsRegistry()
    registry.gauge("t_ok", "Ok.").set(1)

    def broken() -> list[tuple[str, str, dict[str, str], float]]:
        raise RuntimeError("scrape failed")

    registry.on_scrape(broken)
    samples = parse_prometheus(await registry.render())
    assert samples == {"t_ok": [({}, 1.0)]}


def test_counters_only_go_up_and_labels_must_match() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("t_total", "T.", ("a",))
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(-1, a="x")
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(b="x")
    with pytest.raises(ValueError, match="already exists"):
        registry.gauge("t_total", "dup")
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.gauge("bad-name", "x")
