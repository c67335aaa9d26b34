"""KV cache sizing: bytes a token takes, slots a memory budget holds, and the KV flags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from toolrpc.config import DEFAULT_SLOTS, Settings
from toolrpc.scheduling.kv_memory import KvShape, slots_within

SMOLLM2_135M = KvShape(num_layers=30, num_kv_heads=3, key_head_dim=64, value_head_dim=64)


def error_types(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    """The pydantic error types of a refused setting."""
    return [error["type"] for error in exc.value.errors()]


def test_a_token_of_the_embedded_model_takes_23040_bytes_at_f16_and_12240_at_q8_0() -> None:
    assert SMOLLM2_135M.bytes_per_token("f16") == 23_040
    assert SMOLLM2_135M.bytes_per_token("q8_0") == 12_240


def test_the_kv_type_is_refused_for_the_transformers_engine() -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(model="Qwen/Qwen2.5-0.5B-Instruct", kv_type="q8_0")

    assert error_types(exc) == ["value_error"]


def test_an_unknown_kv_type_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        Settings.model_validate({"kv_type": "q2_k"})

    assert error_types(exc) == ["literal_error"]


def test_the_defaults_are_eight_slots_of_2048_tokens_in_the_kv_of_four_of_4096() -> None:
    """8 conversations at once in the KV memory the defaults before gave 4 (360 MiB on the
    embedded model), and a q8_0 cache (opt-in) holds them in 192 MiB."""
    settings = Settings()
    per_token = SMOLLM2_135M.bytes_per_token(settings.kv_type)

    kv_bytes = DEFAULT_SLOTS * settings.context_length * per_token

    assert (DEFAULT_SLOTS, settings.context_length, settings.kv_type) == (8, 2048, "f16")
    assert (settings.parallel, settings.kv_memory_mib, settings.prefill_chunk) == (None, None, None)
    assert settings.max_token_gap_ms == 200
    assert kv_bytes == 4 * 4096 * SMOLLM2_135M.bytes_per_token("f16")
    q8_0 = SMOLLM2_135M.bytes_per_token("q8_0")
    assert slots_within(192 * 2**20, settings.context_length, q8_0) == DEFAULT_SLOTS


def test_the_context_default_is_the_engines() -> None:
    assert Settings().context_length == 2048
    assert Settings(model="org/model").context_length == 4096  # transformers: grows with use
    assert Settings(engine="fake").context_length == 4096
    assert Settings(ctx_size=4096).context_length == 4096


def test_a_budget_holds_whole_slots_only_and_at_most_the_cap() -> None:
    per_slot = 1000 * 12_240

    assert slots_within(3 * per_slot - 1, 1000, 12_240) == 2
    assert slots_within(3 * per_slot, 1000, 12_240) == 3
    assert slots_within(100 * per_slot, 1000, 12_240, max_slots=16) == 16


def test_a_budget_that_holds_no_conversation_is_refused() -> None:
    with pytest.raises(ValueError):
        slots_within(1000 * 12_240 - 1, 1000, 12_240)


def test_parallel_and_a_kv_memory_budget_together_are_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(parallel=4, kv_memory_mib=100)

    assert error_types(exc) == ["value_error"]


def test_the_batch_rule_applies_to_a_given_parallel_only() -> None:
    with pytest.raises(ValidationError):
        Settings(parallel=64, batch_tokens=64)

    assert Settings(batch_tokens=16).parallel is None


def test_a_q8_0_cache_without_flash_attention_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="needs flash attention"):
        Settings(kv_type="q8_0", flash_attn="off")

    assert Settings(kv_type="q8_0", flash_attn="on").flash_attn == "on"


@pytest.mark.parametrize(
    "flag", [{"scoring_slots": 4}, {"flash_attn": "on"}], ids=["scoring-slots", "flash-attn"]
)
def test_llama_cpp_flags_are_refused_for_the_transformers_engine(flag: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=r"applies to the llama\.cpp engine"):
        Settings.model_validate({"model": "Qwen/Qwen2.5-0.5B-Instruct", **flag})
