"""The TFLite and TFLite Micro targets, measured in one run; writes the TFLite section of BENCHMARKS.md.

    python benchmarks/bench_tflite.py       # (make bench, after bench_quantize.py) about 5 minutes on 2 cores

1. Conversion cost: the whole `edgeq convert --target tflite` of MobileNetV2-224 (export excluded; calibration on 64
   views, lowering, the validator, validation on the calibration views and the bit-exactness check included), wall
   time and peak RSS of the process.
2. Accuracy on 256 photo views: the int8 .tflite in LiteRT (default kernels) against fp32, next to the ONNX Runtime
   artifact `edgeq convert --target onnxruntime` writes from the same calibration.
3. Bit-exactness on whole models: edgeq's integer reference, LiteRT with reference kernels and TFLite Micro on the
   digits test set (450 images) and on 16 MobileNetV2 views.
4. Latency, 1 thread, interleaved rounds (A B A B ...): the int8 .tflite against the float .tflite of the same graph in
   LiteRT default kernels (XNNPACK) and builtin kernels without delegates.
5. TFLite Micro: flash, the measured arena (the smallest that runs), and a check that 16 bytes less fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_quantize import CACHE, EDGEQ, machine, measured, run_model  # noqa: E402
from edgeq import reference  # noqa: E402
from edgeq.metrics import sqnr_db, top1_agreement  # noqa: E402
from edgeq.targets import tflm  # noqa: E402
from edgeq.targets.tflite.artifact import float_outputs, model_inputs  # noqa: E402
from edgeq.targets.tflite.interpreters import (  # noqa: E402
    invoke_litert,
    litert_interpreter,
    run_litert,
    run_tflm,
)
from edgeq.tflite_graph import read  # noqa: E402

MARKER = "## TFLite and TFLite Micro"
# Quoted from issue 3 (measured on this machine when the issue was filed; TensorFlow is not installed here).
ONNX2TF = {"seconds": 112.0, "peak_rss_mb": 1500.0}


def convert(model: Path, calib: Path, out: Path, target: str, *extra: str) -> dict:
    cost = measured(
        [*EDGEQ, "convert", str(model), "--target", target, "--calib", str(calib), "-o", str(out), "--no-progress", *extra]
    )
    return {**cost, "report": json.loads((out / "report.json").read_text())["targets"]}


def tflite_scores(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    graph = read(model_bytes)
    interpreter = litert_interpreter(model_bytes, kernels="default")
    name = "input"
    return np.concatenate(
        [float_outputs(graph, invoke_litert(interpreter, model_inputs(graph, {name: x[i : i + 1]})))[0] for i in range(len(x))]
    )


def bit_exact(model_bytes: bytes, x: np.ndarray) -> dict:
    """Mismatching output elements of LiteRT reference kernels and TFLite Micro against edgeq's reference."""
    graph = read(model_bytes)
    samples = [model_inputs(graph, {"input": x[i : i + 1]}) for i in range(len(x))]
    start = time.perf_counter()
    expected = reference.run(graph, [np.concatenate([s[0] for s in samples])])[0]
    reference_s = time.perf_counter() - start
    litert = np.concatenate([run_litert(model_bytes, s, kernels="reference")[0] for s in samples])
    arena = tflm.measure_arena(model_bytes).arena_bytes
    micro = np.concatenate([run_tflm(model_bytes, s, arena_size=arena)[0] for s in samples])
    return {
        "samples": len(samples),
        "elements": int(expected.size),
        "litert_reference": int(np.count_nonzero(litert != expected)),
        "tflite_micro": int(np.count_nonzero(micro != expected)),
        "reference_s_per_sample": reference_s / len(samples),
    }


