"""Grounded arguments: a call's free-text values taken from the conversation's own words.

A grammar makes a small model's call *valid*, not *right*: SmolLM2-135M, asked "What is 347
times 29?" under the `calculate` schema, writes `{"expression": "{{12.5}} * 29"}`, copying the
example in the parameter's description. What such a model does well is copying, so after a
constrained call the chat layer checks each free-text string argument (a `string` with no `enum`,
`const`, `pattern` or `format`) against the words of the conversation (user messages and tool
results): a value whose words and numbers all occur there, and whose first word starts a chunk
of text there (between spaces), is *grounded* and kept, even when the model normalised it ("347
* 29"). Numbers are compared as numbers: ".15 * 2480" is grounded in "15% of 2,480", "1764.42"
is not in "1764 divided by 42". A value that starts inside a chunk is a fragment ("example.com"
of "bob@example.com" is no address). And a value must not hold template markup (`{`, `}`, `<`,
`>`) that no text does: `{{1764}}` is a placeholder the model copied from the prompt's examples,
not the user's number. If any value is not grounded, the call is generated once more under a
schema in which the grounded values are fixed (`const`) and each ungrounded one must be a span of
the conversation's words (`enum`): the most recent user message first, then earlier messages and
tool results, at most `MAX_SPAN_WORDS` words a span and `MAX_SPANS` spans in all.

Generation commits to a span's first word greedily ("friend" for the target language of
"Translate 'good morning, my friend' to French"). Choosing instead the span whose whole value,
closing quote included, the model scores highest (log-probability over the root of the token
count, each span one teacher-forced continuation of the call) was tried and measured no better:
right tool and arguments under `required` went from 17/23 to 15/23 on `benchmarks/tool_eval.py`'s
set and from 5/14 to 7/14 on its held-out set, and the median `required` latency from 3.1 s to
3.9 s (64 spans scored one by one to reuse the cached prompt, 20 to 60 ms each).

The first constrained call is also bounded: each free-text value may hold at most twice as many
characters as the longest source text (`value_bound`). A value that long is no copy of the
conversation's words, and without the bound a small model that falls into repeating itself
inside a string ("1.25,1.25,..." as the city of a restaurant search) writes to the token limit:
512 tokens, 10 s on two cores, for a call that is then generated again anyway.

The chat step applies this policy through two `Tool -> Tool` functions, `bounded` (the first
call's schema) and `grounded` (the second call's), and `needs_grounding` to decide between the
two passes; the texts are the turn's `sources` (chat/turn.py), so what counts as the
conversation's words is decided once.

Before a tool is called at all, the router (chat/router.py) asks whether it *can* be: a required
`number` or `integer` argument has nothing to be grounded in when the conversation holds fewer
numbers (digits, or numerals such as "five" or "dozen") than the tool requires such arguments
(`unfillable_arguments`): "What is the circumference of a circle with a radius of 3 cm?" cannot
fill a rectangle's width and height, and "convert some dollars to euros" no amount. Free-text
arguments give no such evidence before the call: any span of the request can fill them.

Only top-level properties of the arguments object are checked; nested objects keep the tool's
schema. Values a tool needs in a form no one wrote (a ticker for a company name) stay the model's
own when they are grounded and become the closest span when they are not — the trade a small
model makes: a value the user said, rather than one the description made up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from toolrpc.protocol import Tool
from toolrpc.types import JSONValue

MAX_SPAN_WORDS = 16
MAX_SPANS = 1024
MIN_VALUE_CHARS = 64
MAX_VALUE_CHARS = 1024
"""Bounds of `value_bound`, whatever the length of the conversation's texts."""
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|\w+", re.UNICODE)
"""A number (digits with their separators: `2,480`, `12.5`) or a word."""
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TEMPLATE_MARKS = "{}<>"
_NUMERALS = frozenset(
    (
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
        "thousand",
        "million",
        "billion",
        "dozen",
        "half",
        "quarter",
    )
)
"""Number words: a value written as a word is a number the user gave."""
_NUMERIC_TYPES = ("number", "integer")
_EDGE_PUNCTUATION = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb()[]{}<>.,;:!?"


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


def tokens(text: str) -> list[str]:
    """The words and numbers of `text`, casefolded; a number loses its thousands separators
    (`2,480` is `2480`) and keeps its decimals whole (`12.5` is one token, not `12` and `5`)."""
    return [_THOUSANDS.sub("", token.casefold()) for token in _TOKEN.findall(text)]


def is_grounded(value: str, texts: Sequence[str]) -> bool:
    """True when every word and number of `value` occurs in one of `texts` (case-insensitively,
    numbers as numbers: see `tokens`), its first one where a text has it first in a
    whitespace-separated chunk, and every template mark it holds occurs there too (module
    docstring)."""
    known = {token for text in texts for token in tokens(text)}
    initial = {chunk[0] for text in texts for piece in text.split() if (chunk := tokens(piece))}
    words = tokens(value)
    marks = {mark for mark in _TEMPLATE_MARKS if mark in value}
    return (
        bool(words)
        and words[0] in initial
        and all(word in known for word in words)
        and all(any(mark in text for text in texts) for mark in marks)
    )


