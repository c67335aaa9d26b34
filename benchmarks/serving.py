"""Serving benchmark: toolrpc against raw llama-cpp-python and llama-cpp-python's own server.

One run measures, on the embedded GGUF and this machine's CPUs:
startup time and resident memory of `toolrpc serve`; raw `llama_cpp.Llama` decode speed (in a
subprocess, so its memory is returned before any server starts); single-stream `/stream` decode
speed and TTFT; aggregate tok/s and TTFT at 1/4/8/16 concurrent streams; TTFT of a follow-up turn
with ~1,000 tokens of history, cached versus cold; the largest inter-delta gap of a stream while a
~2,000-token prompt is prefilled beside it; and llama-cpp-python's server at 1/4/8 streams.
It prints a table with PASS/FAIL against the project's targets and writes the figures as JSON to
`benchmarks/results/serving-<timestamp>.json`. See `benchmarks/README.md`.

Run: `.venv/bin/python benchmarks/serving.py [--quick] [--skip-peer] [--port-base 18100]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

from toolrpc import testing
from toolrpc.testing import ServerProcess

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
VENV_BIN = Path(sys.executable).parent
THREADS = os.cpu_count() or 1
CTX_SIZE = 4096
SERVER_ENV = {"PYTHONPATH": str(ROOT / "src")}
"""The servers run this checkout's code, wherever the venv's editable install points (a venv
shared by several worktrees runs another one's otherwise)."""
HTTP_TIMEOUT = httpx.Timeout(10.0, read=120.0)
REQUEST_DEADLINE_S = 300.0
STARTUP_DEADLINE_S = 180.0
SETTLE_S = 2.0
BUSY_CORES = 0.1  # foreign load above which the report warns

ESSAY_PROMPT = (
    "Write a long, detailed essay of at least 3000 words about the history of the Roman Empire."
)
FOLLOW_UP_MESSAGE = "Thank you. In one sentence: what does rule 5 say?"
TOPICS = ("refunds", "shipping", "warranties", "invoices", "passwords", "deliveries", "returns")

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class Sizes:
    """How much work each phase does (`--quick` shrinks it)."""

    num_runs: int
    single_tokens: int
    concurrent_tokens: int
    concurrency_levels: tuple[int, ...]
    peer_levels: tuple[int, ...]
    midstream_tokens: int
    midstream_trigger_deltas: int


FULL = Sizes(3, 256, 128, (1, 4, 8, 16), (1, 4, 8), 256, 32)
QUICK = Sizes(1, 48, 24, (1, 8), (1, 8), 96, 16)


# ---------------------------------------------------------------- prompts


def chatml(message: str) -> str:
    """SmolLM2's ChatML prompt for one user message (the raw baseline's prompt)."""
    return f"<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n"


def handbook_system_prompt(tag: int) -> str:
    """A ~750-token system prompt; `tag` comes first so different tags share no real prefix."""
    rules = [
        f"Rule {k}: when a customer asks about {TOPICS[k % len(TOPICS)]}, answer politely, "
        f"cite policy number {k * 7 + 100}, and keep the reply under {k % 5 + 3} sentences."
        for k in range(1, 27)
    ]
    return (
        f"Handbook edition {tag}. You are a support assistant. Follow these rules.\n"
        + "\n".join(rules)
    )


def long_notes_prompt() -> str:
    """A user message of about 2,000 tokens."""
    notes = [
        f"Note {k}: the warehouse in district {k} received {k * 13 % 97} crates of apples and "
        f"{k * 29 % 89} crates of pears on day {k % 28 + 1}."
        for k in range(1, 59)
    ]
    return "Read these notes, then summarize them in one sentence.\n\n" + "\n".join(notes)


# ---------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


# ---------------------------------------------------------------- other load on the machine


def _machine_busy_s() -> float:
    """CPU seconds spent by every process on the machine so far (/proc/stat, all CPUs)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _live_children_busy_s() -> float:
    """CPU seconds of this process's children that have not been reaped yet (running servers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid():  # fields: state, ppid, ..., utime (11), stime (12)
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _own_busy_s() -> float:
    """CPU seconds of this process and its children, running (from /proc) or reaped."""
    times = os.times()
    reaped = times.children_user + times.children_system
    return times.user + times.system + reaped + _live_children_busy_s()


@dataclass
class ForeignLoad:
    """CPU time that processes other than this benchmark's used while it ran."""

    machine_start: float = field(default_factory=_machine_busy_s)
    own_start: float = field(default_factory=_own_busy_s)
    wall_start: float = field(default_factory=time.perf_counter)

    def cores(self) -> float:
        """Average number of cores busy with other work since the start (0: a quiet machine)."""
        machine = _machine_busy_s() - self.machine_start
        own = _own_busy_s() - self.own_start
        return max(machine - own, 0.0) / (time.perf_counter() - self.wall_start)


# ---------------------------------------------------------------- raw llama-cpp-python


@dataclass(frozen=True)
class RawRun:
    """One greedy streamed completion by `llama_cpp.Llama`."""

    completion_tokens: int
    finish_reason: str
    ttft_s: float
    decode_tok_s: float


@dataclass(frozen=True)
class RawResult:
    """The raw baseline: its runs, their median decode rate, and the process's RSS."""

    runs: list[RawRun]
    decode_tok_s: float
    rss_mib: float


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory (VmRSS) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _raw_run(llm: Any, prompt: str, max_tokens: int) -> RawRun:
    start = time.perf_counter()
    times: list[float] = []
    finish_reason = "?"
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0, stream=True):
        choice = chunk["choices"][0]
        if choice["text"]:
            times.append(time.perf_counter())
        finish_reason = choice["finish_reason"] or finish_reason
    # A streamed chunk is one token, except where llama-cpp-python holds back an incomplete
    # UTF-8 sequence; at max_tokens the count is exact.
    tokens = max_tokens if finish_reason == "length" else len(times)
    return RawRun(tokens, finish_reason, times[0] - start, (tokens - 1) / (times[-1] - times[0]))


