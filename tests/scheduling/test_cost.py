"""The step cost model and its estimate from timed runner calls."""

from __future__ import annotations

import pytest

from toolrpc.scheduling.cost import DEFAULT_STEP_COST, StepCost, StepCostEstimator

TRUE_COST = StepCost(fixed_s=0.003, per_decode_row_s=0.006, per_prompt_token_s=0.0025)


def feed(estimator: StepCostEstimator, cost: StepCost, calls: int) -> None:
    """Observe `calls` runner calls of varied composition that take exactly what `cost` says."""
    for i in range(calls):
        steps, rows, tokens = 1 + i % 3, i % 5 + i % 3, (37 * i) % 200
        seconds = cost.seconds(rows, tokens) + (steps - 1) * cost.fixed_s
        estimator.observe(
            num_steps=steps, num_decode_rows=rows, num_prompt_tokens=tokens, seconds=seconds
        )


def test_before_any_call_the_estimate_is_the_prior() -> None:
    cost = StepCostEstimator().cost()

    assert cost.fixed_s == pytest.approx(DEFAULT_STEP_COST.fixed_s)
    assert cost.per_decode_row_s == pytest.approx(DEFAULT_STEP_COST.per_decode_row_s)
    assert cost.per_prompt_token_s == pytest.approx(DEFAULT_STEP_COST.per_prompt_token_s)


def test_the_estimate_converges_to_the_costs_of_the_calls_observed() -> None:
    estimator = StepCostEstimator()

    feed(estimator, TRUE_COST, 200)

    cost = estimator.cost()
    assert cost.per_prompt_token_s == pytest.approx(TRUE_COST.per_prompt_token_s, rel=0.05)
    assert cost.per_decode_row_s == pytest.approx(TRUE_COST.per_decode_row_s, rel=0.1)
    assert cost.fixed_s == pytest.approx(TRUE_COST.fixed_s, rel=0.2)


def test_the_estimate_follows_a_change_in_cost() -> None:
    estimator = StepCostEstimator()
    feed(estimator, TRUE_COST, 200)
    slower = StepCost(fixed_s=0.006, per_decode_row_s=0.012, per_prompt_token_s=0.005)

    feed(estimator, slower, 100)

    assert estimator.cost().per_prompt_token_s == pytest.approx(0.005, rel=0.05)


def test_decode_only_calls_leave_the_prompt_cost_at_the_prior() -> None:
    estimator = StepCostEstimator()
    for _ in range(100):
        estimator.observe(num_steps=1, num_decode_rows=1, num_prompt_tokens=0, seconds=0.02)

    cost = estimator.cost()
    assert cost.seconds(1, 0) == pytest.approx(0.02, rel=0.05)
    assert cost.per_prompt_token_s == pytest.approx(DEFAULT_STEP_COST.per_prompt_token_s)


def test_decode_only_calls_do_not_wash_out_a_measured_prompt_cost() -> None:
    """A stream decoding alone for a while, then a long prompt: its first chunk is sized by the
    prompt cost measured before, not by the prior's."""
    estimator = StepCostEstimator()
    slow_prompts = StepCost(fixed_s=0.005, per_decode_row_s=0.008, per_prompt_token_s=0.010)
    feed(estimator, slow_prompts, 100)

    for _ in range(300):
        seconds = slow_prompts.seconds(1, 0)
        estimator.observe(num_steps=1, num_decode_rows=1, num_prompt_tokens=0, seconds=seconds)

    cost = estimator.cost()
    assert cost.per_prompt_token_s == pytest.approx(0.010, rel=0.05)
    assert cost.seconds(1, 0) == pytest.approx(slow_prompts.seconds(1, 0), rel=0.05)


def test_a_free_step_still_gives_a_finite_budget() -> None:
    estimator = StepCostEstimator()
    for _ in range(300):
        estimator.observe(num_steps=1, num_decode_rows=2, num_prompt_tokens=100, seconds=0.0)

    assert estimator.cost().prompt_tokens_within(0.2, 2) < 10**9


def test_the_prompt_tokens_within_a_target_keep_the_step_within_it() -> None:
    for target in (0.05, 0.1, 0.2, 0.35):
        for rows in range(8):
            tokens = TRUE_COST.prompt_tokens_within(target, rows)
            if tokens:
                assert TRUE_COST.seconds(rows, tokens) <= target + 1e-12
            assert TRUE_COST.seconds(rows, tokens + 1) > target


def test_an_impossible_observation_is_refused() -> None:
    with pytest.raises(ValueError):
        StepCostEstimator().observe(
            num_steps=0, num_decode_rows=0, num_prompt_tokens=0, seconds=0.1
        )
    with pytest.raises(ValueError):
        StepCostEstimator().observe(
            num_steps=1, num_decode_rows=0, num_prompt_tokens=0, seconds=-1.0
        )
