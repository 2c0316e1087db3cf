"""Metadata documents of threads and assistants: validation and containment filters.

A metadata filter ``want`` matches a document ``have`` when ``have``
*contains* ``want``, with the semantics of Postgres's ``jsonb @> jsonb``:

- an object contains another when every key of the other is present and its
  value is contained (recursively; ``{}`` matches any object);
- an array contains another when every element of the other is contained in
  some element of it (order and duplicates do not matter);
- scalars match when equal: numbers by value (``1`` equals ``1.0``), never
  across types (``true`` is not ``1``, ``"1"`` is not ``1``).

The same rule is implemented three times, and the store contract suites run
the same cases on each: :func:`contains` in Python (memory stores),
``@>`` on Postgres and a recursive ``json_type``/``json_extract``/``json_each``
expression on SQLite (:func:`sql_contains`), all SQLAlchemy Core, never SQL
text. Filter keys may not contain ``"`` (a SQLite JSON path cannot quote one);
such a filter is refused on every backend.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, exists, false, func, literal, select, true, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import String

from runlane.exceptions import InvalidInputError, InvalidPayloadError

__all__ = ["check_filter", "check_page", "contains", "json_document", "sql_contains"]


def json_document(what: str, value: Any) -> dict[str, Any]:
    """``value`` (None means ``{}``) as a plain JSON object, or InvalidPayloadError.

    Called before any write, so a value JSON cannot hold writes nothing.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidPayloadError(f"{what} must be a JSON object, not {type(value).__name__}.")
    try:
        document: dict[str, Any] = orjson.loads(orjson.dumps(value))
    except TypeError as exc:
        raise InvalidPayloadError(f"{what} is not JSON-serialisable: {exc}") from None
    return document


def check_filter(value: Any) -> dict[str, Any] | None:
    """A metadata filter as plain JSON (None or ``{}``: no filter), or InvalidInputError."""
    if value is None:
        return None
    document = json_document("The metadata filter", value)
    bad = [key for key in _keys(document) if '"' in key]
    if bad:
        raise InvalidInputError(f"Metadata filter keys cannot contain '\"': {bad[0]!r}.")
    return document or None


def check_page(limit: int, offset: int) -> None:
    """InvalidInputError unless ``limit`` and ``offset`` are non-negative integers."""
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"{name} must be a non-negative integer, not {value!r}.")


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def contains(have: Any, want: Any) -> bool:
    """Whether the JSON value ``have`` contains ``want`` (see the module docstring)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            key in have and contains(have[key], item) for key, item in want.items()
        )
    if isinstance(want, list):
        return isinstance(have, list) and all(
            any(contains(element, item) for element in have) for item in want
        )
    return _kind(have) == _kind(want) and bool(have == want)


def sql_contains(
    column: ColumnElement[Any], want: dict[str, Any], dialect: str
) -> ColumnElement[bool]:
    """A boolean SQL expression: the JSON ``column`` contains ``want``.

    ``want`` must have passed :func:`check_filter`.
    """
    if dialect == "postgresql":
        return type_coerce(column, JSONB).contains(want)
    return _SqliteContains(column).at(literal("$", String), want)


class _SqliteContains:
    """Builds the SQLite form: one condition per path of the filter document."""

    def __init__(self, document: ColumnElement[Any]) -> None:
        self._document = document
        self._aliases = itertools.count()

    def _type(self, path: ColumnElement[str]) -> ColumnElement[str]:
        return func.json_type(self._document, path)

    def at(self, path: ColumnElement[str], want: Any) -> ColumnElement[bool]:
        if isinstance(want, dict):
            children = [
                self.at(path.concat(literal(f'."{key}"', String)), item)
                for key, item in want.items()
            ]
            return and_(self._type(path) == "object", *children)
        if isinstance(want, list):
            return and_(self._type(path) == "array", *(self._element(path, item) for item in want))
        if want is None:
            return self._type(path) == "null"
        if isinstance(want, bool):
            return self._type(path) == ("true" if want else "false")
        value = func.json_extract(self._document, path)
        if isinstance(want, int | float):
            return and_(self._type(path).in_(("integer", "real")), value == want)
        if isinstance(want, str):
            return and_(self._type(path) == "text", value == want)
        return false()  # pragma: no cover - check_filter admits JSON values only

    def _element(self, path: ColumnElement[str], want: Any) -> ColumnElement[bool]:
        """Some element of the array at ``path`` contains ``want``."""
        each = func.json_each(self._document, path).table_valued(
            "fullkey", name=f"json_each_{next(self._aliases)}"
        )
        condition = self.at(each.c.fullkey, want)
        # Everything but this json_each comes from enclosing queries, however deep.
        return exists(select(true()).select_from(each).where(condition).correlate_except(each))
