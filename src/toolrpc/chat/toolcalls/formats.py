"""Tool-call markup formats, described as data rather than as code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToolCallFormat:
    """How a model family marks a tool call in its generated text.

    A call is the `start` marker, a JSON body (`{"name": ..., "arguments": {...}}`), then the
    `end` marker. Supporting another family whose markup has this shape takes another instance,
    not another parser.

    Raises:
        ValueError: if either marker is empty.
    """

    name: str
    start: str
    end: str

    def __post_init__(self) -> None:
        if not self.start or not self.end:
            raise ValueError(f"format {self.name!r} needs non-empty start and end markers")


HERMES = ToolCallFormat("hermes", "<tool_call>", "</tool_call>")
"""Hermes, Qwen2.5 and SmolLM: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`."""
