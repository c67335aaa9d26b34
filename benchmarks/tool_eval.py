"""Tool-calling evaluation: does `create_message` call the right tool, with the right arguments?

Runs an evaluation set (`benchmarks/tool_eval_cases.json`: tools in the OpenAI form, prompts that
need a tool, prompts that need none, and follow-ups after a tool result) against `toolrpc serve`
with the embedded model, which this script starts itself on the loopback interface (once per
`--bias` value) and always terminates. It reports:

1. right decisions under `tool_choice: "auto"`: a prompt that needs a tool gets `tool_calls` with
   the expected tool, any other prompt gets `final_text` (per category and overall; how many
   follow-ups ended with `finish_reason: "loop_guard"`);
2. the share of returned calls whose arguments validate against the tool's JSON Schema (`auto` and
   `required`);
3. under `tool_choice: "required"` on the prompts that need a tool: right tool, and right tool with
   the expected argument values;
4. the router's added latency: median time of `auto` on the no-tool prompts minus the median time
   of the same prompts with `tool_choice: "none"` (which skips the router), same server, same run;
   and the median latency of every mode.

It prints a table with PASS/FAIL against the targets and writes everything as JSON to
`benchmarks/results/tool-eval-<timestamp>.json`. See `benchmarks/README.md`.

Run: `.venv/bin/python benchmarks/tool_eval.py [--bias -0.5,0,0.5,1] [--limit N]
[--server-flags "--threads 2"] [--port 18200]`
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from toolrpc import testing
from toolrpc.testing import ServerProcess

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_CASES = ROOT / "benchmarks" / "tool_eval_cases.json"
STARTUP_DEADLINE_S = 300.0
CATEGORIES = ("tool", "no_tool", "follow_up", "near_miss")
DECISION_CATEGORIES = ("tool", "no_tool", "follow_up")
"""The categories of "overall" (as before near misses were added, so figures compare)."""

TARGET_AUTO = 0.75
TARGET_SCHEMA = 1.0
TARGET_REQUIRED_ARGS = 0.80
TARGET_NEAR_MISS = 0.70

ROUTER_LINE = re.compile(r"router scores (\{.*\}) -> (\S+)")
CALL_MARKUP = re.compile(r'<tool_call>|^\s*\{\s*"name"\s*:')
"""Text that is (the start of) a tool call: a final_text must never carry it (PROTOCOL.md)."""

JSONDict = dict[str, Any]


# ---------------------------------------------------------------- evaluation set


@dataclass(frozen=True)
class EvalSet:
    tools: list[JSONDict]
    cases: list[JSONDict]
    contains_args: frozenset[str]
    extra_tools: list[JSONDict] = field(default_factory=list)
    """Offered only by the cases that name them in their `tools`."""

    def tools_for(self, case: JSONDict) -> list[JSONDict]:
        """The tools a case offers: those its `tools` names, else the set's `tools`."""
        names = case.get("tools")
        if names is None:
            return self.tools
        by_name = {t["function"]["name"]: t for t in self.tools + self.extra_tools}
        return [by_name[name] for name in names]

    def schema(self, name: str) -> JSONDict | None:
        for tool in self.tools + self.extra_tools:
            function = tool.get("function", tool)
            if function["name"] == name:
                parameters: JSONDict = function.get("parameters", {"type": "object"})
                return parameters
        return None


def load_eval_set(path: Path, limit: int | None, categories: Sequence[str] = CATEGORIES) -> EvalSet:
    """The tools and cases of `categories`; `limit` keeps the first N cases of each category."""
    data = json.loads(path.read_text(encoding="utf-8"))
    cases: list[JSONDict] = []
    taken = dict.fromkeys(CATEGORIES, 0)
    for case in data["cases"]:
        if case["category"] not in taken:
            raise ValueError(f"case {case['id']}: unknown category {case['category']!r}")
        if case["category"] not in categories:
            continue
        if limit is not None and taken[case["category"]] >= limit:
            continue
        taken[case["category"]] += 1
        cases.append(case)
    tools, extra_tools = data["tools"], data.get("extra_tools", [])
    for tool in tools + extra_tools:  # a broken schema in the evaluation set is our bug
        jsonschema.validators.validator_for(tool["function"]["parameters"]).check_schema(
            tool["function"]["parameters"]
        )
    eval_set = EvalSet(tools, cases, frozenset(data.get("match_contains", ())), extra_tools)
    for case in cases:
        try:
            eval_set.tools_for(case)
        except KeyError as exc:
            raise ValueError(f"case {case['id']}: unknown tool {exc}") from exc
    return eval_set


