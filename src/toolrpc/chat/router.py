"""Choosing between answering and calling a tool, by the model's own probabilities.

Small models do not call tools from instructions alone (SmolLM2-135M answers "What's the
weather in Paris?" in prose even with a `get_weather` tool in its system prompt), and asked to
pick an option by number they pick "1" whatever the question. What they do model well is text,
so the router asks the model how well the request and each option go together, both ways:

- the *noisy channel* (Min et al., 2022, "Noisy Channel Language Model Prompting"): how likely is
  the user's message as an example request for the option?

      Task: Get the current weather for a city (needs city, unit).
      Example request: What's the weather in Paris?      <- scored

- the *direct channel*, calibrated (Zhao et al., 2021, "Calibrate Before Use"): how likely is
  the tool after the request, less how likely it is after a content-free request ("N/A"), so
  that a tool the model favours whatever the request does not win by default:

      User request: "What's the weather in Paris?"
      The right tool for it: get_weather - Get the current weather for a city.   <- scored

Scores are mean log-probabilities per token. The noisy channel scores every tool; its best
`RERANKED` are then ranked by the sum of both channels (two noisy estimates of how much the
request and the tool tell about each other). With `tool_choice: "required"` on the 23 tool
requests of `benchmarks/tool_eval.py`, this picks the right tool for 87% (60.9% with the noisy
channel on bare descriptions alone); the variants were compared once with a throwaway scoring
script, not kept. Whether to answer at all is the noisy channel's call: the "answer" option
describes what a model does without tools ("answer using these results: ..." once this turn has
tool results, which makes the message likely when the results hold what it asks for), and it
wins when its score plus `bias` is at least the best tool's channel score. `DEFAULT_BIAS` leans
towards calling: swept on `benchmarks/tool_eval.py`'s set at -0.3, -0.15, 0 and +0.15 (right
`auto` decisions 81.2%, 87.5%, 79.2%, 72.9%: tool-eval-20261126-183722 and -181936), then checked
on its held-out set (75.0% at 0, 80.0% at -0.15: tool-eval-20261126-182456, -185731). The scale
is the model's (mean log-probabilities per token), so another small model may want another bias.

Every option is one short teacher-forced prompt (`Engine.score`), scored concurrently (the noisy
channel, then the re-ranking), so the batching engine runs them in a few steps; the
content-free priors are computed once per tool. With a tool chosen, its call is generated under
that tool's JSON Schema grammar, so its arguments always validate.

Abstention (near misses). A tool of the request's subject that cannot do what was asked (a
rectangle's area for a circle's circumference, `get_weather` for the Jurassic's climate) scores
high on both channels, so `auto` called the nearest tool: 17 of the 35 near misses of
`benchmarks/tool_eval.py` (category `near_miss`) and 9 of its 18 held-out ones were answered
in prose (router decisions in process, benchmarks/README.md). Measured candidates:

- *unfillable arguments* (kept): a tool whose required numbers the conversation does not hold
  (chat/grounding.py, `unfillable_arguments`) is not offered to `auto` at all; with none left the
  request is answered without scoring anything (`Decision.abstained` is `UNFILLABLE`). Evidence
  the request itself carries, so no threshold to tune; it never removed the expected tool of a
  `tool` case of either set (they give their numbers). Near misses answered: 23 of 35, held-out
  15 of 18 (from 17 and 9); a decision changes only where a tool was dropped, and no `tool` case
  measured lost its call. Free-text arguments give no such evidence: any span of the request
  fills them, so near misses with `get_stock_price` ("What is a stock?") are still called.
- *a yes/no question* ('Tool: ...\nRequest: "..."\nCan this tool do what the request asks?
  Answer:' scored on " Yes" against " No", less the same after a content-free request, and a
  second wording): not kept. On the first 14 near misses and 7 tool cases scored, no threshold
  separated them: at 0 it abstained on 9 of 14 near misses but lost 3 of 7 tool calls; at the
  threshold that lost none (-0.45) it caught 5; the two wordings summed, 8 of 14 for 1 of 7
  lost ("Find out when the next iPhone is coming out": `search_web`'s content-free "yes" is
  high). Two more prompts per request for a signal a 135M model does not carry.
- *the direct channel's calibrated score of the best tool as a per-tool threshold*: not kept;
  near misses scored 0.48, 0.43, 0.68, 0.29, 0.33 where right calls scored 0.11, 0.11, 0.06.
- *a call that fills two required free-text arguments with one value* (`translate("Spanish",
  "Spanish")`, `create_calendar_event(title="event", start="event")`, `send_email` with to,
  subject and body "really helpful"), answered in prose instead of returned: not kept. Main
  set: near misses 25 of 35 (71.4%), no-tool 14 of 15, but tool cases 18 of 23 (it dropped
  `convert_currency(80, "JPY", "JPY")` for "80 GBP to JPY", a wrong call counted right);
  held-out: tool cases 9 of 14 instead of 10 (a legitimate `send_email` whose subject repeated
  its body became a garbled answer), near misses unchanged at 15 of 18
  (tool-eval-20261202-120034, -120822, -120725).

Cost. The noisy channel is one prompt per option (the option's task, then the request: ~30
tokens), the re-ranking one per finalist plus a content-free prior computed once per tool. Only
what can change the decision is scored: a tool that cannot be filled is never scored, and when
answering already beats every tool on the noisy channel the re-ranking is skipped (it reorders
tools only, and the answer is compared with the noisy channel). With the 10 tools of the
evaluation set a request that is answered scores 10-11 prompts (it was 15), one that calls a
tool 14-15. What does not depend on the request is computed once and kept: each option's task
prefix stays in a scoring slot of its own (llama.cpp: a second, small context of
`--scoring-slots` slots of 384 tokens, apart from the conversations' slots; the scheduler gives
each prompt the slot holding its longest prefix), so a request prefills only its own words once
per option (~10 tokens each instead of ~35). The prompts go in one step: the loop gathers
requests that arrive together (scheduling/loop.py). On the 15 no-tool prompts of the evaluation
set, in process on two cores, the router took a median 0.79 s before, 0.63 s with the scoring
slots and 0.37 s with the gathering too (one step of ~90 tokens instead of two of ~350); at the
server (`benchmarks/tool_eval.py`, paired medians) it added 0.45-0.64 s instead of 1.06-1.21 s;
the decisions are the same (scores are bit-identical: tests/engines/test_llama_cpp.py), and so are
the evaluation's figures on all three sets (benchmarks/README.md). The slot/KV trade-off: 16
scoring slots of 512 tokens reserve 8,192 tokens of KV (180 MiB at f16 on the embedded model),
of which only what is written becomes resident (engines/resident.py), except that llama.cpp
without flash attention stores values transposed, so a used slot's values are resident whole
(5.6 MiB a slot on the embedded model: ~90 MiB with every slot used). 32 slots measured no
faster on this set (in process, after its tool cases: 0.39 against 0.41 s a no-tool request).
With more options than scoring slots, or several requests routed at once, an option may find
its slot busy and is prefilled whole elsewhere; `--scoring-slots 0` puts scoring back in the
conversations' slots, where at 8 slots every prompt was prefilled whole.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from toolrpc.chat.grounding import unfillable_arguments
from toolrpc.chat.turn import Exchange, Turn
from toolrpc.engines.base import Engine
from toolrpc.protocol import Tool

logger = logging.getLogger(__name__)

ANSWER_TASK = "Chat, write, explain or answer from general knowledge"
RESULTS_TASK = "Answer using these results: {results}"
OPTION_PROMPT = "Task: {task}.\nExample request: "
DIRECT_PROMPT = 'User request: "{request}"\nThe right tool for it: '
CONTENT_FREE_REQUEST = "N/A"
MAX_REQUEST_CHARS = 300
MAX_RESULTS_CHARS = 600
MAX_PRIORS = 4096
RERANKED = 4
"""Tools the direct channel re-ranks: the noisy channel's best few (module docstring)."""
UNFILLABLE = "unfillable"
"""`Decision.abstained`: no offered tool's required numbers are in the conversation."""
DEFAULT_BIAS = -0.15
"""Added to the "answer" option's score (module docstring): negative calls tools more often."""


