"""Request models of the runs routes, without HTTP."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runlane.server.models import (
    RunCancelMany,
    RunCreate,
    StatelessRunCreate,
    parse_stream_modes,
    server_config,
)
from runlane.server.run_ops import join_cursor


def test_defaults_follow_the_reference() -> None:
    body = RunCreate(assistant_id="agent")
    assert body.multitask_strategy == "enqueue"
    assert body.if_not_exists == "reject"
    assert body.on_disconnect == "continue"
    assert body.stream_mode == ["values"]
    assert body.effective_durability is None


def test_stream_mode_string_or_list_deduplicated() -> None:
    assert RunCreate(assistant_id="a", stream_mode="updates").stream_mode == ["updates"]
    body = RunCreate(assistant_id="a", stream_mode=["values", "messages-tuple", "values"])
    assert body.stream_mode == ["values", "messages-tuple"]


def test_checkpoint_during_maps_to_durability() -> None:
    assert RunCreate(assistant_id="a", checkpoint_during=False).effective_durability == "exit"
    assert RunCreate(assistant_id="a", checkpoint_during=True).effective_durability == "async"
    assert RunCreate(assistant_id="a", durability="sync").effective_durability == "sync"


def test_empty_feedback_keys_and_false_strict_resume_are_accepted() -> None:
    RunCreate(assistant_id="a", feedback_keys=[], strict_resume=False, stream_resumable=True)


def test_stateless_refuses_checkpoints() -> None:
    with pytest.raises(ValidationError, match="checkpoint"):
        StatelessRunCreate(assistant_id="a", checkpoint={"checkpoint_id": "x"})


def test_server_config_overwrites_identity() -> None:
    config = server_config(
        {"tags": ["t"], "configurable": {"thread_id": "evil", "checkpoint_ns": "sub", "x": 1,
                                          "user_id": "u"}},
        thread_id="t1", run_id="r1", assistant_id="a1", graph_id="g1", user_id="alice",
    )
    assert config == {"tags": ["t"], "configurable": {
        "thread_id": "t1", "checkpoint_ns": "", "run_id": "r1", "assistant_id": "a1",
        "graph_id": "g1", "user_id": "alice", "x": 1}}


def test_parse_stream_modes() -> None:
    assert parse_stream_modes([]) == []
    assert parse_stream_modes([""]) == []
    assert parse_stream_modes(["values", "updates"]) == ["values", "updates"]
    assert parse_stream_modes(["values, custom"]) == ["values", "custom"]
    assert parse_stream_modes(['["debug","values"]']) == ["debug", "values"]
    for bad in (["lifecycle"], ["nope"], ["[1"], ['{"a":1}']):
        with pytest.raises(ValueError, match="stream_mode"):
            parse_stream_modes(bad)


def test_cancel_many_forms() -> None:
    RunCancelMany(thread_id="t", run_ids=["r"])
    RunCancelMany(status="all")
    for bad in ({}, {"thread_id": "t"}, {"run_ids": ["r"]}, {"status": "all", "run_ids": ["r"]}):
        with pytest.raises(ValidationError):
            RunCancelMany.model_validate(bad)


def test_join_cursor() -> None:
    from runlane.exceptions import BadRequestError

    assert join_cursor(None, None) is None
    assert join_cursor("", "") is None
    assert join_cursor("5", "7") == "5"
    assert join_cursor(None, "7") == "7"
    assert join_cursor("-1", None) == "0"
    assert join_cursor("-", None) == "0"
    with pytest.raises(BadRequestError):
        join_cursor("1-0", None)
