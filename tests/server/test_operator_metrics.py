"""/metrics after a scripted load: the figures add up (in-process, FakeEngine)."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from tests.server.apps import PARIS, make_app, serving
from tests.server.test_rpc_http import WEATHER
from toolrpc.config import Settings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_the_figures_of_a_scripted_load_add_up() -> None:
    nope = '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
    app, _ = make_app(PARIS, "Sunny.", "Hello.", "Hi again.", "Plain answer.", nope)
    call = {"jsonrpc": "2.0", "method": "create_message", "id": 1}

    async with serving(app) as client:
        tool_step = {**call, "params": {"message": "Weather?", "tools": [WEATHER]}}
        first = (await client.post("/rpc", content=json.dumps(tool_step))).json()
        call_id = first["result"]["content"][0]["id"]
        follow = {"message": None, "history": first["result"]["history"], "tools": [WEATHER]}
        follow["tool_results"] = [{"tool_call_id": call_id, "content": "sunny"}]
        del follow["message"]
        await client.post("/rpc", content=json.dumps({**call, "params": follow}))
        for text in ["a", "b"]:
            session = {**call, "params": {"session_id": f"s-{text}", "message": text}}
            await client.post("/rpc", content=json.dumps(session))
        await client.post("/stream", json={"message": "stream me"})
        await client.post("/rpc", content=json.dumps({**call, "params": {"message": 5}}))
        missing = {
            "jsonrpc": "2.0",
            "method": "session_get",
            "params": {"session_id": "x"},
            "id": 2,
        }
        await client.post("/rpc", content=json.dumps(missing))
        unknown_tool = {**call, "params": {"message": "Weather?", "tools": [WEATHER]}}
        await client.post("/rpc", content=json.dumps(unknown_tool))
        scraped = samples((await client.get("/metrics")).text)

    def value(name: str, **labels: str) -> float:
        return scraped.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("toolrpc_rpc_calls_total", method="create_message", outcome="ok") == 5
    assert value("toolrpc_rpc_calls_total", method="create_message", outcome="-32602") == 1
    assert value("toolrpc_rpc_calls_total", method="session_get", outcome="-32004") == 1
    assert value("toolrpc_steps_total", outcome="tool_calls") == 1
    assert value("toolrpc_steps_total", outcome="stop") == 5
    assert value("toolrpc_tool_calls_total", outcome="valid") == 1
    assert value("toolrpc_tool_calls_total", outcome="rejected") == 1
    assert value("toolrpc_step_seconds_count") == 6
    assert value("toolrpc_time_to_first_token_seconds_count") == 5
    assert value("toolrpc_time_per_output_token_seconds_count") <= 5
    assert value("toolrpc_sessions_stored") == 2
    assert value("toolrpc_generations_total") == 6
    assert value("toolrpc_running_sequences") == 0
    assert value("toolrpc_waiting_sequences") == 0


async def test_the_routers_decisions_are_counted() -> None:
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    app, _ = make_app(call, "Rainbows are refracted light.", settings=Settings(tool_router="on"))
    asks = ["what is the current weather in Paris", "explain how rainbows form"]

    async with serving(app) as client:
        for message in asks:
            params = {"message": message, "tools": [WEATHER]}
            body = {"jsonrpc": "2.0", "method": "create_message", "id": 1, "params": params}
            await client.post("/rpc", content=json.dumps(body))
        scraped = samples((await client.get("/metrics")).text)

    assert scraped[("toolrpc_router_decisions_total", (("decision", "tool"),))] == 1
    assert scraped[("toolrpc_router_decisions_total", (("decision", "answer"),))] == 1


def test_the_engines_kv_gauges_and_queue_wait_histogram_are_exposed() -> None:
    from toolrpc.generation import QUEUE_WAIT_BOUNDS, EngineStats
    from toolrpc.server.metrics import ServerMetrics

    counts = (0, 1, *([2] * (len(QUEUE_WAIT_BOUNDS) - 1)))
    stats = EngineStats(
        num_slots=4, num_slots_in_use=1, num_kv_tokens=120, queue_wait_counts=counts,
        queue_wait_sum_s=0.07,
    )  # fmt: skip

    scraped = samples(ServerMetrics(lambda: stats).render().decode())

    assert scraped[("toolrpc_kv_slots", ())] == 4
    assert scraped[("toolrpc_kv_slots_in_use", ())] == 1
    assert scraped[("toolrpc_kv_tokens", ())] == 120
    assert scraped[("toolrpc_queue_wait_seconds_bucket", (("le", "0.05"),))] == 1
    assert scraped[("toolrpc_queue_wait_seconds_count", ())] == 2
