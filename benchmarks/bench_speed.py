"""Speed of the int8 ONNX models against fp32 in ONNX Runtime, edgeq's default against onnxruntime's own quantizer,
in one run; writes BENCHMARKS.md's "Speed in ONNX Runtime" section.

    python benchmarks/bench_speed.py            # prints the table (about 10 minutes on 2 cores)
    python benchmarks/bench_speed.py --write    # and replaces the section

Models: MobileNetV2 (torchvision weights, 64 calibration photo views) and every CNN of ../shared/corpus (the
transformer and the refused If model are left out). Quantizers, each calibrated on the same data: edgeq's default
(`edgeq.convert(targets=["onnxruntime"])`, its model.qdq.onnx) and onnxruntime's quant_pre_process + quantize_static
(QDQ, MinMax, per-channel int8 weights) with uint8 (u8s8) and with int8 (s8s8) activations. Latency: one
inference of batch 1 (the first evaluation sample), 1 thread, all graph optimizations, once with ONNX Runtime's
exact int8 kernels (edgeq's sessions; on x86 without VNNI docs/runtimes.md §5.4 tells deployments to select them)
and once with its default ones; the models are run round-robin, RUNS runs each per round, and the
speedup is the median over rounds of fp32's mean latency over the model's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from conftest import CORPUS  # noqa: E402

import edgeq  # noqa: E402
from benchmarks.bench_quantize import machine, mobilenet_photo_setup, replace_section  # noqa: E402
from benchmarks.ort_quantize import ort_worker  # noqa: E402
from edgeq.errors import first_line  # noqa: E402
from edgeq.io.session import session  # noqa: E402

MARKER = "## Speed in ONNX Runtime"
LEFT_OUT = {"paraphrase_minilm_l3", "silero_vad_stateful"}
ROUNDS, RUNS = 15, 5


def feeds(model: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Batch 1 of the first sample; an input of the sample's own rank (no batch axis) is fed as it is."""
    ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in onnx.load(model, load_external_data=False).graph.input}
    return {
        name: np.asarray(a[0]) if ranks.get(name) == a.ndim - 1 else a[:1] for name, a in arrays.items() if name in ranks
    }


def latencies(models: dict[str, Path], feed: dict[str, np.ndarray], exact_int8: bool) -> dict[str, dict]:
    """Per model: median ms over all runs and the median over rounds of fp32's mean latency / the model's."""
    sessions = {name: session(path, threads=1, exact_int8=exact_int8) for name, path in models.items()}
    runs = {name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}
    for run in runs.values():
        for _ in range(RUNS):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        means = {}
        for name, run in runs.items():
            round_times = []
            for _ in range(RUNS):
                start = time.perf_counter()
                run()
                round_times.append((time.perf_counter() - start) * 1000)
            times[name] += round_times
            means[name] = statistics.fmean(round_times)
        for name in runs:
            ratios[name].append(means["fp32"] / means[name])
    return {name: {"ms": statistics.median(times[name]), "speedup": statistics.median(ratios[name])} for name in runs}


def quantized_models(model: Path, calib: Path, tmp: Path) -> dict[str, Path | str]:
    """edgeq's default QDQ model and onnxruntime's quantizer's (u8s8, s8s8), or the one-line reason one failed."""
    out: dict[str, Path | str] = {"fp32": model}
    try:
        converted = edgeq.convert(model, calib, outdir=tmp / "edgeq", targets=["onnxruntime"], progress=False)
        out["edgeq"] = next(p for p in converted.artifacts if p.name.endswith(".qdq.onnx"))
    except Exception as exc:  # a failing tool is a row of the table
        out["edgeq"] = first_line(exc)
    for label, activation in (("ORT u8s8", "QUInt8"), ("ORT s8s8", "QInt8")):
        path = tmp / f"ort_{activation}.onnx"
        with contextlib.chdir(tmp):  # its calibration writes files into the working folder
            try:
                ort_worker(str(model), str(calib), str(path), "MinMax", activation)
                out[label] = path
            except Exception as exc:
                out[label] = first_line(exc)
    return out


def cases(tmp: Path) -> dict[str, tuple[Path, Path, dict[str, np.ndarray]]]:
    found = {}
    model, calib, _, views = mobilenet_photo_setup("speed")
    found["MobileNetV2"] = (model, calib, {"input": views[:1]})
    if CORPUS.is_dir():
        for case in sorted(p for p in CORPUS.iterdir() if (p / "case.json").exists()):
            if case.name not in LEFT_OUT:
                found[case.name] = (case / "model.onnx", case / "calib.npz", dict(np.load(case / "eval.npz")))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace BENCHMARKS.md's section")
    args = parser.parse_args()
    tables: dict[bool, dict[str, dict]] = {True: {}, False: {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, calib, data) in cases(Path(tmp)).items():
            models = quantized_models(model, calib, Path(tmp) / name)
            runnable = {k: v for k, v in models.items() if isinstance(v, Path)}
            for exact, rows in tables.items():
                measured = latencies(runnable, feeds(model, data), exact)
                rows[name] = {k: measured.get(k, models[k]) for k in models}
                print(name, exact, json.dumps(rows[name], default=str), flush=True)
    columns = ["fp32", "edgeq", "ORT u8s8", "ORT s8s8"]

    def cell(value) -> str:
        if isinstance(value, dict):
            return f"{value['ms']:.2f} ms ({value['speedup']:.2f}x)"
        return f"fails: {value}"

    lines = [
        MARKER,
        "",
        "Command: `python benchmarks/bench_speed.py --write`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Versions: edgeq {edgeq.__version__}, onnxruntime {ort.__version__}",
        "",
        "Batch 1, 1 thread, all graph optimizations; median latency over "
        f"{ROUNDS} rounds of {RUNS} runs, models run round-robin; in brackets the speedup over fp32 (median over",
        "rounds of the per-round ratio). edgeq: its default `convert --target onnxruntime` model; ORT: onnxruntime's",
        "quantize_static (QDQ, MinMax, per-channel int8 weights) with uint8 or int8 activations. Two tables: with",
        "onnxruntime's exact int8 kernels (`session.x64quantprecision=1`, edgeq's sessions, docs/runtimes.md §5.4) and",
        "with its default kernels, which on x86 without VNNI saturate (fast, but not the model's arithmetic).",
    ]
    for exact, rows in tables.items():
        lines += [
            "",
            f"### {'Exact int8 kernels (x64quantprecision=1)' if exact else 'Default int8 kernels'}",
            "",
            "| model | " + " | ".join(columns) + " | edgeq / best ORT speedup |",
            "|---|" + "---|" * (len(columns) + 1),
        ]
        for name, row in rows.items():
            ort_best = max((row[c]["speedup"] for c in columns[2:] if isinstance(row[c], dict)), default=None)
            ratio = f"{row['edgeq']['speedup'] / ort_best:.2f}" if ort_best and isinstance(row["edgeq"], dict) else "-"
            lines.append(f"| {name} | " + " | ".join(cell(row[c]) for c in columns) + f" | {ratio} |")
    lines.append("")
    print("\n".join(lines))
    if args.write:
        replace_section(MARKER, lines)


if __name__ == "__main__":
    main()
