"""Hostile tool schemas (tests/hostile_schemas.py): a result or a clear error, in bounded time.

Each schema goes through the whole request path (/rpc over FakeEngine: wire validation, the
limits, the tool offer), through `jsonschema` on sample arguments, and, when the limits let it
in, through both grammar builders: llama.cpp's GBNF converter and (slow: it builds the tiny
transformers model) xgrammar. Builders run in a worker thread waited on with a bound, so a hang
fails the test instead of stalling the run.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.hostile_schemas import HOSTILE
from tests.server.apps import make_app, serving
from toolrpc.chat.offer import call_schema
from toolrpc.errors import InvalidParams
from toolrpc.limits import RequestLimits
from toolrpc.protocol import Tool

BUILD_BOUND_S = 10.0
SAMPLES: list[Any] = [{}, {"s": "a" * 40 + "b"}, {"v": 1, "child": {"v": 2}}, {"x": [1, {"y": 2}]}]


def admitted() -> list[Any]:
    """The hostile schemas that pass wire validation and the limits."""
    found = []
    for name, schema in HOSTILE.items():
        try:
            tool = Tool.model_validate({"name": "t", "parameters": schema})
        except ValueError:
            continue
        if not RequestLimits().schema_problems(tool):
            found.append(pytest.param(tool, id=name))
    return found


def bounded(work: Callable[[], object]) -> object:
    """`work()`'s result or its exception, failing the test if it takes over the bound."""
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return worker.submit(work).result(timeout=BUILD_BOUND_S)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"still running after {BUILD_BOUND_S} s")
    except Exception as exc:
        return exc
    finally:
        worker.shutdown(wait=False)


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_each_hostile_schema_gets_a_result_or_a_clear_error_over_rpc(name: str) -> None:
    app, _ = make_app('{"name": "t", "arguments": {}}')
    tool = {"name": "t", "parameters": HOSTILE[name]}
    body = {
        "jsonrpc": "2.0",
        "method": "create_message",
        "params": {"message": "go", "tools": [tool], "tool_choice": "required"},
        "id": 1,
    }

    async with serving(app) as client:
        response = await client.post("/rpc", content=json.dumps(body))

    answer = response.json()
    assert response.status_code == 200
    assert "result" in answer or answer["error"]["code"] in (-32602, -32002), answer


def test_the_limits_refuse_what_would_hang_or_reach_out() -> None:
    refused = {name for name, schema in HOSTILE.items() if _is_refused(schema)}

    assert {
        "huge-properties",
        "deep-nesting",
        "ref-to-itself-only",
        "mutual-ref-cycle",
        "remote-ref",
        "catastrophic-pattern",
        "alternation-backtracking",
        "catastrophic-pattern-properties",
        "huge-repeat-in-pattern",
        "huge-max-length",
        "huge-min-items",
        "invalid-regex",
    } <= refused


def _is_refused(schema: dict[str, Any]) -> bool:
    try:
        tool = Tool.model_validate({"name": "t", "parameters": schema})
    except ValueError:
        return True
    return bool(RequestLimits().schema_problems(tool))


@pytest.mark.parametrize("tool", admitted())
def test_jsonschema_validates_arguments_of_an_admitted_schema_in_bounded_time(tool: Tool) -> None:
    validator = jsonschema.validators.validator_for(tool.function.parameters)
    for sample in SAMPLES:
        outcome = bounded(lambda s=sample: list(validator(tool.function.parameters).iter_errors(s)))
        assert not isinstance(outcome, RecursionError)


@pytest.mark.parametrize("tool", admitted())
def test_gbnf_builds_or_refuses_an_admitted_schema_in_bounded_time(tool: Tool) -> None:
    from toolrpc.engines.gbnf import to_gbnf

    outcome = bounded(lambda: to_gbnf(call_schema([tool])))

    assert isinstance(outcome, str | ValueError)


@pytest.mark.slow
def test_xgrammar_builds_or_refuses_every_admitted_schema_in_bounded_time(tmp_path: Path) -> None:
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from tests.engines.tiny_hf import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "model"))
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer))
    for param in admitted():
        (tool,) = param.values
        schema = json.dumps(call_schema([tool]))
        outcome = bounded(lambda s=schema: compiler.compile_json_schema(s, any_whitespace=False))
        assert not isinstance(outcome, RecursionError | MemoryError), param.id


def test_an_over_limit_request_lists_every_limit_it_breaks() -> None:
    from toolrpc.protocol import CreateMessageParams

    limits = RequestLimits(max_tools=1, max_history_messages=1, max_message_chars=5)
    params = CreateMessageParams.model_validate(
        {
            "message": "too long",
            "history": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "tools": [{"name": "a"}, {"name": "b"}],
        }
    )

    with pytest.raises(InvalidParams) as caught:
        limits.check(params)

    assert {error.loc for error in caught.value.errors} == {("tools",), ("history",), ("message",)}