@dataclass(frozen=True)
class Decision:
    """What the router chose (`tool` None: answer) and every option's score."""

    tool: Tool | None
    scores: dict[str, float]
    abstained: str | None = None
    """Why the router answered whatever the scores (`UNFILLABLE`: no offered tool can be filled),
    or None when the scores decided."""


class ToolRouter:
    """Scores "answer" and each tool against the user's request (module docstring)."""

    def __init__(self, engine: Engine, *, bias: float = DEFAULT_BIAS) -> None:
        self.engine = engine
        self.bias = bias
        self._priors: dict[str, float] = {}

    async def decide(
        self, turn: Turn, tools: Sequence[Tool], *, may_answer: bool = True
    ) -> Decision:
        """Choose a tool, or (when `may_answer`) to answer without one, for the turn's request.

        Raises what `Engine.score` raises (`Overloaded`, `GenerationCancelled`, ...)."""
        request = turn.request
        if not tools or (may_answer and not request):
            return Decision(tool=None, scores={})
        if len(tools) == 1 and not may_answer:
            return Decision(tool=tools[0], scores={})
        if may_answer:
            tools = _fillable(tools, turn)
            if not tools:
                logger.debug("router scores {} -> answer (no offered tool can be filled)")
                return Decision(tool=None, scores={}, abstained=UNFILLABLE)
        request = (request or "")[:MAX_REQUEST_CHARS]
        tasks = [_tool_task(tool) for tool in tools]
        if may_answer:
            tasks.append(_answer_task(turn))
        channel = await self._scores([(OPTION_PROMPT.format(task=task), request) for task in tasks])
        ranks = {tool.name: channel[i] for i, tool in enumerate(tools)}
        answer = channel[-1] + self.bias if may_answer else None
        scores = {**ranks, "": answer} if answer is not None else dict(ranks)
        if answer is not None and answer >= max(channel[: len(tools)]):
            logger.debug("router scores %s -> answer", scores)  # no re-ranking can change it
            return Decision(tool=None, scores=scores)
        finalists = sorted(tools, key=lambda tool: -ranks[tool.name])[:RERANKED]
        if len(finalists) > 1:
            for tool, evidence in zip(
                finalists, await self._direct(request, finalists), strict=True
            ):
                ranks[tool.name] += evidence
        best = max(finalists, key=lambda tool: ranks[tool.name])
        scores.update(ranks)
        chosen: Tool | None = best
        if answer is not None and answer >= channel[tools.index(best)]:
            chosen = None
        logger.debug("router scores %s -> %s", scores, chosen.name if chosen else "answer")
        return Decision(tool=chosen, scores=scores)

    async def _direct(self, request: str, finalists: Sequence[Tool]) -> list[float]:
        """The calibrated direct channel of each finalist: its score after the request less its
        score after a content-free request."""
        lines = [_tool_line(tool) for tool in finalists]
        direct, priors = await asyncio.gather(
            self._scores([(DIRECT_PROMPT.format(request=request), line) for line in lines]),
            self._content_free_priors(lines),
        )
        return [score - prior for score, prior in zip(direct, priors, strict=True)]

    async def _scores(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        results = await asyncio.gather(*(self.engine.score(p, c) for p, c in pairs))
        return [result.mean_logprob for result in results]

    async def _content_free_priors(self, lines: Sequence[str]) -> list[float]:
        """Each tool line's direct score after a content-free request (cached per line)."""
        missing = [line for line in lines if line not in self._priors]
        if missing:
            prompt = DIRECT_PROMPT.format(request=CONTENT_FREE_REQUEST)
            scores = await self._scores([(prompt, line) for line in missing])
            if len(self._priors) + len(missing) > MAX_PRIORS:
                self._priors.clear()
            self._priors.update(zip(missing, scores, strict=True))
        return [self._priors[line] for line in lines]


def _fillable(tools: Sequence[Tool], turn: Turn) -> list[Tool]:
    """The tools whose required numbers the conversation holds (chat/grounding.py)."""
    return [
        tool for tool in tools if not unfillable_arguments(tool.function.parameters, turn.sources)
    ]


def _description(tool: Tool) -> str:
    description = tool.function.description.strip().rstrip(".")
    return description or tool.name.replace("_", " ").replace("-", " ")


def _tool_task(tool: Tool) -> str:
    """A tool as a task, with what it needs: "Send an email to a recipient (needs to, body)"."""
    properties = tool.function.parameters.get("properties")
    names = [str(name).replace("_", " ") for name in properties or {}]
    needs = f" (needs {', '.join(names)})" if names else ""
    return _description(tool) + needs


def _tool_line(tool: Tool) -> str:
    return f"{tool.name} - {_description(tool)}."


def _answer_task(turn: Turn) -> str:
    """The answer option: from general knowledge, or from this turn's tool results."""
    if not turn.exchanges:
        return ANSWER_TASK
    results = "; ".join(_exchange_text(exchange) for exchange in turn.exchanges)
    return RESULTS_TASK.format(results=results)[:MAX_RESULTS_CHARS]


def _exchange_text(exchange: Exchange) -> str:
    """ "name(arguments) returned content" (just the name when the call is not in the turn)."""
    call = exchange.call
    asked = exchange.name
    if call is not None:
        asked = f"{call.name}({json.dumps(call.arguments, ensure_ascii=False)})"
    return f"{asked} returned {exchange.content}"