_WORDS = re.compile(r"\w+")


def _norm(text: str) -> str:
    return " ".join(str(text).casefold().split())


def value_matches(expected: Any, actual: Any, contains: bool) -> bool:
    """Case-insensitive match of one argument: numbers numerically, `a|b` alternatives, a list
    means every item must match, `contains` allows substring containment (free-text args)."""
    if isinstance(expected, list):
        return all(value_matches(item, actual, contains) for item in expected)
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        try:
            return math.isclose(float(actual), float(expected), rel_tol=1e-9)
        except (TypeError, ValueError):
            return False
    if actual is None or isinstance(actual, dict | list):
        return False
    got = _norm(actual)
    for alternative in str(expected).split("|"):
        want = _norm(alternative)
        if (want in got) if contains else (want == got):
            return True
    return False


COPY_SHARE = 0.8
"""A free-text value holding this share of the request's words (or more) repeats the request."""


def copies_request(value: Any, request: str) -> bool:
    """True when `value` is (nearly) the whole request rather than an argument taken from it;
    requests of four words or fewer can be their own argument."""
    asked = set(_WORDS.findall(request.casefold()))
    if not isinstance(value, str) or len(asked) <= 4:
        return False
    return len(asked & set(_WORDS.findall(value.casefold()))) >= COPY_SHARE * len(asked)


def args_match(
    expected: JSONDict, arguments: JSONDict, contains_args: frozenset[str], request: str
) -> bool:
    """Every expected argument matches (`value_matches`); one matched by containment must not
    be a copy of the request ("Do I need an umbrella in Seattle today" is not a city)."""
    return all(
        value_matches(want, arguments.get(name), name in contains_args)
        and not (name in contains_args and copies_request(arguments.get(name), request))
        for name, want in expected.items()
    )


def schema_valid(eval_set: EvalSet, call: JSONDict) -> bool:
    schema = eval_set.schema(call.get("name", ""))
    if schema is None:
        return False
    validator = jsonschema.validators.validator_for(schema)(schema)
    return validator.is_valid(call.get("arguments"))


# ---------------------------------------------------------------- server


@dataclass
class Server:
    """A running `toolrpc serve` (`toolrpc.testing`) and how much of its log was read."""

    started: ServerProcess
    log_offset: int = 0

    @property
    def base_url(self) -> str:
        return self.started.url

    @property
    def startup_s(self) -> float:
        return self.started.startup_s

    def new_log(self) -> str:
        """Server output written since the last call (for the router's debug lines)."""
        with self.started.log_path.open("rb") as log:
            log.seek(self.log_offset)
            data = log.read()
        self.log_offset += len(data)
        return data.decode("utf-8", "replace")


def toolrpc_binary() -> str:
    local = ROOT / ".venv" / "bin" / "toolrpc"
    return str(local if local.exists() else Path(sys.executable).parent / "toolrpc")


@contextlib.contextmanager
def running_server(argv: list[str], port: int, log_path: Path) -> Iterator[Server]:
    """Start `toolrpc serve`, wait for `/health` 200, and always terminate it."""
    env = {"PYTHONPATH": str(ROOT / "src")}  # this checkout's code, whatever is installed
    with testing.running_server(
        argv, port, log_path, timeout_s=STARTUP_DEADLINE_S, cwd=ROOT, env=env
    ) as started:
        yield Server(started, log_offset=log_path.stat().st_size)


# ---------------------------------------------------------------- requests


