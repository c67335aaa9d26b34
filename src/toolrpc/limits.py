"""Limits on one request, checked before anything is rendered, compiled or generated.

Every limit is a flag (config.py, group "limits and logging") and is refused with
`InvalidParams` (-32602) naming the field, so a client learns which limit it hit. The total
prompt is bounded by the context window (`--ctx-size`): the engine refuses a prompt that does not
fit with `ContextLengthExceeded` (-32002) before it takes a slot.

Tool schemas get more than a size limit, because a schema is a program: the grammar builders
(llama.cpp's GBNF converter, xgrammar) and `jsonschema` each do work that grows with what a
schema asks for, and a few kinds of schema make that work unbounded. Time is bounded by refusing
those kinds up front, not by hoping a compiler finishes:
- nesting deeper than `MAX_SCHEMA_DEPTH` (recursion in every builder);
- `$ref` to anything but the schema itself (`#...`): llama.cpp's converter fetches `http` refs,
  which is a request forgery, and an unresolvable ref is an error later anyway;
- size counts (`maxLength`, `minItems`, ...) and regex repetition counts over
  `MAX_SCHEMA_COUNT`: GBNF writes a bounded repetition out one rule per repeat;
- regexes (`pattern`, `patternProperties` keys) longer than `MAX_PATTERN_CHARS`, or with a
  quantified group that holds a quantifier (`(a+)+`), the shape of catastrophic backtracking in
  Python's `re`, which `jsonschema` uses to validate every call's arguments.
`self-reference` (`"$ref": "#"`) is allowed: every builder compiles it to a recursive rule, and
the generated value's depth is bounded by `max_new_tokens`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from toolrpc.errors import InvalidParams, ParamError
from toolrpc.protocol import CreateMessageParams, Tool

MAX_SCHEMA_DEPTH = 24
MAX_SCHEMA_COUNT = 1024
MAX_PATTERN_CHARS = 256

_COUNT_KEYWORDS = (
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "maxProperties",
    "minProperties",
    "maxContains",
    "minContains",
)
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
# A repeated group holding a repetition or an alternation: `(a+)+`, `(x*)*y`, `(a|aa)*`.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[*+}|](?:[^()\\]|\\.)*\)[*+{]")
MAX_REF_CHAIN = 32


@dataclass(frozen=True)
class RequestLimits:
    """The limits one request must stay within (each a `Settings` field of the same name)."""

    max_tools: int = 128
    max_tool_schema_bytes: int = 64 * 1024
    max_history_messages: int = 1024
    max_message_chars: int = 256 * 1024
    max_stop_strings: int = 16

    def check(self, params: CreateMessageParams) -> None:
        """Raise `InvalidParams` listing every limit `params` break (nothing when none)."""
        problems = [*self._count_problems(params), *self._message_problems(params)]
        for index, tool in enumerate(params.tools or ()):
            problems += [
                ParamError(("tools", index, "function", "parameters"), problem)
                for problem in self.schema_problems(tool)
            ]
        if problems:
            raise InvalidParams("the request is over a limit of this server", problems)

    def _count_problems(self, params: CreateMessageParams) -> Iterator[ParamError]:
        if params.tools is not None and len(params.tools) > self.max_tools:
            yield ParamError(("tools",), f"at most {self.max_tools} tools per request")
        if len(params.history) > self.max_history_messages:
            yield ParamError(("history",), f"at most {self.max_history_messages} messages")
        if len(params.stop_strings()) > self.max_stop_strings:
            yield ParamError(("stop",), f"at most {self.max_stop_strings} stop strings")

    def _message_problems(self, params: CreateMessageParams) -> Iterator[ParamError]:
        limit = self.max_message_chars
        too_long = f"at most {limit} characters"
        if params.message is not None and len(params.message) > limit:
            yield ParamError(("message",), too_long)
        if params.system is not None and len(params.system) > limit:
            yield ParamError(("system",), too_long)
        for index, message in enumerate(params.history):
            if message.content is not None and len(message.content) > limit:
                yield ParamError(("history", index, "content"), too_long)
        for index, result in enumerate(params.tool_results):
            if len(json.dumps(result.content)) > limit:
                yield ParamError(("tool_results", index, "content"), too_long)

    def schema_problems(self, tool: Tool) -> list[str]:
        """What makes `tool`'s parameter schema unsafe to compile or validate (empty: none)."""
        schema = tool.function.parameters
        size = len(json.dumps(schema))
        if size > self.max_tool_schema_bytes:
            return [f"schema is {size} bytes; at most {self.max_tool_schema_bytes}"]
        problems = list(_walk_problems(schema, depth=0))
        return problems or list(_ref_cycle_problems(schema))


def _walk_problems(node: object, depth: int) -> Iterator[str]:
    """Every problem in one schema node and the nodes under it."""
    if depth > MAX_SCHEMA_DEPTH:
        yield f"schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
        return
    if isinstance(node, list):
        for item in node:
            yield from _walk_problems(item, depth + 1)
        return
    if not isinstance(node, dict):
        return
    yield from _keyword_problems(node)
    for key, value in node.items():
        if key == "patternProperties" and isinstance(value, dict):
            yield from (p for pattern in value for p in _pattern_problems(pattern))
        if key not in ("enum", "const", "default", "examples"):  # data, not schema
            yield from _walk_problems(value, depth + 1)


def _keyword_problems(node: dict[str, object]) -> Iterator[str]:
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        yield f"$ref {ref[:80]!r}: only references inside the schema ('#...') are allowed"
    for keyword in _COUNT_KEYWORDS:
        count = node.get(keyword)
        if isinstance(count, int) and count > MAX_SCHEMA_COUNT:
            yield f"{keyword} {count}: at most {MAX_SCHEMA_COUNT}"
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        yield from _pattern_problems(pattern)


def _ref_cycle_problems(schema: dict[str, object]) -> Iterator[str]:
    """A chain of `$ref`s that comes back to itself without reaching a schema (`a` -> `b` ->
    `a`) has no meaning, and sends `jsonschema` into unbounded recursion on any value."""
    stack: list[object] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack += node
        elif isinstance(node, dict):
            if isinstance(node.get("$ref"), str) and _ref_chain_loops(schema, node):
                yield f"$ref {str(node['$ref'])[:80]!r} leads back to itself"
                return
            stack += list(node.values())


def _ref_chain_loops(root: dict[str, object], node: dict[str, object]) -> bool:
    seen: list[int] = []
    for _ in range(MAX_REF_CHAIN):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return False
        if id(node) in seen:
            return True
        seen.append(id(node))
        target = _resolve(root, ref)
        if not isinstance(target, dict):
            return False
        node = target
    return True


def _resolve(root: dict[str, object], ref: str) -> object:
    """The node a local JSON pointer (`#/a/b`) names, or None."""
    node: object = root
    for part in ref.removeprefix("#").split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node


def _pattern_problems(pattern: str) -> Iterator[str]:
    shown = repr(pattern[:40])
    if len(pattern) > MAX_PATTERN_CHARS:
        yield f"pattern {shown}...: at most {MAX_PATTERN_CHARS} characters"
        return
    if _NESTED_QUANTIFIER.search(pattern):
        yield f"pattern {shown}: a repeated group holds a repetition (catastrophic backtracking)"
    for low, high in _REPEAT.findall(pattern):
        if max(int(low), int(high or 0)) > MAX_SCHEMA_COUNT:
            yield f"pattern {shown}: a repetition count over {MAX_SCHEMA_COUNT}"
    try:
        re.compile(pattern)
    except re.error as exc:
        yield f"pattern {shown}: not a regular expression ({exc})"
