"""A model's chat template, rendered the way transformers' `apply_chat_template` renders it.

Chat templates ship with models and are untrusted code, so they run in Jinja's
`ImmutableSandboxedEnvironment` set up as transformers 5 sets it up
(`transformers.utils.chat_template_utils._cached_compile_jinja_template`): `trim_blocks`,
`lstrip_blocks`, the `loopcontrols` extension, a no-op `{% generation %}` tag, the globals
`raise_exception`, `strftime_now`, a restricted `dict` and a `namespace` that refuses
underscore names, and a `tojson` filter that does not escape HTML or non-ASCII text. Messages are
passed as plain data with their None-valued keys dropped, as `apply_chat_template` does, so a
prompt here is byte-identical to the one transformers renders (tests/chat/golden).

Errors: a template that does not compile is a `ValueError` at construction (a bad model or
setting). At render time, `raise_exception(...)` means the template refuses this conversation
(e.g. roles that do not alternate): that is `InvalidParams` with the template's message. Anything
else that goes wrong, a sandbox violation included, is the template's fault: a `ToolRpcError`
(internal) chained to the original exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
import jinja2.parser
import jinja2.runtime
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from toolrpc.errors import InvalidParams, ToolRpcError

DEFAULT_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Plain ChatML (no tool rendering) for models that ship no chat template."""


class _TemplateRaised(jinja2.TemplateError):
    """Raised by a template's own `raise_exception(message)`."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own `tojson` escapes HTML characters; chat templates expect plain json.dumps.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """`dict` for templates: builds dicts without exposing the `dict` type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


def _check_namespace_name(name: object) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(
            f"chat templates cannot store underscore-prefixed attributes on a namespace: {name!r}"
        )


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace` for templates: refuses underscore-prefixed (dunder) attribute names."""

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _check_namespace_name(name)
        super().__init__(attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _check_namespace_name(name)
        super().__setitem__(name, value)


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` renders its body (transformers uses it to mark
    assistant tokens for training masks, which a server does not need)."""

    tags = {"generation"}  # noqa: RUF012 (Jinja's own class attribute)

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: jinja2.runtime.Macro) -> str:
        return str(caller())


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


def _plain(value: Any) -> Any:
    """`value` rebuilt from dicts and lists, so the template sees no caller-owned objects."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _plain_message(message: Mapping[str, Any]) -> dict[str, Any]:
    # Like apply_chat_template: a key whose value is None is dropped, since templates test for a
    # missing key (`is defined`) far more often than for None.
    return {key: _plain(item) for key, item in message.items() if item is not None}


class ChatTemplate:
    """A compiled chat template; `render` turns messages (and tools) into a prompt."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        """Compile `source`; raises `ValueError` when it is not a valid Jinja template.

        `bos_token` and `eos_token` are passed to the template when non-empty (transformers
        passes the tokenizer's special tokens that are set).
        """
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        env = _environment()
        try:
            self._template = env.from_string(source)
            variables = jinja2.meta.find_undeclared_variables(env.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"chat template does not compile: {exc} (line {exc.lineno})") from exc
        self._renders_tools = "tools" in variables

    @property
    def renders_tools(self) -> bool:
        """Whether the template itself renders tool definitions (it reads the `tools` variable)."""
        return self._renders_tools

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt for `messages` (OpenAI-style dicts) and `tools` (OpenAI tool dicts).

        Raises `InvalidParams` when the template refuses the conversation (`raise_exception`),
        and `ToolRpcError` (internal) when the template itself fails or breaks the sandbox.
        """
        context: dict[str, Any] = {
            "messages": [_plain_message(message) for message in messages],
            "tools": None if tools is None else _plain(tools),
            "documents": None,  # transformers always passes it
            "add_generation_prompt": add_generation_prompt,
        }
        if self.bos_token:
            context["bos_token"] = self.bos_token
        if self.eos_token:
            context["eos_token"] = self.eos_token
        try:
            return self._template.render(context)
        except _TemplateRaised as exc:
            raise InvalidParams(f"the chat template refused the conversation: {exc}") from exc
        except jinja2.exceptions.SecurityError as exc:
            raise ToolRpcError(f"the chat template broke the sandbox: {exc}") from exc
        except (
            jinja2.TemplateError,
            TypeError,
            ValueError,
            LookupError,
            AttributeError,
            ArithmeticError,
        ) as exc:
            raise ToolRpcError(f"the chat template failed: {type(exc).__name__}: {exc}") from exc
