"""The upstream model behind the chat seam, over an in-process OpenAI-compatible answer
(httpx's MockTransport): what it sends, and how it reads streamed text, calls and usage."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.chat import steps
from tests.chat.test_conversation import TOOLS
from toolrpc.chat.conversation import Chat, DeltaEvent
from toolrpc.chat.upstream import UpstreamModel, affinity_key, openai_message
from toolrpc.engines.base import EngineInfo, GenerationRequest
from toolrpc.engines.upstream import UpstreamOptions, UpstreamPool
from toolrpc.errors import GenerationCancelled, InvalidParams, Overloaded
from toolrpc.protocol import Message, ToolCall

Handler = Callable[[httpx.Request], httpx.Response]
INFO = EngineInfo(model_name="served-model", context_length=2048)


def sse(*deltas: dict[str, Any], finish: str = "stop", usage: bool = True) -> bytes:
    """An OpenAI event stream: one chunk per delta, the finish, the usage chunk, [DONE]."""
    chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage:
        details = {"cached_tokens": 5}
        counts = {"prompt_tokens": 20, "completion_tokens": 7, "prompt_tokens_details": details}
        chunks.append({"choices": [], "usage": counts})
    lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks]
    return "".join([*lines, "data: [DONE]\n\n"]).encode()


def answering(*bodies: bytes, seen: list[dict[str, Any]]) -> Handler:
    """A handler that records each request body and answers the next of `bodies`."""
    replies = iter(bodies)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=next(replies))

    return handle


def pool_with(handler: Handler, *urls: str) -> UpstreamPool:
    options = UpstreamOptions(urls=urls or ("http://upstream:8000",))
    return UpstreamPool(options, INFO, transport=httpx.MockTransport(handler))


def chat_over(*bodies: bytes) -> tuple[Chat, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    return Chat(UpstreamModel(pool_with(answering(*bodies, seen=seen)))), seen


def call_fragments(name: str, arguments: str) -> list[dict[str, Any]]:
    """A streamed call: its name and the first half of its arguments, then the rest."""
    half = len(arguments) // 2
    head = {"index": 0, "id": "call_x", "type": "function"}
    return [
        {"tool_calls": [{**head, "function": {"name": name, "arguments": arguments[:half]}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]},
    ]


async def test_a_plain_answer_streams_the_upstream_text_and_maps_its_usage() -> None:
    chat, seen = chat_over(sse({"role": "assistant", "content": "Hel"}, {"content": "lo"}))

    events, result = await steps.run_step(chat, message="hi", system="be brief", temperature=0)

    assert [e.text for e in events if isinstance(e, DeltaEvent)] == ["Hel", "lo"]
    assert result.content == "Hello"
    assert (result.usage.prompt_tokens, result.usage.cached_tokens) == (20, 5)
    body = seen[0]
    assert body["model"] == "served-model"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert body["stream"] is True
    assert body["temperature"] == 0
    assert "tools" not in body
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("required", "required"),
        ({"name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
async def test_the_tool_choice_is_sent_as_openai_names_it(choice: Any, expected: Any) -> None:
    chat, seen = chat_over(sse({"content": "ok"}))

    await steps.run_step(chat, TOOLS, message="weather?", tool_choice=choice)

    assert seen[0]["tool_choice"] == expected
    sent = {tool["function"]["name"] for tool in seen[0]["tools"]}
    assert sent == ({"get_weather"} if isinstance(choice, dict) else {"get_weather", "get_time"})


async def test_a_streamed_call_is_reassembled_and_returned_with_a_fresh_id() -> None:
    body = sse(*call_fragments("get_weather", '{"city": "Paris"}'), finish="tool_calls")
    chat, _ = chat_over(body)

    _, result = await steps.run_step(chat, TOOLS, message="weather?", tool_choice="required")

    assert result.type == "tool_calls"
    assert isinstance(result.content, list)
    assert [(c.name, c.arguments) for c in result.content] == [("get_weather", {"city": "Paris"})]
    assert result.content[0].id != "call_x"


async def test_a_name_repeated_in_every_fragment_is_read_once() -> None:
    fragments = call_fragments("get_weather", '{"city": "Lima"}')
    fragments[1]["tool_calls"][0]["function"]["name"] = "get_weather"  # llama-cpp-python's way
    chat, _ = chat_over(sse(*fragments, finish="tool_calls"))

    _, result = await steps.run_step(chat, TOOLS, message="weather?", tool_choice="required")

    assert isinstance(result.content, list)
    assert [(c.name, c.arguments) for c in result.content] == [("get_weather", {"city": "Lima"})]


async def test_a_call_whose_arguments_do_not_validate_is_dropped() -> None:
    bad = sse(*call_fragments("get_weather", '{"town": "Paris"}'), finish="tool_calls")
    chat, _ = chat_over(bad, sse({"content": "I cannot tell."}))

    _, result = await steps.run_step(chat, TOOLS, message="weather?", tool_choice="auto")

    assert result.type == "final_text"


async def test_call_markup_written_as_text_becomes_a_call_never_text() -> None:
    markup = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    chat, _ = chat_over(sse({"content": markup[:20]}, {"content": markup[20:]}))

    events, result = await steps.run_step(chat, TOOLS, message="weather?")

    assert not [e for e in events if isinstance(e, DeltaEvent) and "<tool_call>" in e.text]
    assert isinstance(result.content, list)
    assert result.content[0].arguments == {"city": "Oslo"}


async def test_history_with_calls_and_results_is_sent_in_openai_form() -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Rome"})
    assistant = Message(role="assistant", content=None, tool_calls=[call])

    assert openai_message(assistant) == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            }
        ],
    }
    result = Message(role="tool", tool_call_id="call_1", name="get_weather", content="sunny")
    assert openai_message(result) == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


def test_every_turn_of_a_conversation_has_the_same_affinity_key() -> None:
    start = [Message(role="system", content="s"), Message(role="user", content="first")]
    later = [*start, Message(role="assistant", content="a"), Message(role="user", content="b")]
    other = [Message(role="system", content="s"), Message(role="user", content="other")]

    assert affinity_key(start) == affinity_key(later)
    assert affinity_key(start) != affinity_key(other)
    assert affinity_key([Message(role="system", content="s")]) is None


async def test_a_request_the_upstream_refuses_is_invalid_params_and_not_retried() -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(400, json={"error": {"message": "context too long"}})

    chat = Chat(UpstreamModel(pool_with(refuse, "http://a", "http://b")))

    with pytest.raises(InvalidParams) as raised:
        await steps.run_step(chat, message="hi")

    assert "context too long" in raised.value.message
    assert len(calls) == 1


async def test_a_failure_before_the_first_chunk_is_retried_once_on_another_replica() -> None:
    hosts: list[str] = []

    def first_fails(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host == "a":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, content=sse({"content": "from b"}))

    pool = pool_with(first_fails, "http://a", "http://b")

    _, result = await steps.run_step(Chat(UpstreamModel(pool)), message="hi")

    assert result.content == "from b"
    assert hosts == ["a", "b"]
    a, b = pool.replica_stats()
    assert (a.is_healthy, a.num_retried, b.is_healthy) == (False, 1, True)
    await pool.aclose()


async def test_a_stream_that_dies_after_its_role_chunk_is_retried_elsewhere() -> None:
    role_only = sse({"role": "assistant"}).split(b"\n\n")[0] + b"\n\n"

    def first_dies(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            return httpx.Response(200, content=role_only)
        return httpx.Response(200, content=sse({"content": "from b"}))

    pool = pool_with(first_dies, "http://a", "http://b")

    events, result = await steps.run_step(Chat(UpstreamModel(pool)), message="hi")

    assert result.content == "from b"
    assert [e.text for e in events if isinstance(e, DeltaEvent)] == ["from b"]
    await pool.aclose()


async def test_a_500_is_retried_once_elsewhere_then_overloaded_and_both_stay_in() -> None:
    hosts: list[str] = []

    def broken(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(500, json={"error": {"message": "boom"}})

    pool = pool_with(broken, "http://a", "http://b", "http://c")

    with pytest.raises(Overloaded) as raised:
        await steps.run_step(Chat(UpstreamModel(pool)), message="hi")

    assert raised.value.retry_after_s > 0
    assert len(hosts) == 2
    assert len(set(hosts)) == 2
    assert all(replica.is_healthy for replica in pool.replica_stats())
    await pool.aclose()


async def test_replicas_that_refuse_connections_are_out_and_then_refused_at_once() -> None:
    hosts: list[str] = []

    def refused(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        raise httpx.ConnectError("connection refused", request=request)

    pool = pool_with(refused, "http://a", "http://b")
    with pytest.raises(Overloaded):
        await steps.run_step(Chat(UpstreamModel(pool)), message="hi")
    assert not any(replica.is_healthy for replica in pool.replica_stats())

    with pytest.raises(Overloaded) as raised:
        await steps.run_step(Chat(UpstreamModel(pool)), message="hi again")

    assert raised.value.message == "every upstream replica is out of service"
    assert hosts == ["a", "b"]
    await pool.aclose()


async def test_a_stream_cut_after_its_first_chunk_is_overloaded_not_a_short_answer() -> None:
    cut = sse({"content": "partial"}).split(b"data: [DONE]")[0]
    pool = pool_with(lambda _request: httpx.Response(200, content=cut))

    with pytest.raises(Overloaded):
        await steps.run_step(Chat(UpstreamModel(pool)), message="hi")


async def test_the_pool_serves_a_plain_completion_as_an_engine() -> None:
    seen: list[dict[str, Any]] = []
    body = b"".join(
        f"data: {json.dumps(chunk)}\n\n".encode()
        for chunk in [
            {"choices": [{"index": 0, "text": "four", "finish_reason": None}]},
            {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
        ]
    )
    pool = pool_with(answering(body + b"data: [DONE]\n\n", seen=seen))

    chunks = [c async for c in pool.generate(GenerationRequest("2+2=", max_new_tokens=1))]

    assert "".join(c.text for c in chunks) == "four"
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3
    assert seen[0]["prompt"] == "2+2=" and seen[0]["max_tokens"] == 1
    assert pool.stats().num_prompt_tokens == 3
    await pool.aclose()


def pool_silent_for(pool: UpstreamPool, seconds: float, *hosts: str) -> None:
    """Make the replicas on `hosts` look as if they had answered nothing for `seconds`."""
    for replica in pool.replicas.replicas:
        if httpx.URL(replica.url).host in hosts:
            replica.last_alive = time.monotonic() - seconds


async def test_probes_take_a_refusing_replica_out_at_once_a_slow_one_once_silent() -> None:
    failures = {"a": httpx.ConnectError, "b": httpx.ReadTimeout}

    def probe(request: httpx.Request) -> httpx.Response:
        failure = failures.get(request.url.host)
        if failure is not None:
            raise failure("scripted", request=request)
        return httpx.Response(200, json={"data": [{"id": "served-model"}]})

    pool = pool_with(probe, "http://a", "http://b")
    await pool.check_health()
    await pool.check_health()
    assert [r.is_healthy for r in pool.replica_stats()] == [False, True]

    pool_silent_for(pool, pool.options.timeout_s, "b")
    await pool.check_health()
    assert [r.is_healthy for r in pool.replica_stats()] == [False, False]

    failures.clear()
    await pool.check_health()
    assert [r.is_healthy for r in pool.replica_stats()] == [True, True]
    await pool.aclose()


async def test_a_timed_out_request_on_a_busy_replica_is_retried_and_leaves_it_in() -> None:
    """A replica that answered recently (it is serving other clients) only queued this request:
    the request goes elsewhere, the replica stays in service (a single replica would otherwise
    turn a queue into 503s for everyone)."""

    def a_is_slow(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            raise httpx.ReadTimeout("no first chunk yet", request=request)
        return httpx.Response(200, content=sse({"content": "from b"}))

    pool = pool_with(a_is_slow, "http://a", "http://b")

    _, result = await steps.run_step(Chat(UpstreamModel(pool)), message="hi")

    assert result.content == "from b"
    a, _b = pool.replica_stats()
    assert (a.is_healthy, a.num_retried, a.last_error) == (
        True,
        1,
        "ReadTimeout: no first chunk yet",
    )
    await pool.aclose()


async def test_a_timed_out_request_on_a_silent_replica_takes_it_out() -> None:
    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("nothing", request=request)

    pool = pool_with(silent, "http://a")
    pool_silent_for(pool, pool.options.timeout_s, "a")

    with pytest.raises(Overloaded):
        await steps.run_step(Chat(UpstreamModel(pool)), message="hi")

    assert not pool.replica_stats()[0].is_healthy
    await pool.aclose()


async def test_a_request_past_its_time_limit_is_ended_as_a_timeout() -> None:
    handler = answering(sse({"content": "one"}, {"content": "two"}), seen=[])
    options = UpstreamOptions(urls=("http://upstream:8000",), deadline_s=1e-6)
    pool = UpstreamPool(options, INFO, transport=httpx.MockTransport(handler))

    with pytest.raises(GenerationCancelled, match="time limit"):
        await steps.run_step(Chat(UpstreamModel(pool)), message="hi")

    assert pool.replica_stats()[0].is_healthy
    await pool.aclose()
