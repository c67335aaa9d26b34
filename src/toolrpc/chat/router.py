"""Choosing between answering and calling a tool, by the model's own probabilities.

Small models do not call tools from instructions alone (SmolLM2-135M answers "What's the
weather in Paris?" in prose even with a `get_weather` tool in its system prompt), and asked to
pick an option by number they pick "1" whatever the question. What they do model well is text:
so each option is scored as a *noisy channel* (Min et al., 2022, "Noisy Channel Language Model
Prompting"): how likely is the user's message as an example request for that option?

    Task: Get the current weather for a city.
    Example request: What's the weather in Paris?      <- scored, mean log-probability per token

The "answer" option describes what a model does without tools; once this turn has tool results,
it becomes "answer using these results: ...", which makes the message much more likely when the
results hold what it asks for, so the model answers instead of calling again. The winner is the
highest mean log-probability, with `bias` added to "answer" (positive: answer more often).

Every option is one short teacher-forced prompt (`Engine.score`), all scored concurrently, so
the batching engine runs them in one or two steps; the option prefixes stay in the KV cache
between requests. With a tool chosen, the call itself is generated under that tool's JSON
Schema grammar, so its arguments always validate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from toolrpc.engines.base import Engine
from toolrpc.protocol import Message, Tool

logger = logging.getLogger(__name__)

ANSWER_TASK = "Chat, write, explain or answer from general knowledge"
RESULTS_TASK = "Answer using these results: {results}"
OPTION_PROMPT = "Task: {task}.\nExample request: "
MAX_REQUEST_CHARS = 300
MAX_RESULTS_CHARS = 600


@dataclass(frozen=True)
class Decision:
    """What the router chose (`tool` None: answer) and every option's score."""

    tool: Tool | None
    scores: dict[str, float]


class ToolRouter:
    """Scores "answer" and each tool against the user's request (module docstring)."""

    def __init__(self, engine: Engine, *, bias: float = 0.0) -> None:
        self.engine = engine
        self.bias = bias

    async def decide(
        self, history: Sequence[Message], tools: Sequence[Tool], *, may_answer: bool = True
    ) -> Decision:
        """Choose a tool, or (when `may_answer`) to answer without one."""
        request = _last_user_message(history)
        if not tools or (may_answer and not request):
            return Decision(tool=None, scores={})
        request = (request or "")[:MAX_REQUEST_CHARS]
        tasks = [_tool_task(tool) for tool in tools]
        if may_answer:
            tasks.append(_answer_task(history))
        scores = await asyncio.gather(
            *(self.engine.score(OPTION_PROMPT.format(task=task), request) for task in tasks)
        )
        by_name = {
            tool.name: score.mean_logprob for tool, score in zip(tools, scores, strict=False)
        }
        if may_answer:
            by_name[""] = scores[-1].mean_logprob + self.bias
        best = max(by_name, key=lambda name: by_name[name])
        chosen = next((tool for tool in tools if tool.name == best), None)
        logger.debug("router scores %s -> %s", by_name, best or "answer")
        return Decision(tool=chosen, scores=by_name)


def _tool_task(tool: Tool) -> str:
    description = tool.function.description.strip().rstrip(".")
    return description or tool.name.replace("_", " ").replace("-", " ")


def _answer_task(history: Sequence[Message]) -> str:
    """The answer option: from general knowledge, or from this turn's tool results."""
    results = _turn_results(history)
    if not results:
        return ANSWER_TASK
    return RESULTS_TASK.format(results="; ".join(results))[:MAX_RESULTS_CHARS]


def _turn_results(history: Sequence[Message]) -> list[str]:
    """ "name(arguments) returned content" for each tool result after the last user message."""
    calls: dict[str, str] = {}
    results: list[str] = []
    for message in history:
        if message.role == "user":
            calls, results = {}, []
        for call in message.tool_calls or ():
            calls[call.id] = f"{call.name}({json.dumps(call.arguments, ensure_ascii=False)})"
        if message.role == "tool":
            call_text = calls.get(message.tool_call_id or "", message.name or "a tool")
            results.append(f"{call_text} returned {message.content or ''}")
    return results


def _last_user_message(history: Sequence[Message]) -> str | None:
    for message in reversed(history):
        if message.role == "user":
            return message.content
    return None
