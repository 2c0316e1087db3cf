"""Shaping list responses: ``select`` field projection and pagination headers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runlane.exceptions import InvalidInputError

__all__ = ["page_headers", "project"]


def project(rows: Iterable[dict[str, Any]], select: list[str] | None) -> list[dict[str, Any]]:
    """``rows`` keeping only the ``select`` keys (all keys when ``select`` is empty).

    A key no row can have is a 422 naming it, checked against the first row.
    """
    items = list(rows)
    if not select:
        return items
    if items:
        unknown = [key for key in select if key not in items[0]]
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise InvalidInputError(f"Cannot select {names}: no such field.")
    return [{key: row.get(key) for key in select} for row in items]


def page_headers(offset: int, limit: int, fetched: int, total: int | None) -> dict[str, str]:
    """``X-Pagination-Total`` and, when more rows follow, ``X-Pagination-Next`` (the next offset).

    ``fetched`` is how many rows a query for ``limit + 1`` rows returned.
    """
    headers = {}
    if total is not None:
        headers["X-Pagination-Total"] = str(total)
    if fetched > limit:
        headers["X-Pagination-Next"] = str(offset + limit)
    return headers
