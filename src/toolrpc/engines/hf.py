"""Hugging Face models (an id or a local `save_pretrained` folder) as a ModelRunner.

Loading is transformers' own (`AutoTokenizer`, `AutoModelForCausalLM.from_pretrained`, with a
progress bar per checkpoint shard), optionally 4- or 8-bit through bitsandbytes on CUDA and
`device_map="auto"` for models larger than one GPU. Forced tool calls are constrained by
xgrammar (the grammar library vLLM and SGLang use): the tool's JSON Schema becomes a token
bitmask applied to the logits before sampling.

Batching: this runner, not transformers' continuous-batching API, so that both engines share the
scheduler (fairness, prefix reuse, cancellation, back-pressure are written once) — the
`generate_batch` / paged-attention API of transformers owns its own queue and scheduler, which
would duplicate ours. Each slot keeps its own KV tensors; a step runs every chunk in one forward
pass: the slots' caches are left-padded to the longest, the chunks right-padded to the longest,
with a 2-D attention mask and explicit position ids, and each slot's new KV is cut back out.
Padding copies the KV of the batch once per step; that is cheap for the small models this
serves on a CPU. Large models are meant for a dedicated server (vLLM, SGLang) behind a planned
upstream engine, not for this runner.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import xgrammar as xgr
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from toolrpc.engines.base import EngineInfo, SamplingParams
from toolrpc.engines.batched import BatchedEngine
from toolrpc.generation import ContinuationScore
from toolrpc.scheduling.loop import LoopConfig
from toolrpc.scheduling.runner import RunnerChunk, TokenSampler
from toolrpc.types import JSONObject

logger = logging.getLogger(__name__)

Quantize = Literal["4bit", "8bit"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class HfOptions:
    """How to load a transformers model."""

    model: str
    context_length: int | None = None
    num_slots: int = 4
    device: str = "auto"
    dtype: str = "auto"
    quantize: Quantize | None = None
    trust_remote_code: bool = False


@dataclass(eq=False)
class HfSampler:
    """Per-sequence sampling state: parameters, a seeded generator, an optional grammar."""

    sampling: SamplingParams
    generator: torch.Generator | None
    matcher: Any = None
    bitmask: torch.Tensor | None = None

    def close(self) -> None:
        """Nothing native to free: the generator, matcher and bitmask are garbage-collected."""


@dataclass(eq=False)
class _SlotCache:
    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return 0 if not self.layers else int(self.layers[0][0].shape[-2])


def resolve_model(name: str) -> str:
    """A local folder for `name`: itself, its copy in the Hugging Face cache, or a download.

    Raises `ValueError` when it is none of these (the message says where it looked).
    """
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise ValueError(f"cannot load {name!r}: the folder has no config.json")
        return name
    from huggingface_hub import constants, snapshot_download

    try:
        return str(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached: try the network below
        pass
    try:
        logger.info("%s is not in the local cache; downloading it", name)
        return str(snapshot_download(name))
    except Exception as exc:  # the hub client raises many kinds; all mean "not available"
        raise ValueError(
            f"cannot load {name!r}: it is not a model folder, not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and could not be downloaded ({type(exc).__name__})"
        ) from exc


def load_model(options: HfOptions) -> tuple[Any, Any]:
    """Tokenizer and model. Raises `ValueError` with the reason when they cannot be loaded."""
    if options.quantize and not torch.cuda.is_available():
        raise ValueError(f"--quantize {options.quantize} needs a CUDA GPU; none is available")
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code}
    if options.dtype != "auto":
        kwargs["dtype"] = DTYPES[options.dtype]
    if options.quantize:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=options.quantize == "4bit",
            load_in_8bit=options.quantize == "8bit",
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    cuda = torch.cuda.is_available() and options.device in ("auto", "cuda")
    if cuda and options.device == "auto":
        kwargs["device_map"] = "auto"
    source = resolve_model(options.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=options.trust_remote_code
        )
        model: Any = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load {options.model!r} from {source}: {exc}") from exc
    if "device_map" not in kwargs and not options.quantize:
        model.to("cuda" if cuda else options.device if options.device != "auto" else "cpu")
    model.eval()
    return tokenizer, model


class HfRunner:
    """A ModelRunner over a transformers causal LM (see the module docstring)."""

    def __init__(self, options: HfOptions) -> None:
        self.options = options
        self._tokenizer, self._model = load_model(options)
        config = self._model.config
        trained = int(getattr(config, "max_position_embeddings", 0) or 4096)
        self._context_length = min(options.context_length or trained, trained)
        self._device = next(self._model.parameters()).device
        self._vocab_size = int(config.vocab_size)
        self._stop_ids = _stop_ids(self._model, self._tokenizer)
        self._info = xgr.TokenizerInfo.from_huggingface(
            self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=sorted(self._stop_ids)
        )
        self._compiler = xgr.GrammarCompiler(self._info)
        special = set(self._tokenizer.all_special_ids)
        self._pieces = [
            b"" if i in special else piece for i, piece in enumerate(self._info.decoded_vocab)
        ]
        self._slots = [_SlotCache() for _ in range(options.num_slots)]

    @property
    def num_slots(self) -> int:
        """Sequences the runner holds at once."""
        return self.options.num_slots

    @property
    def num_scoring_slots(self) -> int:
        """None: scoring prompts share the slots."""
        return 0

    @property
    def scoring_context_length(self) -> int:
        """No scoring slots."""
        return 0

    @property
    def context_length(self) -> int:
        """Tokens one sequence may hold."""
        return self._context_length

    def info(self) -> EngineInfo:
        """Model name, context length and the tokenizer's chat template."""
        template = self._tokenizer.chat_template
        if isinstance(template, dict):
            template = template.get("default") or next(iter(template.values()), None)
        return EngineInfo(
            model_name=Path(self.options.model).name or self.options.model,
            context_length=self._context_length,
            chat_template=template,
            bos_token=self._tokenizer.bos_token or "",
            eos_token=self._tokenizer.eos_token or "",
        )

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (the template already placed any special tokens)."""
        ids: list[int] = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of a generated token; special tokens are empty."""
        return self._pieces[token_id] if 0 <= token_id < len(self._pieces) else b""

    def is_end_of_generation(self, token_id: int) -> bool:
        """End-of-sequence and end-of-turn tokens."""
        return token_id in self._stop_ids

    def new_sampler(self, sampling: SamplingParams, json_schema: JSONObject | None) -> TokenSampler:
        """A sampler; raises `ValueError` for a schema xgrammar cannot compile."""
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator().manual_seed(sampling.seed & 0xFFFFFFFFFFFF)
        sampler = HfSampler(sampling, generator)
        if json_schema is not None:
            try:
                compiled = self._compiler.compile_json_schema(
                    json.dumps(json_schema), any_whitespace=False
                )
            except Exception as exc:  # xgrammar raises its own errors for unsupported schemas
                raise ValueError(f"cannot compile the JSON Schema: {exc}") from exc
            sampler.matcher = xgr.GrammarMatcher(compiled)
            sampler.bitmask = xgr.allocate_token_bitmask(1, self._info.vocab_size)
        return sampler

    @torch.inference_mode()
    def step(self, chunks: list[RunnerChunk]) -> list[int | ContinuationScore | None]:
        """One padded forward pass over every chunk; sample or score where asked."""
        logits = self._forward(chunks)
        results: list[int | ContinuationScore | None] = []
        for row, chunk in enumerate(chunks):
            size = len(chunk.token_ids)
            if chunk.score_from is not None:
                results.append(_score(logits[row, :size], chunk))
            elif isinstance(chunk.sampler, HfSampler):
                results.append(self._sample(logits[row, size - 1], chunk.sampler))
            else:
                results.append(None)
        return results

    def trim_slot(self, slot: int, keep: int) -> None:
        """Keep the first `keep` positions of the slot's KV."""
        cache = self._slots[slot]
        cache.layers = (
            [] if keep == 0 else [(k[..., :keep, :], v[..., :keep, :]) for k, v in cache.layers]
        )

    def copy_slot(self, source: int, slot: int, keep: int) -> None:
        """Make the slot's KV a copy of the first `keep` positions of `source`'s."""
        layers = self._slots[source].layers if keep else []
        self._slots[slot].layers = [
            (k[..., :keep, :].clone(), v[..., :keep, :].clone()) for k, v in layers
        ]

    def close(self) -> None:
        """Drop the caches and the model."""
        self._slots = []
        del self._model

    def _forward(self, chunks: list[RunnerChunk]) -> torch.Tensor:
        """Run the chunks batched; store each slot's new KV; return logits (batch, query, vocab)."""
        caches = [self._slots[c.slot] for c in chunks]
        past = max(cache.length for cache in caches)
        query = max(len(c.token_ids) for c in chunks)
        pad = self._tokenizer.pad_token_id or 0
        ids = torch.full((len(chunks), query), pad, dtype=torch.long)
        mask = torch.zeros((len(chunks), past + query), dtype=torch.long)
        positions = torch.zeros((len(chunks), query), dtype=torch.long)
        for row, (chunk, cache) in enumerate(zip(chunks, caches, strict=True)):
            size = len(chunk.token_ids)
            ids[row, :size] = torch.tensor(chunk.token_ids)
            mask[row, past - cache.length : past + size] = 1
            positions[row] = torch.arange(chunk.start, chunk.start + query)
        cache_in = DynamicCache(ddp_cache_data=_left_padded(caches, past)) if past else None
        output = self._model(
            input_ids=ids.to(self._device),
            attention_mask=mask.to(self._device),
            position_ids=positions.to(self._device),
            past_key_values=cache_in if cache_in is not None else DynamicCache(),
            use_cache=True,
        )
        for row, (chunk, cache) in enumerate(zip(chunks, caches, strict=True)):
            start, end = past - cache.length, past + len(chunk.token_ids)
            cache.layers = [
                (k[row : row + 1, :, start:end].clone(), v[row : row + 1, :, start:end].clone())
                for k, v, *_ in output.past_key_values
            ]
        logits: torch.Tensor = output.logits.float()
        return logits

    def _sample(self, logits: torch.Tensor, sampler: HfSampler) -> int:
        logits = logits[: self._info.vocab_size].clone().unsqueeze(0)
        if sampler.matcher is not None and sampler.bitmask is not None:
            if sampler.matcher.is_terminated():
                return min(self._stop_ids)
            sampler.matcher.fill_next_token_bitmask(sampler.bitmask)
            xgr.apply_token_bitmask_inplace(logits, sampler.bitmask.to(logits.device))
        token = _pick(logits[0], sampler.sampling, sampler.generator)
        if sampler.matcher is not None:
            sampler.matcher.accept_token(token)
        return token


