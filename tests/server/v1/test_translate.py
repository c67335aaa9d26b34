"""The pure translation between OpenAI's wire and the chat layer: exact chunk shapes, argument
fragments, finish reasons, error parameters and the conversation read from `messages`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from toolrpc.chat.conversation import DeltaEvent, DoneEvent, ToolCallsEvent
from toolrpc.errors import InvalidParams, ParamError, ToolProtocolError
from toolrpc.openai_protocol import ChatCompletionRequest, ChatMessage
from toolrpc.protocol import CreateMessageResult, Message, ToolCall, Usage
from toolrpc.server.openai.errors import error_detail, param_path
from toolrpc.server.openai.translate import (
    ChunkStream,
    Completion,
    chat_completion,
    conversation,
    finish_reason,
    step_request,
)

COMPLETION = Completion("chatcmpl-1", 1700000000, "smol")
CALL = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris", "units": "metric"})


def result(content: str | list[ToolCall], reason: Any = "stop") -> CreateMessageResult:
    message = (
        Message(role="assistant", content=content)
        if isinstance(content, str)
        else Message(role="assistant", tool_calls=content)
    )
    return CreateMessageResult(
        type="final_text" if isinstance(content, str) else "tool_calls",
        content=content,
        history=[Message(role="user", content="q"), message],
        iteration_count=0,
        finish_reason=reason,
        usage=Usage(prompt_tokens=5, completion_tokens=2, cached_tokens=4),
    )


def test_the_role_and_content_chunks_have_openais_exact_shape() -> None:
    stream = ChunkStream(COMPLETION)

    role = stream.role().to_json(with_usage_field=False)
    [content] = [c.to_json(with_usage_field=True) for c in stream.of_event(DeltaEvent("Hi"))]

    assert role == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "smol",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
                "logprobs": None,
            }
        ],
    }
    assert content["choices"][0]["delta"] == {"content": "Hi"}  # type: ignore[index,call-overload]
    assert content["usage"] is None


def test_a_calls_chunks_carry_id_and_name_first_then_fragments_that_join_to_its_json() -> None:
    second = CALL.model_copy(update={"id": "call_2"})
    chunks = ChunkStream(COMPLETION).of_event(ToolCallsEvent((CALL, second)))
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]

    first = deltas[0]
    assert (first.index, first.id, first.type, first.function.name) == (
        0,
        "call_1",
        "function",
        "get_weather",
    )
    fragments = [d.function.arguments or "" for d in deltas if d.index == 0]
    assert len(fragments) > 2
    assert json.loads("".join(fragments)) == CALL.arguments
    assert all(
        d.id is None and d.function.name is None
        for d in deltas
        if d not in (first,) and d.index == 0
    )
    assert {d.index for d in deltas} == {0, 1}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"), ("loop_guard", "stop")],
)
def test_finish_reasons_map_to_openais_and_the_loop_guard_is_stop(
    reason: Any, expected: str
) -> None:
    done = ChunkStream(COMPLETION).of_event(DoneEvent(result("x", reason)))

    assert finish_reason(reason) == expected
    assert done[0].choices[0].finish_reason == expected


def test_a_finished_call_step_is_a_completion_with_tool_calls_and_cached_usage() -> None:
    answer = chat_completion(result([CALL], "tool_calls"), COMPLETION)

    message = answer.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    assert json.loads(message.tool_calls[0].function.arguments) == CALL.arguments
    assert answer.usage.total_tokens == 7
    assert answer.usage.prompt_tokens_details.cached_tokens == 4


def test_messages_become_the_conversation_with_the_trailing_results_checked() -> None:
    messages = [
        ChatMessage(role="user", content="q"),
        ChatMessage.of(Message(role="assistant", tool_calls=[CALL])),
        ChatMessage(role="tool", tool_call_id="call_1", content="sunny"),
    ]

    history = conversation(messages)

    assert history[1].tool_calls == [CALL]
    assert history[2] == Message(
        role="tool", content="sunny", tool_call_id="call_1", name="get_weather"
    )
    with pytest.raises(ToolProtocolError):
        conversation([*messages, ChatMessage(role="tool", tool_call_id="call_1", content="again")])
    with pytest.raises(ToolProtocolError):
        conversation([*messages[:2], ChatMessage(role="user", content="next")])


def test_a_message_round_trips_through_openais_form() -> None:
    message = Message(role="assistant", content="checking", tool_calls=[CALL])

    assert ChatMessage.of(message).to_message() == message


def test_a_request_becomes_a_step_with_the_servers_token_cap() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "smol",
            "messages": [{"role": "user", "content": "q"}],
            "max_tokens": 9000,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "tools": [{"type": "function", "function": {"name": "get_weather", "strict": True}}],
            "parallel_tool_calls": False,
            "response_format": {"type": "json_object"},
        }
    )

    step = step_request(request, max_new_tokens_limit=100)

    assert step.options.max_new_tokens == 100
    assert step.tools[0].name == "get_weather"
    assert step.tool_choice != "auto"
    assert step.parallel_tool_calls is False
    assert step.answer_schema == {"type": "object"}


def test_an_error_names_its_first_bad_param_as_openai_writes_it() -> None:
    error = InvalidParams(
        "Invalid params",
        [ParamError(("messages", 1, "content"), "bad"), ParamError(("n",), "one only")],
    )

    detail = error_detail(error)

    assert param_path(("tools", 0, "function", "name")) == "tools[0].function.name"
    assert detail.param == "messages[1].content"
    assert detail.type == "invalid_request_error"
    assert "n: one only" in detail.message
