"""Choosing and loading the engine that settings ask for.

`--model` picks the backend unless `--engine` says: a `.gguf` file is served by llama.cpp; a
folder with `config.json`, or anything else (a Hugging Face id such as `Qwen/Qwen2.5-0.5B-
Instruct`), by transformers; no model is the embedded GGUF.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from toolrpc.config import Settings
from toolrpc.engines.base import Engine
from toolrpc.engines.default_model import embedded_model_path
from toolrpc.scheduling.loop import LoopConfig

logger = logging.getLogger(__name__)


def engine_kind(settings: Settings) -> str:
    """`llama.cpp`, `hf` or `fake`, from `--engine` or else from `--model`."""
    if settings.engine != "auto":
        return settings.engine
    if settings.model is None or settings.model.lower().endswith(".gguf"):
        return "llama.cpp"
    return "hf"


def load_engine(settings: Settings) -> Engine:
    """Load the configured engine (blocking). Raises `ValueError` for a model it cannot serve."""
    kind = engine_kind(settings)
    if kind == "fake":
        from toolrpc.engines.fake import FakeEngine

        return FakeEngine(context_length=settings.ctx_size)
    loop_config = LoopConfig(
        token_budget=settings.batch_tokens,
        prefill_budget_while_decoding=settings.prefill_chunk,
        reuse_generated_kv=settings.reuse_generated_kv,
        max_waiting=settings.max_queue,
        request_timeout_s=settings.request_timeout_s,
    )
    started = time.perf_counter()
    engine = _load_hf(settings, loop_config) if kind == "hf" else _load_gguf(settings, loop_config)
    logger.info("model loaded in %.1f s", time.perf_counter() - started)
    return engine


def _load_gguf(settings: Settings, loop_config: LoopConfig) -> Engine:
    from toolrpc.engines.llama_cpp import LlamaCppOptions, load_llama_cpp

    path = Path(settings.model) if settings.model else embedded_model_path()
    if not path.is_file():
        raise ValueError(f"--model {settings.model!r}: no such GGUF file")
    logger.info("loading GGUF model %s with llama.cpp", path)
    options = LlamaCppOptions(
        model_path=path,
        context_length=settings.ctx_size,
        num_slots=settings.parallel,
        max_batch_tokens=settings.batch_tokens,
        num_threads=settings.threads,
        verbose=settings.verbose_engine,
    )
    return load_llama_cpp(options, loop_config)


def _load_hf(settings: Settings, loop_config: LoopConfig) -> Engine:
    assert settings.model is not None
    try:
        from toolrpc.engines.hf import HfOptions, load_hf
    except ImportError as exc:
        raise ValueError(
            f"--model {settings.model!r} needs the transformers engine: "
            f"pip install 'toolrpc[hf]' ({exc})"
        ) from exc
    logger.info("loading %s with transformers", settings.model)
    options = HfOptions(
        model=settings.model,
        context_length=settings.ctx_size,
        num_slots=settings.parallel,
        device=settings.device,
        dtype=settings.dtype,
        quantize=settings.quantize,
        trust_remote_code=settings.trust_remote_code,
    )
    return load_hf(options, loop_config)
