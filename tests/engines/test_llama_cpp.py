"""The llama.cpp engine on the embedded model: batch invariance, prefix reuse, grammars.

What every engine promises (cancellation, context errors, scoring, stop strings...) is tested
once for all of them in `test_engine_contract.py`.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import aclosing

import jsonschema
import pytest

from toolrpc.engines.base import Chunk, GenerationRequest, SamplingParams
from toolrpc.engines.batched import BatchedEngine
from toolrpc.engines.default_model import embedded_model_path
from toolrpc.engines.llama_cpp import LlamaCppOptions, LlamaCppRunner, load_llama_cpp
from toolrpc.scheduling.kv_memory import KvCacheType
from toolrpc.scheduling.loop import LoopConfig

pytestmark = pytest.mark.slow

WAIT_S = 180.0  # four grammar-constrained streams batched took over 60 s at load 5 on two cores
GREEDY = SamplingParams(temperature=0.0)
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write one sentence about cats.",
    "What is 12 times 12?",
]
CITY_CALL = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}


def chatml(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


async def load(
    num_slots: int = 4, config: LoopConfig | None = None, kv_type: KvCacheType = "f16"
) -> BatchedEngine:
    """The embedded model on llama.cpp with a 1,024-token context per slot."""
    options = LlamaCppOptions(
        embedded_model_path(), context_length=1024, num_slots=num_slots, kv_type=kv_type
    )
    return await asyncio.to_thread(load_llama_cpp, options, config or LoopConfig(token_budget=256))


@pytest.fixture
async def engine() -> AsyncIterator[BatchedEngine]:
    loaded = await load()
    yield loaded
    await loaded.aclose()


async def run(engine: BatchedEngine, request: GenerationRequest) -> list[Chunk]:
    async with asyncio.timeout(WAIT_S), aclosing(engine.generate(request)) as chunks:
        return [chunk async for chunk in chunks]


def text(chunks: list[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


async def run_cold(request: GenerationRequest) -> list[Chunk]:
    """`request` on a fresh engine, whose cache holds nothing."""
    cold_engine = await load()
    try:
        return await run(cold_engine, request)
    finally:
        await cold_engine.aclose()


def greedy(prompt: str, max_new_tokens: int = 48) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_new_tokens=max_new_tokens, sampling=GREEDY)


async def test_greedy_output_is_the_same_alone_and_batched_with_three_others(
    engine: BatchedEngine,
) -> None:
    alone = [text(await run(engine, greedy(chatml(q)))) for q in QUESTIONS]
    steps_before = engine.stats().num_steps

    batched = await asyncio.gather(*(run(engine, greedy(chatml(q))) for q in QUESTIONS))

    assert [text(chunks) for chunks in batched] == alone
    max_len = max(c[-1].usage.completion_tokens for c in batched if c[-1].usage)
    assert engine.stats().num_steps - steps_before < 2 * max_len  # steps were shared


async def test_with_a_q8_0_cache_greedy_output_is_the_same_alone_and_batched() -> None:
    engine = await load(kv_type="q8_0")
    try:
        alone = [text(await run(engine, greedy(chatml(q)))) for q in QUESTIONS]
        batched = await asyncio.gather(*(run(engine, greedy(chatml(q))) for q in QUESTIONS))
    finally:
        await engine.aclose()

    assert [text(chunks) for chunks in batched] == alone
    assert all(alone)


async def test_a_follow_up_reuses_the_cached_turn_and_answers_as_a_cold_run_does(
    engine: BatchedEngine,
) -> None:
    first_prompt = chatml("Tell me about the Moon.")
    first = await run(engine, greedy(first_prompt, 64))
    follow_up = first_prompt + text(first) + "<|im_end|>\n" + chatml("How far away is it?")

    warm = await run(engine, greedy(follow_up))
    cold = await run_cold(greedy(follow_up))

    assert warm[-1].usage is not None and cold[-1].usage is not None
    assert cold[-1].usage.cached_tokens == 0
    assert warm[-1].usage.cached_tokens >= first[-1].usage.prompt_tokens  # type: ignore[union-attr]
    assert text(warm) == text(cold)


async def test_a_shared_system_prompt_copied_between_slots_answers_as_a_cold_run_does(
    engine: BatchedEngine,
) -> None:
    """Three requests arriving together take slots that hold nothing and copy the system
    prompt's KV from the slot of the request before them (scheduling/slots.py)."""
    system = (
        "<|im_start|>system\nYou are a careful assistant for a travel agency. Answer in one "
        "short paragraph and never invent prices.<|im_end|>\n"
    )
    await run(engine, greedy(system + chatml("Hello!"), 4))
    prompts = [system + chatml(q) for q in QUESTIONS[:3]]

    warm = await asyncio.gather(*(run(engine, greedy(p)) for p in prompts))
    cold = [await run_cold(greedy(p)) for p in prompts]

    cached = [chunks[-1].usage.cached_tokens for chunks in warm if chunks[-1].usage]
    assert len(set(cached)) == 1 and cached[0] > 20  # the system prompt and "<|im_start|>user"
    assert [text(chunks) for chunks in warm] == [text(chunks) for chunks in cold]


