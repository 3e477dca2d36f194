"""bench_mixed.py's LiteRT columns and plots: each edgeq row's layer choices as a .tflite, its size, LiteRT latency,
metric and bit-exactness, and per case the Pareto front of size and latency against the metric, as a PNG.

* Conversion: each row's recipe (``weight_bits``, ``layers``: the row's layer choices) goes through
  ``edgeq.convert(..., targets=("tflite",))``, what `edgeq convert --target tflite --layer ...` runs: calibration,
  the int8 .tflite (TFLite keeps every layer integer; 4-bit weights are stored as int8, so int4 buys no bytes,
  edgeq.mixed.allocation), its validation and ``verification`` (the .tflite's outputs against edgeq's integer
  reference on 4 samples, in LiteRT's reference kernels and TFLite Micro: ``bit_exact``). fp32 is the float .tflite
  of the uniform int8 conversion (``precision="float"``: the same graph in float32, the weights being the int8
  model's, dequantized: a speed reference whose SQNR is not inf). A row with float layers is
  refused by the TFLite lowering (no bit-exact float32 Conv/FullyConnected island), and says so.
* Metric: the .tflite run in LiteRT's default kernels (XNNPACK) on the evaluation samples the ONNX Runtime rows
  are scored on, outputs dequantized into the ONNX layout (edgeq.reference.interface), scored like those rows.
* Latency: the tflite target's ``runner`` (1 thread, default kernels = XNNPACK, seeded random inputs, as `edgeq
  profile` runs it) timed with edgeq.measure.latency's ``timed_runs``; the .tflite files of a case are measured
  in interleaved rounds (ROUNDS rounds, each a few runs of every file), so a burst of load on the shared machine
  falls on all of them alike (edgeq.measure.latency's docstring); the p50 over all timed runs.
* Pareto front: a point is on the front when no other point of its series costs at most as much (bytes or ms)
  with a metric at least as high, one of them strictly better.
"""

from __future__ import annotations

import math
import re
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

import edgeq
from edgeq import targets as registry
from edgeq.errors import EdgeqError, first_line
from edgeq.io.figures import pyplot, save_png
from edgeq.measure.latency import latency_stats, progress_bar, timed_runs
from edgeq.mixed.workbench import worst_sqnr
from edgeq.reference.interface import float_outputs, graph_batch, model_inputs
from edgeq.targets.tflite.interpreters import invoke_litert, litert_interpreter
from edgeq.tflite_format.flatbuffer import read

FLOAT = "float"  # a row's tflite recipe: the float .tflite
THREADS = 1
WARMUP = 10
ROUNDS = 20
ROUND_MS = 40.0  # runs of one file per round: about this long, at least one
ROUND_RUNS_MAX = 20


def recipe(layers: dict[str, str] | None = None, weight_bits: int = 8, calib_method: str = "auto") -> dict:
    """A row's tflite recipe: the layer choices as convert takes them."""
    return {"layers": dict(layers or {}), "weight_bits": weight_bits, "calib_method": calib_method}


def _convert(model: Path, calib: Path, evaluation: Path, options: dict, outdir: Path, with_float: bool) -> dict:
    try:
        result = edgeq.convert(
            model, calib, outdir=outdir, targets=("tflite",), eval_data=evaluation,
            precision="float" if with_float else "int8", **options,
        )  # fmt: skip
    except EdgeqError as exc:
        floats = sum(p == "float" for p in options["layers"].values())
        reason = f"{floats} float node{'s' * (floats > 1)}: TFLite keeps every layer integer" if floats else first_line(exc)[:90]
        return {"refused": f"no .tflite ({reason})"}
    report = result.targets["tflite"]
    paths = [Path(p) for p in report["artifacts"]]
    verification = report.get("verification", {})
    return {
        "path": next(p for p in paths if not p.name.endswith(".float.tflite")),
        "float_path": next((p for p in paths if p.name.endswith(".float.tflite")), None),
        "bit_exact": verification.get("bit_exact"),
    }


