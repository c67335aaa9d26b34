"""What a runner step costs, and an estimate of it kept up to date from the steps that ran.

A step's wall time is modelled as `fixed + per_decode_row x rows + per_prompt_token x tokens`
(the runner feeds decode rows and prompt chunks in separate `llama_decode` calls, each roughly
linear in its rows). The scheduler is given the current `StepCost` as a value and sizes each
step's prompt chunks so that a step with running streams stays within the inter-token target
(`StepCost.prompt_tokens_within`), as Sarathi-Serve and vLLM's chunked prefill do; the loop
times each runner call and feeds it to a `StepCostEstimator`.

The prior (`DEFAULT_STEP_COST`) is the embedded SmolLM2-135M on two cores, from the figures in
`benchmarks/README.md`: one stream at ~100 tok/s (10 ms a step), eight at ~180 tok/s (45 ms
for eight rows: ~5 ms a row, ~5 ms fixed), and a prompt at ~4 ms a token (a 1,000-token
follow-up prefilled in 4.0-4.8 s; a 2,000-token prompt's 32-token chunks held a stream
0.21-0.25 s, 64-token ones 0.40 s: ~4.7 ms a token late in a long prompt). It only matters
for the first steps: real steps outweigh it within a few dozen (`DECAY`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StepCost:
    """Seconds one runner step takes: a fixed part, plus per decode row and per prompt token."""

    fixed_s: float
    per_decode_row_s: float
    per_prompt_token_s: float

    def seconds(self, num_decode_rows: int, num_prompt_tokens: int) -> float:
        """The modelled wall time of a step of this composition."""
        return (
            self.fixed_s
            + self.per_decode_row_s * num_decode_rows
            + self.per_prompt_token_s * num_prompt_tokens
        )

    def prompt_tokens_within(self, seconds: float, num_decode_rows: int) -> int:
        """The most prompt tokens a step with `num_decode_rows` decodes may hold and still take
        at most `seconds` (0 when the decodes alone take that long)."""
        left = seconds - self.seconds(num_decode_rows, 0)
        if left <= 0:
            return 0
        return math.floor(left / self.per_prompt_token_s + 1e-9)


DEFAULT_STEP_COST = StepCost(fixed_s=0.005, per_decode_row_s=0.005, per_prompt_token_s=0.004)
"""The prior: the embedded model on two cores (module docstring)."""

DECAY = 0.95
"""Weight kept by past observations at each new call that holds prompt tokens: the estimate
follows the last ~20 such calls (a long prompt's later chunks, which attend over more cells,
cost more than its first). A call of decodes alone forgets nothing: it says nothing of what a
prompt token costs, so a stream decoding for a while no longer washes the measured prompt cost
back to the prior. (This was suspected of a 0.74 s stall beside a 2,000-token prompt at q8_0 in
benchmarks/serving.py; with it the stall was still 0.64 s: the cause was flash attention's cost
growing with the position, which this linear model does not have; benchmarks/README.md.)"""

PRIOR_WEIGHT = 0.05
"""Weight of each of the prior's three pseudo-observations, never decayed: they keep the
estimate defined when the steps seen so far cannot separate the three costs (only decodes of
one stream, say). At 0.5 they still pulled the per-row cost 40% off after 200 varied calls
(millisecond differences weigh little beside a prompt's); at 0.05 it was within 4%."""

SMALLEST_TOKEN_COST_S = 1e-6
"""Floor of the per-prompt-token cost, so that a budget is always finite."""


class StepCostEstimator:
    """Least squares over the calls seen (exponentially forgotten) plus the prior's
    pseudo-observations; `cost()` is the current estimate."""

    def __init__(self, prior: StepCost = DEFAULT_STEP_COST) -> None:
        self._xx = [[0.0] * 3 for _ in range(3)]
        self._xy = [0.0] * 3
        self.num_observed = 0
        probe_tokens = 64
        for features in ((1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (1.0, 0.0, float(probe_tokens))):
            seconds = prior.seconds(int(features[1]), int(features[2]))
            self._add(features, seconds, PRIOR_WEIGHT)
        self._prior_xx = [row[:] for row in self._xx]
        self._prior_xy = self._xy[:]

    def observe(
        self, *, num_steps: int, num_decode_rows: int, num_prompt_tokens: int, seconds: float
    ) -> None:
        """Record one runner call: `num_steps` steps holding `num_decode_rows` decode rows and
        `num_prompt_tokens` prompt tokens in all, done in `seconds` of wall time.

        Raises `ValueError` for a call of no steps or a negative count or time.
        """
        if num_steps < 1 or num_decode_rows < 0 or num_prompt_tokens < 0 or seconds < 0:
            raise ValueError("a runner call has at least one step and no negative counts")
        if num_prompt_tokens > 0:
            self._forget()
        self._add((float(num_steps), float(num_decode_rows), float(num_prompt_tokens)), seconds)
        self.num_observed += 1

    def _forget(self) -> None:
        """Decay every past observation by `DECAY` (the prior's stay as they are)."""
        for i in range(3):
            self._xy[i] = DECAY * (self._xy[i] - self._prior_xy[i]) + self._prior_xy[i]
            for j in range(3):
                past = self._xx[i][j] - self._prior_xx[i][j]
                self._xx[i][j] = DECAY * past + self._prior_xx[i][j]

    def cost(self) -> StepCost:
        """The current estimate (each part at least 0; a prompt token at least a microsecond)."""
        fixed, per_row, per_token = _solve3(self._xx, self._xy)
        return StepCost(
            fixed_s=max(0.0, fixed),
            per_decode_row_s=max(0.0, per_row),
            per_prompt_token_s=max(SMALLEST_TOKEN_COST_S, per_token),
        )

    def _add(
        self, features: tuple[float, float, float], seconds: float, weight: float = 1.0
    ) -> None:
        for i in range(3):
            self._xy[i] += weight * features[i] * seconds
            for j in range(3):
                self._xx[i][j] += weight * features[i] * features[j]


def _solve3(a: list[list[float]], b: list[float]) -> tuple[float, float, float]:
    """Solve the 3x3 system `a x = b` by Gaussian elimination with partial pivoting (`a` is
    symmetric positive definite here: the prior's rows alone make it so)."""
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, 3):
            factor = m[r][col] / m[col][col]
            for c in range(col, 4):
                m[r][c] -= factor * m[col][c]
    x = [0.0, 0.0, 0.0]
    for r in (2, 1, 0):
        x[r] = (m[r][3] - sum(m[r][c] * x[c] for c in range(r + 1, 3))) / m[r][r]
    return x[0], x[1], x[2]
