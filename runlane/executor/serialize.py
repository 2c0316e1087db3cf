"""JSON encoding of whatever a graph streams, done once per chunk.

:func:`encode` turns a chunk into JSON bytes with orjson, converting on the
way the objects LangGraph and LangChain put in chunks: messages and other
pydantic models (their ``model_dump()``, so messages keep LangChain's dict
form: ``type``, ``content``, ``id``, ...), ``Interrupt`` (``{"id", "value"}``),
``Send`` (``{"node", "arg"}``), ``Command``, sets, bytes, exceptions.
orjson itself handles dicts, lists, tuples, dataclasses, enums, UUIDs and
datetimes. :func:`fragment` wraps the bytes so a bridge's ``orjson.dumps``
copies them instead of encoding the chunk a second time.

Guarantee: encoding never raises for an unknown type; such a value becomes
its ``str()`` (a run must not die because a debug payload holds an odd
object), and non-string dict keys become strings.
"""

from __future__ import annotations

import base64
import dataclasses
import decimal
import pathlib
from collections.abc import Mapping
from typing import Any

import orjson
from langgraph.types import Interrupt, Send
from pydantic import BaseModel

__all__ = ["encode", "fragment", "to_jsonable"]

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump()
    if isinstance(obj, Interrupt):
        return {"id": obj.id, "value": obj.value}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # Shallow: nested values come back through this function as needed.
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Send):
        return {"node": obj.node, "arg": obj.arg}
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, bytes | bytearray):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, decimal.Decimal | pathlib.PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    to_json = getattr(obj, "to_json", None)  # LangChain Serializable objects outside pydantic
    if callable(to_json):
        try:
            return to_json()
        except Exception:  # a broken to_json falls through to str()
            pass
    return str(obj)


def encode(obj: Any) -> bytes:
    """``obj`` as JSON bytes; see the module docstring for the conversions."""
    return orjson.dumps(obj, default=_default, option=_OPTIONS)


def fragment(obj: Any) -> orjson.Fragment:
    """``obj`` encoded once, as a value any ``orjson.dumps`` embeds verbatim."""
    return orjson.Fragment(encode(obj))


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values (dicts, lists, str, numbers, bool, None)."""
    return orjson.loads(encode(obj))