@dataclass
class Record:
    """One request and how it was judged."""

    case_id: str
    category: str
    mode: str  # auto | none | required
    latency_s: float
    type: str | None = None
    finish_reason: str | None = None
    calls: list[JSONDict] = field(default_factory=list)
    text: str | None = None  # the first 300 characters of a final_text
    leaked_call: bool = False  # final_text that is call markup (a call cut short, or unparsed)
    empty_text: bool = False  # final_text with no visible text
    error: str | None = None
    right_decision: bool | None = None  # auto only
    right_tool: bool | None = None  # required only
    right_args: bool | None = None  # required only (and auto, for reference)
    schema_valid: list[bool] = field(default_factory=list)
    router: JSONDict | None = None  # scores from the server's debug log, when available


class Client:
    def __init__(self, server: Server, eval_set: EvalSet, args: argparse.Namespace) -> None:
        self.server = server
        self.eval_set = eval_set
        self.args = args
        self.http = httpx.Client(
            timeout=httpx.Timeout(10.0, read=args.request_timeout), trust_env=False
        )
        self.next_id = 0

    def close(self) -> None:
        self.http.close()

    def params(self, case: JSONDict, mode: str) -> JSONDict:
        params: JSONDict = {
            "tools": self.eval_set.tools_for(case),
            "tool_choice": mode,
            "temperature": 0,
        }
        if self.args.max_new_tokens is not None:
            params["max_new_tokens"] = self.args.max_new_tokens
        if case["category"] == "follow_up":
            params["history"] = case["history"]
            params["tool_results"] = case["tool_results"]
        else:
            params["message"] = case["message"]
        return params

    def create_message(self, params: JSONDict) -> tuple[JSONDict | None, str | None, float]:
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": "create_message", "params": params}
        start = time.perf_counter()
        try:
            response = self.http.post(self.server.base_url + "/rpc", json=body)
            latency = time.perf_counter() - start
            reply = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - start
        if "error" in reply:
            return None, json.dumps(reply["error"])[:300], latency
        return reply["result"], None, latency

    def run(self, case: JSONDict, mode: str) -> Record:
        self.server.new_log()  # skip what came before this request
        result, error, latency = self.create_message(self.params(case, mode))
        record = Record(case["id"], case["category"], mode, latency, error=error)
        record.router = _router_scores(self.server.new_log())
        if result is not None:
            record.type = result.get("type")
            record.finish_reason = result.get("finish_reason")
            if record.type == "tool_calls":
                record.calls = [
                    {"name": c.get("name"), "arguments": c.get("arguments")}
                    for c in result.get("content") or []
                ]
            else:
                text = str(result.get("content") or "")
                record.text = text[:300]
                record.leaked_call = bool(CALL_MARKUP.search(text))
                record.empty_text = not text.strip()
        judge(record, case, self.eval_set)
        return record


def _router_scores(log_text: str) -> JSONDict | None:
    matches = ROUTER_LINE.findall(log_text)
    if not matches:
        return None
    scores_text, chosen = matches[-1]
    try:
        scores = ast.literal_eval(scores_text)
    except (ValueError, SyntaxError):
        return None
    return {"chosen": chosen, "scores": {k or "answer": round(v, 4) for k, v in scores.items()}}


def judge(record: Record, case: JSONDict, eval_set: EvalSet) -> None:
    record.schema_valid = [schema_valid(eval_set, call) for call in record.calls]
    first = record.calls[0] if record.calls else None
    expected_tool = case.get("expected_tool")
    tool_ok = first is not None and first["name"] == expected_tool
    args_ok = (
        first is not None
        and tool_ok
        and isinstance(first["arguments"], dict)
        and args_match(
            case.get("expected_args", {}),
            first["arguments"],
            eval_set.contains_args,
            case.get("message", ""),
        )
    )
    if record.mode == "auto":
        if case["category"] == "tool":
            record.right_decision = record.type == "tool_calls" and tool_ok
            record.right_args = args_ok
        else:  # no_tool, follow_up, near_miss: an empty text or a cut-off call is no answer
            record.right_decision = (
                record.type == "final_text" and not record.leaked_call and not record.empty_text
            )
    elif record.mode == "required":
        record.right_tool = tool_ok
        record.right_args = args_ok


