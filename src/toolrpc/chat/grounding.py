"""Grounded arguments: a call's free-text values taken from the conversation's own words.

A grammar makes a small model's call *valid*, not *right*: SmolLM2-135M, asked "What is 347
times 29?" under the `calculate` schema, writes `{"expression": "{{12.5}} * 29"}`, copying the
example in the parameter's description. What such a model does well is copying, so after a
constrained call the chat layer checks each free-text string argument (a `string` with no
`enum`, `const`, `pattern` or `format`) against the words of the conversation (user messages
and tool results): a value whose words all occur there is *grounded* and kept, even when the
model normalised it ("347 * 29").

Each value that is not grounded is replaced by the span of the conversation's words that the
model itself finds the most likely value there, scored, not generated: greedy decoding under a
grammar of spans commits to a first word and picks "friend" for "Translate 'good morning, my
friend' to French" (then the target language must start with "friend"), where the score of the
whole value, closing quote included, prefers "French". `ArgumentGrounder` scores every candidate
span as the continuation of the call written so far (the prompt, then `{"name": ...,
"arguments": {...kept values..., "<name>": "`, and then the span and its closing quote), and ranks
by log-probability over the square root of its token count: the sum alone favours one-word
values ("an" as a recipient), the mean favours the whole message. On the 37 tool requests of
`benchmarks/tool_eval.py`'s two case files, with the right tool given, the values so chosen were
right for 22 (sum), 27 (mean) and 28 (square root) of them, measured once with a throwaway script.

Spans are runs of up to `MAX_SCORED_WORDS` words, the most recent user message first, then older
user messages and tool results, shortest first, at most `MAX_SCORED_SPANS` in all: each is one
teacher-forced step of a few tokens on the prompt the call was generated from, which the
engine's prefix cache holds, so scoring them one after another costs 20 to 60 ms a span on two
CPU cores rather than a prompt each.

A first call that failed altogether (cut short, or arguments that do not validate) is generated
again under `span_parameters`: the tool's schema with every free-text property an `enum` of spans.
Only top-level properties of the arguments object are checked; nested objects keep the tool's
schema. Values a tool needs in a form no one wrote (a ticker for a company name) stay the model's
own when they are grounded and become the closest span when they are not — the trade a small
model makes: a value the user said, rather than one the description made up.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from toolrpc.engines.base import ContinuationScore, Engine
from toolrpc.protocol import Message
from toolrpc.types import JSONValue

MAX_SPAN_WORDS = 16
MAX_SPANS = 1024
"""Limits of the spans a failed call is generated again under (an `enum` in its grammar)."""
MAX_SCORED_WORDS = 8
MAX_SCORED_SPANS = 64
"""Limits of the spans scored for an ungrounded value (module docstring)."""
_WORD = re.compile(r"\w+", re.UNICODE)
_EDGE_PUNCTUATION = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb()[]{}<>.,;:!?"


def source_texts(history: Sequence[Message]) -> list[str]:
    """The texts arguments may be grounded in, most recent user message first, then the other
    user messages and the tool results from the latest back."""
    users = [m.content for m in history if m.role == "user" and m.content]
    results = [m.content for m in history if m.role == "tool" and m.content]
    return list(reversed(users)) + list(reversed(results))


def free_text_properties(parameters: Mapping[str, Any]) -> set[str]:
    """Top-level properties whose values are unconstrained strings."""
    properties = parameters.get("properties")
    if not isinstance(properties, Mapping):
        return set()
    return {
        name
        for name, schema in properties.items()
        if isinstance(schema, Mapping)
        and schema.get("type") == "string"
        and not any(key in schema for key in ("enum", "const", "pattern", "format"))
    }


def is_grounded(value: str, texts: Sequence[str]) -> bool:
    """True when every word of `value` occurs in one of `texts` (case-insensitively)."""
    known = {word.casefold() for text in texts for word in _WORD.findall(text)}
    words = [word.casefold() for word in _WORD.findall(value)]
    return bool(words) and all(word in known for word in words)


def ungrounded_arguments(
    arguments: Mapping[str, JSONValue], parameters: Mapping[str, Any], texts: Sequence[str]
) -> set[str]:
    """The free-text arguments whose words are not all in `texts`."""
    return {
        name
        for name in free_text_properties(parameters)
        if isinstance(value := arguments.get(name), str) and not is_grounded(value, texts)
    }


def spans(texts: Sequence[str], *, max_words: int = MAX_SPAN_WORDS) -> list[str]:
    """Distinct runs of up to `max_words` words of `texts`, edge punctuation removed, in the
    order of `texts` (then of their start and length)."""
    found: dict[str, None] = {}
    for text in texts:
        words = text.split()
        for start in range(len(words)):
            for end in range(start + 1, min(len(words), start + max_words) + 1):
                span = " ".join(words[start:end]).strip(_EDGE_PUNCTUATION)
                if span:
                    found.setdefault(span)
    return list(found)


def scored_spans(texts: Sequence[str]) -> list[str]:
    """The candidates for an ungrounded value: spans of up to `MAX_SCORED_WORDS` words, text
    by text and within a text shortest first, at most `MAX_SCORED_SPANS`."""
    found: dict[str, None] = {}
    for text in texts:
        for span in sorted(spans([text], max_words=MAX_SCORED_WORDS), key=lambda s: len(s.split())):
            found.setdefault(span)
            if len(found) >= MAX_SCORED_SPANS:
                return list(found)
    return list(found)


def span_parameters(parameters: Mapping[str, Any], texts: Sequence[str]) -> dict[str, Any]:
    """The tool's parameters with every free-text property limited to spans of `texts` (at most
    `MAX_SPANS`), for generating a failed call again."""
    candidates = spans(texts)[:MAX_SPANS]
    if not candidates:
        return dict(parameters)
    properties = dict(parameters.get("properties") or {})
    for name in free_text_properties(parameters):
        properties[name] = {**properties[name], "enum": candidates}
    return {**parameters, "properties": properties}


def call_prefix(tool_name: str, arguments: Mapping[str, JSONValue], name: str) -> str:
    """The call as JSON up to the opening quote of `name`'s value, after `arguments`."""
    head = json.dumps({"name": tool_name}, ensure_ascii=False)[:-1] + ', "arguments": {'
    items = "".join(
        f"{json.dumps(key, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}, "
        for key, value in arguments.items()
    )
    return f'{head}{items}{json.dumps(name, ensure_ascii=False)}: "'


