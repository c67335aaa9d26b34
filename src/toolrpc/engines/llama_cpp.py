"""llama.cpp (GGUF) as a ModelRunner, through llama-cpp-python's low-level bindings.

One llama.cpp context holds `num_slots` sequences, each its own sequence id in the KV cache;
every step is one `llama_decode` over a batch with the decode token of each running sequence
and prompt chunks of newly admitted ones. The high-level `llama_cpp.Llama` class serves one
sequence at a time, so the batch is built here, on the documented C API.

Deliberate settings (both change greedy output, so they are fixed everywhere, benchmarks too):
- `kv_unified=False`: each sequence gets its own `context_length` of KV. Batched greedy output
  then matches single-sequence output token for token; with a unified cache it drifts.
- flash attention off with an f16 cache (`--flash-attn on` turns it on), because with it a
  prompt prefilled in other chunks no longer gives bit-identical KV: a follow-up that reuses the
  cached turn answered differently from a cold run ("238,900 miles" against "140,000"), which
  breaks the scheduler's exact prefix reuse. What it would give: without it llama.cpp stores V
  transposed, a row per value dimension holding every position of the slot, so one token
  writes into every page of its slot's V and a slot used at all has its whole V resident (the
  cleared pages given back by engines/resident.py come back at once: 481 MiB resident after
  benchmarks/serving.py, 334 MiB with flash attention); and it decodes 8 streams 28% faster
  (184 against 144 tok/s in all), at the price of prompt chunks late in a long prompt (32
  tokens at position 1,000: 231 against 154 ms; at 1,950: 315 against 261 ms). A quantized V
  cache needs it ("Failed to create llama_context"): `--kv-type q8_0` turns it on. Batched
  greedy output equals single-sequence output either way (tests/engines/test_llama_cpp.py).
- micro-batches of at most `MAX_UBATCH` tokens (`SCORING_UBATCH` in the scoring context): the
  compute buffer llama.cpp reserves for a micro-batch is resident once used (103 MiB at 512
  tokens, 51 at 256), for a prefill a little slower (a 1,073-token prompt alone, two runs each
  on a quiet machine: 4.74 and 4.80 s at 512, 4.92 and 5.59 s at 256).

Scoring slots (`scoring_slots`, `--scoring-slots`): a second context, of short sequences, for
the tool router's prompts only (chat/router.py, "Cost"). Its slots are numbered after the
conversations' and keep each option's prefix from one request to the next without taking a
conversation's slot; its scores are bit-identical to the first context's.

Grammars: a JSON Schema is compiled to GBNF by llama-cpp-python's `json_schema_to_gbnf`
(engines/gbnf.py), and
enforced by a grammar sampler first in the sequence's sampler chain.
"""

from __future__ import annotations

import ctypes
import logging
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import _internals

from toolrpc.engines import resident
from toolrpc.engines.base import (
    EngineInfo,
    SamplingParams,
)
from toolrpc.engines.batched import BatchedEngine
from toolrpc.engines.default_model import served_name
from toolrpc.engines.gbnf import to_gbnf
from toolrpc.generation import ContinuationScore
from toolrpc.scheduling.kv_memory import (
    MAX_SLOTS,
    SCORING_CONTEXT_LENGTH,
    KvCacheType,
    KvShape,
    slots_within,
)
from toolrpc.scheduling.loop import LoopConfig
from toolrpc.scheduling.runner import RunnerChunk, TokenSampler
from toolrpc.scheduling.sequence import MIN_FINAL_CHUNK
from toolrpc.types import JSONObject

logger = logging.getLogger(__name__)


MAX_UBATCH = 256
"""Largest micro-batch of the conversations' context (module docstring)."""
SCORING_UBATCH = 128
"""Largest micro-batch of the scoring context: a request's scoring step is ~100-300 tokens."""


