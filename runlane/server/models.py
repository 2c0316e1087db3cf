"""Request bodies of the runs routes, exactly as ``langgraph-sdk`` sends them.

Rules (each one is a 422 naming the field, never a silent drop):

- Unknown keys are refused (``extra="forbid"``).
- Fields the SDK can send but runlane does not implement are refused when
  they carry a value: ``webhook``, ``feedback_keys`` (non-empty),
  ``langsmith_tracer``, ``strict_resume=true``; stream modes ``tools`` and
  ``lifecycle`` (v2 protocol only) and unknown modes.
- Contradictions are refused: ``command`` with ``input``; both
  ``config.configurable`` and ``context``; both ``durability`` and
  ``checkpoint_during``; ``checkpoint_id`` that differs from
  ``checkpoint.checkpoint_id``.

Defaults follow the reference server: ``multitask_strategy="enqueue"``,
``if_not_exists="reject"`` (stateless runs always create their thread),
``on_disconnect="continue"``, ``stream_mode="values"``. ``stream_resumable``
is accepted and needs nothing: every runlane stream is resumable.

Identity is the server's (:func:`server_config`, and again the executor's
``build_config``): in ``config.configurable`` the keys ``thread_id``,
``checkpoint_ns``, ``run_id``, ``assistant_id``, ``graph_id`` and ``user_id``
are *overwritten* with the server's values (``checkpoint_ns`` becomes ``""``,
the root graph; ``user_id`` the authenticated user, None in the no-auth
mode), and ``checkpoint.thread_id`` is ignored (a run only ever reads its own
thread). Overwriting rather than refusing keeps ported LangGraph code that
sets ``configurable.thread_id`` working, and no request can address another
thread's checkpoints either way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "IDENTITY_KEYS",
    "STREAM_MODES",
    "UNSUPPORTED_STREAM_MODES",
    "RunBatchItem",
    "RunCancelMany",
    "RunCreate",
    "StatelessRunCreate",
    "normalize_stream_mode",
    "parse_stream_modes",
    "server_config",
]

JsonObject = dict[str, Any]

STREAM_MODES = frozenset(
    {
        "values",
        "updates",
        "messages",
        "messages-tuple",
        "custom",
        "debug",
        "tasks",
        "checkpoints",
        "events",
    }
)
"""Stream modes runlane streams."""
UNSUPPORTED_STREAM_MODES = frozenset({"tools", "lifecycle"})
"""Modes the SDK types allow that belong to the v2 protocol only."""

IDENTITY_KEYS = ("thread_id", "checkpoint_ns", "run_id", "assistant_id", "graph_id", "user_id")
"""``config.configurable`` keys whose value is always the server's."""


def normalize_stream_mode(value: object, field: str = "stream_mode") -> list[str]:
    """``stream_mode`` as a de-duplicated list; ValueError naming the bad mode."""
    modes = [value] if isinstance(value, str) else value
    if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
        raise ValueError(f"{field} must be a stream mode or a list of stream modes")
    out: list[str] = []
    for mode in modes:
        if mode in UNSUPPORTED_STREAM_MODES:
            raise ValueError(
                f"{field} {mode!r} is not supported by runlane (v2 streaming protocol only)"
            )
        if mode not in STREAM_MODES:
            raise ValueError(
                f"unknown {field} {mode!r}: use one of {', '.join(sorted(STREAM_MODES))}"
            )
        if mode not in out:
            out.append(mode)
    return out


def parse_stream_modes(values: list[str]) -> list[str]:
    """The join routes' ``stream_mode`` query (repeated keys, commas or a JSON array;
    empty means every mode of the run): the modes, ``[]`` for all."""
    import orjson

    modes: list[str] = []
    for raw in values:
        raw = raw.strip()
        if not raw:
            continue
        if raw.startswith("["):
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ValueError(f"stream_mode {raw!r} is not a JSON array") from None
            if not isinstance(parsed, list):
                raise ValueError(f"stream_mode {raw!r} is not a JSON array")
            modes.extend(str(m) for m in parsed)
        else:
            modes.extend(part.strip() for part in raw.split(",") if part.strip())
    return normalize_stream_mode(modes) if modes else []