def _pick(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator | None) -> int:
    """Greedy, or top-k / top-p / temperature sampling."""
    if sampling.is_greedy:
        return int(torch.argmax(logits))
    logits = logits / sampling.resolved_temperature
    top_k = sampling.resolved_top_k
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    top_p = sampling.resolved_top_p
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p
        probs = probs.scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def _score(logits: torch.Tensor, chunk: RunnerChunk) -> ContinuationScore:
    """Sum of log P(token | before) for the chunk's scored tokens (rows are chunk positions)."""
    assert chunk.score_from is not None
    scored = chunk.scored_rows
    rows = logits[scored.start : scored.stop].log_softmax(dim=-1)
    targets = torch.tensor(chunk.token_ids[scored.start + 1 :], device=rows.device)
    picked = rows.gather(1, targets.unsqueeze(1))
    return ContinuationScore(logprob=float(picked.sum()), num_tokens=len(targets))


def _left_padded(caches: list[_SlotCache], length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, every slot's keys and values left-padded with zeros to `length`."""
    reference = next(cache for cache in caches if cache.layers)
    layers = []
    for index, (key, value) in enumerate(reference.layers):
        keys, values = [], []
        for cache in caches:
            k, v = cache.layers[index] if cache.layers else (key[..., :0, :], value[..., :0, :])
            missing = length - k.shape[-2]
            keys.append(torch.nn.functional.pad(k, (0, 0, missing, 0)))
            values.append(torch.nn.functional.pad(v, (0, 0, missing, 0)))
        layers.append((torch.cat(keys), torch.cat(values)))
    return layers


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-generation ids from the generation config and the tokenizer."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def load_hf(options: HfOptions, loop_config: LoopConfig | None = None) -> BatchedEngine:
    """Load a transformers model as an Engine (blocking: call it off the event loop)."""
    return BatchedEngine(HfRunner(options), loop_config)