def run_cases(client: Client, eval_set: EvalSet, records: list[Record]) -> None:
    """Every case in `auto`; each no-tool prompt also with `none` (alternating which goes first,
    so the prefix cache favours neither mode); then `required` on the prompts that need a tool.
    Appends to `records` as it goes, so a run that breaks still reports what it measured."""
    num_pairs = 0
    for case in eval_set.cases:
        modes: tuple[str, ...]
        if case["category"] == "no_tool":
            modes = ("auto", "none") if num_pairs % 2 == 0 else ("none", "auto")
            num_pairs += 1
        else:
            modes = ("auto",)
        for mode in modes:
            records.append(client.run(case, mode))
            _progress(records[-1])
    for case in eval_set.cases:
        if case["category"] == "tool":
            records.append(client.run(case, "required"))
            _progress(records[-1])


def _progress(record: Record) -> None:
    what = record.error or (
        ",".join(
            f"{c['name']}({json.dumps(c['arguments'], ensure_ascii=False)})" for c in record.calls
        )
        if record.calls
        else f"{record.type}/{record.finish_reason}: {(record.text or '')[:50]!r}"
    )
    verdict = record.right_decision if record.mode == "auto" else record.right_args
    mark = {True: "ok ", False: "BAD", None: "   "}[verdict]
    print(
        f"  {mark} {record.mode:8} {record.case_id:22} {record.latency_s:6.2f}s  {what}", flush=True
    )


def warm_up(client: Client) -> None:
    """Load the option prefixes into the cache and touch every path once (not counted)."""
    for mode in ("auto", "none", "required"):
        client.run({"id": "warm-up", "category": "tool", "message": "Hello there."}, mode)


# ---------------------------------------------------------------- summary


def _rate(flags: Sequence[bool | None]) -> JSONDict:
    values = [bool(f) for f in flags if f is not None]
    return {
        "n": len(values),
        "right": sum(values),
        "rate": sum(values) / len(values) if values else None,
    }


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(records: list[Record]) -> JSONDict:
    auto = [r for r in records if r.mode == "auto"]
    required = [r for r in records if r.mode == "required"]
    none = [r for r in records if r.mode == "none"]
    auto_by_cat = {c: [r for r in auto if r.category == c] for c in CATEGORIES}
    decided = [r for r in auto if r.category in DECISION_CATEGORIES]
    auto_no_tool = {r.case_id: r for r in auto_by_cat["no_tool"]}
    none_by_id = {r.case_id: r for r in none}
    paired = [
        auto_no_tool[i].latency_s - none_by_id[i].latency_s
        for i in auto_no_tool
        if i in none_by_id
        and auto_no_tool[i].type == "final_text"
        and none_by_id[i].type == "final_text"
    ]
    med_auto_nt = _median([r.latency_s for r in auto_by_cat["no_tool"]])
    med_none = _median([r.latency_s for r in none])
    return {
        "auto_decisions": {
            "overall": _rate([r.right_decision for r in decided]),
            "overall_with_near_miss": _rate([r.right_decision for r in auto]),
            **{c: _rate([r.right_decision for r in auto_by_cat[c]]) for c in CATEGORIES},
            "tool_right_args": _rate([r.right_args for r in auto_by_cat["tool"]]),
            "follow_up_empty_text": sum(r.empty_text for r in auto_by_cat["follow_up"]),
            "follow_up_loop_guard": sum(
                r.finish_reason == "loop_guard" for r in auto_by_cat["follow_up"]
            ),
            "errors": sum(r.error is not None for r in auto),
        },
        "final_text_problems": {  # every mode
            "leaked_call": sum(r.leaked_call for r in records),
            "empty_text": sum(r.empty_text for r in records),
            "by_mode": {
                m: {
                    "leaked_call": sum(r.leaked_call for r in records if r.mode == m),
                    "empty_text": sum(r.empty_text for r in records if r.mode == m),
                }
                for m in ("auto", "none", "required")
            },
        },
        "schema_valid": {
            "auto": _rate([v for r in auto for v in r.schema_valid]),
            "required": _rate([v for r in required for v in r.schema_valid]),
        },
        "required": {
            "right_tool": _rate([r.right_tool for r in required]),
            "right_tool_and_args": _rate([r.right_args for r in required]),
            "no_call": sum(r.type != "tool_calls" for r in required),
            "errors": sum(r.error is not None for r in required),
        },
        "latency_s": {
            "median_auto_no_tool": med_auto_nt,
            "median_none_no_tool": med_none,
            "router_added_median_diff": (
                med_auto_nt - med_none if med_auto_nt is not None and med_none is not None else None
            ),
            "router_added_paired_median": _median(paired),
            "num_paired_both_text": len(paired),
            "median_auto_tool": _median([r.latency_s for r in auto_by_cat["tool"]]),
            "median_auto_follow_up": _median([r.latency_s for r in auto_by_cat["follow_up"]]),
            "median_auto_near_miss": _median([r.latency_s for r in auto_by_cat["near_miss"]]),
            "median_auto_all": _median([r.latency_s for r in auto]),
            "median_required": _median([r.latency_s for r in required]),
        },
    }


