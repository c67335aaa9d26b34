"""Tool choice on the embedded model (SmolLM2-135M), end to end in the chat layer: the router
decides in `auto` and picks the tool in `required`, and grounding takes argument values from the
user's words. A handful of cases from each kind that `benchmarks/tool_eval.py` measures at scale."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.chat.steps import run_step
from toolrpc.chat.conversation import Chat
from toolrpc.config import Settings
from toolrpc.engines.batched import BatchedEngine
from toolrpc.engines.default_model import embedded_model_path
from toolrpc.engines.llama_cpp import LlamaCppOptions, load_llama_cpp
from toolrpc.protocol import CreateMessageResult, Tool
from toolrpc.scheduling.loop import LoopConfig
from toolrpc.service import build_chat

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WAIT_S = 120.0
MARKUP = ("<tool_call>", "</tool_call>", "<|im_start|>", "<|im_end|>", '"arguments"')


def tool(name: str, description: str, **properties: str) -> Tool:
    return Tool.model_validate(
        {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    key: {"type": "string", "description": text} for key, text in properties.items()
                },
                "required": list(properties),
            },
        }
    )


TOOLS = [
    tool("get_weather", "Get the current weather conditions for a city.", city="City name"),
    tool("get_time", "Get the current local time in a timezone.", timezone="Timezone or city"),
    tool(
        "translate",
        "Translate text into another language.",
        text="Text to translate",
        target_language="Language to translate into",
    ),
    tool(
        "send_email",
        "Send an email to a recipient.",
        to="Recipient email address",
        body="Message body",
    ),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session() -> AsyncIterator[Chat]:
    """The chat layer on the embedded model, wired as the server wires it by default (the
    router and grounding on: SmolLM2's template has no tool format)."""
    options = LlamaCppOptions(embedded_model_path(), context_length=2048, num_slots=4)
    engine: BatchedEngine = await asyncio.to_thread(load_llama_cpp, options, LoopConfig())
    chat = build_chat(engine, Settings())
    assert chat.router is not None and chat.ground_arguments
    yield chat
    await engine.aclose()


async def step(session: Chat, **params: Any) -> CreateMessageResult:
    _, result = await run_step(session, TOOLS, wait_s=WAIT_S, temperature=0, **params)
    return result


def only_call(result: CreateMessageResult) -> tuple[str, dict[str, Any]]:
    assert result.type == "tool_calls" and isinstance(result.content, list)
    [call] = result.content
    return call.name, dict(call.arguments)


async def test_auto_calls_the_weather_tool_and_then_answers_from_its_result(
    session: Chat,
) -> None:
    asked = await step(session, message="What's the weather in Paris?")

    assert only_call(asked) == ("get_weather", {"city": "Paris"})
    assert isinstance(asked.content, list)

    answered = await step(
        session,
        history=[m.model_dump(exclude_none=True) for m in asked.history],
        tool_results=[{"tool_call_id": asked.content[0].id, "content": "18 C and sunny"}],
    )

    assert answered.type == "final_text" and isinstance(answered.content, str)
    assert answered.content.strip()
    assert not any(marker in answered.content for marker in MARKUP)
    assert answered.iteration_count == 1


async def test_auto_answers_a_request_no_tool_serves(session: Chat) -> None:
    result = await step(session, message="Write a short poem about the sea.")

    assert result.type == "final_text" and isinstance(result.content, str)
    assert result.content.strip()
    assert not any(marker in result.content for marker in MARKUP)


async def test_required_picks_the_tool_and_takes_its_values_from_the_request(
    session: Chat,
) -> None:
    async def required(message: str) -> tuple[str, dict[str, Any]]:
        return only_call(await step(session, message=message, tool_choice="required"))

    name, arguments = await required(
        "Send an email to bob@example.com to tell him the meeting moved to 3pm."
    )
    assert name == "send_email"
    assert arguments["to"] == "bob@example.com"

    name, arguments = await required("Translate 'Where is the train station?' into Spanish.")
    assert name == "translate"
    assert arguments == {"text": "Where is the train station?", "target_language": "Spanish"}


RECTANGLE_AREA = Tool.model_validate(
    {
        "name": "rectangle_area",
        "description": "Compute the area of a rectangle",
        "parameters": {
            "type": "object",
            "properties": {"width": {"type": "number"}, "height": {"type": "number"}},
            "required": ["width", "height"],
        },
    }
)


async def test_auto_answers_in_prose_when_the_only_tool_cannot_do_what_is_asked(
    session: Chat,
) -> None:
    _, result = await run_step(
        session,
        [RECTANGLE_AREA],
        wait_s=WAIT_S,
        temperature=0,
        message="What is the circumference of a circle with a radius of 3 cm?",
        max_new_tokens=32,
    )

    assert result.type == "final_text" and isinstance(result.content, str)
    assert result.content.strip()
    assert not any(marker in result.content for marker in MARKUP)


async def test_auto_still_calls_the_tool_that_fits_once_the_request_gives_its_numbers(
    session: Chat,
) -> None:
    _, result = await run_step(
        session,
        [RECTANGLE_AREA],
        wait_s=WAIT_S,
        temperature=0,
        message="Compute the area of a rectangle 3 m wide and 4 m high.",
    )

    name, arguments = only_call(result)
    assert name == "rectangle_area"
    assert sorted(arguments.values()) == [3, 4]