def litert_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The .tflite's outputs on FEEDS (ONNX inputs, float) in LiteRT's default kernels, dequantized, ONNX layout."""
    data = path.read_bytes()
    graph = read(data)
    interpreter = litert_interpreter(data, kernels="default", threads=THREADS)
    step, samples = graph_batch(graph), len(next(iter(feeds.values())))
    parts = [
        float_outputs(graph, invoke_litert(interpreter, model_inputs(graph, {k: v[i : i + step] for k, v in feeds.items()})))
        for i in range(0, samples - step + 1, step)
    ]
    return [np.concatenate(arrays) for arrays in zip(*parts, strict=True)]


def interleaved_latency(paths: list[Path]) -> dict[Path, dict]:
    """latency_stats of each .tflite in LiteRT (tflite target's runner), measured in interleaved rounds."""
    target = registry.get("tflite")
    runs = {path: target.runner(path, THREADS)[0] for path in paths}
    bar = progress_bar(0, "latency", False)
    per_round = {}
    for path, run in runs.items():
        timed_runs(run, runs=0, warmup=WARMUP, bar=bar)
        probe = statistics.median(timed_runs(run, runs=3, warmup=0, bar=bar))
        per_round[path] = max(1, min(ROUND_RUNS_MAX, round(ROUND_MS / max(probe, 1e-3))))
    times: dict[Path, list[float]] = {path: [] for path in paths}
    for _ in range(ROUNDS):
        for path, run in runs.items():
            times[path] += timed_runs(run, runs=per_round[path], warmup=0, bar=bar)
    return {path: latency_stats(values) for path, values in times.items()}


def add_columns(rows: list[dict], model: Path, calib: Path, evaluation: Path, feeds: dict, reference: list,
                score: Callable) -> None:  # fmt: skip
    """Fill each row's ``litert`` (module docstring) from its ``tflite`` recipe (None: no .tflite column)."""
    with tempfile.TemporaryDirectory() as tmp:
        built: dict[tuple, dict] = {}

        def conversion(options: dict) -> dict:
            key = (options["weight_bits"], options["calib_method"], tuple(sorted(options["layers"].items())))
            if key not in built:  # the first one, uniform int8, also writes the float .tflite
                built[key] = _convert(model, calib, evaluation, options, Path(tmp) / str(len(built)), not built)
            return built[key]

        base = conversion(recipe())
        for r in rows:
            if r.get("tflite") is None:
                continue
            if r["tflite"] == FLOAT:
                found = {"path": base.get("float_path"), "bit_exact": None} if "path" in base else base
            else:
                found = conversion(r["tflite"])
            if "refused" in found:
                r["litert"] = {"note": found["refused"]}
                continue
            outputs = litert_outputs(found["path"], feeds)
            r["litert"] = {
                "path": found["path"],
                "size": found["path"].stat().st_size,
                "sqnr": worst_sqnr(reference, outputs),
                "metric": score(reference, outputs, None),
                "bit_exact": found["bit_exact"],
            }
        measured = [r["litert"] for r in rows if "path" in r.get("litert", {})]
        latency = interleaved_latency(list(dict.fromkeys(m["path"] for m in measured)))
        for m in measured:
            m["p50_ms"] = latency[m.pop("path")]["p50"]


SECTION_NOTE = [
    "LiteRT columns: each edgeq row's layer choices converted as `edgeq convert --target tflite --layer ...` does",
    "(int8 activations; TFLite stores 4-bit weights as int8, so int4 buys no .tflite bytes; a row with float",
    "layers has no .tflite: TFLite keeps every layer integer). fp32 is the float .tflite of the same graph",
    "(`--option precision=float`: float32 tensors, the int8 model's weights dequantized, so its SQNR is not inf). The",
    ".tflite's metric and worst SQNR are against fp32 on the same evaluation samples, run in LiteRT's default",
    "kernels (XNNPACK); its latency is the p50 of LiteRT (XNNPACK, 1 thread, `edgeq profile`'s runner), the",
    f"files of a case measured in {ROUNDS} interleaved rounds of about {ROUND_MS:.0f} ms each; bit-exact: convert's",
    "verification (the .tflite against edgeq's integer reference on 4 samples, in LiteRT's reference kernels and",
    "TFLite Micro). The plots draw the points not dominated in size (or latency) and metric as each series'",
    "Pareto front. The AdaRound and onnxruntime rows have no .tflite (not rebuilt / not edgeq's).",
]

COLUMNS = "| .tflite KB (int4 stored as int8) | LiteRT p50 ms | .tflite {metric} | .tflite worst SQNR dB | bit-exact |"


def cells(r: dict) -> str:
    """The row's LiteRT cells (COLUMNS)."""
    litert = r.get("litert")
    if litert is None:
        return "|  |  |  |  |  |"
    if "note" in litert:
        return f"| {litert['note']} |  |  |  |  |"
    exact = {True: "yes", False: "NO", None: "n/a (float)"}[litert["bit_exact"]]
    return (
        f"| {litert['size'] / 1000:.1f} | {litert['p50_ms']:.3f} | {litert['metric']:.2f} | {litert['sqnr']:.2f} "
        f"| {exact} |"
    )


SHORT = (
    (r"^fp32$", "fp32"), (r"uniform int8", "int8"), (r"uniform int4", "int4w"), (r"milp, budget ([0-9.]+x)", r"milp \1"),
    (r"milp, arena ([0-9.]+x)", r"arena \1"),
    (r"accuracy-aware.*TFLite", "acc-aware TFLite"), (r"accuracy-aware.*from (int\d)", r"acc-aware \1"),
    (r"int16 tensors by measured error", "int16 choice"), (r"onnxruntime quantize_static", "ORT int8"),
)  # fmt: skip


def short_label(label: str) -> str:
    for pattern, short in SHORT:
        match = re.search(pattern, label)
        if match:
            return match.expand(short) + (" AR" if "AdaRound" in label else "")
    return label


def pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points (cost, metric, label) no other point dominates (module docstring), by cost."""
    front, best = [], -math.inf
    for cost, metric, label in sorted(points, key=lambda p: (p[0], -p[1])):
        if metric > best:
            front.append((cost, metric, label))
            best = metric
    return front


def _series(axis, points: list[tuple[float, float, str]], marker: str, color: str, name: str, below=False) -> None:
    """POINTS and their Pareto front on AXIS, labelled above them (BELOW: under them, for a second series)."""
    points = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not points:
        return
    axis.plot([p[0] for p in points], [p[1] for p in points], marker, color=color, linestyle="none", label=name)
    front = pareto(points)
    axis.plot([p[0] for p in front], [p[1] for p in front], "--", color=color, linewidth=1, drawstyle="steps-post",
              label=f"{name}: Pareto front")  # fmt: skip
    # builds within 2% of the axes' spans of each other share one label (they overlap on the plot)
    span_x = max(p[0] for p in points) or 1.0
    span_y = (max(p[1] for p in points) - min(p[1] for p in points)) or 1.0
    labels: dict[tuple[float, float], list[str]] = {}
    for cost, metric, label in points:
        near = (k for k in labels if abs(k[0] - cost) <= 0.02 * span_x and abs(k[1] - metric) <= 0.02 * span_y)
        labels.setdefault(next(near, (cost, metric)), []).append(label)
    for i, ((cost, metric), names) in enumerate(sorted(labels.items())):  # staggered: long labels overlap less
        offset = (4, -10 - 8 * (i % 2)) if below else (4, 3 + 8 * (i % 2))
        axis.annotate(", ".join(names), (cost, metric), textcoords="offset points", xytext=offset, fontsize=7,
                      color=color)  # fmt: skip


def plot_case(result: dict, path: Path) -> None:
    """PATH (PNG): size against the metric and worst SQNR (ONNX Runtime model and .tflite), and LiteRT latency
    against them (.tflite), points labelled, each series' Pareto front dashed. fp32 is not drawn against SQNR
    (inf for the ONNX model, float32 rounding only for its .tflite)."""
    plt = pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    built = [r for r in result["rows"] if "size" in r.get("litert", {})]
    for row_axes, key, title in ((axes[0], "metric", result["metric"]), (axes[1], "sqnr", "worst output SQNR dB")):
        shown = [r for r in result["rows"] if key != "sqnr" or r["label"] != "fp32"]  # fp32: inf, or ~100 dB
        onnx = [(r["size"] / 1000, r[key], short_label(r["label"])) for r in shown]
        tflite = [(r["litert"]["size"] / 1000, r["litert"][key], short_label(r["label"])) for r in built if r in shown]
        latency = [(r["litert"]["p50_ms"], r["litert"][key], short_label(r["label"])) for r in built if r in shown]
        _series(row_axes[0], onnx, "o", "tab:blue", "ONNX Runtime model")
        _series(row_axes[0], tflite, "s", "tab:orange", ".tflite (int4 stored as int8)", below=True)
        _series(row_axes[1], latency, "s", "tab:orange", ".tflite, LiteRT XNNPACK 1 thread")
        row_axes[0].set_xlabel("file size (KB)")
        row_axes[1].set_xlabel("LiteRT latency p50 (ms)")
        for axis in row_axes:
            # from zero: the integer .tflite files differ by noise in latency, not by 2x; room for the labels
            axis.set_xlim(0, 1.2 * axis.get_xlim()[1])
            axis.set_ylabel(title)
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
    figure.suptitle(f"{result['name']}: size and LiteRT latency against accuracy")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(figure, path)
