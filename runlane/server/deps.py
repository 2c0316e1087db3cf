"""Annotated FastAPI dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from runlane.server.services import Services, get_services

__all__ = ["ServicesDep"]

ServicesDep = Annotated[Services, Depends(get_services)]
"""A route parameter typed ``ServicesDep`` receives the app's :class:`Services`."""
