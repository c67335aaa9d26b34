"""The Engine contract, run against every engine: what the chat layer may rely on.

`FakeEngine`; the llama.cpp engine on the embedded model (slow); the transformers engine on the
tiny random model `tiny_hf` builds (slow). Each test gets a fresh engine, so counters start at
zero. Engine-specific behaviour (batch invariance, prefix reuse, agreement with transformers)
is tested beside each engine, not here.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from toolrpc.engines.base import Chunk, Engine, GenerationRequest, SamplingParams
from toolrpc.engines.fake import FakeEngine
from toolrpc.errors import ContextLengthExceeded
from toolrpc.types import JSONObject

WAIT_S = 120.0  # bound on every engine call in this module
GREEDY = SamplingParams(temperature=0.0)
CALL: JSONObject = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class EngineCase:
    """How to build one engine, and whether it is a trained model (whose scores mean
    something)."""

    load: Callable[[Path], Awaitable[Engine]]
    is_trained: bool


async def load_fake(folder: Path) -> Engine:
    return FakeEngine(context_length=256)


async def load_llama_cpp(folder: Path) -> Engine:
    from toolrpc.engines.default_model import embedded_model_path
    from toolrpc.engines.llama_cpp import LlamaCppOptions
    from toolrpc.engines.llama_cpp import load_llama_cpp as load
    from toolrpc.scheduling.loop import LoopConfig

    options = LlamaCppOptions(embedded_model_path(), context_length=512, num_slots=2)
    return await asyncio.to_thread(load, options, LoopConfig(token_budget=256))


async def load_hf(folder: Path) -> Engine:
    from tests.engines.tiny_hf import build_tiny_model
    from toolrpc.engines.hf import HfOptions
    from toolrpc.engines.hf import load_hf as load

    model = folder / "model"
    if not model.is_dir():
        await asyncio.to_thread(build_tiny_model, model)
    return await asyncio.to_thread(load, HfOptions(str(model), num_slots=2))


CASES = [
    pytest.param(EngineCase(load_fake, is_trained=False), id="fake"),
    pytest.param(
        EngineCase(load_llama_cpp, is_trained=True), id="llama_cpp", marks=pytest.mark.slow
    ),
    pytest.param(EngineCase(load_hf, is_trained=False), id="hf", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a case may keep files between tests (the tiny transformers model)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> EngineCase:
    loaded: EngineCase = request.param
    return loaded


@pytest.fixture
async def engine(case: EngineCase, model_folder: Path) -> AsyncIterator[Engine]:
    async with asyncio.timeout(WAIT_S):
        loaded = await case.load(model_folder)
    yield loaded
    async with asyncio.timeout(WAIT_S):
        await loaded.aclose()


def chatml(question: str) -> str:
    """A user turn in ChatML, the template of all three engines' models."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def greedy(
    question: str,
    max_new_tokens: int = 24,
    *,
    stop: tuple[str, ...] = (),
    json_schema: JSONObject | None = None,
) -> GenerationRequest:
    """A greedy request for the answer to `question`."""
    return GenerationRequest(chatml(question), max_new_tokens, GREEDY, stop, json_schema)


async def run(engine: Engine, request: GenerationRequest) -> list[Chunk]:
    async with asyncio.timeout(WAIT_S), aclosing(engine.generate(request)) as chunks:
        return [chunk async for chunk in chunks]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


async def test_closing_a_stream_early_frees_its_slot_and_a_later_request_runs(
    engine: Engine,
) -> None:
    long = greedy("Write a long essay about the history of Rome.", 400)
    async with asyncio.timeout(WAIT_S), aclosing(engine.generate(long)) as chunks:
        first = await anext(chunks)

    stats = engine.stats()
    later = await run(engine, greedy("Say hi.", 8))

    assert first.finish_reason is None
    assert stats.num_running == 0
    assert stats.num_cancelled == 1
    assert later[-1].finish_reason in ("stop", "length")
    assert engine.stats().num_cancelled == 1


async def test_a_prompt_that_does_not_fit_the_context_is_refused_with_its_size(
    engine: Engine,
) -> None:
    with pytest.raises(ContextLengthExceeded) as caught:
        await run(engine, greedy("word " * 2000))

    assert caught.value.code == -32002
    assert caught.value.context_length == engine.info.context_length
    assert caught.value.prompt_tokens >= caught.value.context_length
    assert engine.stats().num_running == 0


async def test_a_score_is_a_finite_log_probability_over_the_continuations_tokens(
    engine: Engine, case: EngineCase
) -> None:
    prompt = chatml("What is the capital of France?")
    async with asyncio.timeout(WAIT_S):
        likely = await engine.score(prompt, "The capital of France is Paris.")
        unlikely = await engine.score(prompt, "Purple elephant gravel seventeen spoon.")

    for score in (likely, unlikely):
        assert math.isfinite(score.logprob)
        assert score.logprob <= 0.0
        assert score.num_tokens >= 1
    if case.is_trained:
        assert likely.mean_logprob > unlikely.mean_logprob


async def test_a_constrained_request_yields_json_valid_against_its_schema(engine: Engine) -> None:
    chunks = await run(engine, greedy("What's the weather in Paris?", 64, json_schema=CALL))

    jsonschema.validate(json.loads(text_of(chunks)), CALL)
    assert chunks[-1].finish_reason == "stop"


async def test_counters_add_up_each_finished_request(engine: Engine) -> None:
    first = await run(engine, greedy("Name three colours."))
    second = await run(engine, greedy("What is 12 times 12?"))

    stats = engine.stats()
    usages = [chunks[-1].usage for chunks in (first, second)]
    assert all(usage is not None for usage in usages)
    assert stats.num_requests == 2
    assert stats.num_running == 0
    assert stats.num_cancelled == 0
    assert stats.num_prompt_tokens == sum(u.prompt_tokens for u in usages if u)
    assert stats.num_generated_tokens == sum(u.completion_tokens for u in usages if u)


async def test_a_prefix_shared_with_a_running_request_is_reused_and_answers_as_alone(
    engine: Engine,
) -> None:
    """With the slot holding the shared prefix busy, the second request's slot gets a copy of
    it (scheduling/slots.py): the runner's copy must hold exactly the KV prefilling makes."""
    shared = "Read this and answer briefly. " * 4
    long = greedy(shared + "Write a long essay about the history of Rome.", 200)
    question = greedy(shared + "What is 12 times 12?")
    async with asyncio.timeout(WAIT_S), aclosing(engine.generate(long)) as chunks:
        await anext(chunks)
        beside = await run(engine, question)
    alone = await run(engine, question)

    assert beside[-1].usage is not None and alone[-1].usage is not None
    if not isinstance(engine, FakeEngine):  # the fake has no KV cache
        assert beside[-1].usage.cached_tokens > 20
    assert text_of(beside) == text_of(alone)


async def test_max_new_tokens_ends_the_output_with_length(engine: Engine) -> None:
    chunks = await run(engine, greedy("Write a long essay about the history of Rome.", 3))

    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert all(chunk.finish_reason is None for chunk in chunks[:-1])


async def test_a_stop_string_ends_the_output_before_it(engine: Engine) -> None:
    question = "Write one sentence about cats."
    whole = text_of(await run(engine, greedy(question, 24)))
    assert len(whole) >= 4, f"too short to cut: {whole!r}"
    stop = whole[len(whole) // 2 : len(whole) // 2 + 2]

    chunks = await run(engine, greedy(question, 24, stop=(stop,)))

    assert text_of(chunks) == whole[: whole.find(stop)]
    assert chunks[-1].finish_reason == "stop"