def interleaved(models: dict[str, bytes], kernels: str, rounds: int = 20, runs: int = 10) -> dict:
    interpreters, inputs = {}, {}
    for name, model_bytes in models.items():
        graph = read(model_bytes)
        interpreters[name] = litert_interpreter(model_bytes, kernels=kernels, threads=1)
        rng = np.random.default_rng(0)
        inputs[name] = [
            rng.integers(-128, 128, graph.tensors[i].shape).astype(graph.tensors[i].dtype)
            if graph.tensors[i].dtype != np.float32
            else rng.standard_normal(graph.tensors[i].shape).astype(np.float32)
            for i in graph.inputs
        ]
        for _ in range(5):
            invoke_litert(interpreters[name], inputs[name])
    per_round: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, interpreter in interpreters.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                invoke_litert(interpreter, inputs[name])
                times.append((time.perf_counter() - start) * 1e3)
            per_round[name].append(float(np.median(times)))
    base = np.array(per_round["float .tflite"])
    return {
        name: {"ms": float(np.median(v)), "ratio_to_float": float(np.median(np.array(v) / base))}
        for name, v in per_round.items()
    }


_PROBE = """
import sys, numpy as np
from tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
interpreter = runtime.Interpreter.from_bytes(model, arena_size=int(sys.argv[2]))
details = interpreter.get_input_details(0)
interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
interpreter.invoke()
"""


def runs_with_arena(model_path: Path, arena: int) -> bool:
    """Does TFLite Micro allocate and invoke the model with this arena? (a child: too small can segfault)"""
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(model_path), str(arena)], capture_output=True)
    return proc.returncode == 0


def arena_check(model_path: Path) -> dict:
    model_bytes = model_path.read_bytes()
    report = tflm.measure_arena(model_bytes)
    return {
        "flash_bytes": len(model_bytes),
        "arena_bytes": report.arena_bytes,
        "recorded_total": report.recorded_total,
        "runs_with_arena": runs_with_arena(model_path, report.arena_bytes),
        "runs_with_16_bytes_less": runs_with_arena(model_path, report.arena_bytes - 16),
    }


def main() -> None:
    from models.photos import calib_views, eval_views

    start = time.perf_counter()
    out = CACHE / "tflite"
    out.mkdir(parents=True, exist_ok=True)
    model = CACHE / "mobilenet" / "mobilenet_v2.onnx"
    if not model.exists():
        from edgeq.export import export_module
        from models.mobilenet_v2 import build

        model.parent.mkdir(parents=True, exist_ok=True)
        module, example = build()
        export_module(module, example, model, input_names=["input"], output_names=["logits"])
    calib = out / "calib64.npz"
    np.savez(calib, input=calib_views(64))
    views = eval_views(256)

    results: dict = {}
    mb_tflite = convert(model, calib, out / "mbv2_tflite", "tflite", "--precision", "float")
    results["convert"] = {k: mb_tflite[k] for k in ("seconds", "peak_rss_mb")}
    mb_ort = convert(model, calib, out / "mbv2_ort", "onnxruntime")
    int8_bytes = (out / "mbv2_tflite" / "mobilenet_v2.tflite").read_bytes()
    float_bytes = (out / "mbv2_tflite" / "mobilenet_v2.float.tflite").read_bytes()
    print(json.dumps(results, indent=1), flush=True)

    ref = run_model(model, views)
    ort_scores = run_model(out / "mbv2_ort" / "mobilenet_v2.qdq.onnx", views)
    tfl_scores = tflite_scores(int8_bytes, views)
    results["accuracy"] = {
        f"ONNX Runtime artifact ({mb_ort['report']['onnxruntime']['activation_type']})": {
            "agreement": top1_agreement(ref, ort_scores),
            "sqnr_db": sqnr_db(ref, ort_scores),
        },
        "int8 .tflite, LiteRT default kernels": {
            "agreement": top1_agreement(ref, tfl_scores),
            "sqnr_db": sqnr_db(ref, tfl_scores),
        },
        "float .tflite, LiteRT default kernels": {
            "agreement": top1_agreement(ref, tflite_scores(float_bytes, views)),
            "sqnr_db": sqnr_db(ref, tflite_scores(float_bytes, views)),
        },
    }
    print(json.dumps(results["accuracy"], indent=1), flush=True)

    digits_out = out / "digits"
    convert(REPO / "models" / "digits_cnn.onnx", REPO / "models" / "digits_calib.npz", digits_out, "tflm")
    digits_bytes = (digits_out / "digits_cnn.tflite").read_bytes()
    digits_test = np.load(REPO / "models" / "digits_test.npz")["input"]
    results["bit_exact"] = {
        "digits CNN (450 test images)": bit_exact(digits_bytes, digits_test),
        "MobileNetV2 (16 views)": bit_exact(int8_bytes, views[:16]),
    }
    print(json.dumps(results["bit_exact"], indent=1), flush=True)

    results["latency"] = {
        kernels: interleaved({"float .tflite": float_bytes, "int8 .tflite": int8_bytes}, kernels)
        for kernels in ("default", "optimized")
    }
    results["tflm"] = {
        "digits CNN": arena_check(digits_out / "digits_cnn.tflite"),
        "MobileNetV2": arena_check(out / "mbv2_tflite" / "mobilenet_v2.tflite"),
    }
    print(json.dumps(results["latency"], indent=1), json.dumps(results["tflm"], indent=1), flush=True)
    write_section(results, time.perf_counter() - start)


