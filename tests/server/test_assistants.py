from __future__ import annotations

import httpx
import pytest

from runlane.graphs import default_assistant_id

AGENT_ID = default_assistant_id("agent")


@pytest.mark.anyio
async def test_default_assistants_by_graph_name_and_uuid(client: httpx.AsyncClient) -> None:
    by_name = (await client.get("/assistants/agent")).json()
    by_uuid = (await client.get(f"/assistants/{AGENT_ID}")).json()
    assert by_name == by_uuid
    assert by_name["assistant_id"] == AGENT_ID == "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
    assert by_name["graph_id"] == "agent"
    assert by_name["metadata"] == {"created_by": "system"}
    assert by_name["version"] == 1
    for key in ("config", "context", "created_at", "updated_at", "name", "description"):
        assert key in by_name


@pytest.mark.anyio
@pytest.mark.parametrize("aid", ["nope", "00000000-0000-0000-0000-000000000000"])
async def test_unknown_assistant_is_404(client: httpx.AsyncClient, aid: str) -> None:
    for method, path in [
        ("GET", f"/assistants/{aid}"),
        ("PATCH", f"/assistants/{aid}"),
        ("DELETE", f"/assistants/{aid}"),
        ("GET", f"/assistants/{aid}/schemas"),
        ("GET", f"/assistants/{aid}/graph"),
        ("GET", f"/assistants/{aid}/subgraphs"),
        ("POST", f"/assistants/{aid}/versions"),
    ]:
        kwargs: dict[str, object] = {"json": {}} if method in ("PATCH", "POST") else {}
        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "assistant_not_found"


@pytest.mark.anyio
async def test_create_patch_versions_latest_delete(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/assistants",
        json={"graph_id": "agent", "name": "mine", "metadata": {"team": "a"},
              "config": {"tags": ["x"]}},
    )
    assert created.status_code == 200, created.text
    assistant = created.json()
    aid = assistant["assistant_id"]
    assert assistant["version"] == 1
    assert assistant["name"] == "mine"

    again = await client.post("/assistants", json={"graph_id": "agent", "assistant_id": aid})
    assert again.status_code == 409
    same = await client.post(
        "/assistants", json={"graph_id": "agent", "assistant_id": aid, "if_exists": "do_nothing"}
    )
    assert same.status_code == 200
    assert same.json()["name"] == "mine"

    patched = await client.patch(
        f"/assistants/{aid}", json={"metadata": {"stage": "b"}, "name": "mine2"}
    )
    assert patched.status_code == 200
    assert patched.json()["version"] == 2
    assert patched.json()["metadata"] == {"team": "a", "stage": "b"}
    assert patched.json()["name"] == "mine2"

    versions = (await client.post(f"/assistants/{aid}/versions", json={})).json()
    assert [v["version"] for v in versions] == [2, 1]

    latest = await client.post(f"/assistants/{aid}/latest", json={"version": 1})
    assert latest.status_code == 200
    assert latest.json()["version"] == 1
    assert latest.json()["name"] == "mine"
    missing_version = await client.post(f"/assistants/{aid}/latest", json={"version": 9})
    assert missing_version.status_code == 404

    deleted = await client.delete(f"/assistants/{aid}")
    assert deleted.status_code == 204
    assert (await client.get(f"/assistants/{aid}")).status_code == 404


@pytest.mark.anyio
async def test_create_with_unknown_graph_writes_nothing(client: httpx.AsyncClient) -> None:
    before = (await client.post("/assistants/count", json={})).json()
    response = await client.post("/assistants", json={"graph_id": "ghost"})
    assert response.status_code == 404
    assert response.json()["code"] == "graph_not_found"
    assert (await client.post("/assistants/count", json={})).json() == before


@pytest.mark.anyio
async def test_bad_bodies_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/assistants", json={"graph_id": "agent", "webhook": "x"})
    assert response.status_code == 422
    assert "webhook" in response.json()["message"]
    response = await client.post("/assistants", json={"name": "no graph"})
    assert response.status_code == 422
    assert "graph_id" in response.json()["message"]
    response = await client.post("/assistants/search", json={"limit": -1})
    assert response.status_code == 422
    assert "limit" in response.json()["message"]
    response = await client.post("/assistants/search", json={"sort_by": "color"})
    assert response.status_code == 422


@pytest.mark.anyio
async def test_search_count_and_pagination(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await client.post(
            "/assistants", json={"graph_id": "hitl", "name": f"h{i}", "metadata": {"k": i % 2}}
        )
    count = await client.post("/assistants/count", json={"graph_id": "hitl"})
    assert count.json() == 4  # three plus the default one
    page = await client.post(
        "/assistants/search", json={"graph_id": "hitl", "limit": 2, "sort_by": "name",
                                    "sort_order": "asc"}
    )
    assert page.status_code == 200
    assert [a["name"] for a in page.json()] == ["h0", "h1"]
    assert page.headers["X-Pagination-Next"] == "2"
    assert page.headers["X-Pagination-Total"] == "4"
    last = await client.post(
        "/assistants/search", json={"graph_id": "hitl", "limit": 2, "offset": 2,
                                    "sort_by": "name", "sort_order": "asc"}
    )
    assert [a["name"] for a in last.json()] == ["h2", "hitl"]
    assert "X-Pagination-Next" not in last.headers
    by_meta = await client.post("/assistants/search", json={"metadata": {"k": 1}})
    assert [a["name"] for a in by_meta.json()] == ["h1"]
    selected = await client.post(
        "/assistants/search", json={"graph_id": "agent", "select": ["assistant_id", "name"]}
    )
    assert selected.json() == [{"assistant_id": AGENT_ID, "name": "agent"}]
    assert (await client.post("/assistants/count", json={"name": "h1"})).json() == 1


@pytest.mark.anyio
async def test_schemas_graph_and_subgraphs(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/assistants/agent/schemas")).json()
    assert schemas["graph_id"] == "agent"
    assert set(schemas) == {
        "graph_id", "input_schema", "output_schema", "state_schema", "config_schema",
        "context_schema",
    }
    assert isinstance(schemas["state_schema"], dict)
    drawing = (await client.get("/assistants/agent/graph")).json()
    node_ids = {node["id"] for node in drawing["nodes"]}
    assert "__start__" in node_ids
    assert drawing["edges"]
    xray = await client.get("/assistants/agent/graph", params={"xray": "true"})
    assert xray.status_code == 200
    depth = await client.get("/assistants/agent/graph", params={"xray": 1})
    assert depth.status_code == 200
    bad = await client.get("/assistants/agent/graph", params={"xray": "deep"})
    assert bad.status_code == 422
    assert (await client.get("/assistants/agent/subgraphs")).json() == {}
    nested = await client.get("/assistants/agent/subgraphs/x", params={"recurse": True})
    assert nested.json() == {}
