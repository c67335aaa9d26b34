"""The composition root: what `build_chat` wires to what, from the model and the settings."""

from __future__ import annotations

from pathlib import Path

from toolrpc.chat.model import PromptedModel
from toolrpc.chat.toolcalls import HERMES, JSON_FALLBACK, LLAMA3
from toolrpc.config import Settings
from toolrpc.engines.base import EngineInfo
from toolrpc.engines.fake import FakeEngine
from toolrpc.service import build_chat, served_model_name

QWEN = (Path(__file__).parent / "chat" / "golden" / "qwen2_5.jinja").read_text(encoding="utf-8")


class TemplatedEngine(FakeEngine):
    """A FakeEngine that reports another chat template."""

    def __init__(self, template: str) -> None:
        super().__init__()
        self.template = template

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(model_name="templated", context_length=4096, chat_template=self.template)


def test_a_template_without_a_tool_format_gets_the_router_grounding_and_the_fallback() -> None:
    chat = build_chat(FakeEngine(), Settings(engine="fake"))

    assert chat.router is not None
    assert chat.ground_arguments
    assert isinstance(chat.model, PromptedModel)
    assert chat.model.call_format == JSON_FALLBACK


def test_a_template_that_renders_tools_gets_its_own_format_and_no_router() -> None:
    chat = build_chat(TemplatedEngine(QWEN), Settings(engine="fake"))

    assert chat.router is None
    assert not chat.ground_arguments
    assert isinstance(chat.model, PromptedModel)
    assert chat.model.call_format == HERMES


def test_the_flags_override_the_router_grounding_and_the_format() -> None:
    settings = Settings(
        engine="fake", tool_router="off", ground_arguments=False, tool_call_format="llama3"
    )

    chat = build_chat(FakeEngine(), settings)

    assert chat.router is None
    assert isinstance(chat.model, PromptedModel)
    assert chat.model.call_format == LLAMA3


def test_grounding_is_off_without_the_router_even_when_asked_for() -> None:
    chat = build_chat(TemplatedEngine(QWEN), Settings(engine="fake", ground_arguments=True))

    assert not chat.ground_arguments


async def test_an_upstream_pool_gets_the_upstream_model_without_router_or_grounding() -> None:
    from toolrpc.chat.upstream import UpstreamModel
    from toolrpc.engines.upstream import UpstreamOptions, UpstreamPool

    pool = UpstreamPool(UpstreamOptions(urls=("http://a:8000/v1",)), EngineInfo("m", 2048))
    settings = Settings(upstream=["http://a:8000/v1"], tool_router="on", tool_call_format="llama3")

    chat = build_chat(pool, settings)

    assert isinstance(chat.model, UpstreamModel)
    assert chat.model.call_format == LLAMA3
    assert chat.router is None
    assert not chat.ground_arguments
    await pool.aclose()


def test_the_served_model_name_is_the_flag_else_the_models_own_name(tmp_path: Path) -> None:
    gguf = tmp_path / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    gguf.write_bytes(b"")
    engine = FakeEngine()

    assert served_model_name(engine, Settings(served_model_name="smol")) == "smol"
    assert served_model_name(engine, Settings(model=str(gguf))) == "qwen2.5-0.5b-instruct-q4_k_m"
    assert served_model_name(engine, Settings(model="Qwen/Qwen2.5-0.5B")) == "Qwen/Qwen2.5-0.5B"
    assert served_model_name(engine, Settings()) == "SmolLM2-135M-Instruct"
    assert served_model_name(engine, Settings(engine="fake")) == "fake"