def write_section(results: dict, seconds: float) -> None:
    import datetime

    import ai_edge_litert

    conv = results["convert"]
    lines = [
        MARKER,
        "",
        f"Command: `python benchmarks/bench_tflite.py` (whole run {seconds / 60:.1f} min)  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Versions: ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}, tflite-micro (Python interpreter)",
        "",
        "### Conversion cost, MobileNetV2-224 (calibration on 64 views included)",
        "",
        "| route | needs TensorFlow | wall s | peak RSS MB |",
        "|---|---|---|---|",
        f"| onnx2tf + TensorFlow converter (quoted from issue 3, not re-run: no TensorFlow here) | yes | "
        f"{ONNX2TF['seconds']:.0f} | {ONNX2TF['peak_rss_mb']:.0f} |",
        f"| `edgeq convert --target tflite --precision float` (measured) | no | {conv['seconds']:.1f} | {conv['peak_rss_mb']:.0f} |",
        "",
        f"edgeq / onnx2tf: time {conv['seconds'] / ONNX2TF['seconds']:.2f}x, memory "
        f"{conv['peak_rss_mb'] / ONNX2TF['peak_rss_mb']:.2f}x (targets: <= 20 s, <= 600 MB).",
        "",
        "### MobileNetV2, 256 photo views: top-1 agreement with fp32 and logits SQNR",
        "",
        "| artifact | agreement | SQNR dB |",
        "|---|---|---|",
    ]
    for name, row in results["accuracy"].items():
        lines.append(f"| {name} | {row['agreement']:.3f} | {row['sqnr_db']:.2f} |")
    rows = list(results["accuracy"].values())
    lines += [
        "",
        f".tflite agreement - ORT artifact agreement = {100 * (rows[1]['agreement'] - rows[0]['agreement']):+.1f} points.",
        "",
        "### Bit-exactness: mismatching output elements against edgeq's integer reference",
        "",
        "| model | samples | output elements | LiteRT reference kernels | TFLite Micro | reference s/sample |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["bit_exact"].items():
        lines.append(
            f"| {name} | {row['samples']} | {row['elements']} | {row['litert_reference']} | {row['tflite_micro']} "
            f"| {row['reference_s_per_sample']:.3f} |"
        )
    lines += [
        "",
        "### LiteRT latency, MobileNetV2 batch 1, 1 thread (medians of 20 interleaved rounds of 10 runs)",
        "",
        "| kernels | float .tflite ms | int8 .tflite ms | int8 / float (median of per-round ratios) |",
        "|---|---|---|---|",
    ]
    for kernels, row in results["latency"].items():
        lines.append(
            f"| {kernels} | {row['float .tflite']['ms']:.2f} | {row['int8 .tflite']['ms']:.2f} | "
            f"{row['int8 .tflite']['ratio_to_float']:.2f} |"
        )
    lines += [
        "",
        "### TFLite Micro: flash and arena",
        "",
        "| model | flash (model) bytes | arena bytes (smallest that runs) | recorded allocation total | runs with arena | runs with arena - 16 B |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["tflm"].items():
        lines.append(
            f"| {name} | {row['flash_bytes']} | {row['arena_bytes']} | {row['recorded_total']} | "
            f"{row['runs_with_arena']} | {row['runs_with_16_bytes_less']} |"
        )
    lines.append("")
    path = REPO / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if MARKER in text:
        text = text[: text.index(MARKER)]
    path.write_text(text.rstrip() + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