@dataclass
class Check:
    name: str
    value: float | None
    target: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return "SKIP" if self.passed is None else "PASS" if self.passed else "FAIL"


def checks(summary: JSONDict) -> list[Check]:
    auto = summary["auto_decisions"]["overall"]["rate"]
    schema = summary["schema_valid"]
    valid_n = schema["auto"]["n"] + schema["required"]["n"]
    valid = (schema["auto"]["right"] + schema["required"]["right"]) / valid_n if valid_n else None
    req = summary["required"]["right_tool_and_args"]["rate"]
    near = summary["auto_decisions"]["near_miss"]["rate"]
    return [
        Check("near misses answered (no call)", near, f">= {TARGET_NEAR_MISS:.0%}",
              _at_least(near, TARGET_NEAR_MISS)),
        Check("right auto decisions", auto, f">= {TARGET_AUTO:.0%}", _at_least(auto, TARGET_AUTO)),
        Check("schema-valid calls (auto+required)", valid, "100%", _at_least(valid, TARGET_SCHEMA)),
        Check("required: right tool+args", req, f">= {TARGET_REQUIRED_ARGS:.0%}",
              _at_least(req, TARGET_REQUIRED_ARGS)),
    ]  # fmt: skip


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound - 1e-12


def best_run(runs: list[JSONDict]) -> JSONDict | None:
    """Most right auto decisions; ties: most right required calls, then the bias nearest 0."""
    done = [r for r in runs if r.get("summary") and r.get("complete")]
    if not done:
        return None

    def key(run: JSONDict) -> tuple[float, float, float]:
        s = run["summary"]
        return (
            s["auto_decisions"]["overall"]["rate"] or 0.0,
            s["required"]["right_tool_and_args"]["rate"] or 0.0,
            -abs(run["bias"] or 0.0),
        )

    return max(done, key=key)


# ---------------------------------------------------------------- report


def _pct(rate: JSONDict) -> str:
    if rate["rate"] is None:
        return "-"
    return f"{rate['rate']:.1%} ({rate['right']}/{rate['n']})"


def _secs(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f} s" if signed else f"{value:.3f} s"


def table_rows(summary: JSONDict) -> list[tuple[str, str]]:
    a, s, q, lat = (summary[k] for k in ("auto_decisions", "schema_valid", "required", "latency_s"))
    return [
        ("auto: right decisions, overall", _pct(a["overall"])),
        ("auto: near miss (text, no call)", _pct(a["near_miss"])),
        ("auto: overall with near misses", _pct(a["overall_with_near_miss"])),
        ("auto: needs a tool (right tool)", _pct(a["tool"])),
        ("auto: needs a tool (right tool+args)", _pct(a["tool_right_args"])),
        ("auto: no tool needed (text)", _pct(a["no_tool"])),
        ("auto: follow-up (text)", _pct(a["follow_up"])),
        ("auto: follow-ups ended by loop_guard", str(a["follow_up_loop_guard"])),
        ("auto: follow-ups answered with empty text", str(a["follow_up_empty_text"])),
        ("schema-valid calls, auto", _pct(s["auto"])),
        ("schema-valid calls, required", _pct(s["required"])),
        ("required: right tool", _pct(q["right_tool"])),
        ("required: right tool+args", _pct(q["right_tool_and_args"])),
        ("required: answered without a call", str(q["no_call"])),
        ("errors (auto / required)", f"{a['errors']} / {q['errors']}"),
        ("final_text = cut-off call (auto/none/req)", _by_mode(summary, "leaked_call")),
        ("final_text empty (auto/none/req)", _by_mode(summary, "empty_text")),
        ("median latency auto, no-tool prompts", _secs(lat["median_auto_no_tool"])),
        ("median latency none, same prompts", _secs(lat["median_none_no_tool"])),
        ("router added (difference of medians)", _secs(lat["router_added_median_diff"], True)),
        ("router added (paired median; n pairs)",
         f"{_secs(lat['router_added_paired_median'], True)}; {lat['num_paired_both_text']}"),
        ("median latency auto, tool prompts", _secs(lat["median_auto_tool"])),
        ("median latency auto, follow-ups", _secs(lat["median_auto_follow_up"])),
        ("median latency auto, near misses", _secs(lat["median_auto_near_miss"])),
        ("median latency auto, all", _secs(lat["median_auto_all"])),
        ("median latency required", _secs(lat["median_required"])),
    ]  # fmt: skip


