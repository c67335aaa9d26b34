"""The `toolrpc` command line: subcommands, `serve --help`, and one-line errors with exit code 2.

Nothing here loads a model: `serve` is replaced by a recorder in the in-process tests, and the
subprocess tests use command lines that must be refused before anything is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolrpc import cli
from toolrpc.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SUBPROCESS_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TOOLRPC_* or MODEL_ID variable of the machine running the tests leaks into Settings."""
    for name in list(os.environ):
        if name.upper().startswith("TOOLRPC_") or name.upper() in {"MODEL_ID", "MODEL"}:
            monkeypatch.delenv(name)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Replaces `cli.serve` with a recorder of the settings it would have served."""
    calls: list[Settings] = []

    def record(settings: Settings) -> int:
        calls.append(settings)
        return 0

    monkeypatch.setattr(cli, "serve", record)
    return calls


def run_toolrpc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m toolrpc ARGS` (or `python server.py` when args[0] is server.py), bounded."""
    command = (
        [sys.executable, *args]
        if args[0] == "server.py"
        else [sys.executable, "-m", "toolrpc", *args]
    )
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOOLRPC_")}
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


def assert_one_error_line(stderr: str, *, naming: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("toolrpc serve: error: "), stderr
    assert naming in lines[0], stderr


@pytest.mark.parametrize(
    ("args", "env", "naming"),
    [
        (["serve", "--parallel", "0"], {}, "--parallel"),
        (["server.py", "--engine", "hf"], {}, "--model"),
        (["serve"], {"TOOLRPC_PARALLEL": "0"}, "TOOLRPC_PARALLEL"),
    ],
)
def test_a_bad_command_line_in_a_real_process_is_one_line_and_exit_code_2(
    args: list[str], env: dict[str, str], naming: str
) -> None:
    result = run_toolrpc(*args, env=env)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert_one_error_line(result.stderr, naming=naming)


@pytest.mark.parametrize(
    ("args", "naming"),
    [
        (["--parallel", "0"], "--parallel"),
        (["--engine", "hf"], "--model"),
        (["--quantize", "4bit"], "--quantize"),
        (["--quantize", "4bit", "--engine", "llama.cpp"], "--quantize"),
        (["--port", "abc"], "--port"),
        (["--dtype", "foo"], "--dtype"),
        (["--tool-call-format", "xml"], "--tool-call-format"),
        (["--colour"], "--colour"),
        (["--tools", "missing.json"], "--tools"),
        (["--model", "nonexistent.gguf"], "--model"),
        (["--parallel", "32", "--batch-tokens", "33"], "--batch-tokens"),
        (["--batch-tokens", "8"], "--batch-tokens"),
    ],
)
def test_a_bad_flag_or_combination_is_one_line_and_exit_code_2(
    args: list[str], naming: str, served: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["serve", *args])

    assert status == 2
    assert served == []
    assert_one_error_line(capsys.readouterr().err, naming=naming)


def test_a_bad_environment_variable_is_named_in_the_one_line(
    monkeypatch: pytest.MonkeyPatch, served: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOOLRPC_PORT", "abc")

    assert cli.main(["serve"]) == 2
    assert_one_error_line(capsys.readouterr().err, naming="TOOLRPC_PORT")


def test_flags_win_over_environment_variables_which_win_over_defaults(
    monkeypatch: pytest.MonkeyPatch, served: list[Settings]
) -> None:
    monkeypatch.setenv("TOOLRPC_PORT", "9000")
    monkeypatch.setenv("TOOLRPC_PARALLEL", "2")
    monkeypatch.setenv("MODEL_ID", "Qwen/Qwen2.5-0.5B-Instruct")

    assert cli.main(["serve", "--port", "9001", "--no-ground-arguments"]) == 0

    [settings] = served
    assert (settings.port, settings.parallel, settings.ctx_size) == (9001, 2, None)
    assert settings.model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert settings.ground_arguments is False


def test_every_setting_has_a_flag(served: list[Settings], tmp_path: Path) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([]))
    args = ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--quantize", "8bit", "--tools", str(tools)]
    args += ["--tool-call-format", "mistral", "--threads", "2", "--tool-router-bias", "0.5"]

    assert cli.main(["serve", *args]) == 0

    [settings] = served
    assert (settings.quantize, settings.tool_call_format) == ("8bit", "mistral")
    assert (settings.threads, settings.tools, settings.tool_router_bias) == (2, tools, 0.5)
    help_text = cli.build_command_line().serve.format_help()
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in help_text


def test_serve_help_is_grouped_with_readable_metavars_and_each_default_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["serve", "--help"]) == 0

    text = capsys.readouterr().out
    for group in ["server:", "model:", "batching:", "tools:", "limits and logging:"]:
        assert f"\n{group}\n" in text
    assert "null" not in text
    assert "{str" not in text
    assert "--quantize {4bit,8bit}" in text
    assert "--tools PATH" in text
    assert "--parallel N" in text
    assert "TOOLRPC_" in text
    assert text.count("(default: 8000)") == 1
    assert text.count("default") == text.count("default:")  # no "(default: None)" forms


def test_toolrpc_alone_or_with_help_lists_the_subcommands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["--help"]) == 0
    listed = capsys.readouterr().out

    assert cli.main([]) == 2
    alone = capsys.readouterr().err

    for text in [listed, alone]:
        assert "serve" in text
        assert "usage: toolrpc" in text


def test_a_model_that_cannot_be_loaded_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(settings: Settings) -> None:
        raise ValueError(f"--model {settings.model!r} needs the transformers engine")

    monkeypatch.setattr("toolrpc.engines.factory.load_engine", refuse)

    status = cli.serve(Settings(model="Qwen/Qwen2.5-0.5B-Instruct"))

    assert status == 2
    assert_one_error_line(capsys.readouterr().err, naming="--model")


def test_a_tools_file_that_is_not_json_is_one_line_and_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text("[{")

    def must_not_serve(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server was started")

    monkeypatch.setattr("toolrpc.server.shutdown.GracefulServer.run", must_not_serve)

    status = cli.serve(Settings(engine="fake", tools=tools))

    assert status == 2
    assert_one_error_line(capsys.readouterr().err, naming="tools.json")


@pytest.mark.parametrize("args", [["--colour"], ["chat-with-me"]])
def test_an_unknown_command_or_top_level_flag_is_one_line_and_exit_code_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(args) == 2

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("toolrpc: error: ")
    assert args[0] in lines[0]


def test_the_server_does_not_load_the_terminal_chats_libraries() -> None:
    """`toolrpc serve` stays free of prompt_toolkit (8.5 MiB resident): only `toolrpc chat`
    imports it."""
    code = "import sys, toolrpc.cli, toolrpc.server.app; print('prompt_toolkit' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
