"""`toolrpc chat` in a pseudo-terminal (pexpect), against a server on a loopback port whose
FakeEngine plays a scripted conversation: a streamed answer, an answer stopped with Ctrl-C, a
tool call run from `--tools`, commands, and leaving."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest

from tests.client.servers import serving_on_loopback, tool_call
from toolrpc.cli import main
from toolrpc.config import Settings
from toolrpc.engines.fake import FakeEngine
from toolrpc.server import create_app

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 30


def spawn_chat(*flags: str) -> pexpect.spawn:
    """`python -m toolrpc chat FLAGS` in a pseudo-terminal."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
        "PROMPT_TOOLKIT_NO_CPR": "1",  # pexpect does not answer cursor-position requests
        "TERM": "xterm",
    }
    command = [sys.executable, "-m", "toolrpc", "chat", *flags]
    return pexpect.spawn(
        command[0],
        command[1:],
        cwd=str(ROOT),
        env=env,
        timeout=WAIT_S,
        encoding="utf-8",
        dimensions=(40, 200),
    )


def test_a_terminal_chat_streams_answers_runs_tools_and_survives_ctrl_c() -> None:
    long_answer = "counting " * 400
    script = [
        "Hello from the fake model.",
        long_answer,
        tool_call("get_weather", city="Paris"),
        "Sunny in Paris.",
    ]
    engine = FakeEngine(script, piece_delay_s=0.02)
    app = create_app(Settings(tool_router="off"), engine=engine)
    with serving_on_loopback(app) as url:
        chat = spawn_chat("--url", url, "--tools", "tests.client.chat_tools:get_weather")
        try:
            chat.expect_exact("[fake at")
            chat.expect_exact("you>")
            chat.sendline("Hi")
            chat.expect_exact("Hello from the fake model.")
            chat.expect_exact("you>")

            chat.sendline("Count for a long time.")
            chat.expect_exact("counting counting")
            chat.sendintr()
            chat.expect_exact("[stopped]")
            chat.expect_exact("you>")

            chat.sendline("/tools")
            chat.expect_exact("get_weather: Current weather for a city.")
            chat.sendline("What's the weather in Paris?")
            chat.expect_exact('→ get_weather({"city": "Paris"})')
            chat.expect_exact('← get_weather: {"city": "Paris", "sky": "sunny", "temp_c": 21}')
            chat.expect_exact("Sunny in Paris.")
            chat.expect_exact("you>")
            chat.sendline("/quit")
            chat.expect(pexpect.EOF)
        finally:
            chat.close(force=True)

    assert chat.exitstatus == 0
    assert engine.num_cancelled == 1
    assert "sunny" in engine.requests[-1].prompt


def test_chat_serves_a_model_in_process_and_its_commands_answer() -> None:
    chat = spawn_chat("--engine", "fake", "--system", "Be brief.")
    try:
        chat.expect_exact("[loading the fake engine")
        chat.expect_exact("you>")
        chat.sendline("hello")
        chat.expect_exact("this answer is scripted.")
        chat.sendline("/system")
        chat.expect_exact("[system: Be brief.]")
        chat.sendline("/reset")
        chat.expect_exact("[conversation forgotten]")
        chat.expect_exact("you>")  # Ctrl-D only reaches the prompt once it reads raw keys
        chat.sendeof()
        chat.expect(pexpect.EOF)
    finally:
        chat.close(force=True)

    assert chat.exitstatus == 0


def test_chat_against_no_server_is_one_line_and_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["chat", "--url", "http://127.0.0.1:9"]) == 2

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("toolrpc chat: error: no toolrpc server")


def test_a_tools_flag_that_names_no_function_is_refused() -> None:
    assert main(["chat", "--tools", "tests.client.chat_tools:nothing_here"]) == 2
    assert main(["chat", "--tools", "no_colon"]) == 2
