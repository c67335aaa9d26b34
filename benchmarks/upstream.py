"""The added cost of toolrpc in front of an upstream: the same load straight to llama-cpp-python's
OpenAI server, then through toolrpc (`--upstream`) to that same server.

For 1 and 8 concurrent clients, each client sends `--requests` chat requests (greedy, the same
message, `--tokens` tokens, streamed) one after another:

- straight: `POST {upstream}/v1/chat/completions` with `stream: true`;
- through toolrpc: `POST {toolrpc}/stream` with the same message and limits.

Reported per client count: requests per second each way and their ratio (through / straight;
the target is >= 0.95), and the median time to the first text of each way and the difference
(the target is <= 10 ms). The upstream serves one request at a time (llama-cpp-python's server
does not batch), so 8 clients queue on it either way; the ratio then measures toolrpc's own
overhead under concurrency. The two ways alternate by round (`--rounds`) so that a drift of
this machine's CPU speed hits both.

    python benchmarks/upstream.py            # a few minutes
    python benchmarks/upstream.py --quick    # smoke run: one round, 2 requests, 16 tokens

It is a script, not a test: it prints a table and writes benchmarks/results/upstream-<stamp>.json.
Run it on a quiet machine. Both servers listen on 127.0.0.1 and are terminated when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
MESSAGE = "Write a short paragraph about the history of the bicycle."
REQUEST_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Figures:
    """One way at one client count."""

    requests_per_s: float
    ttft_median_ms: float


async def one_request(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> float:
    """Stream one answer to its end; return the seconds to its first text."""
    started = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and _has_text(line):
                first = time.perf_counter() - started
    return first if first is not None else time.perf_counter() - started


def _has_text(line: str) -> bool:
    if not line.startswith("data:") or line.endswith("[DONE]"):
        return False
    event = json.loads(line[len("data:") :])
    if "delta" in event and isinstance(event["delta"], str):  # toolrpc's /stream
        return bool(event["delta"])
    choices = event.get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def load(url: str, body: dict[str, object], clients: int, requests: int) -> Figures:
    """`clients` clients, `requests` each, one after another; the figures of the whole load."""
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:

        async def one_client() -> list[float]:
            return [await one_request(client, url, body) for _ in range(requests)]

        started = time.perf_counter()
        ttfts = [
            t for ts in await asyncio.gather(*(one_client() for _ in range(clients))) for t in ts
        ]
        elapsed = time.perf_counter() - started
    return Figures(clients * requests / elapsed, 1000 * statistics.median(ttfts))


def main() -> None:
    """Run the benchmark; print the table; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--port-base", type=int, default=18200)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.tokens = 1, 2, 16
    from toolrpc.engines.default_model import embedded_model_path
    from toolrpc.testing import running_server, toolrpc_argv

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    log = RESULTS_DIR / f"upstream-{stamp}-servers.log"
    upstream_port, front_port = args.port_base, args.port_base + 1
    upstream = f"http://127.0.0.1:{upstream_port}"
    front = f"http://127.0.0.1:{front_port}"
    llama = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_model_path()),
        "--host", "127.0.0.1", "--port", str(upstream_port), "--n_ctx", "2048",
        "--interrupt_requests", "False", "--verbose", "False",
    ]  # fmt: skip
    toolrpc = toolrpc_argv(front_port, "--upstream", f"{upstream}/v1", "--log-level", "warning")
    straight_body: dict[str, object] = {
        "model": "m",
        "messages": [{"role": "user", "content": MESSAGE}],
        "max_tokens": args.tokens,
        "temperature": 0,
        "stream": True,
    }
    front_body: dict[str, object] = {
        "message": MESSAGE,
        "max_new_tokens": args.tokens,
        "temperature": 0,
    }
    rows: dict[int, dict[str, list[Figures]]] = {1: {"straight": [], "through": []}}
    rows[8] = {"straight": [], "through": []}
    env = {"PYTHONPATH": str(ROOT / "src")}  # this checkout's code, whatever is installed
    with (
        running_server(llama, upstream_port, log, ready_path="/v1/models", timeout_s=120),
        running_server(toolrpc, front_port, log, timeout_s=120, env=env),
    ):
        asyncio.run(load(f"{front}/stream", front_body, 1, 1))  # warm both
        for _round in range(args.rounds):
            for clients, ways in rows.items():
                url = f"{upstream}/v1/chat/completions"
                ways["straight"].append(
                    asyncio.run(load(url, straight_body, clients, args.requests))
                )
                ways["through"].append(
                    asyncio.run(load(f"{front}/stream", front_body, clients, args.requests))
                )
    report(rows, args, stamp, [llama, toolrpc])


def report(
    rows: dict[int, dict[str, list[Figures]]],
    args: argparse.Namespace,
    stamp: str,
    commands: list[list[str]],
) -> None:
    """Print the table (medians over rounds) and write the JSON."""
    print("| clients | straight req/s | through req/s | ratio | straight TTFT ms | "
          "through TTFT ms | added TTFT ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for clients, ways in rows.items():
        straight = statistics.median(f.requests_per_s for f in ways["straight"])
        through = statistics.median(f.requests_per_s for f in ways["through"])
        ttft_s = statistics.median(f.ttft_median_ms for f in ways["straight"])
        ttft_t = statistics.median(f.ttft_median_ms for f in ways["through"])
        summary[clients] = {
            "straight_rps": straight,
            "through_rps": through,
            "ratio": through / straight,
            "straight_ttft_ms": ttft_s,
            "through_ttft_ms": ttft_t,
            "added_ttft_ms": ttft_t - ttft_s,
        }
        print(
            f"| {clients} | {straight:.2f} | {through:.2f} | {through / straight:.3f} | "
            f"{ttft_s:.1f} | {ttft_t:.1f} | {ttft_t - ttft_s:+.1f} |"
        )
    out = RESULTS_DIR / f"upstream-{stamp}.json"
    out.write_text(
        json.dumps({"args": vars(args), "commands": commands, "summary": summary}, indent=2)
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