def measure_raw(model_path: str, max_tokens: int, num_runs: int) -> RawResult:
    """Raw decode tok/s of `llama_cpp.Llama` on the essay prompt (run it in a subprocess)."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path, n_ctx=CTX_SIZE, n_threads=THREADS, flash_attn=False, verbose=False
    )
    _raw_run(llm, chatml("Say hello."), 8)  # warm-up
    runs = [_raw_run(llm, chatml(ESSAY_PROMPT), max_tokens) for _ in range(num_runs)]
    rss = rss_mib()
    llm.close()
    return RawResult(runs, statistics.median(r.decode_tok_s for r in runs), rss)


def measure_raw_in_subprocess(model_path: str, sizes: Sizes) -> RawResult:
    """`measure_raw` in a fresh spawned process, killed (its memory freed) when this returns."""
    with get_context("spawn").Pool(1) as pool:  # leaving the block terminates the worker
        job = pool.apply_async(measure_raw, (model_path, sizes.single_tokens, sizes.num_runs))
        result: RawResult = job.get(timeout=REQUEST_DEADLINE_S * 2)
        return result


# ---------------------------------------------------------------- server processes


@dataclass(frozen=True)
class Server:
    """A running server process (`toolrpc.testing`) and the name it has in the report."""

    name: str
    started: ServerProcess

    @property
    def base_url(self) -> str:
        return self.started.url

    @property
    def startup_s(self) -> float:
        return self.started.startup_s

    def rss_mib(self) -> float:
        return rss_mib(self.started.process.pid)


@contextlib.asynccontextmanager
async def running_server(
    name: str, argv: list[str], port: int, ready_path: str, log_path: Path
) -> AsyncIterator[Server]:
    """Launch a server, time it until `ready_path` answers 200, and always terminate it.

    Starting and stopping block the event loop on purpose: nothing else runs meanwhile, and a
    SIGTERM turned into KeyboardInterrupt must still stop the process in `finally`.
    """
    started = testing.start_server(
        argv, port, log_path, ready_path=ready_path, timeout_s=STARTUP_DEADLINE_S, cwd=ROOT,
        env=SERVER_ENV,
    )  # fmt: skip
    try:
        yield Server(name, started)
    finally:
        testing.stop_server(started)


def toolrpc_argv(port: int, extra: str = "") -> list[str]:
    """The `toolrpc serve` command line used for every toolrpc phase: the defaults (slots,
    context and KV type are what a fresh install gets), threads set to the peer's; `extra`:
    more flags, e.g. the settings before issue 17 to compare (benchmarks/README.md)."""
    return [
        str(VENV_BIN / "toolrpc"), "serve", "--host", HOST, "--port", str(port),
        "--threads", str(THREADS), *shlex.split(extra),
    ]  # fmt: skip


def peer_argv(model_path: str, port: int) -> list[str]:
    """llama-cpp-python's server; threads are set to ours (its default is half the cores)."""
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--host", HOST,
        "--port", str(port), "--n_ctx", str(CTX_SIZE), "--interrupt_requests", "False",
        "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS),
    ]  # fmt: skip


# ---------------------------------------------------------------- streaming clients


@dataclass(frozen=True)
class StreamRecord:
    """Timestamps (perf_counter) of one streamed request and its token counts."""

    start: float
    delta_times: tuple[float, ...]
    end: float
    completion_tokens: int
    prompt_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str = ""
    result: JSONDict | None = None

    @property
    def first_text(self) -> float:
        """When the first text arrived (the end, for a stream that had none)."""
        return self.delta_times[0] if self.delta_times else self.end

    @property
    def ttft_s(self) -> float:
        return self.first_text - self.start

    @property
    def decode_tok_s(self) -> float:
        return (self.completion_tokens - 1) / (self.end - self.first_text)


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    if response.status_code != 200:
        body = (await response.aread()).decode(errors="replace")
        raise RuntimeError(f"HTTP {response.status_code}: {body[:500]}")
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()


