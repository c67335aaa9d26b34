"""What llama.cpp itself gives when it batches, on this machine: the bound of serving.py's
8-client figure.

Drives toolrpc's llama.cpp runner directly (no scheduler, no event loop, no HTTP), the same
model, context and threads as `serving.py`:

- one sequence: the essay prompt prefilled, then `--tokens` greedy decode steps, timed from the
  first decode step (as `serving.py` times a single stream);
- eight sequences: the eight clients' prompts of `serving.py` prefilled together in batches of
  at most 512 tokens, then `--batch-tokens` decode steps of eight tokens each; reported both
  decode-only and with the prefill counted, as `serving.py`'s aggregate counts it.

The two alternate `--rounds` times: this machine's CPU speed drifts between minutes, so each
ratio is taken within a round and the median of those is reported. End-of-text is ignored:
every sequence decodes the full count, so the figures are a ceiling, not what a server with real
stops gets.

    python benchmarks/batch_bound.py            # ~1 minute
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime

from serving import CTX_SIZE, ESSAY_PROMPT, RESULTS_DIR, THREADS, chatml, client_prompt

from toolrpc.engines.default_model import embedded_model_path
from toolrpc.engines.llama_cpp import LlamaCppOptions, LlamaCppRunner
from toolrpc.generation import SamplingParams
from toolrpc.scheduling.runner import RunnerChunk

NUM_SLOTS = 16
BATCH_TOKENS = 512
GREEDY = SamplingParams(temperature=0.0)


def prefill(runner: LlamaCppRunner, prompts: dict[int, list[int]]) -> dict[int, int]:
    """Prefill each slot's prompt, packing chunks into batches of at most `BATCH_TOKENS`;
    return each slot's first sampled token."""
    pending = [(slot, start) for slot, ids in prompts.items() for start in range(0, len(ids), 64)]
    first: dict[int, int] = {}
    samplers = {slot: runner.new_sampler(GREEDY, None) for slot in prompts}
    while pending:
        chunks: list[RunnerChunk] = []
        used = 0
        while pending and used + 64 <= BATCH_TOKENS:
            slot, start = pending.pop(0)
            ids = tuple(prompts[slot][start : start + 64])
            is_last = start + 64 >= len(prompts[slot])
            chunks.append(RunnerChunk(slot, start, ids, samplers[slot] if is_last else None))
            used += len(ids)
        for chunk, result in zip(chunks, runner.step(chunks), strict=True):
            if isinstance(result, int):
                first[chunk.slot] = result
    for sampler in samplers.values():
        sampler.close()
    return first


def decode(
    runner: LlamaCppRunner, prompts: dict[int, list[int]], first: dict[int, int], steps: int
) -> None:
    samplers = {slot: runner.new_sampler(GREEDY, None) for slot in prompts}
    tokens = dict(first)
    positions = {slot: len(ids) for slot, ids in prompts.items()}
    for _ in range(steps):
        chunks = [
            RunnerChunk(slot, positions[slot], (tokens[slot],), samplers[slot]) for slot in prompts
        ]
        for chunk, result in zip(chunks, runner.step(chunks), strict=True):
            assert isinstance(result, int)
            tokens[chunk.slot] = result
            positions[chunk.slot] += 1
    for sampler in samplers.values():
        sampler.close()


def run(runner: LlamaCppRunner, texts: list[str], steps: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds) of `texts` together, `steps` decode steps each."""
    prompts = {slot: runner.tokenize(chatml(text)) for slot, text in enumerate(texts)}
    started = time.perf_counter()
    first = prefill(runner, prompts)
    prefilled = time.perf_counter()
    decode(runner, prompts, first, steps)
    done = time.perf_counter()
    for slot in prompts:
        runner.trim_slot(slot, 0)
    return prefilled - started, done - prefilled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256, help="single-stream decode steps")
    parser.add_argument("--batch-tokens", type=int, default=128, help="decode steps of each of 8")
    args = parser.parse_args()
    options = LlamaCppOptions(
        embedded_model_path(), CTX_SIZE, NUM_SLOTS, BATCH_TOKENS, num_threads=THREADS
    )
    runner = LlamaCppRunner(options)
    run(runner, ["Say hello."], 8)  # warm-up
    single, batched, with_prefill, prefill_s = [], [], [], []
    for _ in range(args.rounds):
        _, decode_s = run(runner, [ESSAY_PROMPT], args.tokens)
        single.append(args.tokens / decode_s)
        pre_s, decode_s = run(runner, [client_prompt(i) for i in range(8)], args.batch_tokens)
        batched.append(8 * args.batch_tokens / decode_s)
        with_prefill.append(8 * args.batch_tokens / (pre_s + decode_s))
        prefill_s.append(pre_s)
    runner.close()
    one, eight, eight_all = (statistics.median(v) for v in (single, batched, with_prefill))
    ratio = statistics.median(b / s for b, s in zip(batched, single, strict=True))
    ratio_all = statistics.median(b / s for b, s in zip(with_prefill, single, strict=True))
    result = {
        "single_decode_tok_s": single,
        "eight_decode_tok_s": batched,
        "eight_with_prefill_tok_s": with_prefill,
        "eight_prefill_s": prefill_s,
        "ratio_decode": ratio,
        "ratio_with_prefill": ratio_all,
        "threads": THREADS,
    }
    print(f"one sequence, decode          {one:7.1f} tok/s  runs {[round(v) for v in single]}")
    print(f"8 sequences, decode only      {eight:7.1f} tok/s  ratio {ratio:.2f}")
    print(
        f"8 sequences, prefill counted  {eight_all:7.1f} tok/s  ratio {ratio_all:.2f}"
        f"  (prefill {statistics.median(prefill_s):.2f} s)"
    )
    print("(medians; each ratio is the median of the rounds' own 8-vs-one ratios)")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"batch-bound-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
