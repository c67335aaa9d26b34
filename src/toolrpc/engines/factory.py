"""Choosing and loading the engine that settings ask for."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from toolrpc.config import Settings
from toolrpc.engines.base import Engine
from toolrpc.engines.default_model import embedded_model_path

logger = logging.getLogger(__name__)


def load_engine(settings: Settings) -> Engine:
    """Load the configured engine (blocking). Raises `ValueError` for a model it cannot serve."""
    if settings.engine == "fake":
        from toolrpc.engines.fake import FakeEngine

        return FakeEngine(context_length=settings.ctx_size)
    path = Path(settings.model) if settings.model else embedded_model_path()
    if path.suffix.lower() != ".gguf" or not path.is_file():
        raise ValueError(
            f"--model {settings.model!r}: expected a .gguf file (this build serves GGUF models "
            "through llama.cpp)"
        )
    from toolrpc.engines.llama_cpp import LlamaCppEngine, LlamaCppOptions
    from toolrpc.scheduling.loop import LoopConfig

    logger.info("loading model %s", path)
    started = time.perf_counter()
    engine = LlamaCppEngine.load(
        LlamaCppOptions(
            model_path=path,
            context_length=settings.ctx_size,
            num_slots=settings.parallel,
            max_batch_tokens=settings.batch_tokens,
            num_threads=settings.threads,
            verbose=settings.verbose_engine,
        ),
        LoopConfig(
            token_budget=settings.batch_tokens,
            max_waiting=settings.max_queue,
            request_timeout_s=settings.request_timeout_s,
        ),
    )
    logger.info("model loaded in %.1f s", time.perf_counter() - started)
    return engine