def span_rank(score: ContinuationScore) -> float:
    """Log-probability over the square root of the token count (module docstring)."""
    return score.logprob / math.sqrt(max(1, score.num_tokens))


class ArgumentGrounder:
    """Replaces a call's ungrounded free-text values by the model's likeliest spans."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def ground(
        self,
        prompt: str,
        tool_name: str,
        arguments: Mapping[str, JSONValue],
        parameters: Mapping[str, Any],
        texts: Sequence[str],
    ) -> dict[str, JSONValue] | None:
        """`arguments` with each ungrounded value replaced, in the call's order, each chosen
        after the values before it; None when every value is grounded or no span exists."""
        ungrounded = ungrounded_arguments(arguments, parameters, texts)
        candidates = scored_spans(texts)
        if not ungrounded or not candidates:
            return None
        chosen: dict[str, JSONValue] = {}
        for name, value in arguments.items():
            if name in ungrounded:
                value = await self._likeliest(
                    prompt + call_prefix(tool_name, chosen, name), candidates
                )
            chosen[name] = value
        return chosen

    async def _likeliest(self, prompt: str, candidates: Sequence[str]) -> str:
        """The candidate the model ranks first as the value after `prompt`. One at a time, so
        that each reuses the prompt the engine cached for the one before."""
        best, best_rank = candidates[0], -math.inf
        for candidate in candidates:
            continuation = json.dumps(candidate, ensure_ascii=False)[1:]  # span and closing quote
            rank = span_rank(await self.engine.score(prompt, continuation))
            if rank > best_rank:
                best, best_rank = candidate, rank
        return best
