"""The ONNX backend node tests through edgeq, every case, in-process on one core; writes BENCHMARKS.md's section.

    python benchmarks/bench_node_tests.py            # prints the counts and tables (about 30 s)
    python benchmarks/bench_node_tests.py --write    # and replaces the "ONNX backend node tests" section

Each float32-input node test of the installed onnx goes through ``edgeq.quantize`` and ``edgeq.convert(targets=
["tflite"])`` calibrated on its own inputs (tests/node_suite_cases.py: the cases, their cache and how an outcome is
classified). Printed: the counts (total, float-input, quantize ok, .tflite ok, refusals by reason code, other
one-line errors, crashes), the op types that convert, the crashes, and the ops that block the most cases (the op a
refusal names; for an unquantized graph input, the op type that reads it), which would convert the most if lowered.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import onnx
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from node_suite_cases import REFUSAL, NodeCase, Outcome, node_cases, routed_to, run_case  # noqa: E402

import edgeq  # noqa: E402
from benchmarks.bench_quantize import machine, replace_section  # noqa: E402

MARKER = "## ONNX backend node tests"
KINDS = ("opset", "user-error", "crash")  # outcomes other than converted and refused


def blocking_op(case: NodeCase, outcome: Outcome) -> str | None:
    """The op type that stopped CASE: the refused node's, or for an unquantized graph input or output, the op type
    of the first node that reads (or writes) it."""
    if outcome.kind != "refused":
        return None
    op, where = REFUSAL.match(outcome.message).groups()
    if op not in ("input", "output"):
        return op
    graph = onnx.load(case.model_path).graph
    node = next((n for n in graph.node if where in (n.input if op == "input" else n.output)), None)
    return node.op_type if node is not None else case.op_type


def run_all(cases: list[NodeCase]) -> tuple[dict[str, Outcome], float]:
    outcomes = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeq-node-") as tmp:
        for i, case in enumerate(c for c in cases if c.skip is None):
            outcomes[case.name] = run_case(case, Path(tmp) / str(i))
    return outcomes, time.perf_counter() - start


def counts_table(cases: list[NodeCase], outcomes: dict[str, Outcome]) -> list[str]:
    kinds = Counter(o.kind for o in outcomes.values())
    refused = Counter(o.code for o in outcomes.values() if o.kind == "refused")
    data = Counter(o.code for o in outcomes.values() if o.kind == "user-error")
    skipped = Counter(c.skip for c in cases if c.skip is not None)
    rows = [
        ("node tests", len(cases)),
        ("float32 inputs only (run)", len(outcomes)),
        ("quantize ok", sum(o.quantized for o in outcomes.values())),
        (".tflite ok (convert --target tflite)", kinds["converted"]),
        ("refused, one line `unsupported: <op> at <node>`", kinds["refused"]),
        *((f"- refused: {code}", n) for code, n in refused.most_common()),
        ("opset outside edgeq's range (one-line ModelError)", kinds["opset"]),
        ("data refused (one-line DataError)", kinds["user-error"]),
        *((f"- {reason}", n) for reason, n in data.most_common()),
        ("crashes (tracebacks, internal errors)", kinds["crash"]),
    ]
    lines = ["| cases | count |", "|---|---|", *(f"| {name} | {n} |" for name, n in rows)]
    shown = skipped.most_common(6)
    top = ", ".join(f"{reason} {n}" for reason, n in shown)
    others = sum(skipped.values()) - sum(n for _, n in shown)
    lines += [
        "",
        f"Skipped ({sum(skipped.values())}, an input that is not a float32 tensor): {top}, others {others}.",
    ]
    return lines


def op_table(cases: list[NodeCase], outcomes: dict[str, Outcome]) -> list[str]:
    """Per tested op type with a float case: cases, converted, and how the others stopped."""
    per_op: dict[str, Counter] = defaultdict(Counter)
    for case in cases:
        if case.name in outcomes:
            outcome = outcomes[case.name]
            per_op[case.op_type]["cases"] += 1
            per_op[case.op_type][outcome.code if outcome.kind == "refused" else outcome.kind] += 1
    converting = sorted(op for op, c in per_op.items() if c["converted"])
    header = "| op type (node test, or its function body: `_expanded`) | float cases | .tflite ok | refused | other |"
    lines = [header, "|---|---|---|---|---|"] if converting else []
    for op in converting:
        c = per_op[op]
        refused = ", ".join(f"{k} {n}" for k, n in c.items() if k not in ("cases", "converted", *KINDS))
        other = ", ".join(f"{k} {n}" for k, n in c.items() if k in KINDS)
        lines.append(f"| {op} | {c['cases']} | {c['converted']} | {refused or '-'} | {other or '-'} |")
    rest = sorted(op for op in per_op if op not in converting)
    lines += [
        *([""] if lines else []),
        f"No float case converts yet ({len(rest)} op types): {', '.join(rest)}.",
    ]
    return lines


def impact_table(cases: list[NodeCase], outcomes: dict[str, Outcome], top: int = 15) -> list[str]:
    blocked: dict[str, Counter] = defaultdict(Counter)
    for case in cases:
        op = blocking_op(case, outcomes[case.name]) if case.name in outcomes else None
        if op is not None:
            blocked[op][outcomes[case.name].code] += 1
    ranked = sorted(blocked.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:top]
    lines = ["| blocking op type | refused cases | reason codes |", "|---|---|---|"]
    lines += [
        f"| {op} | {sum(c.values())} | {', '.join(f'{k} {n}' for k, n in c.most_common())} |"
        for op, c in ranked
    ]
    return lines


def crash_lines(cases: list[NodeCase], outcomes: dict[str, Outcome]) -> list[str]:
    """One line per distinct crash: how many cases, the step, the message and where it was raised, where it is
    routed (node_suite_cases.ROUTED), the first cases."""
    by_message: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        outcome = outcomes.get(case.name)
        if outcome is not None and outcome.kind == "crash":
            routed = routed_to(outcome)
            where = f" (routed: {routed})" if routed else ""
            by_message[f"{outcome.step}: {outcome.message.splitlines()[0][:200]}{where}"].append(
                f"{case.name} ({case.op_type})"
            )
    lines = [f"- {len(names)}x {message}: {', '.join(names[:4])}" for message, names in by_message.items()]
    return lines or ["none"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the tests' budget counts
    cases = node_cases()
    outcomes, seconds = run_all(cases)
    lines = [
        MARKER,
        "",
        f"Command: `python benchmarks/bench_node_tests.py --write` (whole run {seconds / 60:.1f} min, one core)  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Versions: edgeq {edgeq.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}",
        "",
        "Every node test of the onnx wheel (`onnx.backend.test.case.node`, data generated once into",
        "benchmarks/.cache/) whose inputs are all float32, through `edgeq.quantize` and `edgeq.convert(targets=",
        '["tflite"])` in-process, calibrated on the case\'s own inputs (tests/test_onnx_node_suite.py runs the same',
        "cases in CI; how an outcome is classified: tests/node_suite_cases.py).",
        "",
        *counts_table(cases, outcomes),
        "",
        "### Op types with a converting case",
        "",
        *op_table(cases, outcomes),
        "",
        "### What blocks the most cases (what would convert the most if lowered)",
        "",
        *impact_table(cases, outcomes),
        "",
        "### Crashes",
        "",
        *crash_lines(cases, outcomes),
        "",
    ]
    print("\n".join(lines))
    if args.write:
        replace_section(MARKER, lines)


if __name__ == "__main__":
    main()
