from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from runlane.config import Settings
from runlane.server.app import create_app
from runlane.server.permissions import Permission, requires, route_permission


def _api_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """Every APIRoute with its full path, included routers flattened (FastAPI >= 0.130)."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            found.append((context.path or route.path, route))
    return found


def _undeclared(app: FastAPI) -> list[str]:
    return [
        f"{sorted(route.methods or ())} {path}"
        for path, route in _api_routes(app)
        if route_permission(route) is None
    ]


def test_every_route_of_the_app_declares_a_permission(settings: Settings) -> None:
    app = create_app(settings)
    assert len(_api_routes(app)) >= 30
    assert _undeclared(app) == []


def test_a_route_without_a_permission_is_found(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/sneaky")
    async def sneaky() -> None:
        return None

    assert _undeclared(app) == ["['GET'] /sneaky"]


def test_declared_permissions_name_the_resource(settings: Settings) -> None:
    app = create_app(settings)
    by_path = {
        (path, method): route_permission(route)
        for path, route in _api_routes(app)
        for method in route.methods or ()
    }
    assert by_path[("/threads/{thread_id}", "DELETE")] == Permission("threads", "delete")
    assert by_path[("/assistants/search", "POST")] == Permission("assistants", "search")
    assert by_path[("/ok", "GET")] == Permission("system", "read")
    assert requires("runs", "read") is not None
