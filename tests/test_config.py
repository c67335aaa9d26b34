"""Settings: flags' values from the environment, defaults from one source, combinations checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from toolrpc.chat.router import DEFAULT_BIAS
from toolrpc.config import Settings
from toolrpc.scheduling.scheduler import Scheduler
from toolrpc.scheduling.sequence import MIN_FINAL_CHUNK


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TOOLRPC_* or MODEL_ID variable of the machine running the tests leaks into Settings."""
    for name in list(os.environ):
        if name.upper().startswith("TOOLRPC_") or name.upper() in {"MODEL_ID", "MODEL"}:
            monkeypatch.delenv(name)


def error_types(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [error["type"] for error in exc.value.errors()]


def test_every_setting_can_come_from_a_toolrpc_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLRPC_PARALLEL", "3")
    monkeypatch.setenv("TOOLRPC_TOOL_CALL_FORMAT", "hermes")

    settings = Settings()

    assert (settings.parallel, settings.tool_call_format) == (3, "hermes")


def test_model_id_names_the_model_as_the_original_server_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODEL_ID", "Qwen/Qwen2.5-0.5B-Instruct")

    assert Settings().model == "Qwen/Qwen2.5-0.5B-Instruct"


def test_a_bare_model_variable_is_not_taken_for_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL", "something-else.gguf")

    assert Settings().model is None


def test_a_value_given_directly_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLRPC_PORT", "9000")
    monkeypatch.setenv("MODEL_ID", "Qwen/Qwen2.5-0.5B-Instruct")

    settings = Settings(port=9001, model="HuggingFaceTB/SmolLM2-135M-Instruct")

    assert (settings.port, settings.model) == (9001, "HuggingFaceTB/SmolLM2-135M-Instruct")


def test_the_router_bias_default_is_the_routers_own() -> None:
    assert Settings().tool_router_bias == DEFAULT_BIAS


def test_every_batch_size_the_settings_accept_the_scheduler_accepts_too() -> None:
    for parallel in [1, 4, 64]:
        smallest = Settings(parallel=parallel, batch_tokens=max(16, parallel + MIN_FINAL_CHUNK))

        Scheduler(num_slots=smallest.parallel, token_budget=smallest.batch_tokens, max_waiting=0)


def test_batch_tokens_below_parallel_plus_the_final_chunk_are_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(parallel=64, batch_tokens=64 + MIN_FINAL_CHUNK - 1)

    assert error_types(exc) == ["value_error"]


@pytest.mark.parametrize(
    "flags",
    [
        {"quantize": "4bit"},  # the embedded default is a GGUF file
        {"quantize": "8bit", "engine": "llama.cpp"},
        {"quantize": "4bit", "engine": "fake"},
        {"dtype": "float16", "engine": "fake"},
        {"trust_remote_code": True},
    ],
)
def test_transformers_only_flags_are_refused_for_other_engines(flags: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings.model_validate(flags)

    assert error_types(exc) == ["value_error"]


def test_quantize_is_refused_for_a_gguf_file(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")

    with pytest.raises(ValidationError) as exc:
        Settings(model=str(model), quantize="4bit")

    assert error_types(exc) == ["value_error"]


def test_quantize_is_accepted_for_a_transformers_model() -> None:
    settings = Settings(model="Qwen/Qwen2.5-0.5B-Instruct", quantize="4bit")

    assert (settings.engine_kind, settings.quantize) == ("hf", "4bit")


def test_the_hf_engine_without_a_model_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(engine="hf")

    assert error_types(exc) == ["value_error"]


def test_a_gguf_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(model=str(tmp_path / "nonexistent.gguf"))

    assert error_types(exc) == ["value_error"]


def test_a_tools_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(tools=tmp_path / "missing.json")

    assert error_types(exc) == ["path_not_file"]


def test_the_tool_call_format_is_auto_unless_one_of_the_known_formats_is_named() -> None:
    assert Settings().tool_call_format == "auto"
    assert Settings(tool_call_format="llama3").tool_call_format == "llama3"

    with pytest.raises(ValidationError) as exc:
        Settings(tool_call_format="xml")

    assert error_types(exc) == ["literal_error"]


@pytest.mark.parametrize(
    ("engine", "model", "kind"),
    [
        ("auto", None, "llama.cpp"),  # the embedded default
        ("auto", "weights/Model.Q4_K_M.GGUF", "llama.cpp"),
        ("auto", "Qwen/Qwen2.5-0.5B-Instruct", "hf"),
        ("auto", "./Qwen-14B", "hf"),
        ("hf", "weights/model.gguf", "hf"),
        ("fake", None, "fake"),
    ],
)
def test_the_engine_kind_comes_from_engine_or_else_from_the_model(
    engine: str, model: str | None, kind: str
) -> None:
    settings = Settings.model_construct(engine=engine, model=model)

    assert settings.engine_kind == kind