@dataclass(frozen=True)
class LlamaCppOptions:
    """How to load a GGUF model: `num_slots` sequences, or with `num_slots` None as many as
    `kv_memory_bytes` of KV cache holds at `context_length` tokens each."""

    model_path: Path
    context_length: int = 4096
    num_slots: int | None = 4
    kv_memory_bytes: int | None = None
    max_batch_tokens: int = 512
    num_threads: int | None = None
    kv_type: KvCacheType = "f16"
    flash_attention: bool = False
    """Always on with a q8_0 cache (module docstring)."""
    scoring_slots: int = 0
    """Slots of a second context for scoring prompts only (module docstring), each of
    `SCORING_CONTEXT_LENGTH` tokens; 0: scoring prompts run in the `num_slots`."""
    verbose: bool = False


GGML_KV_TYPES: dict[KvCacheType, int] = {
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
}


class LlamaSampler:
    """A llama.cpp sampler chain for one sequence (grammar first, then the sampling steps)."""

    def __init__(self, handle: llama_cpp.llama_sampler_p) -> None:
        self.handle: llama_cpp.llama_sampler_p | None = handle

    def close(self) -> None:
        """Free the native chain (idempotent)."""
        if self.handle is not None:
            llama_cpp.llama_sampler_free(self.handle)
            self.handle = None


@dataclass(frozen=True)
class _Context:
    """A llama.cpp context and the first of the runner's slots it holds (its sequence 0)."""

    handle: _internals.LlamaContext
    first_slot: int


