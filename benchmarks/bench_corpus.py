"""The third-party corpus (../shared/corpus) quantized by edgeq and by onnxruntime's quantizer, in one run.

    python benchmarks/bench_corpus.py            # prints the table
    python benchmarks/bench_corpus.py --write    # and replaces BENCHMARKS.md's "Third-party corpus" section

Per case: each tool's QDQ ONNX model run in onnxruntime on the case's evaluation data, scored against the fp32
model with the case's own metric (case.json, the corpus' metrics.py); edgeq's .tflite run in LiteRT (XNNPACK) and
scored the same way; the wall time of each tool's whole job (edgeq: convert for onnxruntime and tflite, with its
validation and verification; onnxruntime: quant_pre_process + quantize_static, MinMax, per-channel int8 weights,
as its documentation recommends: benchmarks/ort_quantize.py). Both calibrate on the case's calib.npz.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
from test_corpus import CORPUS, _metrics, _onnx_outputs, _tflite_outputs  # noqa: E402

import edgeq  # noqa: E402
from benchmarks.bench_quantize import machine, replace_section  # noqa: E402
from benchmarks.ort_quantize import ort_worker  # noqa: E402
from edgeq.errors import EdgeqError, first_line  # noqa: E402

MARKER = "## Third-party corpus"


def timed(function):
    start = time.perf_counter()
    try:
        return function(), time.perf_counter() - start
    except Exception as exc:  # a tool that fails on a model is a row of the table, not the end of the run
        return exc, time.perf_counter() - start


def run_case(case: Path, tmp: Path) -> dict:
    spec = json.loads((case / "case.json").read_text())
    model, calib, eval_path = case / "model.onnx", case / "calib.npz", case / "eval.npz"
    data = dict(np.load(eval_path))
    fp32 = _onnx_outputs(model, data)
    metrics, primary = _metrics(), spec["metric"]["primary"]

    def score(outputs) -> float:
        return float(metrics.score_case(spec, data, fp32, outputs, model)[primary])

    row = {"metric": primary}
    converted, row["edgeq_s"] = timed(
        lambda: edgeq.convert(
            model, calib, outdir=tmp / "edgeq", targets=["onnxruntime", "tflite"], eval_data=eval_path
        )
    )
    if isinstance(converted, EdgeqError) and "unsupported" in str(
        converted
    ):  # the .tflite refused: ORT alone
        row["tflite"] = first_line(converted)
        converted, row["edgeq_s"] = timed(
            lambda: edgeq.convert(
                model, calib, outdir=tmp / "edgeq1", targets=["onnxruntime"], eval_data=eval_path
            )
        )
    if isinstance(converted, Exception):
        row["edgeq"] = first_line(converted)
    else:
        row["edgeq"] = score(_onnx_outputs(converted.outdir / "model.qdq.onnx", data))
        if "tflite" not in row:
            names = [o["name"] for o in spec["outputs"]]
            row["tflite"] = score(_tflite_outputs(converted.outdir / "model.tflite", data, names))
    ort_path = tmp / "ort.onnx"
    tmp.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(tmp):  # the quantizer's calibration writes external-data files into the working folder
        done, row["ort_s"] = timed(lambda: ort_worker(str(model), str(calib), str(ort_path), "MinMax", "QInt8"))
    if not isinstance(done, Exception):  # the quantizer can write a model onnxruntime refuses to load
        done, _ = timed(lambda: score(_onnx_outputs(ort_path, data)))
    row["ort"] = first_line(done) if isinstance(done, Exception) else done
    return row


def cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else f"fails: {value}"


def table(rows: dict[str, dict]) -> list[str]:
    lines = [
        "| case | metric (vs fp32) | edgeq QDQ | edgeq .tflite | ORT quantizer QDQ | edgeq - ORT | time edgeq / ORT |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        both = isinstance(row["edgeq"], float) and isinstance(row["ort"], float)
        delta = f"{row['edgeq'] - row['ort']:+.3f}" if both else "-"
        ratio = f"{row['edgeq_s']:.1f} s / {row['ort_s']:.1f} s = {row['edgeq_s'] / row['ort_s']:.2f}"
        lines.append(
            f"| {name} | {row['metric']} | {cell(row['edgeq'])} | {cell(row.get('tflite', '-'))} | {cell(row['ort'])} "
            f"| {delta} | {ratio} |"
        )
    return lines


def summary_line(rows: dict[str, dict]) -> str:
    both = {name: row for name, row in rows.items() if isinstance(row["edgeq"], float) and isinstance(row["ort"], float)}
    better = [name for name, row in both.items() if row["edgeq"] > row["ort"] + 1e-9]
    worse = [name for name, row in both.items() if row["edgeq"] < row["ort"] - 1e-9]
    refused = [name for name, row in rows.items() if not isinstance(row.get("tflite"), float)]
    return (
        f"Of {len(both)} cases both tools quantize, edgeq's QDQ model is closer to fp32 on {len(better)} and further "
        f"on {len(worse)}{' (' + ', '.join(worse) + ')' if worse else ''}; no .tflite for "
        f"{', '.join(refused) if refused else 'none'}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace BENCHMARKS.md's section")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="edgeq-corpus-") as tmp:
        for case in sorted(p.parent for p in CORPUS.glob("*/case.json")):
            rows[case.name] = run_case(case, Path(tmp) / case.name)
            print(case.name, rows[case.name], flush=True)
    lines = table(rows)
    print("\n".join(lines))
    if args.write:
        import onnxruntime

        replace_section(
            MARKER,
            [
                MARKER,
                "",
                "Command: `python benchmarks/bench_corpus.py --write`  ",
                f"Machine: {machine()}  ",
                f"Date: {datetime.date.today().isoformat()}  ",
                f"Versions: edgeq {edgeq.__version__}, onnxruntime {onnxruntime.__version__}",
                "",
                "Each model of ../shared/corpus (third-party exports: MANIFEST.md there), calibrated on its calib.npz "
                "and scored on its eval.npz with the case's own metric against the fp32 model (higher is better). "
                "edgeq runs its defaults (`edgeq convert` for onnxruntime and tflite, with validation and "
                "verification); onnxruntime's quantizer runs quant_pre_process + quantize_static (QDQ, MinMax, "
                "per-channel int8 weights). One run each on a shared 2-core box: the times are single "
                "measurements, and edgeq's time includes building the .tflite, validating both artifacts on the "
                "evaluation data, checking the .tflite against the integer reference and comparing both artifacts "
                "with the float model layer by layer on 8 samples (the report's largest_losses), which the "
                "quantizer does not do. onnxruntime's quantizer writes a model it cannot load for opset-11 inputs "
                "(a per-channel DequantizeLinear needs opset 13), so those are converted to opset 13 first, as its "
                "users do; where symbolic shape inference fails, it retries without it. tests/test_corpus.py checks "
                "the same cases in CI.",
                "",
                *lines,
                "",
                summary_line(rows),
                "",
            ],
        )


if __name__ == "__main__":
    main()
