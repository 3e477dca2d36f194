"""Profiling .onnx/.ort artifacts in onnxruntime.

* ``profile``: latency per thread count (``intra_op_num_threads``; one ``sweep`` row each): WARMUP untimed
  runs, then RUNS timed ``session.run`` calls, one latency row of edgeq.measure.latency (p50/p90/p99, spread). Then a
  per-node and per-op-type breakdown from ORT's own profiler (``SessionOptions.enable_profiling``: a
  Chrome-trace JSON with one ``<node>_kernel_time`` event per node and run and one ``model_run`` event per
  run; onnxruntime.ai/docs/performance/tune-performance/profiling-tools.html), at the first thread count, in a
  second session, so that the profiler's own cost stays out of the latency rows. The accounted share is the
  per-node kernel time summed over nodes (a mean per run) divided by the mean wall time of the very same
  profiled runs, timed around ``session.run`` in that session. The unprofiled p50 is not the right
  denominator: profiling adds its own cost to every node (two clock reads and an event record), so on a small
  model the kernel sum can exceed the unprofiled latency and the "share" says nothing; the other session runs
  at another moment, with other caches and another load on a shared machine; and a sum of per-node means is a
  mean, so the denominator must be a mean, not a median. Measured this way the share is at most 1 (the
  sequential executor runs the kernels inside ``session.run``, one after another) and the rest is measured
  too: ``in_onnxruntime`` = mean ``model_run`` duration - kernel sum (the executor walking the graph,
  allocating intermediate tensors from the arena, the profiler's bookkeeping) and ``outside_onnxruntime`` =
  wall time - ``model_run`` (the Python binding: wrapping the numpy inputs as OrtValues, copying the outputs
  back to numpy). A share under 90% is flagged: the per-op table then misses too much of a run to guide
  optimization. The report also gives the unprofiled mean at that thread count, since the profiler slows a run
  down: measured on MobileNetV2 (int8 QDQ, 1 thread), 92% accounted (kernels 4.2 ms of 4.6 ms per profiled
  run; unprofiled 3.8 ms); on the digits CNN, whose 27 kernels take microseconds each, 20-85% across runs (profiled
  runs 0.24-1 ms, unprofiled 0.02-0.07 ms; BENCHMARKS.md, Profiling): the profiler's cost per node exceeds the
  kernels' own time, so on such a model the per-op milliseconds are to be read as shares, not as latencies.
* ``runner``: one inference per call, for edgeq.measure.latency.alternate (A/B ratios against another artifact).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from edgeq.io.host import this_cpu_exact_int8
from edgeq.io.onnx_model import load_model
from edgeq.io.session import random_inputs, session
from edgeq.measure.latency import (
    Run,
    format_latency_table,
    latency_stats,
    progress_bar,
    thread_counts,
    timed_runs,
)
from edgeq.passes.limit_weight_pairs import pairs_within
from edgeq.quantization.weight_pairs import PAIR_LIMIT
from edgeq.targets.onnxruntime.fusion import fusion_report, is_integer_kernel, sandwiches_text

ACCOUNTED_SHARE_BAR = 0.9  # the per-op table must explain at least this share of a run to guide optimization
SLOWEST_NODES = 10  # nodes listed by name in the text report (the JSON has them all)


def runner(
    model_path: str | Path,
    threads: int,
    inputs: dict[str, np.ndarray] | None = None,
    exact_int8: bool | None = None,
) -> tuple[Run, str]:
    """(one inference of the .onnx/.ort per call, on INPUTS or seeded random ones; the runtime's name), on
    onnxruntime's exact int8 kernels if EXACT_INT8 (default: ``exact_kernels_needed``)."""
    exact = exact_kernels_needed(Path(model_path)) if exact_int8 is None else exact_int8
    runner = session(Path(model_path), threads=threads, exact_int8=exact)
    feeds = inputs or random_inputs(runner)
    kernels = "exact int8 kernels" if exact else "default kernels"
    return partial(runner.run, None, feeds), f"onnxruntime {ort.__version__}, CPU, {kernels}"


def exact_kernels_needed(model_path: Path) -> bool:
    """Time with ONNX Runtime's exact int8 kernels unless this CPU's default ones are exact (VNNI, ARM64) or the
    model's GEMM weight pairs are bounded (an artifact built for --cpu x86-avx2, or 4-bit weights): then the default
    kernels a deployment uses are exact too. An .ort file's weights cannot be read here: exact kernels."""
    if this_cpu_exact_int8():
        return False
    return model_path.suffix != ".onnx" or not pairs_within(load_model(model_path), PAIR_LIMIT)


def profile(
    model_path: str | Path,
    *,
    runs: int = 100,
    warmup: int = 10,
    threads: int | Sequence[int] = 1,
    per_op: bool = True,
    inputs: dict[str, np.ndarray] | None = None,
    progress: bool = False,
) -> dict:
    """One latency row (ms) per thread count in THREADS (``sweep``) and, with PER_OP, the per-node and
    per-op-type breakdown at the first thread count, whose row is also the headline ``latency_ms``."""
    model_path = Path(model_path)
    counts = thread_counts(threads)
    profiled_runs = max(10, min(runs, 50))
    total = len(counts) * (warmup + runs) + (warmup + profiled_runs if per_op else 0)
    sweep = []
    exact = exact_kernels_needed(model_path)
    with progress_bar(total, f"profiling {model_path.name}", progress) as bar:
        for count in counts:
            run, runtime = runner(model_path, count, inputs, exact)
            times = timed_runs(run, runs=runs, warmup=warmup, bar=bar)
            sweep.append({"threads": count, **latency_stats(times)})
        breakdown = (
            _per_op_breakdown(model_path, inputs, counts[0], exact, runs=profiled_runs, warmup=warmup, bar=bar)
            if per_op
            else None
        )
    headline = {key: value for key, value in sweep[0].items() if key != "threads"}
    result = {
        "artifact": str(model_path),
        "runtime": runtime,
        "size_bytes": model_path.stat().st_size,
        "warmup": warmup,
        "threads": counts[0],
        "runs": runs,
        "latency_ms": headline,
        "sweep": sweep,
    }
    if breakdown is not None:
        result["per_op"] = {**breakdown, "unprofiled_latency_ms": sweep[0]["mean"]}
    if model_path.suffix == ".onnx":
        result["fusion"] = fusion_report(model_path, threads=counts[0]).to_dict()
    return result


def _per_op_breakdown(
    model_path: Path,
    inputs: dict[str, np.ndarray] | None,
    threads: int,
    exact: bool,
    *,
    runs: int,
    warmup: int,
    bar: tqdm,
) -> dict:
    """Mean kernel time per node over RUNS profiled runs, and the share of those runs' own latency it explains
    (the module docstring says why that is the denominator)."""
    with tempfile.TemporaryDirectory() as tmp:
        profiled = session(model_path, threads=threads, profile_prefix=Path(tmp) / "edgeq_profile", exact_int8=exact)
        feeds = inputs or random_inputs(profiled)
        wall_ms = timed_runs(partial(profiled.run, None, feeds), runs=runs, warmup=warmup, bar=bar)
        trace = json.loads(Path(profiled.end_profiling()).read_text())
    model_runs = sorted((e for e in trace if e.get("name") == "model_run"), key=lambda e: e["ts"])[-runs:]
    start = model_runs[0]["ts"]
    per_node: dict[str, float] = defaultdict(float)
    node_type: dict[str, str] = {}
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= start:
            name = event["name"][: -len("_kernel_time")]
            per_node[name] += event["dur"] / 1e3 / runs
            node_type[name] = event.get("args", {}).get("op_name", "?")
    per_type: dict[str, float] = defaultdict(float)
    for name, ms in per_node.items():
        per_type[node_type[name]] += ms
    kernels_ms = sum(per_node.values())
    latency_ms = statistics.fmean(wall_ms)
    in_session_ms = statistics.fmean(e["dur"] for e in model_runs) / 1e3
    share = kernels_ms / latency_ms
    return {
        "threads": threads,
        "runs": runs,
        "sum_ms": kernels_ms,
        "profiled_latency_ms": latency_ms,
        "fraction_of_latency": share,
        "outside_kernels_ms": {
            "in_onnxruntime": in_session_ms - kernels_ms,
            "outside_onnxruntime": latency_ms - in_session_ms,
        },
        "warning": None
        if share >= ACCOUNTED_SHARE_BAR
        else f"the node kernels account for {share:.0%} of a run, under {ACCOUNTED_SHARE_BAR:.0%}: "
        "the rest is per-run overhead, which dominates small models",
        "by_op_type": dict(sorted(per_type.items(), key=lambda kv: -kv[1])),
        "by_node": [
            {"node": n, "op_type": node_type[n], "ms": ms, "integer": is_integer_kernel(node_type[n])}
            for n, ms in sorted(per_node.items(), key=lambda kv: -kv[1])
        ],
    }


def format_profile(result: dict) -> str:
    lines = [
        f"{result['artifact']}: {result['runtime']}, {result['size_bytes'] / 1024:.1f} KiB, "
        f"{result['runs']} runs after {result['warmup']} warm-up",
        *format_latency_table(result["sweep"], "threads", [str(row["threads"]) for row in result["sweep"]]),
    ]
    if "fusion" in result:
        fusion = result["fusion"]
        left = fusion["float_compute"]
        names = ", ".join(left[:SLOWEST_NODES]) + (", ..." if len(left) > SLOWEST_NODES else "")
        lines.append(
            f"integer convolutions: {fusion['convs_fused']}/{fusion['convs_total']}; compute ops left in "
            f"float: {len(left)}" + (f" ({names})" if left else "")
        )
        if fusion["sandwiches"]:
            sandwiched = sandwiches_text(fusion["sandwiches"])
            lines.append(f"run in float between DequantizeLinear and QuantizeLinear: {sandwiched}")
    if "per_op" in result:
        per_op = result["per_op"]
        rest = per_op["outside_kernels_ms"]
        lines += [
            f"per-op profile (onnxruntime's profiler, {per_op['threads']} thread(s), {per_op['runs']} runs): "
            f"node kernels {per_op['sum_ms']:.3f} ms of {per_op['profiled_latency_ms']:.3f} ms per run = "
            f"{per_op['fraction_of_latency']:.0%} accounted",
            f"  the profiler's own cost: unprofiled runs take {per_op['unprofiled_latency_ms']:.3f} ms "
            "(mean); read the per-op times as shares",
            f"  not in a kernel: {rest['in_onnxruntime']:.3f} ms inside onnxruntime (executor, allocation, "
            f"profiler), {rest['outside_onnxruntime']:.3f} ms outside it (Python binding, input/output "
            "copies)",
        ]
        if per_op["warning"]:
            lines.append(f"  WARNING: {per_op['warning']}")
        lines.append(f"  {'op type (* integer kernel)':<34} {'ms/run':>9} {'share':>6}")
        for op, ms in per_op["by_op_type"].items():
            star = "*" if is_integer_kernel(op) else " "
            lines.append(f"  {op + star:<34} {ms:>9.3f} {ms / per_op['sum_ms']:>6.0%}")
        nodes = per_op["by_node"]
        lines.append(f"  slowest {min(SLOWEST_NODES, len(nodes))} of {len(nodes)} nodes:")
        for row in nodes[:SLOWEST_NODES]:
            lines.append(f"  {row['node'][:48]:<48} {row['op_type']:<20} {row['ms']:>9.3f}")
    return "\n".join(lines)
