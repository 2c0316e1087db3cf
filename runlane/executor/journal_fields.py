"""Reading a run journal's fields from LangChain callbacks: caller, model, usage, input.

Pure helpers of :mod:`runlane.executor.journal`, kept apart so they can be
tested one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from langchain_core.messages import BaseMessage, convert_to_messages

__all__ = [
    "LEAD_AGENT",
    "MIDDLEWARE",
    "UNKNOWN_MODEL",
    "add_usage",
    "caller_of",
    "input_messages",
    "jsonable",
    "model_hint",
    "model_name_of",
    "text_of",
    "usage_of",
    "zero_usage",
]

LEAD_AGENT = "lead_agent"
"""The caller of a model call made by the root graph."""
MIDDLEWARE = "middleware"
"""The caller of a model call tagged ``middleware`` or ``middleware:<name>``."""
UNKNOWN_MODEL = "unknown"
"""The model name when neither the response nor the call names one."""


def caller_of(metadata: dict[str, Any] | None, tags: Sequence[str] | None) -> str:
    """Who made a model call: ``middleware``, ``subgraph:<names>`` or ``lead_agent``."""
    if any(tag == MIDDLEWARE or tag.startswith(MIDDLEWARE + ":") for tag in tags or ()):
        return MIDDLEWARE
    metadata = metadata or {}
    ns = metadata.get("langgraph_checkpoint_ns") or metadata.get("checkpoint_ns") or ""
    parts = [part.split(":", 1)[0] for part in str(ns).split("|") if part]
    if len(parts) > 1:
        return "subgraph:" + "/".join(parts[:-1])
    return LEAD_AGENT


def _model_key(source: Any) -> str | None:
    if isinstance(source, dict):
        for key in ("model_name", "model", "model_id"):
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def model_name_of(message: Any, llm_output: Any, hint: str | None) -> str:
    """The model's name: response metadata, then ``llm_output``, then the start-time hint."""
    found = _model_key(getattr(message, "response_metadata", None)) or _model_key(llm_output)
    return found or hint or UNKNOWN_MODEL


def usage_of(message: Any, llm_output: Any) -> dict[str, int] | None:
    """``{input_tokens, output_tokens, total_tokens}`` of one response, None if unreported."""
    usage = getattr(message, "usage_metadata", None)
    if usage:
        inp, out = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        total = int(usage.get("total_tokens") or inp + out)
        return {"input_tokens": inp, "output_tokens": out, "total_tokens": total}
    legacy = llm_output.get("token_usage") if isinstance(llm_output, dict) else None
    if isinstance(legacy, dict) and legacy:
        inp = int(legacy.get("prompt_tokens") or legacy.get("input_tokens") or 0)
        out = int(legacy.get("completion_tokens") or legacy.get("output_tokens") or 0)
        total = int(legacy.get("total_tokens") or inp + out)
        return {"input_tokens": inp, "output_tokens": out, "total_tokens": total}
    return None


def model_hint(serialized: dict[str, Any] | None, kwargs: dict[str, Any]) -> str | None:
    params = kwargs.get("invocation_params")
    found = _model_key(params) or _model_key((serialized or {}).get("kwargs"))
    if found:
        return found
    kind = params.get("_type") if isinstance(params, dict) else None
    return kind if isinstance(kind, str) and kind else None


def text_of(value: Any) -> str:
    if isinstance(value, BaseMessage):
        return value.text
    return value if isinstance(value, str) else str(value)


def input_messages(graph_input: Any) -> list[BaseMessage]:
    raw = graph_input.get("messages") if isinstance(graph_input, dict) else None
    if raw is None:
        return []
    if isinstance(raw, (str, dict, BaseMessage)):
        raw = [raw]
    try:
        return convert_to_messages(raw)
    except Exception:
        return []


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types; what JSON cannot hold becomes its ``str``."""
    try:
        return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS))
    except (TypeError, orjson.JSONEncodeError):
        return str(value)


def zero_usage() -> dict[str, int]:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def add_usage(into: dict[str, int], usage: dict[str, int]) -> None:
    for key, value in usage.items():
        into[key] = into.get(key, 0) + value
