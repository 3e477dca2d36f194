"""Profiling a .tflite in LiteRT.

Latency with default kernels (XNNPACK), without default delegates (the builtin CPU kernels) and with reference
kernels (BUILTIN_REF, what TFLite Micro's kernels compute), each at every requested thread count; the latency rows
(warm-up, timed ``invoke`` calls, percentiles, spread) are those of edgeq.measure.latency, whose docstring defines
them. LiteRT's Python interpreter returns no per-op timings, so there is no per-op breakdown here; the static
analysis (targets/tflite/analysis.py) gives the MACs per layer, and targets/tflite/delegation.py which ops XNNPACK
took. ``runner`` hands one configuration to
``edgeq.measure.latency.alternate`` for A/B ratios against another artifact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from edgeq.measure.latency import (
    Run,
    format_latency_table,
    latency_stats,
    progress_bar,
    thread_counts,
    timed_runs,
)
from edgeq.targets.tflite.delegation import delegated_ops, delegation_line
from edgeq.targets.tflite.interpreters import LITERT_KERNELS, invoke_litert, litert_interpreter
from edgeq.tflite_format.flatbuffer import Graph, Tensor, read

KERNEL_NAMES = {
    "default": "default kernels (XNNPACK)",
    "optimized": "builtin kernels, no default delegates",
    "reference": "reference kernels",
}
REFERENCE_RUNS_DIVISOR = 20  # reference kernels are 10-100x slower: a twentieth of the runs (at least 3)


def runner(path: str | Path, threads: int, kernels: str = "default") -> tuple[Run, str]:
    """(one inference of the .tflite in LiteRT per call, on seeded random inputs; the runtime's name)."""
    model_bytes = Path(path).read_bytes()
    run = _litert_run(model_bytes, _random_inputs(read(model_bytes)), kernels, threads)
    return run, f"LiteRT, {KERNEL_NAMES[kernels]}"


def _litert_run(model_bytes: bytes, inputs: list[np.ndarray], kernels: str, threads: int) -> Run:
    return partial(invoke_litert, litert_interpreter(model_bytes, kernels=kernels, threads=threads), inputs)


def profile(
    path: str | Path,
    *,
    runs: int = 100,
    warmup: int = 10,
    threads: int | Sequence[int] = 1,
    progress: bool = False,
) -> dict:
    """Latency of a .tflite in LiteRT, one ``sweep`` row per kernel set (default, without default delegates,
    reference with fewer runs) and thread count; ``latency_ms`` holds the first thread count's rows by
    kernel set."""
    model_bytes = Path(path).read_bytes()
    graph = read(model_bytes)
    inputs = _random_inputs(graph)
    counts = thread_counts(threads)
    plan = [  # (kernels, threads, timed runs, warm-up runs)
        (kernels, count, max(3, runs // REFERENCE_RUNS_DIVISOR), 1)
        if kernels == "reference"
        else (kernels, count, runs, warmup)
        for kernels in LITERT_KERNELS
        for count in counts
    ]
    sweep = []
    total = sum(timed + warm for _, _, timed, warm in plan)
    with progress_bar(total, f"profiling {Path(path).name}", progress) as bar:
        for kernels, count, kernel_runs, kernel_warmup in plan:
            run = _litert_run(model_bytes, inputs, kernels, count)
            times = timed_runs(run, runs=kernel_runs, warmup=kernel_warmup, bar=bar)
            sweep.append({"kernels": kernels, "threads": count, **latency_stats(times)})
    result = {
        "artifact": str(path),
        "runtime": "LiteRT",
        "size_bytes": len(model_bytes),
        "warmup": warmup,
        "threads": counts[0],
        "latency_ms": {
            row["kernels"]: {k: v for k, v in row.items() if k not in ("kernels", "threads")}
            for row in sweep
            if row["threads"] == counts[0]
        },
        "sweep": sweep,
        "ops": dict(sorted(Counter(op.opcode for op in graph.operators).items())),
        "xnnpack": delegated_ops(litert_interpreter(model_bytes, kernels="default", threads=counts[0])),
    }
    return result


def _random_inputs(graph: Graph) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [_random_input(graph.tensors[i], rng) for i in graph.inputs]


def _random_input(tensor: Tensor, rng: np.random.Generator) -> np.ndarray:
    if tensor.dtype == np.float32:
        return rng.standard_normal(tensor.shape).astype(np.float32)
    if tensor.quantization is None:  # token ids, indices: small non-negative integers, valid for any table
        return rng.integers(0, 10, tensor.shape).astype(tensor.dtype)
    info = np.iinfo(tensor.dtype)
    return rng.integers(info.min, info.max + 1, tensor.shape).astype(tensor.dtype)


def format_profile(result: dict) -> str:
    sweep = result["sweep"]
    lines = [
        f"{result['artifact']}: LiteRT, {result['size_bytes'] / 1e6:.2f} MB, {result['warmup']} warm-up runs "
        "(1 for reference kernels)",
        *format_latency_table(
            sweep, "kernels, threads", [f"{KERNEL_NAMES[row['kernels']]}, {row['threads']}" for row in sweep]
        ),
    ]
    lines.append("  ops: " + ", ".join(f"{k} {v}" for k, v in result["ops"].items()))
    lines.append("  " + delegation_line(result["xnnpack"]))
    return "\n".join(lines)
