"""Latency measurement shared by every runtime: timed runs, latency rows, and two artifacts measured alternately.

A runtime hands over ``Run``, a callable that does one inference; everything here is independent of what it runs
(onnxruntime sessions in targets/onnxruntime/profile.py, LiteRT interpreters in targets/tflite/profile.py).

* ``timed_runs``: WARMUP untimed calls (first-run allocation, lazy kernel set-up, cold caches), then RUNS calls,
  each timed on the wall clock (``time.perf_counter``) around the call alone.
* ``latency_stats``, one latency row: p50/p90/p99 (numpy's linear interpolation between order statistics), mean,
  min, max, stdev and the spread (p90 - p10) / p50, the width of the central 80% of the runs relative to the
  median: scale-free, and unmoved by the odd preempted run, unlike max - min.
* ``alternate``: two artifacts (``.onnx``/``.ort``/``.tflite`` in any mix) measured in one process, alternately:
  WARMUP runs each, then rounds of a few runs of A followed by as many of B; the result is the median over rounds
  of the per-round ratio of mean latencies A/B, with its p10-p90 range over rounds. Measuring one artifact after
  the other lets slow drifts (CPU frequency, heat, another job on the machine) fall on one side only;
  alternating puts both under the same conditions within a round, and the median over rounds ignores the rounds
  a burst of load hit (Kalibera and Jones 2013, "Rigorous Benchmarking in Reasonable Time", ISMM; Google
  Benchmark's ``--benchmark_enable_random_interleaving`` reduces run-to-run variance the same way).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from time import perf_counter

import numpy as np
from tqdm import tqdm

from edgeq.errors import RecipeError

Run = Callable[[], object]
ROUND_RUNS_MAX = 5  # runs of one artifact per round when two are measured alternately


def thread_counts(threads: int | Sequence[int]) -> list[int]:
    """THREADS as a list (one count, or several for a sweep), each once; at most four threads per core of this
    machine (more measures the scheduler, not the model)."""
    counts = list(dict.fromkeys([threads] if isinstance(threads, int) else threads))
    limit = 4 * (os.cpu_count() or 1)
    if not counts or not all(isinstance(c, int) and 1 <= c <= limit for c in counts):
        raise RecipeError(f"thread counts {counts} must be between 1 and {limit} on this machine")
    return counts


def check_runs(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise RecipeError(f"give at least 1 timed run and no negative warm-up (runs {runs}, warm-up {warmup})")


def progress_bar(total: int, desc: str, progress: bool) -> tqdm:
    """A bar on stderr; tqdm's ``disable=None`` hides it when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit="run", leave=False, disable=None if progress else True)


def timed_runs(run: Run, *, runs: int, warmup: int, bar: tqdm) -> list[float]:
    """Milliseconds of each of RUNS calls of RUN, after WARMUP untimed calls."""
    for _ in range(warmup):
        run()
        bar.update()
    times = []
    for _ in range(runs):
        start = perf_counter()
        run()
        times.append((perf_counter() - start) * 1e3)
        bar.update()
    return times


def latency_stats(times_ms: list[float]) -> dict:
    """Percentiles (numpy's linear interpolation), mean, extremes and the spread (p90 - p10) / p50."""
    p10, p50, p90, p99 = (float(v) for v in np.percentile(times_ms, [10, 50, 90, 99]))
    return {
        "runs": len(times_ms),
        "p50": p50,
        "p90": p90,
        "p99": p99,
        "mean": statistics.fmean(times_ms),
        "min": min(times_ms),
        "max": max(times_ms),
        "stdev": statistics.stdev(times_ms) if len(times_ms) > 1 else 0.0,
        "spread": (p90 - p10) / p50 if p50 else 0.0,
    }