def _by_mode(summary: JSONDict, key: str) -> str:
    by_mode = summary["final_text_problems"]["by_mode"]
    return " / ".join(str(by_mode[m][key]) for m in ("auto", "none", "required"))


def _label(run: JSONDict) -> str:
    label = "bias default" if run["bias"] is None else f"bias {run['bias']:+g}"
    return label if run.get("complete", True) else label + " (partial)"


def print_report(runs: list[JSONDict]) -> None:
    done = [r for r in runs if r.get("summary")]
    if not done:
        print("\nno run completed")
        return
    rows = [table_rows(r["summary"]) for r in done]
    width = max(len(name) for name, _ in rows[0])
    cols = [max(len(_label(r)), *(len(v) for _, v in rs)) for r, rs in zip(done, rows, strict=True)]
    print(
        "\n"
        + "figure".ljust(width)
        + "".join(" | " + _label(r).ljust(c) for r, c in zip(done, cols, strict=True))
    )
    print("-" * (width + sum(c + 3 for c in cols)))
    for i, (name, _) in enumerate(rows[0]):
        print(
            name.ljust(width)
            + "".join(" | " + rs[i][1].ljust(c) for rs, c in zip(rows, cols, strict=True))
        )
    print("\ntargets:")
    for run in done:
        verdicts = ", ".join(f"{c.name} {c.target}: {c.verdict}" for c in checks(run["summary"]))
        print(f"  {_label(run)}: {verdicts}")
    for run in done:
        wrong = [
            r for r in run["records"]
            if (r["mode"] == "auto" and r["right_decision"] is False)
            or (r["mode"] == "required" and r["right_args"] is False)
            or (r["category"] == "follow_up" and r["finish_reason"] == "loop_guard")
            or r["leaked_call"] or r["empty_text"]
        ]  # fmt: skip
        print(f"\nwrong or guarded answers, {_label(run)}: {len(wrong)}")
        for r in wrong:
            got = r["error"] or (
                "; ".join(
                    f"{c['name']}({json.dumps(c['arguments'], ensure_ascii=False)})"
                    for c in r["calls"]
                )
                or f"{r['type']}/{r['finish_reason']}: {(r['text'] or '')[:60]!r}"
            )
            routed = (r["router"] or {}).get("chosen", "?")
            print(
                f"  {r['mode']:8} {r['category']:9} {r['case_id']:22} "
                f"[router: {routed}] -> {got[:110]}"
            )
    best = best_run(runs)
    if best is not None and len(done) > 1:
        why = "most right auto decisions; ties: required tool+args, then |bias|"
        print(f"\nbest: {_label(best)} ({why})")


def git_state() -> JSONDict:
    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
        return run.stdout.strip()

    return {"head": git("rev-parse", "HEAD"), "changed": git("status", "--short").splitlines()}


# ---------------------------------------------------------------- main