class LlamaCppRunner:
    """A ModelRunner over one GGUF model and its llama.cpp context, and a second one for the
    scoring slots when there are any (see the module docstring)."""

    def __init__(self, options: LlamaCppOptions) -> None:
        """Load the model and create its context.

        Raises `FileNotFoundError` for a missing file, `ValueError` when neither a slot count
        nor a KV memory budget is given or the budget holds no slot, and llama-cpp-python's
        `ValueError` when llama.cpp cannot load the model or create the context.
        """
        if not options.model_path.is_file():
            raise FileNotFoundError(f"GGUF model not found: {options.model_path}")
        if options.num_slots is None and options.kv_memory_bytes is None:
            raise ValueError("give the number of slots or a KV memory budget")
        logging.getLogger("llama-cpp-python").setLevel(
            logging.DEBUG if options.verbose else logging.ERROR
        )
        llama_cpp.llama_backend_init()
        self.options = options
        model_params = llama_cpp.llama_model_default_params()
        self._model = _internals.LlamaModel(
            path_model=str(options.model_path), params=model_params, verbose=options.verbose
        )
        self._vocab = self._model.vocab
        self._metadata = self._model.metadata()
        self._kv_shape = _kv_shape(self._model, self._metadata)
        self.kv_bytes_per_token = self._kv_shape.bytes_per_token(options.kv_type)
        self._num_slots = options.num_slots or slots_within(
            options.kv_memory_bytes or 0,
            options.context_length,
            self.kv_bytes_per_token,
            max_slots=min(MAX_SLOTS, options.max_batch_tokens - MIN_FINAL_CHUNK),
        )
        logger.info(
            "KV cache: %d slots x %d tokens, %s (%d bytes a token): %.0f MiB",
            self._num_slots,
            options.context_length,
            options.kv_type,
            self.kv_bytes_per_token,
            self._num_slots * options.context_length * self.kv_bytes_per_token / 2**20,
        )
        self._main = self._new_context(
            0, self._num_slots, options.context_length, options.kv_type, MAX_UBATCH
        )
        self._scoring: _Context | None = None
        if options.scoring_slots:
            self._scoring = self._new_context(
                self._num_slots,
                options.scoring_slots,
                SCORING_CONTEXT_LENGTH,
                "f16",
                SCORING_UBATCH,
            )
        self._batch = llama_cpp.llama_batch_init(options.max_batch_tokens, 0, 1)
        self._piece = ctypes.create_string_buffer(256)
        self._num_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._bos_text = self._special_text(llama_cpp.llama_vocab_bos(self._vocab))
        self._adds_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    @property
    def num_slots(self) -> int:
        """Sequences the KV cache holds at once (given, or from the KV memory budget)."""
        return self._num_slots

    @property
    def context_length(self) -> int:
        """Tokens one sequence may hold."""
        return self.options.context_length

    @property
    def num_scoring_slots(self) -> int:
        """Slots of the scoring context (module docstring)."""
        return self.options.scoring_slots

    @property
    def scoring_context_length(self) -> int:
        """Tokens one scoring slot may hold."""
        return SCORING_CONTEXT_LENGTH if self.options.scoring_slots else 0

    def _new_context(
        self,
        first_slot: int,
        num_slots: int,
        context_length: int,
        kv_type: KvCacheType,
        ubatch: int,
    ) -> _Context:
        """A llama.cpp context of `num_slots` sequences of `context_length` tokens each, for
        slots `first_slot` on, in micro-batches of at most `ubatch` tokens; its cleared KV
        pages given back (engines/resident.py)."""
        options = self.options
        threads = options.num_threads or os.cpu_count() or 1
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = context_length * num_slots
        params.n_batch = options.max_batch_tokens
        params.n_ubatch = min(options.max_batch_tokens, ubatch)
        params.n_seq_max = num_slots
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = False
        params.type_k = params.type_v = GGML_KV_TYPES[kv_type]
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if options.flash_attention or kv_type != "f16"
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        regions = resident.anonymous_regions()
        context = _internals.LlamaContext(model=self._model, params=params, verbose=options.verbose)
        # llama.cpp pads each sequence's context to a multiple of 256 tokens
        kv_bytes = llama_cpp.llama_n_ctx(context.ctx) * self._kv_shape.bytes_per_token(kv_type)
        released = resident.release_cleared(regions, kv_bytes)
        logger.info(
            "KV cache of slots %d-%d resident as it fills: %.0f of %.0f MiB given back",
            first_slot,
            first_slot + num_slots - 1,
            released / 2**20,
            kv_bytes / 2**20,
        )
        return _Context(context, first_slot)

    def info(self) -> EngineInfo:
        """Model name, context length and the chat template from the GGUF metadata."""
        name = served_name(self.options.model_path, self._metadata.get("general.name"))
        eos = llama_cpp.llama_vocab_eos(self._vocab)
        return EngineInfo(
            model_name=name,
            context_length=self.options.context_length,
            chat_template=self._metadata.get("tokenizer.chat_template"),
            bos_token=self._bos_text,
            eos_token=self._special_text(eos),
        )

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt; BOS is added unless the text starts with it."""
        add_bos = self._adds_bos and not (self._bos_text and text.startswith(self._bos_text))
        tokens: list[int] = self._model.tokenize(text.encode("utf-8"), add_bos, True)
        return tokens

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one generated token (special tokens render as nothing)."""
        return self._piece_bytes(token_id, special=False)

    def is_end_of_generation(self, token_id: int) -> bool:
        """End of sequence or end of turn."""
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token_id))

    def new_sampler(self, sampling: SamplingParams, json_schema: JSONObject | None) -> TokenSampler:
        """A sampler chain; raises `ValueError` when the schema cannot become a grammar."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        sampler = LlamaSampler(chain)
        try:
            if json_schema is not None:
                grammar = llama_cpp.llama_sampler_init_grammar(
                    self._vocab, to_gbnf(json_schema).encode("utf-8"), b"root"
                )
                if not grammar:
                    raise ValueError("llama.cpp refused the grammar built from the JSON Schema")
                llama_cpp.llama_sampler_chain_add(chain, grammar)
            for step in _sampling_steps(sampling):
                llama_cpp.llama_sampler_chain_add(chain, step)
        except BaseException:
            sampler.close()
            raise
        return sampler

    def step(self, chunks: list[RunnerChunk]) -> list[int | ContinuationScore | None]:
        """Decode the chunks; sample or score where a chunk asks for it.

        Single decode tokens go in one `llama_decode` and prompt chunks in a second: with a KV
        stream per sequence, a micro-batch attends over as many cells as its longest stream
        holds, so a 32-token chunk of a 2,000-token prompt in the same batch made every running
        stream's token attend over 2,000 cells (measured at 16 slots: mixed steps 233-278 ms
        median, 315-391 ms at the prompt's end; separate calls 193 ms median, 226 ms max).
        Within a call, chunks go in slot order: llama.cpp puts sequences in one micro-batch
        only when their ids follow each other (`split_equal`). Chunks of the scoring slots go
        in a third call, on the scoring context.
        """
        results: list[int | ContinuationScore | None] = [None] * len(chunks)
        contexts = [self._context_of(chunk.slot) for chunk in chunks]
        main = [i for i, context in enumerate(contexts) if context is self._main]
        decodes = [i for i in main if _is_decode(chunks[i])]
        prompts = [i for i in main if not _is_decode(chunks[i])]
        scoring = [i for i, context in enumerate(contexts) if context is not self._main]
        for group in (decodes, prompts, scoring):
            order = sorted(group, key=lambda i: chunks[i].slot)
            if order:
                context = contexts[order[0]]
                for index, result in zip(
                    order, self._step_in_order([chunks[i] for i in order], context), strict=True
                ):
                    results[index] = result
        return results

    def _context_of(self, slot: int) -> _Context:
        if slot < self._num_slots or self._scoring is None:
            return self._main
        return self._scoring

    def _step_in_order(
        self, chunks: list[RunnerChunk], context: _Context
    ) -> list[int | ContinuationScore | None]:
        batch = self._batch
        ctx = context.handle.ctx
        num_tokens = sum(len(chunk.token_ids) for chunk in chunks)
        if num_tokens > self.options.max_batch_tokens:
            raise ValueError(
                f"a step of {num_tokens} tokens exceeds the batch of "
                f"{self.options.max_batch_tokens}"
            )
        first_rows: list[int] = []
        n = 0
        for chunk in chunks:
            first_rows.append(n)
            wanted = chunk.rows_with_logits
            for i, token in enumerate(chunk.token_ids):
                batch.token[n] = token
                batch.pos[n] = chunk.start + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = chunk.slot - context.first_slot
                batch.logits[n] = i in wanted
                n += 1
        batch.n_tokens = n
        code = llama_cpp.llama_decode(ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")
        results: list[int | ContinuationScore | None] = []
        for chunk, first in zip(chunks, first_rows, strict=True):
            last = first + len(chunk.token_ids) - 1
            if chunk.score_from is not None:
                results.append(self._score(chunk, first, ctx))
            elif isinstance(chunk.sampler, LlamaSampler) and chunk.sampler.handle is not None:
                results.append(llama_cpp.llama_sampler_sample(chunk.sampler.handle, ctx, last))
            else:
                results.append(None)
        return results

    def _score(
        self, chunk: RunnerChunk, first_row: int, ctx: llama_cpp.llama_context_p
    ) -> ContinuationScore:
        """Sum of log P(token | tokens before it) over the chunk's scored tokens."""
        assert chunk.score_from is not None
        total, count = 0.0, 0
        for i in chunk.scored_rows:
            target = chunk.token_ids[i + 1]
            pointer = llama_cpp.llama_get_logits_ith(ctx, first_row + i)
            logits = np.ctypeslib.as_array(pointer, shape=(self._num_vocab,))
            peak = float(logits.max())
            log_norm = peak + math.log(float(np.exp(logits - peak).sum()))
            total += float(logits[target]) - log_norm
            count += 1
        return ContinuationScore(logprob=total, num_tokens=count)

    def trim_slot(self, slot: int, keep: int) -> None:
        """Drop the slot's KV cache from position `keep` on."""
        context = self._context_of(slot)
        memory = llama_cpp.llama_get_memory(context.handle.ctx)
        llama_cpp.llama_memory_seq_rm(memory, slot - context.first_slot, keep, -1)

    def copy_slot(self, source: int, slot: int, keep: int) -> None:
        """Make the slot's KV the first `keep` positions of `source`'s: llama.cpp copies a
        sequence's state whole (every position it holds, through a buffer), then the rest is
        dropped. Raises `ValueError` for slots of two contexts, `RuntimeError` when llama.cpp
        cannot copy."""
        context = self._context_of(slot)
        if self._context_of(source) is not context:
            raise ValueError(f"slots {source} and {slot} are in different llama.cpp contexts")
        self.trim_slot(slot, 0)
        if keep == 0:
            return
        ctx = context.handle.ctx
        src, dst = source - context.first_slot, slot - context.first_slot
        size = llama_cpp.llama_state_seq_get_size(ctx, src)
        # an anonymous mapping, so the buffer's pages go back to the kernel when it closes
        with mmap.mmap(-1, size) as area:
            data = (ctypes.c_uint8 * size).from_buffer(area)
            written = llama_cpp.llama_state_seq_get_data(ctx, data, size, src)
            loaded = written and llama_cpp.llama_state_seq_set_data(ctx, data, written, dst)
            del data  # the mapping cannot close while exported
        if not loaded:
            self.trim_slot(slot, 0)
            raise RuntimeError(f"llama.cpp could not copy slot {source}'s KV into slot {slot}")
        self.trim_slot(slot, keep)

    def close(self) -> None:
        """Free the batch, the contexts and the model."""
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        for context in (self._main, self._scoring):
            if context is not None:
                context.handle.close()  # type: ignore[no-untyped-call]
        self._model.close()  # type: ignore[no-untyped-call]

    def _piece_bytes(self, token_id: int, *, special: bool) -> bytes:
        size = llama_cpp.llama_token_to_piece(self._vocab, token_id, self._piece, 256, 0, special)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama_cpp.llama_token_to_piece(self._vocab, token_id, buffer, -size, 0, special)
            return bytes(buffer.raw[:size])
        return bytes(self._piece.raw[:size])

    def _special_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return self._piece_bytes(token_id, special=True).decode("utf-8", errors="replace")


