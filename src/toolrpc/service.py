"""The methods toolrpc serves, independent of transport: `create_message`, `tool_list`, streaming.

`ToolRpcService` applies the server's limits and defaults (its tools, the cap on
`max_new_tokens`) to a request, turns it into the conversation a chat step continues, and hands
it to the chat layer. `/rpc` reaches it through the JSON-RPC dispatcher (`methods()`), `/stream`
through `stream_message`; `/v1/chat/completions` builds its own `StepRequest` and runs it
through `step`, and `/v1/completions` continues a plain prompt through `complete_text` (no chat
template, no tools: the engine's `generate`).

It is also the composition root of the layers below it: `ToolRpcService.from_settings` decides
what is wired to what (the model's chat template, the tool router on when that template has no
tool format of its own, grounding only with the router), so the HTTP layer only routes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from toolrpc.caller import current_owner
from toolrpc.chat.conversation import Chat, DoneEvent, StepEvent, StepRequest
from toolrpc.chat.model import GenerationOptions, PromptedModel
from toolrpc.chat.router import ToolRouter
from toolrpc.chat.template import DEFAULT_CHATML_TEMPLATE, ChatTemplate
from toolrpc.chat.toolcalls import JSON_FALLBACK, detect_format, format_named
from toolrpc.chat.turn import append_inputs, with_system
from toolrpc.chat.upstream import UpstreamModel
from toolrpc.config import Settings
from toolrpc.engines.base import Chunk, Engine, GenerationRequest, SamplingParams
from toolrpc.engines.default_model import DISPLAY_NAME as EMBEDDED_MODEL_NAME
from toolrpc.engines.upstream import UpstreamPool
from toolrpc.errors import InvalidParams, ParamError, ToolRpcError
from toolrpc.limits import RequestLimits
from toolrpc.observe import StepObserver, observed
from toolrpc.protocol import (
    CreateMessageParams,
    CreateMessageResult,
    SessionListParams,
    SessionParams,
    Tool,
    ToolListResult,
)
from toolrpc.rpc import Method
from toolrpc.session_steps import SessionSteps
from toolrpc.sessions import SessionStore
from toolrpc.shutdown import Shutdown

_TOOLS = TypeAdapter(list[Tool])


def load_tools(path: Path) -> list[Tool]:
    """Read the server's tools from a JSON file: a list of tools, or `{"tools": [...]}`.

    Raises `ValueError` naming the file and the problem.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "tools" in data:
            data = data["tools"]
        return _TOOLS.validate_python(data)
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"cannot read tools from {path}: {exc}") from exc


def served_model_name(engine: Engine, settings: Settings) -> str:
    """The model's name on `/v1`: `--served-model-name`, else the name `--model` gave it (a
    file's name without `.gguf`, a folder's name, a Hugging Face id as written), else the
    embedded model's name (SmolLM2-135M-Instruct, as /health says), else the engine's own name
    (`fake`). Not a GGUF's `general.name`: it may have spaces and say nothing a client would
    type."""
    if settings.served_model_name:
        return settings.served_model_name
    if settings.model is not None:
        path = Path(settings.model)
        if path.is_file():
            return path.name.removesuffix(".gguf")
        return path.name if path.is_dir() else settings.model
    if settings.engine_kind == "llama.cpp":
        return EMBEDDED_MODEL_NAME
    return engine.info.model_name


def build_chat(engine: Engine, settings: Settings) -> Chat:
    """The chat layer over `engine` as `settings` configure it: the model's own chat template
    (plain ChatML when it ships none); the tool-call format it implies (chat/toolcalls) unless
    `--tool-call-format` names one; the tool router on with `--tool-router on`, or `auto` when
    the template cannot render tools; grounding only with the router (it regenerates the
    router's forced calls)."""
    if isinstance(engine, UpstreamPool):
        return build_upstream_chat(engine, settings)
    info = engine.info
    template = ChatTemplate(
        info.chat_template or DEFAULT_CHATML_TEMPLATE,
        bos_token=info.bos_token,
        eos_token=info.eos_token,
    )
    use_router = settings.tool_router == "on" or (
        settings.tool_router == "auto" and not template.renders_tools
    )
    call_format = (
        detect_format(template.source)
        if settings.tool_call_format == "auto"
        else format_named(settings.tool_call_format)
    )
    return Chat(
        PromptedModel(engine, template, call_format),
        router=ToolRouter(engine, bias=settings.tool_router_bias) if use_router else None,
        ground_arguments=use_router and settings.ground_arguments,
    )


def build_upstream_chat(pool: UpstreamPool, settings: Settings) -> Chat:
    """The chat layer over upstream replicas: messages and tools go to the upstream, which
    renders its own template; content is read with `--tool-call-format` (auto: toolrpc's JSON
    fallback, which also reads Hermes markup) in case the upstream has no tool parser. No
    router and no grounding: both need a local engine's scores and grammar."""
    call_format = (
        JSON_FALLBACK
        if settings.tool_call_format == "auto"
        else format_named(settings.tool_call_format)
    )
    return Chat(UpstreamModel(pool, call_format))


