"""A short fuzz of a real server process (`--engine fake`, loopback): the same properties as
tests/fuzz (never a 5xx but 503, never -32603, every answer bounded), through a real socket and
uvicorn's HTTP parser, then the process still healthy. 200 derandomized requests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import RunningServer, start_server, stop_server
from tests.fuzz.test_fuzz_http import FIELDS, JSON, VALID

pytestmark = pytest.mark.slow

ANSWER_BOUND_S = 10.0


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    server = start_server(folder / "server.log", "--engine", "fake", "--sessions-db", ":memory:")
    yield server
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    assert server.process.poll() is None
    stop_server(server)


def check(response: httpx.Response) -> None:
    """Not a server fault."""
    assert response.status_code < 500 or response.status_code == 503, response.text
    assert '"code": -32603' not in response.text


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(field=st.sampled_from(FIELDS), value=JSON, path=st.sampled_from(["/rpc", "/stream"]))
def test_mutated_requests_to_a_real_process_never_get_a_server_fault(
    fake_server: RunningServer, field: str, value: Any, path: str
) -> None:
    params = {**VALID, field: value}
    body: Any = params
    if path == "/rpc":
        body = {"jsonrpc": "2.0", "method": "create_message", "params": params, "id": 1}
    response = httpx.post(
        f"{fake_server.url}{path}", content=json.dumps(body), timeout=ANSWER_BOUND_S
    )
    check(response)


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=st.binary(max_size=300), path=st.sampled_from(["/rpc", "/stream"]))
def test_random_bytes_to_a_real_process_never_get_a_server_fault(
    fake_server: RunningServer, body: bytes, path: str
) -> None:
    check(httpx.post(f"{fake_server.url}{path}", content=body, timeout=ANSWER_BOUND_S))
