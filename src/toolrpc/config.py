"""Server settings, from command-line flags and environment variables (pydantic-settings).

Every field is a flag (`--ctx-size 2048`, built by `toolrpc.cli` from the field's description
and `group`) and an environment variable (`TOOLRPC_CTX_SIZE=2048`); flags win over the
environment. `MODEL_ID`, the name the original `server.py` used, is honoured for `--model`.

Rules that belong to a layer below are imported from it, never copied: the smallest step size
and prompt chunk are the scheduler's (`MIN_FINAL_CHUNK`, `MIN_PREFILL_CHUNK`), the router's
default bias is the router's. Combinations
that cannot work (`--quantize` for a GGUF model, `--engine hf` without `--model`) are refused
here, so they are refused for environment variables too; each error is a `ValueError` whose one
line names the flag.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, FilePath, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from toolrpc.chat.router import DEFAULT_BIAS
from toolrpc.scheduling.kv_memory import MAX_SLOTS, SCORING_CONTEXT_LENGTH, KvCacheType
from toolrpc.scheduling.sequence import MIN_FINAL_CHUNK, MIN_PREFILL_CHUNK

EngineKind = Literal["auto", "llama.cpp", "hf", "fake"]
ServedEngineKind = Literal["llama.cpp", "hf", "fake", "upstream"]
ToolCallFormat = Literal["auto", "hermes", "llama3", "mistral", "json"]

DEFAULT_SLOTS = 8
DEFAULT_SCORING_SLOTS = 16
"""Scoring slots of the llama.cpp engine (`--scoring-slots`): room for the option prefixes of a
request with up to ~12 tools to stay cached beside its re-ranking prompts (chat/router.py,
"Cost")."""
MAX_SCORING_SLOTS = 128
"""Slots of the llama.cpp engine when neither `--parallel` nor `--kv-memory-mib` is given."""

DEFAULT_CTX_SIZE = 2048
"""Tokens of one conversation on the llama.cpp engine when `--ctx-size` is not given.

With `DEFAULT_SLOTS` and f16 KV this serves 8 clients at once in the KV memory the defaults
before took for 4 (4 slots of 4,096 tokens): llama.cpp reserves every slot's KV at start
(`kv_unified` off keeps batched greedy output equal to a sequence alone, engines/llama_cpp.py),
so slots x context is the memory, whatever the conversations use. 2,048 tokens hold the serving
benchmark's longest prompt (2,023 tokens); `--ctx-size 4096 --parallel 4` is the old shape.
q8_0 KV would halve the memory but is not the default: on a CPU the flash attention it needs
slows long prompts (figures in benchmarks/README.md, issue 17)."""

DEFAULT_GROWING_CTX_SIZE = 4096
"""`--ctx-size` of the engines whose cache grows with use (transformers), and the context length
reported for an upstream whose `/v1/models` does not say."""

DEFAULT_HF_SLOTS = 4
"""Slots of the transformers engine when `--parallel` is not given (its cache grows with use)."""

FlagGroup = Literal["server", "model", "batching", "tools", "limits and logging"]
FLAG_GROUPS: tuple[FlagGroup, ...] = ("server", "model", "batching", "tools", "limits and logging")
"""The sections of `toolrpc serve --help`, in order; every field names one as its `group`."""


def default_sessions_db() -> str:
    """`$XDG_DATA_HOME/toolrpc/sessions.db` (`~/.local/share/...` when the variable is unset),
    the XDG base-directory rule platformdirs follows on Linux, without the dependency."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data_home) / "toolrpc" / "sessions.db")


def flag(group: FlagGroup, metavar: str | None = None) -> JsonDict:
    """A field's `json_schema_extra`: its `--help` section and, if not derived, its metavar."""
    return {"group": group} if metavar is None else {"group": group, "metavar": metavar}