async def stream_toolrpc(client: httpx.AsyncClient, base_url: str, body: JSONDict) -> StreamRecord:
    """POST /stream, timing every `delta` event, until `done`. Raises on an `error` event."""
    async with asyncio.timeout(REQUEST_DEADLINE_S):
        start = time.perf_counter()
        times: list[float] = []
        async with client.stream("POST", base_url + "/stream", json=body) as response:
            async for data in _sse_data(response):
                event = json.loads(data)
                if "delta" in event:
                    times.append(time.perf_counter())
                elif "error" in event:
                    raise RuntimeError(f"/stream error {event.get('code')}: {event['error']}")
                elif event.get("done"):
                    result, usage = event["result"], event["result"]["usage"]
                    return StreamRecord(
                        start=start,
                        delta_times=tuple(times),
                        end=time.perf_counter(),
                        completion_tokens=usage["completion_tokens"],
                        prompt_tokens=usage["prompt_tokens"],
                        cached_tokens=usage["cached_tokens"],
                        finish_reason=result["finish_reason"],
                        result=result,
                    )
    raise RuntimeError("/stream ended without a done event")


async def stream_peer(client: httpx.AsyncClient, base_url: str, body: JSONDict) -> StreamRecord:
    """POST /v1/chat/completions with stream=true, timing every chunk that carries content."""
    async with asyncio.timeout(REQUEST_DEADLINE_S):
        start = time.perf_counter()
        times: list[float] = []
        finish_reason = ""
        url = base_url + "/v1/chat/completions"
        async with client.stream("POST", url, json=body) as response:
            async for data in _sse_data(response):
                if data == "[DONE]":
                    break
                choice = json.loads(data)["choices"][0]
                if choice["delta"].get("content"):
                    times.append(time.perf_counter())
                finish_reason = choice.get("finish_reason") or finish_reason
    # No usage in its stream (no stream_options): one content chunk is one token; exact at length.
    tokens = body["max_tokens"] if finish_reason == "length" else len(times)
    return StreamRecord(start, tuple(times), time.perf_counter(), tokens, 0, 0, finish_reason)


def toolrpc_body(message: str, max_new_tokens: int, **extra: Any) -> JSONDict:
    """A greedy `/stream` body."""
    return {"message": message, "max_new_tokens": max_new_tokens, "temperature": 0, **extra}


