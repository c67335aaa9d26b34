"""ChatTemplate renders as transformers does (golden files from make_golden.py) and safely."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import SecurityError

from toolrpc.chat.template import DEFAULT_CHATML_TEMPLATE, ChatTemplate
from toolrpc.errors import InvalidParams, ToolRpcError

GOLDEN = Path(__file__).parent / "golden"
CASES: dict[str, Any] = json.loads((GOLDEN / "cases.json").read_text(encoding="utf-8"))


def load_template(name: str) -> ChatTemplate:
    spec = CASES["templates"][name]
    source = (GOLDEN / spec["file"]).read_text(encoding="utf-8")
    return ChatTemplate(source, bos_token=spec["bos_token"], eos_token=spec["eos_token"])


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda case: case["name"])
def test_render_is_byte_identical_to_transformers(case: dict[str, Any]) -> None:
    template = load_template(case["template"])
    expected = (GOLDEN / f"{case['name']}.txt").read_bytes().decode("utf-8")

    rendered = template.render(
        case["messages"], tools=case["tools"], add_generation_prompt=case["add_generation_prompt"]
    )

    assert rendered == expected


def test_golden_chatml_file_is_the_default_template() -> None:
    assert (GOLDEN / "chatml.jinja").read_text(encoding="utf-8") == DEFAULT_CHATML_TEMPLATE


def test_renders_tools_is_true_for_a_template_that_reads_tools() -> None:
    assert load_template("qwen2_5").renders_tools


def test_renders_tools_is_false_for_plain_chatml_templates() -> None:
    assert not load_template("smollm2").renders_tools
    assert not ChatTemplate(DEFAULT_CHATML_TEMPLATE).renders_tools


def test_renders_tools_ignores_a_variable_the_template_sets_itself() -> None:
    template = ChatTemplate("{% set tools = [] %}{{ tools }}")

    assert not template.renders_tools


def test_raise_exception_in_the_template_is_invalid_params_with_its_message() -> None:
    template = ChatTemplate(
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
        "{% endif %}"
    )

    with pytest.raises(InvalidParams) as caught:
        template.render([{"role": "assistant", "content": "hi"}])

    assert caught.value.code == -32602
    assert "roles must alternate" in caught.value.message


def test_a_template_that_does_not_compile_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        ChatTemplate("{% for message in messages %}{{ message }")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.append({'role': 'user'}) }}",
        "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
        "{{ namespace(__init__=1) }}",
    ],
)
def test_the_sandbox_refuses_unsafe_operations(source: str) -> None:
    template = ChatTemplate(source)

    with pytest.raises(ToolRpcError) as caught:
        template.render([{"role": "user", "content": "hi"}])

    assert caught.value.code == -32603
    assert isinstance(caught.value.__cause__, SecurityError)


def test_a_template_bug_is_an_internal_error() -> None:
    template = ChatTemplate("{{ messages[0]['content'] + 1 }}")

    with pytest.raises(ToolRpcError) as caught:
        template.render([{"role": "user", "content": "hi"}])

    assert caught.value.code == -32603
    assert not isinstance(caught.value, InvalidParams)


def test_tojson_keeps_non_ascii_and_html_and_takes_json_dumps_options() -> None:
    template = ChatTemplate(
        "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2, sort_keys=true) }}"
        "|{{ messages[0] | tojson(separators=(',', ':')) }}"
    )
    message = {"role": "user", "content": "<b>Zürich</b> & 東京"}

    rendered = template.render([message])

    assert rendered.split("|") == [
        json.dumps(message, ensure_ascii=False),
        json.dumps(message, ensure_ascii=False, indent=2, sort_keys=True),
        json.dumps(message, ensure_ascii=False, separators=(",", ":")),
    ]


def test_strftime_now_and_loop_controls_and_generation_blocks_are_available() -> None:
    template = ChatTemplate(
        "{{ strftime_now('%Y') | length }}"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}"
    )

    rendered = template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])

    assert rendered == "4a"


def test_namespace_and_dict_work_as_in_transformers() -> None:
    template = ChatTemplate(
        "{% set ns = namespace(count=0) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}"
        "{% endfor %}{{ ns.count }}|{{ dict(a=1) | tojson }}|{{ dict.fromkeys(['b']) | tojson }}"
    )

    rendered = template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])

    assert rendered == '2|{"a": 1}|{"b": null}'


def test_special_tokens_are_passed_only_when_set() -> None:
    source = "{{ bos_token is defined }}/{{ eos_token }}"

    assert ChatTemplate(source).render([]) == "False/"
    assert ChatTemplate(source, bos_token="<s>", eos_token="</s>").render([]) == "True/</s>"


def test_none_valued_message_keys_are_left_out() -> None:
    template = ChatTemplate("{{ messages[0].content is defined }}")

    assert template.render([{"role": "assistant", "content": None}]) == "False"


def test_render_does_not_change_the_callers_messages() -> None:
    template = ChatTemplate("{% set m = messages[0] %}{{ m.update({'content': 'x'}) }}")
    message = {"role": "user", "content": "hi"}

    with pytest.raises(ToolRpcError):
        template.render([message])

    assert message == {"role": "user", "content": "hi"}
