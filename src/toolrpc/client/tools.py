"""Tools the client runs: Python functions (sync or async) described by their type hints.

`tool` (a decorator, or a plain call) turns a function into a `FunctionTool`: its name, the first
paragraph of its docstring as the description, and a JSON Schema of its arguments built by
pydantic from the signature (defaults, `Literal` and `Enum` choices, nested pydantic models,
`Optional`), with each argument's line of an `Args:` section as its description. When the model
calls it, the arguments are validated against the same pydantic model before the function runs;
invalid arguments, and any exception the function raises, become an `is_error: true` result for
the model to read, never an exception in the caller's loop. Async functions are awaited; a sync
function in `AsyncClient` runs in a worker thread, so several calls of a round overlap.

`ClientTool` is the seam every runnable tool fits (MCP tools too): a wire definition and an
async `invoke(arguments) -> ToolOutcome`.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, overload, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_jsonable_python

from toolrpc.protocol import Tool, ToolFunction
from toolrpc.types import JSONValue

_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call produced: the content sent back to the model, and whether it failed."""

    content: JSONValue
    is_error: bool = False


@runtime_checkable
class ClientTool(Protocol):
    """A tool the client can run: its definition for the server, and how to call it."""

    @property
    def definition(self) -> Tool:
        """The tool as the server sees it (name, description, JSON Schema of its arguments)."""
        ...

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolOutcome:
        """Run the tool; failures are returned as an `is_error` outcome, never raised."""
        ...


@dataclass(frozen=True)
class FunctionTool:
    """A Python function as a tool (see the module docstring); build it with `tool`."""

    function: Callable[..., Any]
    definition: Tool
    arguments_model: type[BaseModel]

    @property
    def name(self) -> str:
        """The tool's name."""
        return self.definition.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, as if it were not decorated."""
        return self.function(*args, **kwargs)

    def validated(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments converted to the function's types. Raises pydantic's
        `ValidationError` when they do not fit the signature."""
        model = self.arguments_model.model_validate(dict(arguments))
        return {name: getattr(model, name) for name in type(model).model_fields}

    async def invoke(self, arguments: Mapping[str, Any]) -> ToolOutcome:
        """Validate, then run the function (awaited, or in a worker thread when it is sync)."""
        try:
            kwargs = self.validated(arguments)
        except ValidationError as exc:
            return invalid_arguments(exc)
        try:
            if inspect.iscoroutinefunction(self.function):
                value = await self.function(**kwargs)
            else:
                value = await asyncio.to_thread(self.function, **kwargs)
        except Exception as exc:
            return raised(exc)
        return returned(value)

    def invoke_sync(self, arguments: Mapping[str, Any]) -> ToolOutcome:
        """`invoke` for the sync `Client`: a sync function runs in this thread; an async one
        runs to completion in a new event loop (so not from inside a running loop)."""
        if inspect.iscoroutinefunction(self.function):
            return asyncio.run(self.invoke(arguments))
        try:
            kwargs = self.validated(arguments)
        except ValidationError as exc:
            return invalid_arguments(exc)
        try:
            value = self.function(**kwargs)
        except Exception as exc:
            return raised(exc)
        return returned(value)


def invalid_arguments(exc: ValidationError) -> ToolOutcome:
    """The outcome for arguments that do not fit the tool: each problem, so the model can fix
    its call."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return ToolOutcome("invalid arguments: " + "; ".join(problems), is_error=True)


def raised(exc: Exception) -> ToolOutcome:
    """The outcome for a tool that raised: the exception's type and message."""
    return ToolOutcome(f"{type(exc).__name__}: {exc}", is_error=True)


def returned(value: Any) -> ToolOutcome:
    """The outcome for a value a tool returned, made JSON (pydantic models, dataclasses, enums
    and dates included); a value that cannot be is sent as its `repr`."""
    try:
        content: JSONValue = to_jsonable_python(value)
    except Exception:
        content = repr(value)
    return ToolOutcome(content)


@overload
def tool(function: Callable[..., Any], /) -> FunctionTool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], FunctionTool]: ...
def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a tool of `function` (`@tool`, `@tool(name=...)` or `tool(fn)`).

    Raises `TypeError` for a signature a tool cannot have (`*args`, `**kwargs`, positional-only
    parameters) and `pydantic.ValidationError` for a name the protocol refuses.
    """

    def build(fn: Callable[..., Any]) -> FunctionTool:
        summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
        model = arguments_model(fn, arg_docs)
        schema = model.model_json_schema()
        schema.pop("title", None)
        definition = Tool(
            function=ToolFunction(
                name=name or fn.__name__,
                description=summary if description is None else description,
                parameters=schema,
            )
        )
        return FunctionTool(function=fn, definition=definition, arguments_model=model)

    return build if function is None else build(function)


def as_tool(value: ClientTool | Callable[..., Any]) -> ClientTool:
    """A runnable tool from a `ClientTool` (returned as is) or a plain function.

    Raises `TypeError` for anything else.
    """
    if isinstance(value, ClientTool):
        return value
    if callable(value):
        return tool(value)
    raise TypeError(f"not a tool or a function: {value!r}")


def arguments_model(fn: Callable[..., Any], arg_docs: Mapping[str, str]) -> type[BaseModel]:
    """A pydantic model whose fields are `fn`'s parameters. Raises `TypeError` for `*args`,
    `**kwargs` and positional-only parameters (a call's arguments are by name)."""
    hints = _type_hints(fn)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise TypeError(f"{fn.__name__}: a tool's parameters are by name ({param})")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, Field(default, description=arg_docs.get(param.name)))
    model: type[BaseModel] = create_model(
        f"{fn.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    # include_extras keeps Annotated[..., Field(...)] so its constraints reach the schema.
    return typing.get_type_hints(fn, include_extras=True)


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and each argument's description from an `Args:` (or
    `Arguments:`/`Parameters:`) section of Google-style `name: text` or `name (type): text`
    lines; a more indented line continues the argument above it, an unindented one ends the
    section."""
    paragraphs = doc.strip().split("\n\n")
    summary = " ".join(paragraphs[0].split())
    args: dict[str, str] = {}
    current: str | None = None
    arg_indent: int | None = None
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.lower() in ("args:", "arguments:", "parameters:"):
            in_args, current, arg_indent = True, None, None
        elif not in_args or not stripped:
            continue
        elif indent == 0:
            in_args = False
        elif current is not None and arg_indent is not None and indent > arg_indent:
            args[current] += " " + stripped
        elif match := _ARG_LINE.match(line):
            current, arg_indent = match.group(1).lstrip("*"), indent
            args[current] = match.group(2).strip()
    return summary, args