async def test_constrained_requests_batched_together_produce_valid_calls_as_when_alone(
    engine: BatchedEngine,
) -> None:
    cities = ["Paris", "Tokyo", "Lima", "Oslo"]
    requests = [
        GenerationRequest(
            prompt=chatml(f"What's the weather in {city}?"),
            max_new_tokens=64,
            sampling=GREEDY,
            json_schema=CITY_CALL,
        )
        for city in cities
    ]

    alone = [text(await run(engine, r)) for r in requests]
    batched = [text(c) for c in await asyncio.gather(*(run(engine, r) for r in requests))]

    assert batched == alone
    for output in batched:
        jsonschema.validate(json.loads(output), CITY_CALL)
    assert json.loads(batched[0])["arguments"] == {"city": "Paris"}


async def test_bounded_integers_and_span_enums_hold_under_the_grammar(
    engine: BatchedEngine,
) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"const": "search_web"},
            "arguments": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "enum": ["ramen", "ramen restaurants", "Chicago"]},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 3},
                },
                "required": ["query", "max_results"],
            },
        },
        "required": ["name", "arguments"],
    }
    request = GenerationRequest(
        prompt=chatml("Find 7 ramen restaurants in Chicago, as JSON."),
        max_new_tokens=64,
        sampling=SamplingParams(temperature=1.0, seed=3),
        json_schema=schema,
    )

    outputs = await asyncio.gather(*(run(engine, request) for _ in range(4)))

    for output in outputs:
        jsonschema.validate(json.loads(text(output)), schema)


async def test_with_reuse_generated_kv_a_follow_up_reuses_the_answer_too() -> None:
    engine = await load(num_slots=2, config=LoopConfig(token_budget=256, reuse_generated_kv=True))
    try:
        first_prompt = chatml("Tell me about the Moon.")
        first = await run(engine, greedy(first_prompt, 32))
        follow_up = first_prompt + text(first) + "<|im_end|>\n" + chatml("How far away is it?")
        warm = await run(engine, greedy(follow_up, 8))
    finally:
        await engine.aclose()

    assert first[-1].usage is not None and warm[-1].usage is not None
    first_usage, warm_usage = first[-1].usage, warm[-1].usage
    # all of the first turn but its last token (sampled, never fed back) is reused
    reused_answer = warm_usage.cached_tokens - first_usage.prompt_tokens
    assert first_usage.completion_tokens - 2 <= reused_answer <= first_usage.completion_tokens


async def test_an_answer_prefilled_again_while_idle_is_reused_and_answers_as_cold(
    engine: BatchedEngine,
) -> None:
    first_prompt = chatml("Tell me about the Sun.")
    first = await run(engine, greedy(first_prompt, 48))
    async with asyncio.timeout(WAIT_S):
        await engine.loop.wait_idle()  # the answer's background prefill
    follow_up = first_prompt + text(first) + "<|im_end|>\n" + chatml("Is it a star?")

    warm = await run(engine, greedy(follow_up))
    cold = await run_cold(greedy(follow_up))

    assert first[-1].usage is not None and warm[-1].usage is not None
    reused_answer = warm[-1].usage.cached_tokens - first[-1].usage.prompt_tokens
    assert reused_answer >= first[-1].usage.completion_tokens - 2  # all but the end of turn
    assert text(warm) == text(cold)