class ToolRpcService:
    """create_message / tool_list / streaming over one `Chat`."""

    def __init__(
        self,
        chat: Chat,
        *,
        tools: Sequence[Tool] = (),
        max_new_tokens_limit: int = 2048,
        engine: Engine | None = None,
        limits: RequestLimits | None = None,
        sessions: SessionSteps | None = None,
        shutdown: Shutdown | None = None,
        observer: StepObserver | None = None,
    ) -> None:
        self.chat = chat
        self.tools = list(tools)
        self.max_new_tokens_limit = max_new_tokens_limit
        self.engine = engine
        self.limits = limits or RequestLimits()
        self.sessions = sessions
        self.shutdown = shutdown or Shutdown()
        self.observer = observer

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings) -> ToolRpcService:
        """The service over `engine` as `settings` configure it (the composition root).

        Raises `ValueError` when the server's tools file cannot be read.
        """
        tools = load_tools(settings.tools) if settings.tools else []
        sessions = None
        if settings.sessions:
            store = SessionStore(settings.sessions_db)
            sessions = SessionSteps(store, ttl_s=settings.session_ttl)
        return cls(
            build_chat(engine, settings),
            tools=tools,
            max_new_tokens_limit=settings.max_new_tokens_limit,
            engine=engine,
            limits=limits_of(settings),
            sessions=sessions,
            shutdown=Shutdown(settings.shutdown_timeout),
        )

    async def aclose(self) -> None:
        """Close the sessions database (every committed turn is already on disk)."""
        if self.sessions is not None:
            await self.sessions.store.aclose()

    def methods(self) -> list[Method]:
        """The JSON-RPC methods of this service."""
        methods = [
            Method("create_message", self.create_message, CreateMessageParams),
            Method("tool_list", self.tool_list, None),
        ]
        if self.sessions is not None:
            steps = self.sessions
            methods += [
                Method("session_get", lambda p: steps.get(current_owner(), p), SessionParams),
                Method(
                    "session_list", lambda p: steps.list_page(current_owner(), p), SessionListParams
                ),
                Method("session_delete", lambda p: steps.delete(current_owner(), p), SessionParams),
            ]
        return methods

    async def create_message(self, params: CreateMessageParams) -> CreateMessageResult:
        """Run one conversation step to its end."""
        async with aclosing(self.stream_message(params)) as events:
            async for event in events:
                if isinstance(event, DoneEvent):
                    return event.result
        raise ToolRpcError("the conversation step ended without a result")

    def stream_message(self, params: CreateMessageParams) -> AsyncGenerator[StepEvent, None]:
        """Run one conversation step, event by event (on the caller's session when `params`
        name one). Raises `InvalidParams` for a request over a limit or a `session_id` on a
        server without sessions; the step's own errors come from the generator. While the
        server shuts down, a step still running at the deadline ends with `GenerationCancelled`.
        """
        self.limits.check(params)
        if params.session_id is None:
            return self._watched(self.chat.step(self.step_request(params)))
        if self.sessions is None:
            raise InvalidParams(
                "server-side sessions are not available on this server; send 'history' instead",
                [ParamError(("session_id",), "sessions are not enabled")],
            )
        events = self.sessions.step(
            current_owner(), params.session_id, params, self.step_request, self.chat.step
        )
        return self._watched(events)

    def _watched(self, events: AsyncGenerator[StepEvent, None]) -> AsyncGenerator[StepEvent, None]:
        """`events` under the shutdown deadline, measured for the observer when there is one."""
        guarded = self.shutdown.guard(events)
        return guarded if self.observer is None else observed(guarded, self.observer)

    def step(self, request: StepRequest) -> AsyncGenerator[StepEvent, None]:
        """Run a step built by a caller of its own (`/v1`), with the server's token cap, under
        the shutdown deadline and measured like every other step."""
        options = request.options
        capped = min(options.max_new_tokens, self.max_new_tokens_limit)
        if capped != options.max_new_tokens:
            options = dataclasses.replace(options, max_new_tokens=capped)
            request = dataclasses.replace(request, options=options)
        return self._watched(self.chat.step(request))

    def complete_text(self, prompt: str, options: GenerationOptions) -> AsyncGenerator[Chunk, None]:
        """Continue `prompt` as it is (no chat template, no tools), capped like a step.

        Raises `ToolRpcError` when the service was built without an engine, and what the
        engine raises (`ContextLengthExceeded`, `Overloaded`, ...).
        """
        if self.engine is None:
            raise ToolRpcError("this service has no engine for plain-text completions")
        request = GenerationRequest(
            prompt=prompt,
            max_new_tokens=min(options.max_new_tokens, self.max_new_tokens_limit),
            sampling=options.sampling,
            stop=options.stop,
        )
        return self.engine.generate(request)

    def step_request(self, params: CreateMessageParams) -> StepRequest:
        """The chat step `params` ask for, with the server's limits and tools applied.

        Raises `ToolProtocolError` when the tool results do not answer the pending calls.
        """
        history = with_system(params.history, params.system)
        tools = params.tools if params.tools is not None else self.tools
        return StepRequest(
            conversation=tuple(append_inputs(history, params.tool_results, params.message)),
            tools=tuple(tools),
            tool_choice=params.tool_choice,
            max_iterations=params.max_iterations,
            options=GenerationOptions(
                max_new_tokens=min(params.max_new_tokens, self.max_new_tokens_limit),
                sampling=SamplingParams(
                    params.temperature, params.top_p, params.top_k, params.seed
                ),
                stop=params.stop_strings(),
            ),
        )

    async def tool_list(self, _params: None) -> ToolListResult:
        """The tools configured on the server."""
        return ToolListResult(tools=self.tools)


def limits_of(settings: Settings) -> RequestLimits:
    """The request limits `settings` configure."""
    return RequestLimits(
        max_tools=settings.max_tools,
        max_tool_schema_bytes=settings.max_tool_schema_bytes,
        max_history_messages=settings.max_history_messages,
        max_message_chars=settings.max_message_chars,
        max_stop_strings=settings.max_stop_strings,
    )
