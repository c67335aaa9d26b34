"""render_prompt: tools natively for templates that render them, as Hermes text otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolrpc.chat.prompt import TOOL_INSTRUCTIONS, render_prompt
from toolrpc.chat.template import DEFAULT_CHATML_TEMPLATE, ChatTemplate
from toolrpc.chat.turn import append_inputs, with_system
from toolrpc.protocol import Message, Tool, ToolCall, ToolResult

GOLDEN = Path(__file__).parent / "golden"
CASES: dict[str, Any] = json.loads((GOLDEN / "cases.json").read_text(encoding="utf-8"))

WEATHER = Tool.model_validate(
    {
        "name": "get_weather",
        "description": "Weather for a city (°C)",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
)
INSTRUCTIONS_HEAD = TOOL_INSTRUCTIONS.split("{tools}")[0]
CALL = ToolCall(id="call_1", name="get_weather", arguments={"city": "Zürich"})
TOOL_TURN = [
    Message(role="user", content="Weather in Zürich?"),
    Message(role="assistant", content=None, tool_calls=[CALL]),
    Message(role="tool", tool_call_id="call_1", name="get_weather", content="21 °C"),
]


def load_template(name: str) -> ChatTemplate:
    spec = CASES["templates"][name]
    source = (GOLDEN / spec["file"]).read_text(encoding="utf-8")
    return ChatTemplate(source, bos_token=spec["bos_token"], eos_token=spec["eos_token"])


def smollm2() -> ChatTemplate:
    return load_template("smollm2")


def qwen() -> ChatTemplate:
    return load_template("qwen2_5")


def system_prompt(prompt: str) -> str:
    """The content of the ChatML system message that opens `prompt`."""
    assert prompt.startswith("<|im_start|>system\n")
    return prompt.removeprefix("<|im_start|>system\n").split("<|im_end|>")[0]


def test_fallback_tool_instructions_open_the_system_prompt_when_there_is_none() -> None:
    prompt = render_prompt(smollm2(), [Message(role="user", content="hi")], [WEATHER])

    expected_listing = json.dumps(
        {"type": "function", "function": WEATHER.function.model_dump()}, ensure_ascii=False
    )
    assert system_prompt(prompt) == TOOL_INSTRUCTIONS.format(tools=expected_listing)


def test_fallback_tool_instructions_follow_an_existing_system_prompt() -> None:
    history = [Message(role="system", content="Be brief."), Message(role="user", content="hi")]

    prompt = render_prompt(smollm2(), history, [WEATHER])

    assert system_prompt(prompt).startswith("Be brief.\n\n" + INSTRUCTIONS_HEAD)
    assert "Weather for a city (°C)" in system_prompt(prompt)


def test_no_tool_instructions_without_tools() -> None:
    prompt = render_prompt(smollm2(), [Message(role="user", content="hi")], [])

    assert "<tools>" not in prompt
    assert system_prompt(prompt).startswith("You are a helpful AI assistant named SmolLM")


def test_a_template_that_renders_tools_gets_no_fallback_instructions() -> None:
    prompt = render_prompt(qwen(), [Message(role="user", content="hi")], [WEATHER])

    assert "NEVER repeat" not in prompt
    assert prompt.count('"name": "get_weather"') == 1
    assert '{"type": "function", "function": {"name": "get_weather"' in prompt


def test_tool_calls_and_results_are_hermes_text_for_a_plain_chatml_template() -> None:
    prompt = render_prompt(smollm2(), TOOL_TURN, [WEATHER])

    assert prompt.endswith(
        "<|im_start|>user\nWeather in Zürich?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nResult of get_weather: 21 °C<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_assistant_text_comes_before_its_hermes_tool_calls() -> None:
    history = [
        Message(role="user", content="hi"),
        Message(role="assistant", content="Let me check.", tool_calls=[CALL]),
    ]

    prompt = render_prompt(smollm2(), history, [WEATHER])

    assert "<|im_start|>assistant\nLet me check.\n<tool_call>\n" in prompt


def test_consecutive_tool_results_share_one_user_message() -> None:
    second = ToolCall(id="call_2", name="get_weather", arguments={"city": "Paris"})
    history = [
        Message(role="user", content="Zürich and Paris?"),
        Message(role="assistant", tool_calls=[CALL, second]),
        Message(role="tool", tool_call_id="call_1", content="21"),
        Message(role="tool", tool_call_id="call_2", content="18"),
    ]

    prompt = render_prompt(smollm2(), history, [WEATHER])

    assert (
        "<|im_start|>user\nResult of get_weather: 21\nResult of get_weather: 18<|im_end|>\n"
    ) in prompt
    assert prompt.count("<|im_start|>user") == 2


def test_past_tool_calls_are_rendered_in_plain_words_when_no_tools_are_offered() -> None:
    prompt = render_prompt(smollm2(), TOOL_TURN, [])

    assert "<tools>" not in prompt
    assert "<tool_call>" not in prompt  # markup the model may not use is not shown to it
    assert '(I called get_weather with {"city": "Zürich"}.)' in prompt
    assert "Result of get_weather: 21 °C" in prompt


def test_tools_and_tool_calls_are_rendered_natively_for_qwen2_5() -> None:
    case = next(c for c in CASES["cases"] if c["name"] == "qwen2_5_tools")
    messages = [
        Message(
            role=m["role"],
            content=m.get("content"),
            tool_call_id=m.get("tool_call_id"),
            name=m.get("name"),
            tool_calls=[
                ToolCall(
                    id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"]
                )
                for c in m["tool_calls"]
            ]
            if "tool_calls" in m
            else None,
        )
        for m in case["messages"]
    ]
    tools = [Tool.model_validate(tool) for tool in case["tools"]]

    prompt = render_prompt(qwen(), messages, tools)

    assert prompt == (GOLDEN / "qwen2_5_tools.txt").read_bytes().decode("utf-8")


def test_a_tool_result_without_a_name_is_named_after_its_call() -> None:
    history = [*TOOL_TURN[:2], Message(role="tool", tool_call_id="call_1", content="21 °C")]

    assert render_prompt(qwen(), history, []) == render_prompt(qwen(), TOOL_TURN, [])
    assert "Result of get_weather: 21 °C" in render_prompt(smollm2(), history, [])


def test_system_comes_first_when_the_history_has_no_system_message() -> None:
    history = with_system([Message(role="user", content="hi")], "Be kind.")

    assert system_prompt(render_prompt(smollm2(), history, [])) == "Be kind."


def test_system_replaces_the_system_message_that_opens_the_history() -> None:
    history = [Message(role="system", content="Old."), Message(role="user", content="hi")]

    prompt = render_prompt(qwen(), with_system(history, "New."), [])

    assert system_prompt(prompt) == "New."
    assert "Old." not in prompt


def test_the_system_prompt_is_followed_by_fallback_tool_instructions() -> None:
    prompt = render_prompt(
        ChatTemplate(DEFAULT_CHATML_TEMPLATE),
        with_system([Message(role="user", content="hi")], "Be kind."),
        [WEATHER],
    )

    assert system_prompt(prompt).startswith("Be kind.\n\n" + INSTRUCTIONS_HEAD)


def test_json_tool_results_reach_the_prompt_as_json_without_ascii_escapes() -> None:
    results = [ToolResult(tool_call_id="call_1", content={"temp": 21, "city": "Zürich"})]
    history = append_inputs(TOOL_TURN[:2], results, None)

    native = render_prompt(qwen(), history, [WEATHER])
    textual = render_prompt(smollm2(), history, [WEATHER])

    assert '<tool_response>\n{"temp": 21, "city": "Zürich"}\n</tool_response>' in native
    assert 'Result of get_weather: {"temp": 21, "city": "Zürich"}' in textual


def test_render_prompt_leaves_its_inputs_unchanged_and_repeats_itself() -> None:
    history = [Message(role="system", content="Old."), *TOOL_TURN]
    before = [message.model_copy(deep=True) for message in history]

    first = render_prompt(smollm2(), history, [WEATHER])
    second = render_prompt(smollm2(), history, [WEATHER])

    assert first == second
    assert history == before
