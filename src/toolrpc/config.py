"""Server settings, from command-line flags and environment variables (pydantic-settings).

Every field is a flag (`--ctx-size 2048`) and an environment variable (`TOOLRPC_CTX_SIZE=2048`);
flags win over the environment. `MODEL_ID`, the name the original `server.py` used, is honoured
for `--model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineKind = Literal["auto", "llama.cpp", "hf", "fake"]


class Settings(BaseSettings):
    """Everything `toolrpc serve` can be told."""

    model_config = SettingsConfigDict(
        env_prefix="TOOLRPC_",
        cli_kebab_case=True,
        cli_prog_name="toolrpc serve",
        cli_implicit_flags=True,
        populate_by_name=True,
        extra="ignore",
    )

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(8000, description="TCP port")
    model: str | None = Field(
        None,
        validation_alias=AliasChoices("model", "TOOLRPC_MODEL", "MODEL_ID"),
        description="a GGUF file (llama.cpp), a model folder with config.json or a Hugging "
        "Face id (transformers); default: the embedded SmolLM2-135M-Instruct",
    )
    engine: EngineKind = Field(
        "auto", description="auto (from --model), llama.cpp, hf, or fake (scripted, no model)"
    )
    quantize: Literal["4bit", "8bit"] | None = Field(
        None, description="hf engine: load 4-bit (NF4) or 8-bit with bitsandbytes (needs CUDA)"
    )
    device: str = Field("auto", description="hf engine: auto (CUDA if present), cpu, cuda, ...")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="hf engine: weight dtype"
    )
    trust_remote_code: bool = Field(
        False, description="hf engine: run the model repository's own Python code"
    )
    ctx_size: Annotated[int, Field(ge=256)] = Field(
        4096, description="context window of one conversation, in tokens"
    )
    parallel: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="conversations generated at once (batched in one KV cache)"
    )
    batch_tokens: Annotated[int, Field(ge=16)] = Field(
        512, description="tokens per model step (decode tokens plus prompt chunks)"
    )
    prefill_chunk: Annotated[int, Field(ge=4)] = Field(
        32,
        description="prompt tokens per step while other conversations are generating (smaller: "
        "smoother streams, slower admission of long prompts)",
    )
    reuse_generated_kv: bool = Field(
        False,
        description="keep the KV of generated tokens for the next turn too (follow-ups prefill "
        "only their new message; a warm answer may then differ from a cold one)",
    )
    threads: Annotated[int, Field(ge=1)] | None = Field(
        None, description="CPU threads for the model (default: all cores)"
    )
    max_queue: Annotated[int, Field(ge=0)] = Field(
        64, description="requests that may wait for a slot before new ones are refused"
    )
    request_timeout_s: Annotated[float, Field(gt=0)] = Field(
        600.0, description="time limit of one generation, in seconds"
    )
    tool_router: Literal["auto", "on", "off"] = Field(
        "auto",
        description="let the model choose answer-or-tool by its probabilities for tool_choice "
        "auto and required (auto: when the chat template has no tool format of its own)",
    )
    tool_router_bias: float = Field(
        -0.15,  # = chat.router.DEFAULT_BIAS; its docstring says how it was chosen
        description="added to the router's 'answer' score (higher: call tools less often)",
    )
    ground_arguments: bool = Field(
        True,
        description="with the tool router: a forced call whose free-text arguments use words "
        "no one wrote is generated again, its values copied from the conversation",
    )
    tools: Path | None = Field(
        None, description='JSON file with the server\'s tools (a list, or {"tools": [...]})'
    )
    max_body_bytes: Annotated[int, Field(ge=1024)] = Field(
        8 * 1024 * 1024, description="largest request body accepted (bigger: HTTP 413)"
    )
    max_new_tokens_limit: Annotated[int, Field(ge=1)] = Field(
        2048, description="cap on max_new_tokens of any request"
    )
    max_batch_requests: Annotated[int, Field(ge=1)] = Field(
        100, description="largest JSON-RPC batch accepted"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    verbose_engine: bool = Field(False, description="show the engine's own (llama.cpp) logs")

    @model_validator(mode="after")
    def _batch_fits_the_slots(self) -> Settings:
        if self.batch_tokens < self.parallel + 2:
            raise ValueError("--batch-tokens must be at least --parallel + 2")
        return self
