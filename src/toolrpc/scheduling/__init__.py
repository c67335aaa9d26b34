"""Scheduling: continuous batching over a ModelRunner.

`scheduler.Scheduler` is the pure policy: sequences in, a `StepPlan` out per runner call (the
chunks of a step and how many decode steps the call may take), sampled tokens back in through
`postprocess`, which ends sequences at end of generation and `max_new_tokens`. `loop.BatchLoop`
is the one async loop that carries plans to a `runner.ModelRunner` and turns each request's
tokens into text (stop strings included). Nothing here knows a model format, tools or HTTP.
"""