def format_latency_table(rows: list[dict], label: str, labels: list[str]) -> list[str]:
    """One line per row of latency_stats figures, LABELS in the first column headed LABEL."""
    width = max(len(label), *(len(text) for text in labels))
    lines = [
        f"  {label:<{width}} {'runs':>5} {'p50 ms':>10} {'p90 ms':>10} {'p99 ms':>10} {'mean ms':>10} "
        f"{'min ms':>10} {'spread':>7}"
    ]
    for text, row in zip(labels, rows, strict=True):
        lines.append(
            f"  {text:<{width}} {row['runs']:>5} {row['p50']:>10.3f} {row['p90']:>10.3f} {row['p99']:>10.3f} "
            f"{row['mean']:>10.3f} {row['min']:>10.3f} {100 * row['spread']:>6.0f}%"
        )
    return lines


def alternation_plan(runs: int) -> tuple[int, int]:
    """(rounds, runs per round) for RUNS runs of each artifact: at least 10 rounds where RUNS allows it."""
    per_round = min(ROUND_RUNS_MAX, max(1, runs // 10))
    return runs // per_round, per_round


def alternate(
    artifact_a: str,
    make_a: Callable[[int], tuple[Run, str]],
    artifact_b: str,
    make_b: Callable[[int], tuple[Run, str]],
    *,
    threads: Sequence[int],
    runs: int,
    warmup: int,
    progress: bool = False,
) -> dict:
    """ARTIFACT_A and ARTIFACT_B measured alternately, per thread count: the median over rounds of the
    per-round ratio of mean latencies A/B. MAKE_A and MAKE_B take a thread count and return (one inference per
    call, the runtime's name)."""
    rounds, per_round = alternation_plan(runs)
    total = len(threads) * 2 * (warmup + rounds * per_round)
    rows = []
    with progress_bar(total, "alternating A/B", progress) as bar:
        for count in threads:
            (run_a, runtime_a), (run_b, runtime_b) = make_a(count), make_b(count)
            timed_runs(run_a, runs=0, warmup=warmup, bar=bar)
            timed_runs(run_b, runs=0, warmup=warmup, bar=bar)
            times_a, times_b, ratios = [], [], []
            for _ in range(rounds):
                round_a = timed_runs(run_a, runs=per_round, warmup=0, bar=bar)
                round_b = timed_runs(run_b, runs=per_round, warmup=0, bar=bar)
                ratios.append(statistics.fmean(round_a) / statistics.fmean(round_b))
                times_a += round_a
                times_b += round_b
            ratio_p10, ratio_p90 = (float(v) for v in np.percentile(ratios, [10, 90]))
            rows.append(
                {
                    "threads": count,
                    "ratio": statistics.median(ratios),
                    "ratio_p10": ratio_p10,
                    "ratio_p90": ratio_p90,
                    "a_ms": latency_stats(times_a),
                    "b_ms": latency_stats(times_b),
                }
            )
    return {
        "a": {"artifact": artifact_a, "runtime": runtime_a},
        "b": {"artifact": artifact_b, "runtime": runtime_b},
        "rounds": rounds,
        "runs_per_round": per_round,
        "warmup": warmup,
        "rows": rows,
    }


def format_alternation(result: dict) -> str:
    a, b = result["a"], result["b"]
    lines = [
        f"A: {a['artifact']} ({a['runtime']})",
        f"B: {b['artifact']} ({b['runtime']})",
        f"measured alternately, per thread count: {result['warmup']} warm-up runs each, then "
        f"{result['rounds']} rounds of {result['runs_per_round']} run(s) of A and {result['runs_per_round']} of B",
        f"  {'threads':>7} {'A p50 ms':>10} {'B p50 ms':>10} {'A/B':>7}  {'A/B p10-p90 over rounds':>23}",
    ]
    for row in result["rows"]:
        lines.append(
            f"  {row['threads']:>7} {row['a_ms']['p50']:>10.3f} {row['b_ms']['p50']:>10.3f} "
            f"{row['ratio']:>7.3f}  {row['ratio_p10']:>11.3f} - {row['ratio_p90']:.3f}"
        )
    lines.append("A/B: the median over rounds of (mean of A's runs) / (mean of B's runs); over 1, A is slower")
    return "\n".join(lines)
