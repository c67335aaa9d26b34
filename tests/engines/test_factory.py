"""The engine factory: which engine settings ask for, and the errors of what it cannot load.

Settings that fail their own validation are built with `model_construct` here, to show that the
factory still answers a `ValueError` naming the flag (never an assert) when handed one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolrpc.config import Settings
from toolrpc.engines.factory import load_engine
from toolrpc.engines.fake import FakeEngine


async def test_the_fake_engine_is_loaded_with_the_context_size_of_the_settings() -> None:
    engine = load_engine(Settings(engine="fake", ctx_size=1024))

    try:
        assert isinstance(engine, FakeEngine)
        assert engine.info.context_length == 1024
    finally:
        await engine.aclose()


def test_the_hf_engine_without_a_model_is_a_value_error_not_an_assert() -> None:
    settings = Settings.model_construct(engine="hf", model=None)

    with pytest.raises(ValueError, match="--model"):
        load_engine(settings)


def test_a_gguf_file_that_does_not_exist_is_a_value_error_naming_the_flag(tmp_path: Path) -> None:
    settings = Settings.model_construct(model=str(tmp_path / "nonexistent.gguf"))

    with pytest.raises(ValueError, match="--model"):
        load_engine(settings)
