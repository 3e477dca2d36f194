"""What `edgeq profile` reports for real models, and the MCU estimate against published measurements.

    python benchmarks/bench_profile.py      # about 3 minutes on 2 cores; writes "## Profiling" in BENCHMARKS.md

1. Profile tables for the digits CNN and MobileNetV2 (torchvision weights) in all three runtimes. The artifacts are
   made once with `edgeq convert --target all --precision float` (cached in benchmarks/.cache/profile/; delete the
   folder to rebuild) and measured with `edgeq profile --json`, the command users run:
   * ONNX Runtime, fp32 and the int8 QDQ artifact: p50/p90/p99 at 1 and 2 threads, and the per-op breakdown of
     onnxruntime's profiler at 1 thread with the share of a profiled run it accounts for (the goal: >= 90%);
   * LiteRT, the int8 and the float .tflite: default kernels (XNNPACK), builtin kernels without default delegates,
     reference kernels, at 1 and 2 threads;
   * TFLite Micro: the arena (the smallest that runs), flash, the ops the resolver needs, and runs of the int8
     .tflite in the tflite-micro Python interpreter on a real input, timed on this x86 host (host time: it says
     nothing about a microcontroller's latency; the MCU estimate below does).
   The box is shared and noisy: every `edgeq profile` runs REPEATS times (separate processes, the artifacts in
   turn) and each cell is the median over repeats; ratios come from `edgeq profile A --compare B` (A and B in
   alternating rounds, the median of the per-round ratios; edgeq/measure/latency.py).
2. The Cortex-M4F estimate of targets/tflm/mcu.py (its public PROFILES and estimate()) on the four MLPerf Tiny v0.5 models
   rebuilt by models/mlperf_tiny.py, against the published latencies (models.mlperf_tiny.PUBLISHED_LATENCY_MS;
   fitted on models.mlperf_tiny.FIT, the others held back); the M7 and M55 estimates, which no measurement fits,
   beside them.
3. TFLite Micro's arena against the liveness lower bound of targets/tflite/analysis.py, for the digits CNN, MobileNetV2 and
   the four MLPerf Tiny models: arena, its planned (head) and persistent (tail) parts as TFLite Micro's recording
   allocator reports them, and the bound.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_quantize import (  # noqa: E402
    CACHE,
    edgeq_stdout,
    machine,
    mobilenet_photo_setup,
    replace_section,
)
from edgeq.measure.latency import latency_stats, progress_bar, timed_runs  # noqa: E402
from edgeq.reference.interface import model_inputs  # noqa: E402
from edgeq.targets.onnxruntime.profile import ACCOUNTED_SHARE_BAR  # noqa: E402
from edgeq.targets.tflite.analysis import analyze_tflite  # noqa: E402
from edgeq.targets.tflite.profile import KERNEL_NAMES  # noqa: E402
from edgeq.targets.tflm import mcu  # noqa: E402
from edgeq.targets.tflm.arena import measure_arena  # noqa: E402
from edgeq.targets.tflm.interpreter import invoke_tflm, tflm_interpreter  # noqa: E402
from edgeq.tflite_format.flatbuffer import read  # noqa: E402
from models.mlperf_tiny import FIT, PUBLISHED_LATENCY_MS, tflite_model  # noqa: E402
from models.mlperf_tiny import MODELS as MLPERF_MODELS  # noqa: E402

MARKER = "## Profiling"
OUT = CACHE / "profile"
REPEATS = 5  # `edgeq profile` processes per artifact; cells are medians over them
THREADS = (1, 2)
TOP_OP_TYPES = 4
ERROR_GOAL = 0.30  # the goal: the estimate within +-30% of the held-back published latencies
# (runs, warm-up runs) per `edgeq profile`, and timed runs in TFLite Micro (warm-up 1)
PLAN = {
    "digits CNN": {"runs": 50, "warmup": 10, "tflm_runs": 50},
    "MobileNetV2": {"runs": 20, "warmup": 5, "tflm_runs": 3},
}


def edgeq_json(*args: str) -> dict:
    return json.loads(edgeq_stdout(*args, "--json"))


def converted(name: str, model: Path, calib: Path, eval_data: Path) -> dict[str, Path]:
    """The artifacts of `edgeq convert --target all --precision float` (cached), by kind."""
    out = OUT / name
    if not (out / "report.json").exists():
        edgeq_stdout(
            "convert", str(model), "--target", "all", "--precision", "float", "--calib", str(calib),
            "--eval-data", str(eval_data), "-o", str(out), "--no-progress",
        )  # fmt: skip
    return {
        "ORT fp32": model,
        "ORT int8": out / f"{model.stem}.qdq.onnx",
        "int8 .tflite": out / f"{model.stem}.tflite",
        "float .tflite": out / f"{model.stem}.float.tflite",
    }


def profiles(artifacts: dict[str, Path], runs: int, warmup: int) -> dict[str, list[dict]]:
    """REPEATS `edgeq profile` results per artifact, the artifacts taken in turn so that load hits all alike."""
    results: dict[str, list[dict]] = {kind: [] for kind in artifacts}
    options = ["--runs", str(runs), "--warmup", str(warmup), "--threads", ",".join(map(str, THREADS)), "--no-progress"]
    for _ in range(REPEATS):
        for kind, path in artifacts.items():
            results[kind].append(edgeq_json("profile", str(path), *options))
    return results


def ratios(artifacts: dict[str, Path], runs: int, warmup: int) -> dict[str, dict]:
    """`edgeq profile A --compare B` for the pairs that say what int8 buys and what the runtime changes."""
    pairs = {
        "ORT int8 / ORT fp32": ("ORT int8", "ORT fp32"),
        "LiteRT int8 / LiteRT float (default kernels)": ("int8 .tflite", "float .tflite"),
        "LiteRT int8 (default kernels) / ORT int8": ("int8 .tflite", "ORT int8"),
    }
    threads = ",".join(map(str, THREADS))
    return {
        label: edgeq_json(
            "profile", str(artifacts[a]), "--compare", str(artifacts[b]), "--runs", str(runs), "--warmup",
            str(warmup), "--threads", threads, "--no-progress",
        )  # fmt: skip
        for label, (a, b) in pairs.items()
    }


def tflm_host_run(model_path: Path, sample: np.ndarray, arena_bytes: int, runs: int) -> dict:
    """Latency of the .tflite in the tflite-micro interpreter (reference kernels) on this host, on SAMPLE."""
    model_bytes = model_path.read_bytes()
    graph = read(model_bytes)
    interpreter = tflm_interpreter(model_bytes, arena_bytes)
    inputs = model_inputs(graph, {"input": sample})
    with progress_bar(runs + 1, f"TFLite Micro {model_path.name}", False) as bar:
        times = timed_runs(lambda: invoke_tflm(interpreter, inputs, len(graph.outputs)), runs=runs, warmup=1, bar=bar)
    return latency_stats(times)


def median(values) -> float:
    return float(statistics.median(values))


def arena_row(model_bytes: bytes) -> dict:
    report = measure_arena(model_bytes)
    return {
        "arena": report.arena_bytes,
        "head": report.recorded_head,
        "tail": report.recorded_tail,
        "bound": analyze_tflite(read(model_bytes))["summary"]["peak_activation_bytes"],
    }


def main() -> None:
    start = time.perf_counter()
    mbv2, mbv2_calib, _, views = mobilenet_photo_setup("profile")
    mbv2_eval = OUT / "views16.npz"
    np.savez(mbv2_eval, input=views[:16])
    digits_test = REPO / "models" / "digits_test.npz"
    models = {
        "digits CNN": (
            converted("digits", REPO / "models" / "digits_cnn.onnx", REPO / "models" / "digits_calib.npz", digits_test),
            np.load(digits_test)["input"][:1],
        ),
        "MobileNetV2": (converted("mobilenet", mbv2, mbv2_calib, mbv2_eval), views[:1]),
    }
    results: dict = {"models": {}, "arena": {}}
    for name, (artifacts, sample) in models.items():
        plan = PLAN[name]
        measured = {"profiles": profiles(artifacts, plan["runs"], plan["warmup"])}
        measured["ratios"] = ratios(artifacts, plan["runs"], plan["warmup"])
        results["arena"][name] = arena_row(artifacts["int8 .tflite"].read_bytes())
        arena = results["arena"][name]["arena"]
        measured["tflm_host"] = tflm_host_run(artifacts["int8 .tflite"], sample, arena, plan["tflm_runs"])
        results["models"][name] = measured
        print(name, json.dumps({"tflm_host_ms": measured["tflm_host"], "arena": results["arena"][name]}), flush=True)

    results["mlperf"] = {}
    (OUT / "mlperf").mkdir(parents=True, exist_ok=True)
    for name in MLPERF_MODELS:
        path = OUT / "mlperf" / f"{name}.tflite"
        if not path.exists():
            path.write_bytes(tflite_model(name))
        model_bytes = path.read_bytes()
        analysis = analyze_tflite(read(model_bytes))
        results["mlperf"][name] = {
            "macs": analysis["summary"]["macs"],
            "estimate_ms": {device: mcu.estimate(analysis, p)["latency_ms"] for device, p in mcu.PROFILES.items()},
        }
        results["arena"][f"MLPerf Tiny {name}"] = arena_row(model_bytes)
        print(name, json.dumps(results["mlperf"][name]), json.dumps(results["arena"][f"MLPerf Tiny {name}"]), flush=True)
    write_section(results, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------ the section


def cell(repeats: list[dict], select) -> str:
    """'p50 / p90 / p99' in ms, each the median over REPEATS of the row SELECT picks from a profile result."""
    rows = [select(result) for result in repeats]
    return " / ".join(f"{median(row[key] for row in rows):.3g}" for key in ("p50", "p90", "p99"))


def spread(repeats: list[dict], select) -> str:
    return f"{100 * median(select(result)['spread'] for result in repeats):.0f}%"


def ort_row(result: dict, *, threads: int) -> dict:
    return next(row for row in result["sweep"] if row["threads"] == threads)


def ort_lines(profiles_by_kind: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| model | 1 thread p50 / p90 / p99 ms | spread | 2 threads p50 / p90 / p99 ms | spread |",
        "|---|---|---|---|---|",
    ]
    notes = []
    for kind in ("ORT fp32", "ORT int8"):
        repeats = profiles_by_kind[kind]
        cells = []
        for count in THREADS:
            select = partial(ort_row, threads=count)
            cells += [cell(repeats, select), spread(repeats, select)]
        lines.append(f"| {kind.removeprefix('ORT ')} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per-op breakdown (onnxruntime's profiler, 1 thread): the node kernels' time summed over a profiled run, as a",
        "share of that run's wall time, and the mean of the unprofiled runs (medians over repeats); op types from the",
        "repeat with the median share.",
        "",
        f"| model | accounted share | >= {ACCOUNTED_SHARE_BAR:.0%} | kernels ms / profiled run ms | unprofiled mean ms "
        "| top op types (share of kernel time) | integer convolutions |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in ("ORT fp32", "ORT int8"):
        per_op = sorted((r["per_op"] for r in profiles_by_kind[kind]), key=lambda p: p["fraction_of_latency"])
        share, kernels, profiled, unprofiled = (
            median(p[key] for p in per_op)
            for key in ("fraction_of_latency", "sum_ms", "profiled_latency_ms", "unprofiled_latency_ms")
        )
        middle = per_op[len(per_op) // 2]
        top = ", ".join(
            f"{op} {ms / middle['sum_ms']:.0%}" for op, ms in list(middle["by_op_type"].items())[:TOP_OP_TYPES]
        )
        fusion = profiles_by_kind[kind][0]["fusion"]
        lines.append(
            f"| {kind.removeprefix('ORT ')} | {share:.0%} | {'yes' if share >= ACCOUNTED_SHARE_BAR else 'no'} "
            f"| {kernels:.3f} / {profiled:.3f} | {unprofiled:.3f} | {top} | {fusion['convs_fused']}/{fusion['convs_total']} |"
        )
        if share < ACCOUNTED_SHARE_BAR and kernels > unprofiled:
            notes.append(
                f"{kind.removeprefix('ORT ')}: under the profiler the kernels alone take longer than a whole unprofiled"
                f" run ({kernels:.3f} vs {unprofiled:.3f} ms): the profiler's cost per node exceeds the kernels' own"
                " time, so on a model this small the share and the per-op times measure the profiler more than the"
                " model."
            )
    return lines + (["", *(f"- {note}" for note in notes)] if notes else [])


def litert_row(result: dict, *, kernels: str, threads: int) -> dict:
    return next(row for row in result["sweep"] if row["kernels"] == kernels and row["threads"] == threads)


def litert_lines(profiles_by_kind: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| artifact | kernels | 1 thread p50 / p90 / p99 ms | 2 threads p50 / p90 / p99 ms |",
        "|---|---|---|---|",
    ]
    for kind in ("int8 .tflite", "float .tflite"):
        repeats = profiles_by_kind[kind]
        runs = {row["kernels"]: row["runs"] for row in repeats[0]["sweep"]}
        for kernels, label in KERNEL_NAMES.items():
            cells = [cell(repeats, partial(litert_row, kernels=kernels, threads=count)) for count in THREADS]
            lines.append(f"| {kind} | {label} ({runs[kernels]} runs) | " + " | ".join(cells) + " |")
    return lines


def ratio_lines(ratios_by_pair: dict[str, dict]) -> list[str]:
    lines = [
        "| A / B | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}: median (p10-p90 over rounds)" for t in THREADS)
        + " |",
        "|---|" + "---|" * len(THREADS),
    ]
    for label, result in ratios_by_pair.items():
        cells = [f"{row['ratio']:.2f} ({row['ratio_p10']:.2f}-{row['ratio_p90']:.2f})" for row in result["rows"]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def tflm_line(name: str, measured: dict) -> str:
    int8 = measured["profiles"]["int8 .tflite"][0]
    micro, host = int8["tflm"], measured["tflm_host"]
    return (
        f"| {name} | {micro['flash_bytes']} | {micro['arena_bytes']} | {', '.join(micro['resolver_ops'])} "
        f"| {host['p50']:.3g} ({host['runs']} runs) |"
    )


def write_section(results: dict, seconds: float) -> None:
    versions = ", ".join(
        f"{package} {importlib.metadata.version(package)}"
        for package in ("onnxruntime", "ai-edge-litert", "tflite-micro")
    )
    lines = [
        MARKER,
        "",
        f"Command: `python benchmarks/bench_profile.py` (whole run {seconds / 60:.1f} min)  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Versions: {versions}",
        "",
        "Artifacts from `edgeq convert --target all --precision float`, measured with `edgeq profile --json "
        f"--threads {','.join(map(str, THREADS))}`;",
        f"each artifact profiled {REPEATS} times (separate processes, the artifacts in turn), every figure the median "
        "over those",
        "repeats (with 20-50 runs, p99 is close to the slowest run). Ratios from `edgeq profile A --compare B`",
        "(alternating rounds, the median of the per-round ratios). Batch 1. The box is a shared 2-core machine: 2 threads",
        "compete with the other tenants, so read the 1-thread columns for the kernels' speed.",
    ]
    for name, measured in results["models"].items():
        plan = PLAN[name]
        lines += [
            "",
            f"### {name}: ONNX Runtime (`--runs {plan['runs']} --warmup {plan['warmup']}`)",
            "",
            *ort_lines(measured["profiles"]),
            "",
            f"### {name}: LiteRT (`--runs {plan['runs']}`; reference kernels get a twentieth of the runs, at least 3)",
            "",
            *litert_lines(measured["profiles"]),
            "",
            f"### {name}: latency ratios (`--runs {plan['runs']}`)",
            "",
            *ratio_lines(measured["ratios"]),
        ]
    lines += [
        "",
        "### TFLite Micro (int8 .tflite)",
        "",
        "Host time is the tflite-micro Python interpreter (reference kernels) on this x86 CPU, on one real input",
        "(a test digit, a photo view): it is not a device latency; the MCU estimate below is.",
        "",
        "| model | flash B | arena B (smallest that runs) | ops the resolver needs | host ms, x86 (not device time) |",
        "|---|---|---|---|---|",
        *(tflm_line(name, measured) for name, measured in results["models"].items()),
    ]
    lines += mcu_lines(results)
    lines += arena_lines(results["arena"])
    replace_section(MARKER, [*lines, ""])


def mcu_lines(results: dict) -> list[str]:
    devices = list(mcu.PROFILES)
    lines = [
        "",
        "### MCU latency estimate (targets/tflm/mcu.py) against MLPerf Tiny v0.5",
        "",
        "Published: the MLPerf Tiny v0.5 reference submission, TFLite Micro on a Cortex-M4F at 120 MHz (NUCLEO-L4R5ZI;",
        "Banbury et al. 2021, table 4). The four models rebuilt by models/mlperf_tiny.py (random weights: latency",
        f"depends on shapes); the Cortex-M4F profile is fitted on {' and '.join(FIT)}, the others are held back (how",
        "the form and the pair were chosen, and what that means for the held-back errors: targets/tflm/mcu.py's docstring).",
        "The Cortex-M7 and Cortex-M55 columns are not fitted to any measurement (architecture ratios).",
        "",
        "| model | MACs | Cortex-M4F estimate ms | published ms | error | fit | "
        + " | ".join(f"{d} estimate ms (not fitted)" for d in devices[1:])
        + " |",
        "|---|---|---|---|---|---|" + "---|" * (len(devices) - 1),
    ]
    held_back = {}
    for name, row in results["mlperf"].items():
        estimate, published = row["estimate_ms"][devices[0]], PUBLISHED_LATENCY_MS[name]
        error = estimate / published - 1
        if name not in FIT:
            held_back[name] = error
        lines.append(
            f"| {name} | {row['macs']:,} | {estimate:,.1f} | {published:.0f} | {error:+.1%} "
            f"| {'fitted' if name in FIT else 'held back'} | "
            + " | ".join(f"{row['estimate_ms'][d]:,.1f}" for d in devices[1:])
            + " |"
        )
    for name, measured in results["models"].items():
        estimates = measured["profiles"]["int8 .tflite"][0]["mcu_estimate"]
        macs = measured["profiles"]["int8 .tflite"][0]["analysis"]["summary"]["macs"]
        lines.append(
            f"| {name} | {macs:,} | {estimates[devices[0]]['latency_ms']:,.1f} | - | - | - | "
            + " | ".join(f"{estimates[d]['latency_ms']:,.1f}" for d in devices[1:])
            + " |"
        )
    met = all(abs(e) <= ERROR_GOAL for e in held_back.values())
    lines += [
        "",
        "Held-back error: " + ", ".join(f"{n} {e:+.1%}" for n, e in held_back.items())
        + f"; goal +-{ERROR_GOAL:.0%}: {'met' if met else 'not met'}.",
    ]
    return lines


def arena_lines(arena: dict) -> list[str]:
    lines = [
        "",
        "### TFLite Micro arena vs the liveness lower bound",
        "",
        "Arena: the smallest that allocates and invokes (edgeq.targets.tflm.arena.measure_arena); head and tail: the planned",
        "activations (with kernel scratch buffers) and the persistent data, as the recording allocator reports them;",
        "bound: edgeq.targets.tflite.analysis' peak of live activation bytes in execution order, a lower bound of the head.",
        "",
        "| model | arena B | planned (head) B | persistent (tail) B | liveness bound B | arena / bound | head / bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in arena.items():
        lines.append(
            f"| {name} | {row['arena']:,} | {row['head']:,} | {row['tail']:,} | {row['bound']:,} "
            f"| {row['arena'] / row['bound']:.2f} | {row['head'] / row['bound']:.3f} |"
        )
    return lines


if __name__ == "__main__":
    main()
