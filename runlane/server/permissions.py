"""The permission every route needs, declared in one place.

Each route depends on :func:`requires` with the resource and action it
touches (``requires("runs", "create")``). Today runlane has only the no-auth
mode, so every check passes; the declarations exist so that adding auth is a
matter of implementing :meth:`PermissionCheck.__call__`, and a test fails for
any route that declares nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, Request
from fastapi.routing import APIRoute

__all__ = ["Action", "Permission", "PermissionCheck", "Resource", "requires", "route_permission"]

Resource = Literal["assistants", "threads", "runs", "system"]
Action = Literal["create", "read", "update", "delete", "search"]


@dataclass(frozen=True, slots=True)
class Permission:
    """What a route touches: one resource, one action."""

    resource: Resource
    action: Action


class PermissionCheck:
    """FastAPI dependency that authorises one :class:`Permission` (no-auth mode: allows all)."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> None:
        return None


def requires(resource: Resource, action: Action) -> Any:
    """The dependency to put in a route's ``dependencies=[...]``."""
    return Depends(PermissionCheck(Permission(resource, action)))


def route_permission(route: APIRoute) -> Permission | None:
    """The permission ``route`` declares, or None."""
    for dependency in route.dependant.dependencies:
        call = dependency.call
        if isinstance(call, PermissionCheck):
            return call.permission
    return None
