"""KV cache sizing: bytes a token takes, slots a memory budget holds, and the KV flags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from toolrpc.config import MANY_USERS_KV_MEMORY_MIB, Settings
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


def test_the_many_users_profile_holds_eight_conversations_in_192_mib() -> None:
    settings = Settings(kv_memory_mib=MANY_USERS_KV_MEMORY_MIB, kv_type="q8_0", ctx_size=2048)
    per_token = SMOLLM2_135M.bytes_per_token(settings.kv_type)
    assert settings.kv_memory_mib is not None

    slots = slots_within(settings.kv_memory_mib * 2**20, settings.ctx_size, per_token)

    assert (settings.parallel, slots) == (None, 8)


def test_the_defaults_are_four_slots_of_4096_tokens_at_f16() -> None:
    settings = Settings()

    assert (settings.parallel, settings.kv_memory_mib) == (None, None)
    assert (settings.ctx_size, settings.kv_type, settings.prefill_chunk) == (4096, "f16", 32)
    assert settings.max_token_gap_ms is None


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
