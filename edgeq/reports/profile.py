"""``edgeq profile``: what every target that runs an artifact measures about it, and its static analysis.

Each target claiming the file adds its part (edgeq.targets): onnxruntime's latency rows, per-op profile and
fusion for an .onnx/.ort; LiteRT's latency rows for a .tflite, and TFLite Micro's arena, flash, resolver and the
Cortex-M estimate. The first target that can read the file gives the static analysis (edgeq.measure.footprint).
``compare_latency`` times two artifacts alternately (edgeq.measure.latency.alternate), each in the runtime of
its first claiming target.
"""

from __future__ import annotations

from pathlib import Path

from edgeq import targets
from edgeq.errors import UnsupportedError
from edgeq.measure.footprint import format_analysis
from edgeq.measure.latency import alternate, check_runs, thread_counts


def analyze(path: str | Path) -> dict:
    """The static analysis of the artifact at PATH by the first target that can read it."""
    path = Path(path)
    for target in targets.claiming(path):
        analysis = target.analyze(path)
        if analysis is not None:
            return analysis
    raise UnsupportedError(
        f"{path}: static analysis of this file is not supported (an .ort has no public reader in onnxruntime; "
        "analyse the .onnx it was converted from)"
    )


def profile(
    path: str | Path, *, runs: int = 100, warmup: int = 10, threads: list[int] | int = 1, progress: bool = True
) -> dict:
    """Every claiming target's profile of PATH merged into one dict, with ``analysis`` where it can be read."""
    path = Path(path)
    counts = thread_counts(threads)
    check_runs(runs, warmup)
    result: dict = {}
    claimers = targets.claiming(path)
    for target in claimers:
        result.update(target.profile(path, runs=runs, warmup=warmup, threads=counts, progress=progress))
    analysis = next((a for a in (t.analyze(path) for t in claimers) if a is not None), None)
    if analysis is not None:
        result["analysis"] = analysis
    return result


def format_profile(path: str | Path, result: dict) -> str:
    parts = [target.format_profile(result) for target in targets.claiming(path)]
    if "analysis" in result:
        parts.append(format_analysis(result["analysis"]))
    return "\n".join(part for part in parts if part)


def _runner(path: Path):
    target = targets.claiming(path)[0]  # the runtime of the file; the others add to what it measures
    return lambda threads: target.runner(path, threads)


def compare_latency(
    artifact: str | Path, other: str | Path, *, runs: int, warmup: int, threads: list[int] | int, progress: bool = True
) -> dict:
    """ARTIFACT and OTHER timed alternately, per thread count (edgeq.measure.latency.alternate)."""
    a, b = Path(artifact), Path(other)
    check_runs(runs, warmup)
    threads = thread_counts(threads)
    return alternate(
        str(a), _runner(a), str(b), _runner(b), threads=threads, runs=runs, warmup=warmup, progress=progress
    )