def _kv_shape(model: _internals.LlamaModel, metadata: dict[str, str]) -> KvShape:
    """The model's KV shape: layers, KV heads, and head sizes from the GGUF's
    `<arch>.attention.key_length` / `value_length` when given, else embedding / heads."""
    handle = model.model
    arch = metadata.get("general.architecture", "")
    head_dim = int(llama_cpp.llama_model_n_embd(handle)) // int(
        llama_cpp.llama_model_n_head(handle)
    )
    return KvShape(
        num_layers=int(llama_cpp.llama_model_n_layer(handle)),
        num_kv_heads=int(llama_cpp.llama_model_n_head_kv(handle)),
        key_head_dim=int(metadata.get(f"{arch}.attention.key_length", head_dim)),
        value_head_dim=int(metadata.get(f"{arch}.attention.value_length", head_dim)),
    )


def _is_decode(chunk: RunnerChunk) -> bool:
    return len(chunk.token_ids) == 1 and chunk.score_from is None


def _sampling_steps(sampling: SamplingParams) -> list[llama_cpp.llama_sampler_p]:
    """Samplers after the grammar: greedy, or top-k, top-p, temperature and a seeded draw."""
    if sampling.is_greedy:
        return [llama_cpp.llama_sampler_init_greedy()]
    top_k = sampling.resolved_top_k
    seed = llama_cpp.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
    steps = []
    if top_k > 0:
        steps.append(llama_cpp.llama_sampler_init_top_k(top_k))
    steps += [
        llama_cpp.llama_sampler_init_top_p(sampling.resolved_top_p, 1),
        llama_cpp.llama_sampler_init_temp(sampling.resolved_temperature),
        llama_cpp.llama_sampler_init_dist(seed),
    ]
    return steps


def load_llama_cpp(
    options: LlamaCppOptions, loop_config: LoopConfig | None = None
) -> BatchedEngine:
    """Load a GGUF model as an Engine (blocking: call it off the event loop)."""
    return BatchedEngine(LlamaCppRunner(options), loop_config)
