"""Two example graphs that run offline, with no API key and no network.

``graph`` (id ``agent``): a tool-calling chat loop. For a human message the
model streams a short sentence and calls the ``count_words`` tool; the tool
reports progress on the ``custom`` stream; the model then streams its answer.
Every stream mode (``values``, ``updates``, ``messages-tuple``, ``custom``)
shows something, and the text of every message is a pure function of the
input (message ids are generated, as with a real model). Each reply reports
``usage_metadata`` (one token per word: the conversation in, the reply out) and
``response_metadata["model_name"]`` (``MODEL_NAME``), as a real model's would.

``hitl_graph`` (id ``hitl``): proposes an action, pauses with ``interrupt()``
for a decision, and on resume approves (``"yes"``, ``True``,
``{"approved": true}``) or rejects (anything else).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolCallChunk,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from typing_extensions import TypedDict

__all__ = [
    "MODEL_NAME",
    "AgentContext",
    "ReviewState",
    "ScriptedChatModel",
    "call_model",
    "count_words",
    "graph",
    "hitl_graph",
    "propose",
    "reply_to",
    "review",
    "usage_for",
]


MODEL_NAME = "runlane-scripted-1"
"""The model name the scripted chat model reports in ``response_metadata``."""


class AgentContext(TypedDict, total=False):
    """Run context the ``agent`` graph understands (pass it as ``context``)."""

    signature: str
    """Appended to the final answer, e.g. ``"-- runlane"``."""


@tool
def count_words(text: str) -> int:
    """Count the words in a text."""
    writer = get_stream_writer()
    words = text.split()
    for index, _word in enumerate(words, start=1):
        writer({"tool": "count_words", "counted": index, "total": len(words)})
    return len(words)


class ScriptedChatModel(BaseChatModel):
    """A chat model whose reply depends only on the conversation, streamed token by token.

    After a human message it calls ``count_words`` on that message; after a
    tool result it answers with the count. langchain-core's
    ``GenericFakeChatModel`` replays a fixed list regardless of the input and
    cannot stream tool calls, hence this small model.
    """

    @property
    def _llm_type(self) -> str:
        return "runlane-scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = reply_to(messages)
        reply.usage_metadata = usage_for(messages, reply)
        reply.response_metadata = {"model_name": MODEL_NAME}
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = reply_to(messages)
        for token in _tokens(reply.text):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token))
            if run_manager is not None:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk
        for index, call in enumerate(reply.tool_calls):
            tool_chunk = ToolCallChunk(
                name=call["name"], args=json.dumps(call["args"]), id=call["id"], index=index
            )
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(content="", tool_call_chunks=[tool_chunk])
            )
            if run_manager is not None:
                run_manager.on_llm_new_token("", chunk=chunk)
            yield chunk
        # The usage and the model name arrive last, as with a real streaming model.
        last = AIMessageChunk(
            content="",
            usage_metadata=usage_for(messages, reply),
            response_metadata={"model_name": MODEL_NAME},
            chunk_position="last",
        )
        yield ChatGenerationChunk(message=last)


def usage_for(messages: Sequence[BaseMessage], reply: AIMessage) -> UsageMetadata:
    """The scripted model's token usage: one token per word, the conversation in, the reply out."""
    inp = sum(len(m.text.split()) for m in messages)
    out = len(reply.text.split())
    return UsageMetadata(input_tokens=inp, output_tokens=out, total_tokens=inp + out)


def reply_to(messages: Sequence[BaseMessage]) -> AIMessage:
    """The scripted model's reply to a conversation (pure)."""
    last = messages[-1] if messages else None
    if isinstance(last, ToolMessage):
        count = last.text
        said = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        noun = "word" if count == "1" else "words"
        return AIMessage(content=f'Your message "{said}" has {count} {noun}.')
    if isinstance(last, HumanMessage):
        turn = sum(isinstance(m, HumanMessage) for m in messages)
        return AIMessage(
            content="Let me count the words.",
            tool_calls=[{"name": "count_words", "args": {"text": last.text}, "id": f"call_{turn}"}],
        )
    return AIMessage(content="Send me a message and I will count its words.")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    for index, word in enumerate(text.split(" ")):
        tokens.append(word if index == 0 else f" {word}")
    return [t for t in tokens if t]


_model = ScriptedChatModel()


async def call_model(state: MessagesState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """The ``agent`` node: one model turn, signed if the context asks for it."""
    reply = await _model.ainvoke(state["messages"])
    signature = (runtime.context or {}).get("signature")
    if signature and not reply.tool_calls:
        reply = reply.model_copy(update={"content": f"{reply.text} {signature}"})
    return {"messages": [reply]}


def _build_agent() -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(MessagesState, context_schema=AgentContext)
    builder.add_node("agent", call_model)
    builder.add_node("tools", ToolNode([count_words]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, ["tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(name="agent")


class ReviewState(MessagesState, total=False):
    """State of the ``hitl`` graph: the conversation plus the reviewer's decision."""

    approved: bool


def propose(state: ReviewState) -> dict[str, Any]:
    """Turn the latest human message into a proposed action."""
    request = state["messages"][-1].text if state["messages"] else "nothing"
    return {"messages": [AIMessage(content=f"I am about to: {request}. Approve?")]}


def review(state: ReviewState) -> dict[str, Any]:
    """Pause for a human decision, then record it."""
    action = state["messages"][-1].text
    decision = interrupt({"question": "Approve this action?", "action": action})
    approved = _is_yes(decision)
    verdict = "Approved, done." if approved else "Rejected, nothing was done."
    return {"approved": approved, "messages": [AIMessage(content=verdict)]}


def _is_yes(decision: object) -> bool:
    if isinstance(decision, dict):
        decision = decision.get("approved")
    if isinstance(decision, bool):
        return decision
    return isinstance(decision, str) and decision.strip().lower() in {"y", "yes", "approve"}


def _build_hitl() -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(ReviewState)
    builder.add_node("propose", propose)
    builder.add_node("review", review)
    builder.add_edge(START, "propose")
    builder.add_edge("propose", "review")
    builder.add_edge("review", END)
    return builder.compile(name="hitl")


graph = _build_agent()
hitl_graph = _build_hitl()