class Settings(BaseSettings):
    """Everything `toolrpc serve` can be told.

    Raises pydantic's `ValidationError` for a bad value or a combination that cannot work.
    """

    model_config = SettingsConfigDict(env_prefix="TOOLRPC_", populate_by_name=True, extra="ignore")

    host: str = Field(
        "127.0.0.1",
        description="address to listen on (0.0.0.0: every interface)",
        json_schema_extra=flag("server", "HOST"),
    )
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8000, description="TCP port", json_schema_extra=flag("server")
    )
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("api_key", "TOOLRPC_API_KEYS"),
        repr=False,  # keys are never logged, not even in a settings dump
        description="an API key clients must send as 'Authorization: Bearer KEY' (repeat the "
        "flag for more; TOOLRPC_API_KEYS: comma-separated; 'sha256:HEX' gives a key's hash)",
        json_schema_extra=flag("server", "KEY"),
    )
    api_keys_file: FilePath | None = Field(
        None,
        description="file of API keys, one per line (or sha256:HEX); # starts a comment",
        json_schema_extra=flag("server", "PATH"),
    )
    max_concurrent_per_key: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="requests one API key may have running at once (more: HTTP 429)",
        json_schema_extra=flag("server"),
    )
    shutdown_timeout: Annotated[float, Field(ge=0)] = Field(
        30.0,
        description="on SIGTERM, seconds running generations may take to finish before they "
        "are cancelled (a second SIGTERM or Ctrl-C exits at once)",
        json_schema_extra=flag("server", "SECONDS"),
    )
    sessions: bool = Field(
        True,
        description="keep server-side sessions (session_id) in --sessions-db",
        json_schema_extra=flag("server"),
    )
    sessions_db: str = Field(
        default_factory=default_sessions_db,
        description="SQLite file of the sessions (:memory: keeps them until exit; default: "
        "$XDG_DATA_HOME/toolrpc/sessions.db)",
        json_schema_extra=flag("server", "PATH"),
    )
    session_ttl: Annotated[float, Field(gt=0)] = Field(
        30 * 24 * 3600.0,
        description="seconds a session may stay unused before it is deleted (default: 30 days)",
        json_schema_extra=flag("server", "SECONDS"),
    )
    model: str | None = Field(
        None,
        # Not "model": pydantic-settings would read a bare MODEL variable for it.
        validation_alias=AliasChoices("TOOLRPC_MODEL", "MODEL_ID"),
        description="a GGUF file (llama.cpp), a model folder with config.json or a Hugging "
        "Face id (transformers); also MODEL_ID (default: the embedded SmolLM2-135M-Instruct)",
        json_schema_extra=flag("model", "MODEL"),
    )
    upstream: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="an OpenAI-compatible server to generate on (vLLM, SGLang, llama-server, "
        "...), e.g. http://host:8000/v1; repeat it for replicas (TOOLRPC_UPSTREAM: "
        "comma-separated); no local model is loaded, --model names the served model "
        "(default: none, a local model)",
        json_schema_extra=flag("model", "URL"),
    )
    upstream_health_interval_s: Annotated[float, Field(gt=0)] = Field(
        5.0,
        description="seconds between health checks of each upstream",
        json_schema_extra=flag("model", "SECONDS"),
    )
    upstream_timeout_s: Annotated[float, Field(gt=0)] = Field(
        60.0,
        description="longest an upstream may stay silent (before and between chunks), seconds; "
        "one silent this long to every request and probe is taken out",
        json_schema_extra=flag("model", "SECONDS"),
    )
    served_model_name: str | None = Field(
        None,
        description="the model's name on /v1 (the `model` clients send; default: the model "
        "file's or id's name)",
        json_schema_extra=flag("model", "NAME"),
    )
    engine: EngineKind = Field(
        "auto",
        description="auto (from --model), llama.cpp, hf, or fake (scripted, no model)",
        json_schema_extra=flag("model"),
    )
    quantize: Literal["4bit", "8bit"] | None = Field(
        None,
        description="hf engine: load 4-bit (NF4) or 8-bit with bitsandbytes (needs CUDA)",
        json_schema_extra=flag("model"),
    )
    device: str = Field(
        "auto",
        description="hf engine: auto (CUDA if present), cpu, cuda, ...",
        json_schema_extra=flag("model", "DEVICE"),
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="hf engine: weight dtype", json_schema_extra=flag("model")
    )
    trust_remote_code: bool = Field(
        False,
        description="hf engine: run the model repository's own Python code",
        json_schema_extra=flag("model"),
    )
    ctx_size: Annotated[int, Field(ge=256)] | None = Field(
        None,
        description="context window of one conversation, in tokens (default: "
        f"{DEFAULT_CTX_SIZE} on llama.cpp, whose KV is reserved per slot at start; "
        f"{DEFAULT_GROWING_CTX_SIZE} otherwise)",
        json_schema_extra=flag("model"),
    )
    kv_type: KvCacheType = Field(
        "f16",
        description="llama.cpp: KV cache storage, q8_0 (half the memory a token of f16) or f16",
        json_schema_extra=flag("model"),
    )
    flash_attn: Literal["on", "off"] = Field(
        "off",
        description="llama.cpp: flash attention with an f16 cache (a q8_0 cache always has it): "
        "less resident memory and faster decoding of many streams, but a reused prefix no "
        "longer answers exactly as a cold prompt",
        json_schema_extra=flag("model"),
    )
    kv_memory_mib: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="llama.cpp: KV cache memory, in MiB; as many conversations are generated at "
        "once as it holds at --ctx-size tokens each (instead of --parallel; default: "
        f"{DEFAULT_SLOTS} slots)",
        json_schema_extra=flag("batching", "MIB"),
    )
    scoring_slots: Annotated[int, Field(ge=0, le=MAX_SCORING_SLOTS)] = Field(
        DEFAULT_SCORING_SLOTS,
        description="llama.cpp: slots of a second, small KV cache for the tool router's scoring "
        f"prompts ({SCORING_CONTEXT_LENGTH} tokens each), which keeps each tool's prompt cached "
        "across requests; 0: they share the conversations' slots",
        json_schema_extra=flag("batching"),
    )
    threads: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="CPU threads for the model (default: all cores)",
        json_schema_extra=flag("model"),
    )
    parallel: Annotated[int, Field(ge=1, le=MAX_SLOTS)] | None = Field(
        None,
        description="conversations generated at once (batched in one KV cache; default: "
        f"{DEFAULT_SLOTS}, or as many as --kv-memory-mib holds)",
        json_schema_extra=flag("batching"),
    )
    batch_tokens: Annotated[int, Field(ge=16)] = Field(
        512,
        description="tokens per model step (decode tokens plus prompt chunks); at least "
        f"--parallel + {MIN_FINAL_CHUNK}",
        json_schema_extra=flag("batching"),
    )
    max_token_gap_ms: Annotated[float, Field(gt=0)] | None = Field(
        # 200: scheduling/scheduler.py's docstring derives it, benchmarks/README.md measures it
        # (a stream's largest gap beside a 2,000-token prompt within 0.3 s).
        200.0,
        description="inter-token target of a running stream: prompt chunks beside it are sized "
        "so a step stays within it, by the measured cost of a step",
        json_schema_extra=flag("batching", "MS"),
    )
    prefill_chunk: Annotated[int, Field(ge=MIN_PREFILL_CHUNK)] | None = Field(
        None,
        description="at most this many prompt tokens per step while other conversations are "
        "generating, whatever --max-token-gap-ms allows (default: no cap; 32 was the fixed "
        "budget before the gap target)",
        json_schema_extra=flag("batching"),
    )
    reuse_generated_kv: bool = Field(
        False,
        description="keep the KV of generated tokens for the next turn too (follow-ups prefill "
        "only their new message; a warm answer may then differ from a cold one)",
        json_schema_extra=flag("batching"),
    )
    tools: FilePath | None = Field(
        None,
        description='JSON file with the server\'s tools (a list, or {"tools": [...]})',
        json_schema_extra=flag("tools"),
    )
    tool_call_format: ToolCallFormat = Field(
        "auto",
        description="tool-call markup the model writes: auto (detected from the chat template), "
        "hermes, llama3, mistral, json",
        json_schema_extra=flag("tools"),
    )
    tool_router: Literal["auto", "on", "off"] = Field(
        "auto",
        description="let the model choose answer-or-tool by its probabilities for tool_choice "
        "auto and required (auto: when the chat template has no tool format of its own)",
        json_schema_extra=flag("tools"),
    )
    tool_router_bias: float = Field(
        DEFAULT_BIAS,  # chat.router's docstring says how it was chosen
        description="added to the router's 'answer' score (higher: call tools less often)",
        json_schema_extra=flag("tools", "BIAS"),
    )
    ground_arguments: bool = Field(
        True,
        description="with the tool router: a forced call whose free-text arguments use words "
        "no one wrote is generated again, its values copied from the conversation",
        json_schema_extra=flag("tools"),
    )
    max_queue: Annotated[int, Field(ge=0)] = Field(
        64,
        description="requests that may wait for a slot before new ones are refused",
        json_schema_extra=flag("limits and logging"),
    )
    request_timeout_s: Annotated[float, Field(gt=0)] = Field(
        600.0,
        description="time limit of one generation, in seconds",
        json_schema_extra=flag("limits and logging", "SECONDS"),
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        8 * 1024 * 1024,
        description="largest request body accepted (bigger: HTTP 413)",
        json_schema_extra=flag("limits and logging", "BYTES"),
    )
    max_new_tokens_limit: Annotated[int, Field(ge=1)] = Field(
        2048,
        description="cap on max_new_tokens of any request",
        json_schema_extra=flag("limits and logging"),
    )
    max_batch_requests: Annotated[int, Field(ge=1)] = Field(
        100,
        description="largest JSON-RPC batch accepted",
        json_schema_extra=flag("limits and logging"),
    )
    max_tools: Annotated[int, Field(ge=1)] = Field(
        128, description="tools in one request", json_schema_extra=flag("limits and logging")
    )
    max_tool_schema_bytes: Annotated[int, Field(ge=256)] = Field(
        64 * 1024,
        description="size of one tool's parameter schema, as JSON",
        json_schema_extra=flag("limits and logging", "BYTES"),
    )
    max_history_messages: Annotated[int, Field(ge=1)] = Field(
        1024, description="messages in one history", json_schema_extra=flag("limits and logging")
    )
    max_message_chars: Annotated[int, Field(ge=1)] = Field(
        256 * 1024,
        description="characters in one message (or system prompt, or tool result)",
        json_schema_extra=flag("limits and logging", "CHARS"),
    )
    max_stop_strings: Annotated[int, Field(ge=0)] = Field(
        16, description="stop strings in one request", json_schema_extra=flag("limits and logging")
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level", json_schema_extra=flag("limits and logging")
    )
    verbose_engine: bool = Field(
        False,
        description="show the engine's own (llama.cpp) logs",
        json_schema_extra=flag("limits and logging"),
    )

    @field_validator("upstream", mode="before")
    @classmethod
    def _split_upstreams(cls, value: object) -> object:
        """`TOOLRPC_UPSTREAM=http://a/v1,http://b/v1` (or one URL) is a list of URLs."""
        if isinstance(value, str):
            return [url for url in value.replace(",", " ").split() if url]
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """TOOLRPC_API_KEYS is one comma-separated string; flags give a list."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @property
    def context_length(self) -> int:
        """Tokens of one conversation: `--ctx-size`, or the engine's default (`DEFAULT_CTX_SIZE`
        on llama.cpp, which reserves KV per slot; `DEFAULT_GROWING_CTX_SIZE` otherwise)."""
        if self.ctx_size is not None:
            return self.ctx_size
        if self.engine_kind == "llama.cpp":
            return DEFAULT_CTX_SIZE
        return DEFAULT_GROWING_CTX_SIZE

    @property
    def engine_kind(self) -> ServedEngineKind:
        """`upstream` with `--upstream`; else `llama.cpp`, `hf` or `fake`: `--engine`, or else
        from `--model` (`.gguf` or none: llama.cpp, which serves the embedded default; anything
        else: transformers)."""
        if self.upstream:
            return "upstream"
        if self.engine != "auto":
            return self.engine
        if self.model is None or self.model.lower().endswith(".gguf"):
            return "llama.cpp"
        return "hf"

    @model_validator(mode="after")
    def _flags_fit_together(self) -> Settings:
        problem = (
            _upstream_problem(self)
            or _slots_problem(self)
            or _flash_attn_problem(self)
            or _batch_problem(self)
            or _model_problem(self)
            or _hf_only_problem(self)
            or _llama_only_problem(self)
        )
        if problem:
            raise ValueError(problem)
        return self


def _upstream_problem(settings: Settings) -> str | None:
    """With `--upstream` no engine is loaded here, so `--engine` must stay `auto`, and every URL
    must be http(s)."""
    if not settings.upstream:
        return None
    if settings.engine != "auto":
        return f"--engine {settings.engine}: not with --upstream (the upstreams generate)"
    bad = next(
        (url for url in settings.upstream if not url.startswith(("http://", "https://"))), None
    )
    if bad is not None:
        return f"--upstream {bad}: not an http:// or https:// URL"
    return None


def _slots_problem(settings: Settings) -> str | None:
    """`--parallel` fixes the slot count and `--kv-memory` derives it: both given would leave
    one of them ignored."""
    if {"parallel", "kv_memory_mib"} <= settings.model_fields_set:
        return "--parallel and --kv-memory-mib: give one (--parallel fixes the slots)"
    return None


def _flash_attn_problem(settings: Settings) -> str | None:
    """llama.cpp refuses a quantized V cache without flash attention."""
    explicitly_off = "flash_attn" in settings.model_fields_set and settings.flash_attn == "off"
    if explicitly_off and settings.kv_type != "f16":
        return f"--kv-type {settings.kv_type} needs flash attention: not with --flash-attn off"
    return None


def _batch_problem(settings: Settings) -> str | None:
    """The scheduler's rule: every step decodes one token per slot and still leaves a prompt
    chunk of `MIN_FINAL_CHUNK` tokens (`Scheduler` refuses a smaller budget)."""
    if settings.parallel is None:  # the engine caps the slots it derives at what fits
        return None
    smallest = settings.parallel + MIN_FINAL_CHUNK
    if settings.batch_tokens >= smallest:
        return None
    return (
        f"--batch-tokens {settings.batch_tokens}: must be at least --parallel + "
        f"{MIN_FINAL_CHUNK} ({smallest}) with --parallel {settings.parallel}"
    )


def _model_problem(settings: Settings) -> str | None:
    kind = settings.engine_kind
    if kind == "hf" and settings.model is None:
        return "--engine hf needs --model (a Hugging Face id or a folder with config.json)"
    if kind == "llama.cpp" and settings.model is not None and not Path(settings.model).is_file():
        return f"--model {settings.model}: no such GGUF file"
    return None


def _hf_only_problem(settings: Settings) -> str | None:
    """A transformers-only flag for another engine would be silently ignored: refuse it."""
    kind = settings.engine_kind
    if kind == "hf":
        return None
    given = [
        f"--quantize {settings.quantize}" if settings.quantize is not None else "",
        f"--dtype {settings.dtype}" if settings.dtype != "auto" else "",
        f"--device {settings.device}" if settings.device != "auto" else "",
        "--trust-remote-code" if settings.trust_remote_code else "",
    ]
    used = next((flag_text for flag_text in given if flag_text), None)
    if used is None:
        return None
    if kind == "fake":
        served = "--engine fake loads no model"
    elif kind == "upstream":
        served = "--upstream loads no model"
    elif settings.model is None:
        served = "the embedded default model is a GGUF file, served by llama.cpp"
    else:
        served = f"--model {settings.model} is served by llama.cpp"
    return f"{used}: applies to the hf engine (transformers) only; {served}"


def _llama_only_problem(settings: Settings) -> str | None:
    """A llama.cpp-only flag given for the transformers engine would be ignored: refuse it."""
    if settings.engine_kind != "hf":
        return None
    given = [name for name in LLAMA_CPP_ONLY if name in settings.model_fields_set]
    if not given:
        return None
    return f"--{given[0].replace('_', '-')}: applies to the llama.cpp engine (GGUF models) only"


LLAMA_CPP_ONLY = ("kv_type", "kv_memory_mib", "scoring_slots", "flash_attn")
"""Settings that only the llama.cpp engine reads."""