async def test_without_a_slot_count_the_runner_holds_as_many_slots_as_the_kv_budget() -> None:
    q8_0_bytes_per_token = 12_240  # SmolLM2-135M: 30 layers x 3 KV heads x (64 + 64) x 34/32
    options = LlamaCppOptions(
        embedded_model_path(),
        context_length=512,
        num_slots=None,
        kv_memory_bytes=3 * 512 * q8_0_bytes_per_token + 1000,
        kv_type="q8_0",
    )

    runner = await asyncio.to_thread(LlamaCppRunner, options)
    try:
        assert (runner.num_slots, runner.kv_bytes_per_token) == (3, q8_0_bytes_per_token)
    finally:
        runner.close()


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def test_the_kv_cache_is_resident_only_where_used_and_answers_are_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """8 slots x 2,048 tokens reserve 360 MiB of KV; only what sequences write is resident
    (engines/resident.py), and greedy answers are those of a cache kept resident whole."""
    options = LlamaCppOptions(embedded_model_path(), context_length=2048, num_slots=8)
    config = LoopConfig(token_budget=512)

    async def answers_and_growth() -> tuple[list[str], float]:
        before = resident_mib()
        engine = await asyncio.to_thread(load_llama_cpp, options, config)
        try:
            answers = await asyncio.gather(*(run(engine, greedy(chatml(q))) for q in QUESTIONS))
            return [text(answer) for answer in answers], resident_mib() - before
        finally:
            await engine.aclose()

    answers, growth = await answers_and_growth()
    monkeypatch.setattr("toolrpc.engines.resident.release_cleared", lambda *_: 0)
    answers_whole, growth_whole = await answers_and_growth()

    assert answers == answers_whole
    assert growth < 360 <= growth_whole, (growth, growth_whole)  # the KV reserves 360 MiB


async def test_scoring_slots_score_as_the_conversation_slots_do_and_keep_each_prefix() -> None:
    """The tool router's prompts in a second, small context (`scoring_slots`): the same
    scores, and each option's prefix cached there for the next request."""
    pairs = [
        ("Task: Get the weather for a city.\nExample request: ", "Is it raining in Oslo?"),
        ("Task: Send an email to someone.\nExample request: ", "Is it raining in Oslo?"),
        ("Task: Chat or answer from general knowledge.\nExample request: ", "Hello there!"),
    ]
    options = LlamaCppOptions(
        embedded_model_path(), context_length=1024, num_slots=2, scoring_slots=4
    )
    with_pool = await asyncio.to_thread(load_llama_cpp, options, LoopConfig(token_budget=256))
    without = await load(num_slots=2)
    try:
        pooled = await asyncio.gather(*(with_pool.score(p, c) for p, c in pairs))
        shared = await asyncio.gather(*(without.score(p, c) for p, c in pairs))
        cached_before = with_pool.stats().num_cached_tokens
        again = await asyncio.gather(*(with_pool.score(p, c + " Or in Bergen?") for p, c in pairs))
        cached = with_pool.stats().num_cached_tokens - cached_before
    finally:
        await with_pool.aclose()
        await without.aclose()

    assert [s.mean_logprob for s in pooled] == [s.mean_logprob for s in shared]
    assert cached >= sum(len(p) for p, _ in pairs) // 6  # each prefix's tokens (~4 chars each)
    assert all(math.isfinite(s.mean_logprob) for s in again)


async def test_a_scoring_prefix_held_by_a_busy_scoring_slot_is_copied_with_the_same_scores() -> (
    None
):
    """Two scoring prompts with a cached prefix arrive together: one reuses the prefix in its
    slot, the other gets a copy of it in the scoring context (scheduling/slots.py); both score
    as on an engine whose cache holds nothing."""
    prefix = "Task: Get the current weather for a city.\nExample request: "
    continuations = ["Is it raining in Oslo?", "Will it snow in Bergen tomorrow?"]
    options = LlamaCppOptions(
        embedded_model_path(), context_length=1024, num_slots=1, scoring_slots=4
    )
    pooled = await asyncio.to_thread(load_llama_cpp, options, LoopConfig(token_budget=256))
    fresh = await load(num_slots=1)
    try:
        await pooled.score(prefix, "Hello?")  # leaves the prefix in a scoring slot
        cached_before = pooled.stats().num_cached_tokens
        together = await asyncio.gather(*(pooled.score(prefix, c) for c in continuations))
        cached = pooled.stats().num_cached_tokens - cached_before
        alone = [await fresh.score(prefix, c) for c in continuations]
    finally:
        await pooled.aclose()
        await fresh.aclose()

    assert [s.mean_logprob for s in together] == [s.mean_logprob for s in alone]
    assert cached >= 2 * 10  # the ~14-token prefix, twice: in place and copied