class RunCreate(BaseModel):
    """``POST /threads/{tid}/runs[/stream|/wait]`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    assistant_id: str
    input: Any = None
    command: JsonObject | None = None
    metadata: JsonObject | None = None
    config: JsonObject | None = None
    context: JsonObject | None = None
    checkpoint: JsonObject | None = None
    checkpoint_id: str | None = None
    stream_mode: list[str] = Field(default_factory=lambda: ["values"])
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    on_completion: Literal["delete", "keep"] | None = None
    after_seconds: float = Field(default=0, ge=0)
    durability: Literal["sync", "async", "exit"] | None = None
    checkpoint_during: bool | None = None
    webhook: str | None = None
    feedback_keys: list[str] | None = None
    langsmith_tracer: JsonObject | None = None
    strict_resume: bool | None = None

    @field_validator("stream_mode", mode="before")
    @classmethod
    def _stream_mode(cls, value: object) -> list[str]:
        if value is None:
            return ["values"]
        return normalize_stream_mode(value)

    @field_validator("command")
    @classmethod
    def _command(cls, value: JsonObject | None) -> JsonObject | None:
        if value is not None:
            unknown = set(value) - {"resume", "update", "goto"}
            if unknown:
                raise ValueError(
                    f"unknown command keys {sorted(unknown)}: use resume, update, goto"
                )
        return value

    @field_validator("config")
    @classmethod
    def _config(cls, value: JsonObject | None) -> JsonObject | None:
        if value is not None and not isinstance(value.get("configurable", {}), dict):
            raise ValueError("config.configurable must be an object")
        return value

    @model_validator(mode="after")
    def _supported(self) -> RunCreate:
        unsupported = []
        if self.webhook is not None:
            unsupported.append("webhook")
        if self.feedback_keys:
            unsupported.append("feedback_keys")
        if self.langsmith_tracer is not None:
            unsupported.append("langsmith_tracer")
        if self.strict_resume:
            unsupported.append("strict_resume")
        if unsupported:
            raise ValueError(
                f"runlane does not support {', '.join(unsupported)}; remove "
                f"{'this field' if len(unsupported) == 1 else 'these fields'} from the request"
            )
        if self.command is not None and self.input is not None:
            raise ValueError("command and input cannot be combined: send one of them")
        if self.config and self.config.get("configurable") and self.context:
            raise ValueError(
                "config.configurable and context cannot both be set: put the values in context"
            )
        if self.durability is not None and self.checkpoint_during is not None:
            raise ValueError("durability and checkpoint_during cannot both be set: use durability")
        if (
            self.checkpoint_id is not None
            and self.checkpoint is not None
            and self.checkpoint.get("checkpoint_id") not in (None, self.checkpoint_id)
        ):
            raise ValueError("checkpoint_id differs from checkpoint.checkpoint_id")
        return self

    @property
    def effective_durability(self) -> Literal["sync", "async", "exit"] | None:
        """``durability``, or the deprecated ``checkpoint_during`` translated."""
        if self.durability is not None:
            return self.durability
        if self.checkpoint_during is None:
            return None
        return "async" if self.checkpoint_during else "exit"


class StatelessRunCreate(RunCreate):
    """``POST /runs[/stream|/wait]``: a run on a new temporary thread.

    Refused here (422): ``checkpoint``/``checkpoint_id`` (a new thread has
    none) and ``command.resume`` (nothing waits for input).
    """

    @model_validator(mode="after")
    def _stateless(self) -> StatelessRunCreate:
        if self.checkpoint is not None or self.checkpoint_id is not None:
            raise ValueError("checkpoint and checkpoint_id need a thread: use a thread-bound run")
        if self.command is not None and "resume" in self.command:
            raise ValueError("command.resume needs a thread waiting for input")
        return self


class RunBatchItem(RunCreate):
    """One item of ``POST /runs/batch``: a stateless run, or a run on ``thread_id``
    (the route validates it again as :class:`StatelessRunCreate` or :class:`RunCreate`)."""

    thread_id: str | None = None


class RunCancelMany(BaseModel):
    """``POST /runs/cancel``: ``{thread_id, run_ids}`` or ``{status}``."""

    model_config = ConfigDict(extra="forbid")

    thread_id: str | None = None
    run_ids: list[str] | None = None
    status: Literal["pending", "running", "all"] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> RunCancelMany:
        by_ids = self.thread_id is not None or self.run_ids is not None
        if by_ids == (self.status is not None):
            raise ValueError("send either thread_id and run_ids, or status")
        if by_ids and (self.thread_id is None or not self.run_ids):
            raise ValueError("thread_id and run_ids go together")
        return self


def server_config(
    config: JsonObject | None,
    *,
    thread_id: str,
    run_id: str,
    assistant_id: str,
    graph_id: str,
    user_id: str | None = None,
) -> JsonObject:
    """A copy of ``config`` whose identity keys are the server's (module docstring)."""
    out = dict(config or {})
    configurable = dict(out.get("configurable") or {})
    configurable.update(
        thread_id=thread_id,
        checkpoint_ns="",
        run_id=run_id,
        assistant_id=assistant_id,
        graph_id=graph_id,
        user_id=user_id,
    )
    out["configurable"] = configurable
    return out
