"""Choosing and loading the engine that settings ask for.

Which engine serves the settings is `Settings.engine_kind` (`--engine`, or else from `--model`: a
`.gguf` file or no model is llama.cpp, anything else transformers), decided with the settings so
that their validation can refuse flags the engine would ignore.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from toolrpc.config import DEFAULT_HF_SLOTS, DEFAULT_SLOTS, Settings
from toolrpc.engines.base import Engine
from toolrpc.engines.default_model import embedded_model_path
from toolrpc.scheduling.loop import LoopConfig

logger = logging.getLogger(__name__)


def load_engine(settings: Settings) -> Engine:
    """Load the configured engine (blocking).

    Raises `ValueError`, its message naming the flag, for a model the engine cannot serve (the
    CLI turns it into one line and exit code 2); `Settings` refuses most of these already.
    """
    kind = settings.engine_kind
    if kind == "upstream":
        return _connect_upstreams(settings)
    if kind == "fake":
        from toolrpc.engines.fake import FakeEngine

        return FakeEngine(context_length=settings.context_length)
    gap_ms = settings.max_token_gap_ms
    loop_config = LoopConfig(
        token_budget=settings.batch_tokens,
        prefill_budget_while_decoding=settings.prefill_chunk,
        max_token_gap_s=None if gap_ms is None else gap_ms / 1000,
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

    try:
        path = Path(settings.model) if settings.model else embedded_model_path()
    except FileNotFoundError as exc:
        raise ValueError(f"no --model given and {exc}") from exc
    if not path.is_file():
        raise ValueError(f"--model {settings.model}: no such GGUF file")
    logger.info("loading GGUF model %s with llama.cpp", path)
    options = LlamaCppOptions(
        model_path=path,
        context_length=settings.context_length,
        num_slots=settings.parallel or (None if settings.kv_memory_mib else DEFAULT_SLOTS),
        kv_memory_bytes=settings.kv_memory_mib and settings.kv_memory_mib * 2**20,
        max_batch_tokens=settings.batch_tokens,
        num_threads=settings.threads,
        kv_type=settings.kv_type,
        flash_attention=settings.flash_attn == "on",
        scoring_slots=settings.scoring_slots,
        verbose=settings.verbose_engine,
    )
    return load_llama_cpp(options, loop_config)


def _load_hf(settings: Settings, loop_config: LoopConfig) -> Engine:
    if settings.model is None:
        raise ValueError(
            "--engine hf needs --model (a Hugging Face id or a folder with config.json)"
        )
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
        context_length=settings.context_length,
        num_slots=settings.parallel or DEFAULT_HF_SLOTS,
        device=settings.device,
        dtype=settings.dtype,
        quantize=settings.quantize,
        trust_remote_code=settings.trust_remote_code,
    )
    return load_hf(options, loop_config)


def _connect_upstreams(settings: Settings) -> Engine:
    """The pool of `--upstream` replicas, after asking each which model it serves.

    Raises `ValueError` (one line) when no upstream answers or none serves `--model`.
    """
    from toolrpc.engines.upstream import UpstreamOptions, UpstreamPool, probe_upstreams

    options = UpstreamOptions(
        urls=tuple(settings.upstream),
        model=settings.model,
        timeout_s=settings.upstream_timeout_s,
        deadline_s=settings.request_timeout_s,
        health_interval_s=settings.upstream_health_interval_s,
        max_outstanding=max(1, settings.max_queue),  # --max-queue 0: one in flight, none waiting
        context_length=settings.context_length,
    )
    info, reachable = probe_upstreams(options)
    logger.info(
        "upstream model %s on %d of %d replicas", info.model_name, len(reachable), len(options.urls)
    )
    return UpstreamPool(options, info, reachable=reachable)
