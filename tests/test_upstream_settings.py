"""The upstream flags: repeatable `--upstream`, `TOOLRPC_UPSTREAM`, and what they refuse."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from toolrpc import cli
from toolrpc.config import Settings


def test_upstream_is_repeatable_and_makes_the_engine_the_upstreams() -> None:
    args = cli.build_command_line().toolrpc.parse_args(
        ["serve", "--upstream", "http://a:8000/v1", "--upstream", "http://b:8000", "--model", "m"]
    )
    flags = {name: value for name, value in vars(args).items() if name != "command"}
    settings = Settings(**flags)

    assert settings.upstream == ["http://a:8000/v1", "http://b:8000"]
    assert settings.engine_kind == "upstream"
    assert settings.model == "m"  # a served name, not a file: not refused


def test_the_upstream_variable_takes_comma_separated_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLRPC_UPSTREAM", "http://a:8000/v1, http://b:8000/v1")
    monkeypatch.setenv("TOOLRPC_UPSTREAM_HEALTH_INTERVAL_S", "2.5")

    settings = Settings()

    assert settings.upstream == ["http://a:8000/v1", "http://b:8000/v1"]
    assert settings.upstream_health_interval_s == 2.5


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"upstream": ["http://a/v1"], "engine": "fake"}, "--engine fake"),
        ({"upstream": ["a:8000"]}, "--upstream a:8000"),
        ({"upstream": ["http://a/v1"], "quantize": "4bit"}, "--upstream loads no model"),
        ({"upstream": ["http://a/v1"], "upstream_timeout_s": 0}, "upstream_timeout_s"),
    ],
)
def test_combinations_that_cannot_work_with_upstreams_are_refused(
    flags: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(**flags)  # type: ignore[arg-type]

    assert named in str(raised.value)
