"""The transformers engine on a tiny model the test builds: loading, agreement with transformers
(greedy output, scores), batched grammars.

What every engine promises is tested once for all of them in `test_engine_contract.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

import jsonschema
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.engines.tiny_hf import build_tiny_model
from toolrpc.engines.base import Chunk, GenerationRequest, SamplingParams
from toolrpc.engines.batched import BatchedEngine
from toolrpc.engines.hf import HfOptions, load_hf

WAIT_S = 60.0
GREEDY = SamplingParams(temperature=0.0)
CALL = {
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


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
async def engine(model_folder: Path) -> AsyncIterator[BatchedEngine]:
    loaded = await asyncio.to_thread(load_hf, HfOptions(str(model_folder), num_slots=4))
    yield loaded
    await loaded.aclose()


def chatml(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


async def run(engine: BatchedEngine, request: GenerationRequest) -> list[Chunk]:
    async with asyncio.timeout(WAIT_S), aclosing(engine.generate(request)) as chunks:
        return [chunk async for chunk in chunks]


def text(chunks: list[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


async def test_a_saved_folder_loads_with_its_chat_template_and_context(
    engine: BatchedEngine,
) -> None:
    assert engine.info.chat_template is not None and "tools" in engine.info.chat_template
    assert engine.info.context_length == 1024  # the model's max_position_embeddings
    assert engine.info.eos_token == "<|im_end|>"


async def test_greedy_output_matches_transformers_generate(
    engine: BatchedEngine, model_folder: Path
) -> None:
    prompt = chatml("What's the weather in Paris?")
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model = AutoModelForCausalLM.from_pretrained(model_folder)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        reference = model.generate(ids, max_new_tokens=24, do_sample=False)
    expected = tokenizer.decode(reference[0, ids.shape[1] :], skip_special_tokens=True)

    alone = text(await run(engine, GenerationRequest(prompt, 24, GREEDY)))
    others = [GenerationRequest(chatml(f"question {i}"), 24, GREEDY) for i in range(3)]
    batched = await asyncio.gather(
        run(engine, GenerationRequest(prompt, 24, GREEDY)), *(run(engine, r) for r in others)
    )

    assert alone == expected
    assert text(batched[0]) == expected


async def test_constrained_requests_batched_together_all_validate(engine: BatchedEngine) -> None:
    requests = [
        GenerationRequest(chatml(f"weather in city {i}"), 64, GREEDY, json_schema=CALL)
        for i in range(4)
    ]

    outputs = await asyncio.gather(*(run(engine, r) for r in requests))

    for chunks in outputs:
        jsonschema.validate(json.loads(text(chunks)), CALL)
        assert chunks[-1].finish_reason == "stop"


async def test_a_score_is_the_teacher_forced_log_probability(
    engine: BatchedEngine, model_folder: Path
) -> None:
    prompt, continuation = "Task: weather.\nExample request: ", "What's the weather in Paris?"
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    model = AutoModelForCausalLM.from_pretrained(model_folder)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    all_ids = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logprobs = model(torch.tensor([all_ids])).logits[0].log_softmax(-1)
    expected = sum(float(logprobs[i - 1, all_ids[i]]) for i in range(len(prompt_ids), len(all_ids)))

    score = await engine.score(prompt, continuation)

    assert score.num_tokens == len(all_ids) - len(prompt_ids)
    assert score.logprob == pytest.approx(expected, abs=1e-3)


def test_quantizing_without_cuda_is_refused_with_the_reason(model_folder: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA"):
        load_hf(HfOptions(str(model_folder), quantize="4bit"))


def test_an_unknown_model_id_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here
    with pytest.raises(ValueError, match="not in the Hugging Face cache"):
        load_hf(HfOptions("no-such-org/no-such-model-xyz"))


def test_a_folder_without_a_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"config\.json"):
        load_hf(HfOptions(str(tmp_path)))
