"""Scheduling: continuous batching over a ModelRunner.

`scheduler.Scheduler` is the pure policy (sequences in, a batch of token chunks out per step);
`loop.BatchLoop` is the one async loop that drives a `runner.ModelRunner` with it and streams
each request's text. Nothing here knows a model format, tools or HTTP.
"""
