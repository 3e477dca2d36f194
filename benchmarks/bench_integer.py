"""Dyadic requantization and the integer-only ONNX artifact; writes the "Integer-only" section of BENCHMARKS.md.

    python benchmarks/bench_integer.py       # (make bench) about 10 minutes on 2 cores

1. MobileNetV2 (torchvision weights), 64 calibration views, 256 photo views: top-1 agreement with fp32 and logits
   SQNR of the QDQ model in onnxruntime with TFLite's 31-bit multipliers (the default), 16-bit and 8-bit
   significands and power-of-two scales (`edgeq quantize --dyadic-bits N / --pow2`), each one CLI command.
2. `edgeq convert --target all --integer-only` (default recipe) and `edgeq verify` on its artifacts: mismatching
   output elements of each runtime against the integer reference, on MobileNetV2 photo views and on every digits
   test image.
3. Latency in onnxruntime, batch 1, 1 thread, interleaved rounds: fp32, the QDQ model, the integer-only model.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_quantize import (  # noqa: E402
    CACHE,
    EDGEQ,
    edgeq_stdout,
    interleaved_latency,
    machine,
    measured,
    mobilenet_photo_setup,
    replace_section,
    run_model,
)
from edgeq.measure.metrics import sqnr_db, top1_agreement  # noqa: E402

MARKER = "## Integer-only arithmetic"
MODES = {
    "default: float32 scales, TFLite's 31-bit multipliers": [],
    "16-bit significands (`--dyadic-bits 16`)": ["--dyadic-bits", "16"],
    "8-bit significands (`--dyadic-bits 8`)": ["--dyadic-bits", "8"],
    "power-of-two scales (`--pow2`, a pure shift)": ["--pow2"],
}
DIGITS = REPO / "models" / "digits_cnn.onnx"


def dyadic_modes(model: Path, calib: Path, views: np.ndarray, ref: np.ndarray) -> dict:
    rows = {}
    for index, (name, flags) in enumerate(MODES.items()):
        path = CACHE / "integer" / f"mode_{index}.onnx"
        report = path.with_suffix(".json")
        cmd = ["quantize", str(model), "-o", str(path), "--calib", str(calib), "--report", str(report)]
        cost = measured([*EDGEQ, *cmd, "--no-progress", *flags])
        scores = run_model(path, views)
        dyadic = json.loads(report.read_text())["stages"].get("dyadic", {})
        rows[name] = {
            **cost,
            "agreement": top1_agreement(ref, scores),
            "sqnr_db": sqnr_db(ref, scores),
            "max_multiplier_change": dyadic.get("max_multiplier_change", 0.0),
        }
        print(name, json.dumps(rows[name]), flush=True)
    return rows




def converted_and_verified(name: str, model: Path, calib: Path, data: Path, samples: int) -> tuple[Path, dict]:
    """`edgeq convert --target all --integer-only`, then `edgeq verify` on its three ONNX/TFLite artifacts."""
    out = CACHE / "integer" / name
    edgeq_stdout(
        "convert", str(model), "--target", "all", "--integer-only", "--calib", str(calib), "--eval-data", str(data),
        "-o", str(out), "--verify-samples", "0", "--no-progress",
    )  # fmt: skip
    stem = model.stem
    artifacts = [out / f"{stem}.tflite", out / f"{stem}.integer.onnx", out / f"{stem}.qdq.onnx"]
    start = time.perf_counter()
    verify = ("verify", *map(str, artifacts), "--data", str(data), "--samples", str(samples), "--json")
    report = json.loads(edgeq_stdout(*verify, accept=(0, 1)))  # exit 1: a runtime disagreed, which the table shows
    report["seconds"] = time.perf_counter() - start
    print(name, json.dumps(report), flush=True)
    return out, report


def main() -> None:
    start = time.perf_counter()
    model, calib, _, views = mobilenet_photo_setup("integer")
    ref = run_model(model, views)
    results: dict = {"modes": dyadic_modes(model, calib, views, ref)}
    views_npz = CACHE / "integer" / "views16.npz"
    np.savez(views_npz, input=views[:16])
    digits_test = REPO / "models" / "digits_test.npz"
    results["verify"] = {
        "digits CNN (all 450 test images)": converted_and_verified(
            "digits", DIGITS, REPO / "models" / "digits_calib.npz", digits_test, 450
        )[1],
    }
    mbv2_out, results["verify"]["MobileNetV2 (16 photo views)"] = converted_and_verified(
        "mobilenet", model, calib, views_npz, 16
    )
    integer_model = mbv2_out / f"{model.stem}.integer.onnx"
    scores = run_model(integer_model, views)
    results["integer_accuracy"] = {"agreement": top1_agreement(ref, scores), "sqnr_db": sqnr_db(ref, scores)}
    paths = {"fp32": model, "QDQ int8 (ORT fuses QLinearConv)": mbv2_out / f"{model.stem}.qdq.onnx"}
    paths["integer-only ONNX"] = integer_model
    results["latency"] = interleaved_latency(paths, threads=1, rounds=10, runs=3)
    print(json.dumps(results["latency"]), flush=True)
    write_section(results, time.perf_counter() - start)


def write_section(results: dict, seconds: float) -> None:
    lines = [
        MARKER,
        "",
        f"Command: `python benchmarks/bench_integer.py` (whole run {seconds / 60:.1f} min)  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        "",
        "### Dyadic requantization: MobileNetV2 (torchvision weights), 256 photo views, calibrated on 64 others",
        "",
        "The QDQ model in onnxruntime against fp32; every multiplier of the model has the significand width named",
        "(checked in tests/test_dyadic.py); largest relative change of a multiplier from the default model's.",
        "",
        "| requantization | agreement | SQNR dB | max multiplier change | quantize s | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["modes"].items():
        lines.append(
            f"| {name} | {row['agreement']:.3f} | {row['sqnr_db']:.2f} | {row['max_multiplier_change']:.3f} | "
            f"{row['seconds']:.1f} | {row['peak_rss_mb']:.0f} |"
        )
    accuracy = results["integer_accuracy"]
    lines += [
        "",
        f"The integer-only ONNX model of the default recipe on the same views: agreement {accuracy['agreement']:.3f},"
        f" SQNR {accuracy['sqnr_db']:.2f} dB (it computes the .tflite's integers exactly).",
        "",
        "### One semantics: `edgeq verify` (mismatching output elements against the integer reference)",
        "",
        "Each model converted once with `edgeq convert --target all --integer-only`; the same int8 inputs for every",
        "runtime. Exact runtimes must show 0; the float-scale ones must stay within 1 LSB of the reference kernel at",
        "every op (largest per-op difference, and the outputs' difference).",
        "",
        "| model | output elements | integer-only ONNX (ORT) | TFLite Micro | LiteRT reference kernels "
        "| QDQ in ORT: outputs / per op max | LiteRT XNNPACK outputs | LiteRT optimized per op max "
        "| LiteRT ref vs TFLite Micro |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, report in results["verify"].items():
        exact = {k.split(" ")[0] if k.startswith("onnxruntime") else k: v for k, v in report["exact"].items()}
        floats = {k.split(" ")[0] if k.startswith("onnxruntime") else k: v for k, v in report["float_scale"].items()}
        per_op = {k.split(" ")[0] if k.startswith("onnxruntime") else k: v for k, v in report["per_op"].items()}

        def count(rows: dict) -> int:
            return sum(r["mismatches"] for r in rows.values())

        def steps(rows: dict) -> float:
            return max(r["max_abs_diff"] for r in rows.values())

        lines.append(
            f"| {name} | {report['output_elements']} | {count(exact['onnxruntime'])} | {count(exact['TFLite Micro'])} "
            f"| {count(exact['LiteRT reference kernels'])} | {count(floats['onnxruntime'])} mismatching, "
            f"max {steps(floats['onnxruntime']):g} / {per_op['onnxruntime']['max_steps']:g} LSB "
            f"| {count(floats['LiteRT default kernels (XNNPACK)'])} mismatching, "
            f"max {steps(floats['LiteRT default kernels (XNNPACK)']):g} LSB "
            f"| {per_op['LiteRT optimized kernels']['max_steps']:g} LSB "
            f"| {count(report['litert_reference_vs_tflite_micro'])} |"
        )
    lines += [
        "",
        "LiteRT's reference kernels are checked against the reference's LiteRT semantics: LiteRT 2.3's reference",
        "FULLY_CONNECTED rounds once where TFLite Micro rounds twice (the last column: one-step differences in the",
        "logits). The QDQ model in ORT is the onnxruntime target's artifact (uint8 activations where ORT fuses them",
        "better), compared in the int8 encoding of the same scales.",
        "",
        "### Latency in onnxruntime, MobileNetV2 batch 1, 1 thread (medians of 10 interleaved rounds of 3 runs)",
        "",
        "| model | median ms | speed vs fp32 |",
        "|---|---|---|",
    ]
    for name, row in results["latency"].items():
        lines.append(f"| {name} | {row['ms']:.1f} | {row['speedup']:.2f}x |")
    lines += [
        "",
        "The integer-only model is a portability and verification artifact, not a fast one: onnxruntime has no fused",
        "integer requantization, so each layer's int32 -> int8 step is a chain of int64 Mul/Add/BitShift ops, and",
        "its grouped ConvInteger (depthwise) is slow.",
        "",
    ]
    replace_section(MARKER, lines)


if __name__ == "__main__":
    main()