def peer_body(message: str, max_tokens: int) -> JSONDict:
    """A greedy streamed OpenAI chat completion body."""
    return {
        "messages": [{"role": "user", "content": message}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }


# ---------------------------------------------------------------- phases


@dataclass(frozen=True)
class SingleResult:
    """Single-stream `/stream` decode: median of the runs."""

    decode_tok_s: float
    ttft_s: float
    completion_tokens: list[int]
    finish_reasons: list[str]
    decode_tok_s_runs: list[float]
    raw_decode_tok_s: float
    """Raw llama-cpp-python decode measured alternately with these runs (median)."""
    raw_decode_tok_s_runs: list[float]


@dataclass(frozen=True)
class ConcurrencyResult:
    """N concurrent streams: aggregate throughput and TTFT percentiles."""

    num_clients: int
    wall_s: float
    total_tokens: int
    aggregate_tok_s: float
    ttft_p50_s: float
    ttft_p95_s: float


@dataclass(frozen=True)
class PrefixResult:
    """TTFT of a follow-up turn with ~1k tokens of history: after its first turn, and cold."""

    first_turn_prompt_tokens: int
    first_turn_completion_tokens: int
    prompt_tokens: int
    cached_ttft_s: float
    cached_tokens: int
    cold_ttft_s: float
    cold_cached_tokens: int
    cached_ttfts: list[float]
    cold_ttfts: list[float]
    paused_ttft_s: float
    paused_cached_tokens: int
    paused_cold_ttft_s: float


@dataclass(frozen=True)
class BurstResult:
    """Eight clients arriving together against the same eight prompts sent one by one."""

    one_by_one_ttfts: list[float]
    one_by_one_total_s: float
    """The sum of the one-by-one TTFTs: the burst's last first token if prefilled in turn."""
    burst_ttfts: list[float]
    burst_ttft_p95_s: float
    max_waiting: float | None
    """Most sequences queued while the burst ran (`/metrics`; None: not found). A request waits
    there from its arrival to the next step even with a slot free, so this counts those too."""
    max_running: float | None
    """Most sequences holding a slot at once while the burst ran: all of them were served at
    once when it reaches `BURST_CLIENTS`."""


@dataclass(frozen=True)
class MidstreamResult:
    """Inter-delta gaps of a stream while a long prompt is prefilled beside it."""

    long_prompt_tokens: int
    long_ttft_s: float
    max_gap_during_prefill_s: float
    median_gap_s: float
    max_gap_overall_s: float


async def single_stream(
    client: httpx.AsyncClient, url: str, sizes: Sizes, model_path: str
) -> SingleResult:
    """The essay prompt through `/stream`, `num_runs` times, each run right after a raw
    llama-cpp-python run of the same prompt in a fresh process (gone before the stream starts:
    in the one run with an idle loaded one beside the server, `/stream` decoded at 79-86 tok/s
    while the raw runs between gave 97-110): the CPU's speed drifts by
    10-25% between minutes on this machine, so the ratio is taken between neighbours. After each
    stream the server is left `SETTLE_S` to finish prefilling the answer again in the
    background, so the next raw run has the CPU to itself."""
    body = toolrpc_body(ESSAY_PROMPT, sizes.single_tokens)
    records: list[StreamRecord] = []
    raws: list[RawRun] = []
    one_run = dataclasses.replace(sizes, num_runs=1)
    for _ in range(sizes.num_runs):
        raw = await asyncio.to_thread(measure_raw_in_subprocess, model_path, one_run)
        raws.extend(raw.runs)
        await asyncio.sleep(0.5)
        records.append(await stream_toolrpc(client, url, body))
        await asyncio.sleep(SETTLE_S)
    return SingleResult(
        statistics.median(r.decode_tok_s for r in records),
        statistics.median(r.ttft_s for r in records),
        [r.completion_tokens for r in records],
        [r.finish_reason for r in records],
        [r.decode_tok_s for r in records],
        statistics.median(r.decode_tok_s for r in raws),
        [r.decode_tok_s for r in raws],
    )


BURST_CLIENTS = 8
WAITING_GAUGE = "toolrpc_waiting_sequences"
RUNNING_GAUGE = "toolrpc_running_sequences"


async def sequence_gauges(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The server's waiting and running sequence gauges from `/metrics` (those it has)."""
    response = await client.get(url + "/metrics")
    gauges: dict[str, float] = {}
    for line in response.text.splitlines():
        name, _, value = line.partition(" ")
        if name in (WAITING_GAUGE, RUNNING_GAUGE):
            gauges[name] = float(value.split()[0])
    return gauges


async def burst(client: httpx.AsyncClient, url: str, sizes: Sizes) -> BurstResult:
    """`BURST_CLIENTS` distinct essay prompts one by one (each alone on the server), then as many
    new ones at once (distinct from the first set at their first words, so neither reuses the
    other's prefix), while `/metrics` is polled for requests waiting for a slot."""
    solo: list[StreamRecord] = []
    for i in range(BURST_CLIENTS):
        solo.append(
            await stream_toolrpc(client, url, toolrpc_body(f"Alone {i}. {ESSAY_PROMPT}", 8))
        )
        await asyncio.sleep(SETTLE_S / 4)  # the background prefill of its answer
    await asyncio.sleep(SETTLE_S)
    seen: list[dict[str, float]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(await sequence_gauges(client, url))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    bodies = [
        toolrpc_body(f"Together {i}. {ESSAY_PROMPT}", sizes.concurrent_tokens)
        for i in range(BURST_CLIENTS)
    ]
    try:
        records = await asyncio.gather(*(stream_toolrpc(client, url, b) for b in bodies))
    finally:
        done.set()
        await watcher
    waiting = [g[WAITING_GAUGE] for g in seen if WAITING_GAUGE in g]
    running = [g[RUNNING_GAUGE] for g in seen if RUNNING_GAUGE in g]
    solo_ttfts = [r.ttft_s for r in solo]
    return BurstResult(
        one_by_one_ttfts=solo_ttfts,
        one_by_one_total_s=sum(solo_ttfts),
        burst_ttfts=[r.ttft_s for r in records],
        burst_ttft_p95_s=percentile([r.ttft_s for r in records], 95),
        max_waiting=max(waiting, default=None),
        max_running=max(running, default=None),
    )


async def concurrent(
    num_clients: int, send: Callable[[int], Awaitable[StreamRecord]]
) -> ConcurrencyResult:
    """Run `send(i)` for i in range(num_clients) at once; aggregate over the phase's wall time."""
    start = time.perf_counter()
    records = await asyncio.gather(*(send(i) for i in range(num_clients)))
    wall = time.perf_counter() - start
    total = sum(r.completion_tokens for r in records)
    ttfts = [r.ttft_s for r in records]
    return ConcurrencyResult(
        num_clients, wall, total, total / wall, percentile(ttfts, 50), percentile(ttfts, 95)
    )


def client_prompt(index: int) -> str:
    """The essay prompt, made distinct per client."""
    return f"Client {index + 1}. {ESSAY_PROMPT}"


async def toolrpc_concurrency(
    client: httpx.AsyncClient, url: str, sizes: Sizes
) -> list[ConcurrencyResult]:
    """Aggregate tok/s and TTFT of toolrpc at each concurrency level."""

    tokens = sizes.concurrent_tokens

    async def send(i: int) -> StreamRecord:
        return await stream_toolrpc(client, url, toolrpc_body(client_prompt(i), tokens))

    return [await concurrent(n, send) for n in sizes.concurrency_levels]


async def peer_concurrency(
    client: httpx.AsyncClient, url: str, sizes: Sizes
) -> list[ConcurrencyResult]:
    """Aggregate tok/s and TTFT of llama-cpp-python's server at each concurrency level."""

    tokens = sizes.concurrent_tokens

    async def send(i: int) -> StreamRecord:
        return await stream_peer(client, url, peer_body(client_prompt(i), tokens))

    await stream_peer(client, url, peer_body("Say hello.", 8))  # warm-up
    return [await concurrent(n, send) for n in sizes.peer_levels]


def follow_up_body(first_turn: StreamRecord) -> JSONDict:
    """The follow-up turn: the first turn's returned history plus a short new message."""
    assert first_turn.result is not None
    return toolrpc_body(FOLLOW_UP_MESSAGE, 16, history=first_turn.result["history"])


@dataclass(frozen=True)
class Conversation:
    """A first turn and its follow-up, sent right after it or after `pause_s` (its body is
    replayed cold later)."""

    first: StreamRecord
    follow_up_body: JSONDict
    follow_up: StreamRecord
    pause_s: float = 0.0


PAUSE_S = 2.0
"""A client's pause before its next turn (a person reading, a tool running) in the paused
follow-ups, during which the server prefills the answer again in the background."""


async def prefix_conversations(
    client: httpx.AsyncClient, url: str, sizes: Sizes
) -> list[Conversation]:
    """For each run, a first turn (its own system prompt) then its follow-up, sent at once;
    then as many conversations again (other system prompts) whose follow-up waits `PAUSE_S`."""
    conversations: list[Conversation] = []
    for pause_s in (0.0, PAUSE_S):
        for run in range(sizes.num_runs):
            tag = run + (100 if pause_s else 0)
            message = "Summarize the three most important rules of this handbook in detail."
            first = await stream_toolrpc(
                client, url, toolrpc_body(message, 200, system=handbook_system_prompt(tag))
            )
            body = follow_up_body(first)
            await asyncio.sleep(pause_s)
            follow_up = await stream_toolrpc(client, url, body)
            conversations.append(Conversation(first, body, follow_up, pause_s))
    return conversations


async def midstream(client: httpx.AsyncClient, url: str, sizes: Sizes) -> MidstreamResult:
    """Stream the essay; after some deltas, send a ~2k-token prompt and time its prefill."""
    trigger = asyncio.Event()
    times: list[float] = []

    async def watched_stream() -> None:
        body = toolrpc_body(ESSAY_PROMPT, sizes.midstream_tokens)
        try:
            async with asyncio.timeout(REQUEST_DEADLINE_S):
                async with client.stream("POST", url + "/stream", json=body) as response:
                    async for data in _sse_data(response):
                        event = json.loads(data)
                        if "error" in event:
                            raise RuntimeError(f"/stream error {event.get('code')}: {event}")
                        if "delta" in event:
                            times.append(time.perf_counter())
                            if len(times) == sizes.midstream_trigger_deltas:
                                trigger.set()
        finally:
            trigger.set()  # the long request must not wait forever

    async def long_request() -> StreamRecord:
        await trigger.wait()
        return await stream_toolrpc(client, url, toolrpc_body(long_notes_prompt(), 8))

    _, long = await asyncio.gather(watched_stream(), long_request())
    return _gaps(times, long)


def _gaps(times: list[float], long: StreamRecord) -> MidstreamResult:
    """Gaps between consecutive deltas; 'during prefill' = overlapping [long.start, first delta]."""
    prefill_end = long.first_text
    pairs = list(itertools.pairwise(times))
    during = [b - a for a, b in pairs if b > long.start and a < prefill_end]
    gaps = [b - a for a, b in pairs]
    return MidstreamResult(
        long_prompt_tokens=long.prompt_tokens,
        long_ttft_s=long.ttft_s,
        max_gap_during_prefill_s=max(during, default=float("nan")),
        median_gap_s=statistics.median(gaps),
        max_gap_overall_s=max(gaps),
    )


async def warm_up(client: httpx.AsyncClient, url: str) -> None:
    """One short request, so first-request costs do not land in a measurement."""
    await stream_toolrpc(client, url, toolrpc_body("Say hello.", 8))


# ---------------------------------------------------------------- the run


@dataclass
class Results:
    """Everything one run measured (None: not measured)."""

    config: JSONDict
    raw: RawResult | None = None
    startup_s: float | None = None
    restart_startup_s: float | None = None
    rss_after_warmup_mib: float | None = None
    rss_after_load_mib: float | None = None
    single: SingleResult | None = None
    burst: BurstResult | None = None
    concurrency: list[ConcurrencyResult] = field(default_factory=list)
    prefix: PrefixResult | None = None
    midstream: MidstreamResult | None = None
    peer_startup_s: float | None = None
    peer_rss_mib: float | None = None
    peer: list[ConcurrencyResult] = field(default_factory=list)
    log_path: str = ""
    foreign_cores: float | None = None
    foreign_cores_by_phase: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def phase(results: Results, name: str) -> Iterator[None]:
    """Announce a phase and record the other processes' load during it."""
    print(name, flush=True)
    load = ForeignLoad()
    try:
        yield
    finally:
        results.foreign_cores_by_phase[name] = round(load.cores(), 3)


def new_client() -> httpx.AsyncClient:
    """An HTTP client for loopback servers (no proxies from the environment)."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=limits, trust_env=False)


async def bench_toolrpc(
    results: Results, args: argparse.Namespace, sizes: Sizes
) -> list[Conversation]:
    """Every phase on one toolrpc server; returns the conversations of the prefix phase."""
    argv = toolrpc_argv(args.port_base, args.server_flags)
    results.config["toolrpc_argv"] = argv[1:]
    log = Path(results.log_path)
    async with running_server("toolrpc", argv, args.port_base, "/health", log) as server:
        results.startup_s = server.startup_s
        async with new_client() as client:
            url = server.base_url
            await warm_up(client, url)
            results.rss_after_warmup_mib = server.rss_mib()
            with phase(results, "toolrpc single stream"):
                results.single = await single_stream(client, url, sizes, args.model_path)
            with phase(results, f"toolrpc burst of {BURST_CLIENTS}"):
                results.burst = await burst(client, url, sizes)
            with phase(results, "toolrpc concurrency"):
                results.concurrency = await toolrpc_concurrency(client, url, sizes)
            with phase(results, "toolrpc long prompt mid-stream"):
                results.midstream = await midstream(client, url, sizes)
            with phase(results, "toolrpc follow-up after first turn"):
                conversations = await prefix_conversations(client, url, sizes)
        results.rss_after_load_mib = server.rss_mib()
    return conversations


async def bench_cold_follow_ups(
    results: Results, args: argparse.Namespace, bodies: list[JSONDict], sizes: Sizes
) -> list[StreamRecord]:
    """The same follow-up requests on a restarted server, which has never seen their prefix."""
    argv = toolrpc_argv(args.port_base + 1, args.server_flags)
    log = Path(results.log_path)
    async with running_server("toolrpc (restart)", argv, args.port_base + 1, "/health", log) as s:
        results.restart_startup_s = s.startup_s
        async with new_client() as client:
            await warm_up(client, s.base_url)
            with phase(results, "toolrpc cold follow-up, restarted"):
                return [await stream_toolrpc(client, s.base_url, body) for body in bodies]


def prefix_result(
    all_conversations: list[Conversation], all_colds: list[StreamRecord]
) -> PrefixResult:
    """Median follow-up TTFTs, after the first turn (at once, and after a pause) and cold."""
    paused = [c.follow_up for c in all_conversations if c.pause_s]
    paused_colds = [r for c, r in zip(all_conversations, all_colds, strict=True) if c.pause_s]
    pairs = [(c, r) for c, r in zip(all_conversations, all_colds, strict=True) if not c.pause_s]
    conversations = [c for c, _ in pairs]
    colds = [r for _, r in pairs]
    follow_ups = [c.follow_up for c in conversations]
    return PrefixResult(
        paused_ttft_s=statistics.median(r.ttft_s for r in paused),
        paused_cached_tokens=paused[0].cached_tokens,
        paused_cold_ttft_s=statistics.median(r.ttft_s for r in paused_colds),
        first_turn_prompt_tokens=conversations[0].first.prompt_tokens,
        first_turn_completion_tokens=conversations[0].first.completion_tokens,
        prompt_tokens=follow_ups[0].prompt_tokens,
        cached_ttft_s=statistics.median(r.ttft_s for r in follow_ups),
        cached_tokens=follow_ups[0].cached_tokens,
        cold_ttft_s=statistics.median(r.ttft_s for r in colds),
        cold_cached_tokens=colds[0].cached_tokens,
        cached_ttfts=[r.ttft_s for r in follow_ups],
        cold_ttfts=[r.ttft_s for r in colds],
    )


async def bench_peer(results: Results, args: argparse.Namespace, sizes: Sizes) -> None:
    """llama-cpp-python's server at each of the peer concurrency levels."""
    model_path = results.config["model_path"]
    argv = peer_argv(model_path, args.port_base + 2)
    results.config["peer_argv"] = argv[1:]
    log = Path(results.log_path)
    async with running_server("llama_cpp.server", argv, args.port_base + 2, "/v1/models", log) as s:
        results.peer_startup_s = s.startup_s
        async with new_client() as client:
            with phase(results, "llama_cpp.server concurrency"):
                results.peer = await peer_concurrency(client, s.base_url, sizes)
        results.peer_rss_mib = s.rss_mib()


async def run_servers(results: Results, args: argparse.Namespace, sizes: Sizes) -> None:
    """The server phases, one server at a time."""
    conversations = await bench_toolrpc(results, args, sizes)
    bodies = [c.follow_up_body for c in conversations]
    colds = await bench_cold_follow_ups(results, args, bodies, sizes)
    results.prefix = prefix_result(conversations, colds)
    if not args.skip_peer:
        await bench_peer(results, args, sizes)


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class Check:
    """One target: a measured ratio or time against a bound."""

    name: str
    value: float | None
    bound: float
    is_upper_bound: bool

    @property
    def verdict(self) -> str:
        if self.value is None or self.value != self.value:  # None or NaN
            return "SKIP"
        ok = self.value <= self.bound if self.is_upper_bound else self.value >= self.bound
        return "PASS" if ok else "FAIL"


def _at(levels: list[ConcurrencyResult], num_clients: int) -> ConcurrencyResult | None:
    return next((c for c in levels if c.num_clients == num_clients), None)


def checks(r: Results) -> list[Check]:
    """The project's targets, computed from the results."""
    single = r.single.decode_tok_s if r.single else None
    ours8, peer8 = _at(r.concurrency, 8), _at(r.peer, 8)
    agg8 = ours8.aggregate_tok_s if ours8 else None
    raw = r.single.raw_decode_tok_s if r.single else None
    peer_agg8 = peer8.aggregate_tok_s if peer8 else None
    follow_up = ratio(r.prefix.cached_ttft_s, r.prefix.cold_ttft_s) if r.prefix else None
    paused = ratio(r.prefix.paused_ttft_s, r.prefix.paused_cold_ttft_s) if r.prefix else None
    max_gap = r.midstream.max_gap_during_prefill_s if r.midstream else None
    b = r.burst
    burst_vs_alone = ratio(b.burst_ttft_p95_s, b.one_by_one_total_s) if b else None
    return [
        Check("single /stream decode vs raw (alternating runs)", ratio(single, raw), 0.95, False),
        Check("8-client aggregate vs single stream", ratio(agg8, single), 1.7, False),
        Check("8-client aggregate vs llama_cpp.server @8", ratio(agg8, peer_agg8), 2.5, False),
        Check("8-client TTFT p95 (s)", ours8.ttft_p95_s if ours8 else None, 1.5, True),
        Check("follow-up TTFT cached / cold", follow_up, 0.15, True),
        Check(f"same, follow-up after a {PAUSE_S:g} s pause", paused, 0.15, True),
        Check("max gap during 2k-token prefill (s)", max_gap, 0.3, True),
        Check(f"{BURST_CLIENTS} together: TTFT p95 / sum of alone", burst_vs_alone, 1.0, True),
        Check(f"{BURST_CLIENTS} together: most served at once", b and b.max_running, 8, False),
        Check("RSS after the run (MiB)", r.rss_after_load_mib, 400, True),
    ]


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for the table ('-' when not measured)."""
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def figure_rows(r: Results) -> list[tuple[str, str]]:
    """(figure, value) rows of the raw measurements."""
    rows = [
        ("startup: launch -> /health 200 (s)", fmt(r.startup_s, 2)),
        ("startup after restart (s)", fmt(r.restart_startup_s, 2)),
        ("toolrpc RSS after warm-up (MiB)", fmt(r.rss_after_warmup_mib, 1)),
        ("toolrpc RSS after load phases (MiB)", fmt(r.rss_after_load_mib, 1)),
    ]
    if r.raw:
        rows += [
            ("raw llama-cpp decode (tok/s, median)", fmt(r.raw.decode_tok_s, 1)),
            ("raw completion tokens / finish", _tokens(r.raw.runs)),
            ("raw Llama process RSS (MiB)", fmt(r.raw.rss_mib, 1)),
        ]
    if r.single:
        rows += [
            ("/stream single decode (tok/s, median)", fmt(r.single.decode_tok_s, 1)),
            ("raw decode, alternating with it (tok/s, median)", fmt(r.single.raw_decode_tok_s, 1)),
            ("/stream single TTFT (s, median)", fmt(r.single.ttft_s)),
            ("/stream completion tokens / finish", _tokens_of(r.single)),
        ]
    if r.burst:
        b = r.burst
        rows += [
            (f"{BURST_CLIENTS} alone: TTFTs (s)", " ".join(fmt(t, 2) for t in b.one_by_one_ttfts)),
            (f"{BURST_CLIENTS} alone: sum of TTFTs (s)", fmt(b.one_by_one_total_s)),
            (f"{BURST_CLIENTS} together: TTFT p95 (s)", fmt(b.burst_ttft_p95_s)),
            (
                f"{BURST_CLIENTS} together: most queued / most served at once",
                f"{fmt(b.max_waiting, 0)} / {fmt(b.max_running, 0)}",
            ),
        ]
    rows += _level_rows("toolrpc", r.concurrency) + _level_rows("llama_cpp.server", r.peer)
    if r.prefix:
        p = r.prefix
        rows += [
            (
                "first turn prompt + completion tokens",
                f"{p.first_turn_prompt_tokens} + {p.first_turn_completion_tokens}",
            ),
            ("follow-up prompt tokens", str(p.prompt_tokens)),
            ("follow-up TTFT after first turn (s)", fmt(p.cached_ttft_s)),
            ("follow-up usage.cached_tokens", str(p.cached_tokens)),
            ("follow-up TTFT cold, restarted (s)", fmt(p.cold_ttft_s)),
            ("cold follow-up usage.cached_tokens", str(p.cold_cached_tokens)),
            (f"follow-up TTFT after a {PAUSE_S:g} s pause (s)", fmt(p.paused_ttft_s)),
            ("paused follow-up usage.cached_tokens", str(p.paused_cached_tokens)),
            ("its cold TTFT, restarted (s)", fmt(p.paused_cold_ttft_s)),
        ]
    if r.midstream:
        m = r.midstream
        rows += [
            ("long prompt tokens / its TTFT (s)", f"{m.long_prompt_tokens} / {fmt(m.long_ttft_s)}"),
            ("stream median inter-delta gap (s)", fmt(m.median_gap_s)),
            ("stream max gap during prefill (s)", fmt(m.max_gap_during_prefill_s)),
        ]
    if r.peer:
        rows += [
            ("llama_cpp.server startup (s)", fmt(r.peer_startup_s, 2)),
            ("llama_cpp.server RSS after load (MiB)", fmt(r.peer_rss_mib, 1)),
        ]
    return rows


def _tokens(runs: list[RawRun]) -> str:
    return ", ".join(f"{run.completion_tokens}/{run.finish_reason}" for run in runs)


def _tokens_of(single: SingleResult) -> str:
    pairs = zip(single.completion_tokens, single.finish_reasons, strict=True)
    return ", ".join(f"{tokens}/{reason}" for tokens, reason in pairs)


def _level_rows(name: str, levels: list[ConcurrencyResult]) -> list[tuple[str, str]]:
    return [
        (
            f"{name} x{c.num_clients}: agg tok/s | TTFT p50/p95 (s)",
            f"{fmt(c.aggregate_tok_s, 1)} | {fmt(c.ttft_p50_s)} / {fmt(c.ttft_p95_s)}",
        )
        for c in levels
    ]


def print_report(r: Results) -> None:
    """The figures table, then the targets with PASS/FAIL/SKIP."""
    print(f"\ntoolrpc serving benchmark  ({r.config['cpu_count']} CPUs, quick={r.config['quick']})")
    print("toolrpc flags: " + " ".join(r.config.get("toolrpc_argv", [])[1:]))
    if "peer_argv" in r.config:
        print("peer command:  python " + " ".join(r.config["peer_argv"]))
    print(f"\n{'figure':<52} value")
    print(f"{'other processes: mean busy cores, whole run':<52} {fmt(r.foreign_cores, 2)}")
    for name, value in figure_rows(r):
        print(f"{name:<52} {value}")
    print(f"\n{'target':<46} {'value':>8}   {'bound':<8} result")
    for c in checks(r):
        bound = f"{'<=' if c.is_upper_bound else '>='} {c.bound}"
        print(f"{c.name:<46} {fmt(c.value):>8}   {bound:<8} {c.verdict}")
    busy = {name: c for name, c in r.foreign_cores_by_phase.items() if c > BUSY_CORES}
    if busy:
        phases = ", ".join(f"{name} ({cores:.2f})" for name, cores in busy.items())
        print(
            f"\nWARNING: other processes kept cores busy during: {phases}. "
            "Those figures are not trustworthy; rerun on a quiet machine."
        )


def write_json(r: Results, path: Path) -> None:
    """The results and verdicts as JSON."""
    data = asdict(r)
    data["checks"] = [{**asdict(c), "verdict": c.verdict} for c in checks(r)]
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def git_state() -> JSONDict:
    """The commit and the files changed since it: the code that the servers ran."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return run.stdout.strip()

    return {"head": git("rev-parse", "HEAD"), "changed": git("status", "--short").splitlines()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and runs (smoke run)")
    parser.add_argument("--skip-peer", action="store_true", help="skip llama_cpp.server")
    parser.add_argument("--port-base", type=int, default=18100, help="ports P, P+1, P+2")
    parser.add_argument(
        "--server-flags",
        default="",
        help='extra `toolrpc serve` flags, one string, e.g. "--reuse-generated-kv"',
    )
    return parser.parse_args(argv)


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run every phase, print the table, write the JSON; the exit code is 0 unless a phase broke."""
    from toolrpc.engines.default_model import embedded_model_path

    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)  # so servers stop in `finally`
    sizes = QUICK if args.quick else FULL
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    model_path = str(embedded_model_path())
    args.model_path = model_path
    results = Results(
        config={"model_path": model_path, "cpu_count": THREADS, "quick": args.quick,
                "sizes": asdict(sizes), "skip_peer": args.skip_peer, "git": git_state()},
        log_path=str(RESULTS_DIR / f"serving-{stamp}-servers.log"),
    )  # fmt: skip
    status = 0
    foreign = ForeignLoad()
    try:
        with phase(results, "raw llama-cpp-python"):
            results.raw = measure_raw_in_subprocess(model_path, sizes)
        asyncio.run(run_servers(results, args, sizes))
    except (Exception, KeyboardInterrupt) as exc:  # report what was measured before it
        print(f"\nbenchmark stopped early: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    results.foreign_cores = foreign.cores()
    print_report(results)
    out = RESULTS_DIR / f"serving-{stamp}.json"
    write_json(results, out)
    print(f"\nJSON: {out}\nserver logs: {results.log_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