def ungrounded_arguments(
    arguments: Mapping[str, JSONValue], parameters: Mapping[str, Any], texts: Sequence[str]
) -> set[str]:
    """The free-text arguments whose words are not all in `texts`."""
    return {
        name
        for name in free_text_properties(parameters)
        if isinstance(value := arguments.get(name), str) and not is_grounded(value, texts)
    }


def unfillable_arguments(parameters: Mapping[str, Any], texts: Sequence[str]) -> tuple[str, ...]:
    """The required numeric arguments (`number` or `integer`, no `enum`, `const` or `default`)
    that `texts` hold too few distinct numbers for, in the schema's order: each needs a number of
    its own, a digit string or a numeral word (module docstring). Empty when every one can be
    filled, or when there are no texts to judge by."""
    properties = parameters.get("properties")
    required = parameters.get("required")
    if not texts or not isinstance(properties, Mapping) or not isinstance(required, list):
        return ()
    numeric = [
        name
        for name in required
        if isinstance(schema := properties.get(name), Mapping)
        and schema.get("type") in _NUMERIC_TYPES
        and not any(key in schema for key in ("enum", "const", "default"))
    ]
    numbers = {
        token
        for text in texts
        for token in tokens(text)
        if token[0].isdigit() or token in _NUMERALS
    }
    return tuple(numeric[len(numbers) :])


def spans(texts: Sequence[str]) -> list[str]:
    """Distinct runs of up to `MAX_SPAN_WORDS` words of `texts`, edge punctuation removed, in
    the order of `texts` and at most `MAX_SPANS`."""
    found: dict[str, None] = {}
    for text in texts:
        words = text.split()
        for start in range(len(words)):
            for end in range(start + 1, min(len(words), start + MAX_SPAN_WORDS) + 1):
                span = " ".join(words[start:end]).strip(_EDGE_PUNCTUATION)
                if span:
                    found.setdefault(span)
                    if len(found) >= MAX_SPANS:
                        return list(found)
    return list(found)


def grounded_parameters(
    parameters: Mapping[str, Any],
    arguments: Mapping[str, JSONValue] | None,
    texts: Sequence[str],
) -> dict[str, Any]:
    """The tool's parameters with every grounded value of `arguments` fixed and every other
    free-text property limited to spans of `texts` (module docstring). With no `arguments`
    (the first call failed) every free-text property becomes a span."""
    candidates = spans(texts)
    if not candidates:
        return dict(parameters)
    properties = dict(parameters.get("properties") or {})
    required = list(parameters.get("required") or [])
    for name in free_text_properties(parameters):
        value = (arguments or {}).get(name)
        if isinstance(value, str) and is_grounded(value, texts):
            properties[name] = {**properties[name], "const": value}
            if name not in required:
                required.append(name)
        else:
            properties[name] = {**properties[name], "enum": candidates}
    grounded = {**parameters, "properties": properties}
    if required:
        grounded["required"] = required
    return grounded


def value_bound(texts: Sequence[str]) -> int:
    """The most characters a free-text value of a forced call may hold: twice the longest of
    `texts`, within `MIN_VALUE_CHARS`..`MAX_VALUE_CHARS` (module docstring)."""
    longest = max((len(text) for text in texts), default=0)
    return min(MAX_VALUE_CHARS, max(MIN_VALUE_CHARS, 2 * longest))


def bounded_parameters(parameters: Mapping[str, Any], texts: Sequence[str]) -> dict[str, Any]:
    """The tool's parameters with every free-text property limited to `value_bound(texts)`
    characters (the tool's own `maxLength`, when smaller, and `minLength` still hold)."""
    bound = value_bound(texts)
    properties = dict(parameters.get("properties") or {})
    for name in free_text_properties(parameters):
        schema = properties[name]
        limit = min(bound, _int_or(schema.get("maxLength"), bound))
        limit = max(limit, _int_or(schema.get("minLength"), 0))
        properties[name] = {**schema, "maxLength": limit}
    return {**parameters, "properties": properties} if properties else dict(parameters)


def _int_or(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def bounded(tool: Tool, texts: Sequence[str]) -> Tool:
    """`tool` with its free-text values limited to `value_bound(texts)` characters (the first
    constrained call); `tool` itself when there are no texts to bound by."""
    if not texts:
        return tool
    return _with_parameters(tool, bounded_parameters(tool.function.parameters, texts))


def needs_grounding(
    tool: Tool, arguments: Mapping[str, JSONValue] | None, texts: Sequence[str]
) -> bool:
    """True when a call to `tool` must be generated again with grounded values: the first call
    failed (`arguments` None) or used free-text values no one wrote."""
    if not texts:
        return False
    return arguments is None or bool(
        ungrounded_arguments(arguments, tool.function.parameters, texts)
    )


def grounded(tool: Tool, arguments: Mapping[str, JSONValue] | None, texts: Sequence[str]) -> Tool:
    """`tool` with the grounded values of `arguments` fixed and its other free-text values
    limited to spans of `texts` (the second constrained call; module docstring)."""
    return _with_parameters(tool, grounded_parameters(tool.function.parameters, arguments, texts))


def _with_parameters(tool: Tool, parameters: dict[str, Any]) -> Tool:
    return tool.model_copy(
        update={"function": tool.function.model_copy(update={"parameters": parameters})}
    )