def parse_biases(text: str | None) -> list[float | None]:
    if not text:
        return [None]
    return [float(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="evaluation set (JSON)")
    parser.add_argument(
        "--bias",
        default=None,
        help="comma-separated --tool-router-bias values, one server each "
        "(default: one server with the server's default)",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N cases of each category")
    parser.add_argument(
        "--categories",
        default=",".join(CATEGORIES),
        help=f"comma-separated categories to run (default: all, {','.join(CATEGORIES)})",
    )
    parser.add_argument("--port", type=int, default=18200, help="loopback port of the server")
    parser.add_argument(
        "--router",
        choices=("on", "auto", "off"),
        default="on",
        help="--tool-router of the server (default: on)",
    )
    parser.add_argument(
        "--server-flags",
        default="",
        help='extra `toolrpc serve` flags, one string, e.g. "--threads 2"',
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="max_new_tokens of every request (default: the server's, 512); a low value cuts "
        "tool calls short",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=180.0,
        help="read timeout of one request, seconds (default 180)",
    )
    parser.add_argument(
        "--no-router-scores",
        action="store_true",
        help="do not run the server at --log-level debug to record router scores",
    )
    args = parser.parse_args(argv)  # fmt: skip
    args.biases = parse_biases(args.bias)
    args.categories = tuple(c for c in args.categories.split(",") if c)
    if unknown := set(args.categories) - set(CATEGORIES):
        parser.error(f"unknown categories: {', '.join(sorted(unknown))}")
    extra = shlex.split(args.server_flags)
    if args.bias and any(f.startswith("--tool-router-bias") for f in extra):
        parser.error("give the bias with --bias or in --server-flags, not both")
    if any(f == "--port" or f.startswith("--port=") for f in extra):
        parser.error("give the port with --port")
    args.extra_flags = extra
    return args


def server_argv(args: argparse.Namespace, bias: float | None) -> list[str]:
    argv = [toolrpc_binary(), "serve", "--host", HOST, "--port", str(args.port),
            "--tool-router", args.router]  # fmt: skip
    if bias is not None:
        argv += ["--tool-router-bias", repr(bias)]
    if not args.no_router_scores:
        argv += ["--log-level", "debug"]
    extra: list[str] = args.extra_flags
    return argv + extra


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """One server per bias; the exit code is 0 when every run completed, whatever the verdicts."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)  # so the server stops in `finally`
    eval_set = load_eval_set(args.cases, args.limit, args.categories)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS_DIR / f"tool-eval-{stamp}-server.log"
    counts = {c: sum(k["category"] == c for k in eval_set.cases) for c in CATEGORIES}
    output: JSONDict = {
        "config": {
            "cases_file": str(args.cases), "limit": args.limit, "case_counts": counts,
            "categories": args.categories,
            "num_tools": len(eval_set.tools), "biases": args.biases, "router": args.router,
            "server_flags": args.extra_flags, "max_new_tokens": args.max_new_tokens,
            "temperature": 0, "cpu_count": os.cpu_count(), "git": git_state(),
        },
        "log_path": str(log_path),
        "runs": [],
    }  # fmt: skip
    status = 0
    try:
        for bias in args.biases:
            run: JSONDict = {"bias": bias, "argv": server_argv(args, bias), "complete": False}
            output["runs"].append(run)
            print(f"\n{_label({'bias': bias})}: {shlex.join(run['argv'])}", flush=True)
            records: list[Record] = []
            try:
                with running_server(run["argv"], args.port, log_path) as server:
                    run["startup_s"] = server.startup_s
                    client = Client(server, eval_set, args)
                    try:
                        warm_up(client)
                        started = time.perf_counter()
                        run_cases(client, eval_set, records)
                        run["wall_s"] = time.perf_counter() - started
                        run["complete"] = True
                    finally:
                        client.close()
            finally:
                run["records"] = [asdict(r) for r in records]
                if records:
                    run["summary"] = summarize(records)
                    run["checks"] = [
                        {**asdict(c), "verdict": c.verdict} for c in checks(run["summary"])
                    ]
    except (Exception, KeyboardInterrupt) as exc:  # report what was measured before it
        print(f"\nevaluation stopped early: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    print_report(output["runs"])
    best = best_run(output["runs"])
    output["best_bias"] = None if best is None else best["bias"]
    out = RESULTS_DIR / f"tool-eval-{stamp}.json"
    out.write_text(json.dumps(output, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"\nJSON: {out}\nserver log: {log_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
