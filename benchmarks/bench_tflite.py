"""The TFLite and TFLite Micro targets, measured in one run; writes the TFLite section of BENCHMARKS.md.

    python benchmarks/bench_tflite.py       # (make bench, after bench_quantize.py) about 5 minutes on 2 cores

1. Conversion cost: the whole `edgeq convert --target tflite` of MobileNetV2-224 (export excluded; calibration on 64
   views, lowering, the validator, validation on the calibration views and the bit-exactness check included), wall
   time and peak RSS of the process; and the same for `--target all` (ONNX Runtime, its speed check, the .tflite and
   TFLite Micro with its arena search).
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

from benchmarks.bench_quantize import (  # noqa: E402
    EDGEQ,
    machine,
    measured,
    mobilenet_photo_setup,
    replace_section,
    run_model,
)
from edgeq.measure.metrics import sqnr_db, top1_agreement  # noqa: E402
from edgeq.reference.executor import run_all_semantics  # noqa: E402
from edgeq.reference.interface import float_outputs, model_inputs  # noqa: E402
from edgeq.targets.tflite.builtins import lookup  # noqa: E402
from edgeq.targets.tflite.interpreters import invoke_litert, litert_interpreter, run_litert  # noqa: E402
from edgeq.targets.tflm.arena import measure_arena  # noqa: E402
from edgeq.targets.tflm.interpreter import run_tflm  # noqa: E402
from edgeq.tflite_format.flatbuffer import Graph, Quantization, Tensor, read, write  # noqa: E402

MARKER = "## TFLite and TFLite Micro"
# Measured on this machine with onnx2tf and TensorFlow before TensorFlow was removed (it is not installable here).
ONNX2TF = {"seconds": 112.0, "peak_rss_mb": 1500.0}


def convert(model: Path, calib: Path, out: Path, target: str, *extra: str) -> dict:
    cost = measured(
        [
            *EDGEQ,
            "convert",
            str(model),
            "--target",
            target,
            "--calib",
            str(calib),
            "-o",
            str(out),
            "--no-progress",
            *extra,
        ]
    )
    return {**cost, "report": json.loads((out / "report.json").read_text())["targets"]}


def tflite_scores(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    graph = read(model_bytes)
    interpreter = litert_interpreter(model_bytes, kernels="default")
    name = "input"
    return np.concatenate(
        [
            float_outputs(graph, invoke_litert(interpreter, model_inputs(graph, {name: x[i : i + 1]})))[0]
            for i in range(len(x))
        ]
    )


def bit_exact(model_bytes: bytes, x: np.ndarray) -> dict:
    """Mismatching output elements of TFLite Micro against edgeq's reference, and of LiteRT's reference kernels
    against the reference with LiteRT's semantics and with TFLite Micro's."""
    graph = read(model_bytes)
    samples = [model_inputs(graph, {"input": x[i : i + 1]}) for i in range(len(x))]
    start = time.perf_counter()
    expected = {"tflite-micro": [], "litert": []}
    for sample in samples:
        for semantics, outputs in run_all_semantics(graph, sample).items():
            expected[semantics].append(outputs[0])
    reference_s = time.perf_counter() - start
    expected = {k: np.concatenate(v) for k, v in expected.items()}
    litert = np.concatenate([run_litert(model_bytes, s, kernels="reference")[0] for s in samples])
    arena = measure_arena(model_bytes).arena_bytes
    micro = np.concatenate([run_tflm(model_bytes, s, arena_size=arena)[0] for s in samples])
    return {
        "samples": len(samples),
        "elements": int(micro.size),
        "tflite_micro": int(np.count_nonzero(micro != expected["tflite-micro"])),
        "litert_reference": int(np.count_nonzero(litert != expected["litert"])),
        "litert_vs_tflite_micro": int(np.count_nonzero(litert != micro)),
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
    report = measure_arena(model_bytes)
    return {
        "flash_bytes": len(model_bytes),
        "arena_bytes": report.arena_bytes,
        "recorded_total": report.recorded_total,
        "runs_with_arena": runs_with_arena(model_path, report.arena_bytes),
        "runs_with_16_bytes_less": runs_with_arena(model_path, report.arena_bytes - 16),
    }


def single_layer(opcode: str, size: int, channels: int, out_channels: int, precision: str) -> bytes:
    """One MobileNetV2-shaped layer (RELU6) as an int8 or float model, to see where the int8 speed-up goes."""
    rng = np.random.default_rng(0)
    depthwise = opcode == "DEPTHWISE_CONV_2D"
    out_channels = channels if depthwise else out_channels
    shape = (1, 3, 3, channels) if depthwise else (out_channels, 1, 1, channels)
    q = precision == "int8"
    act = np.int8 if q else np.float32
    w_scale = np.full(out_channels, 0.01, np.float32)
    graph = Graph(inputs=[0], outputs=[3])
    graph.add_tensor(Tensor("x", (1, size, size, channels), act, Quantization(0.02, -10) if q else None))
    weights = rng.integers(-127, 128, shape).astype(act)
    graph.add_tensor(
        Tensor("w", shape, act, Quantization(w_scale, 0, 3 if depthwise else 0) if q else None, weights)
    )
    bias = np.zeros(out_channels, np.int32 if q else np.float32)
    graph.add_tensor(
        Tensor("b", (out_channels,), bias.dtype, Quantization(0.02 * w_scale, 0) if q else None, bias)
    )
    graph.add_tensor(Tensor("y", (1, size, size, out_channels), act, Quantization(0.05, -128) if q else None))
    options = {"Padding": "SAME", "StrideW": 1, "StrideH": 1, "DilationWFactor": 1, "DilationHFactor": 1}
    options["FusedActivationFunction"] = "RELU6"
    if depthwise:
        options["DepthMultiplier"] = 1
    lookup(opcode).add_to(graph, [0, 1, 2], [3], options)
    return write(graph)


def layer_summary(rows: dict) -> str:
    ratios = {name: row["int8 .tflite"]["ratio_to_float"] for name, row in rows.items()}
    conv = [r for n, r in ratios.items() if "depthwise" not in n]
    depthwise = [r for n, r in ratios.items() if "depthwise" in n]
    return (
        f"int8 / float: 1x1 convolutions {min(conv):.2f}-{max(conv):.2f}, "
        f"depthwise {min(depthwise):.2f}-{max(depthwise):.2f}."
    )


def main() -> None:
    from models.photos import eval_views

    start = time.perf_counter()
    model, calib, _, views = mobilenet_photo_setup("tflite")
    out = calib.parent

    results: dict = {}
    mb_tflite = convert(model, calib, out / "mbv2_tflite", "tflite", "--precision", "float")
    results["convert"] = {k: mb_tflite[k] for k in ("seconds", "peak_rss_mb")}
    mb_all = convert(model, calib, out / "mbv2_all", "all")
    results["convert_all"] = {k: mb_all[k] for k in ("seconds", "peak_rss_mb")}
    mb_ort = convert(model, calib, out / "mbv2_ort", "onnxruntime")
    int8_bytes = (out / "mbv2_tflite" / "mobilenet_v2.tflite").read_bytes()
    float_bytes = (out / "mbv2_tflite" / "mobilenet_v2.float.tflite").read_bytes()
    print(json.dumps(results, indent=1), flush=True)

    # Agreement between two equally good quantized models moves by +-1 point from image set to image set, so the
    # comparison pools the issue-2 set of 256 views with two fresh sets of 1000.
    view_sets = {
        "256 views (seed 0)": views,
        "1000 views (seed 1)": eval_views(1000, seed=1),
        "1000 views (seed 2)": eval_views(1000, seed=2),
    }
    artifacts = {
        f"ONNX Runtime artifact ({mb_ort['report']['onnxruntime']['activation_type']})": lambda x: run_model(
            out / "mbv2_ort" / "mobilenet_v2.qdq.onnx", x
        ),
        "int8 .tflite, LiteRT default kernels": lambda x: tflite_scores(int8_bytes, x),
        "float .tflite (int8-rounded weights), LiteRT default kernels": lambda x: tflite_scores(
            float_bytes, x
        ),
    }
    results["accuracy"] = {name: {} for name in artifacts}
    pooled = {name: [] for name in artifacts}
    for set_name, x in view_sets.items():
        ref = run_model(model, x)
        for name, scores_of in artifacts.items():
            scores = scores_of(x)
            results["accuracy"][name][set_name] = {
                "agreement": top1_agreement(ref, scores),
                "sqnr_db": sqnr_db(ref, scores),
            }
            pooled[name].append(scores.argmax(1) == ref.argmax(1))
    for name in artifacts:
        results["accuracy"][name]["pooled"] = {"agreement": float(np.mean(np.concatenate(pooled[name])))}
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
    layers = {
        "1x1 conv 144->24, 56x56": ("CONV_2D", 56, 144, 24),
        "1x1 conv 24->144, 56x56": ("CONV_2D", 56, 24, 144),
        "3x3 depthwise 144, 56x56": ("DEPTHWISE_CONV_2D", 56, 144, 144),
        "3x3 depthwise 96, 112x112": ("DEPTHWISE_CONV_2D", 112, 96, 96),
    }
    results["layer_latency"] = {
        name: interleaved(
            {"float .tflite": single_layer(*spec, "float"), "int8 .tflite": single_layer(*spec, "int8")},
            "default",
            rounds=6,
            runs=50,  # long warm blocks: a layer alone fits in cache
        )
        for name, spec in layers.items()
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

    conv, conv_all = results["convert"], results["convert_all"]
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
        f"| onnx2tf + TensorFlow converter (measured on this machine before TensorFlow was removed; not re-run: no TensorFlow here) | yes | "
        f"{ONNX2TF['seconds']:.0f} | {ONNX2TF['peak_rss_mb']:.0f} |",
        f"| `edgeq convert --target tflite --precision float` (measured) | no | {conv['seconds']:.1f} | {conv['peak_rss_mb']:.0f} |",
        f"| `edgeq convert --target all` (measured: onnxruntime with its speed check, tflite, tflm) | no | "
        f"{conv_all['seconds']:.1f} | {conv_all['peak_rss_mb']:.0f} |",
        "",
        f"edgeq / onnx2tf: time {conv['seconds'] / ONNX2TF['seconds']:.2f}x, memory "
        f"{conv['peak_rss_mb'] / ONNX2TF['peak_rss_mb']:.2f}x; targets for both rows: <= 20 s, <= 600 MB.",
        "",
        "### MobileNetV2: top-1 agreement with fp32 (logits SQNR dB) on photo views",
        "",
        "Same calibration (64 views) for both artifacts; the .tflite is int8, the ORT artifact the type ORT fuses.",
        "",
    ]
    set_names = list(next(iter(results["accuracy"].values())))
    lines += ["| artifact | " + " | ".join(set_names) + " |", "|---" * (len(set_names) + 1) + "|"]
    for name, row in results["accuracy"].items():
        cells = [
            f"{row[s]['agreement']:.3f}" + (f" ({row[s]['sqnr_db']:.2f})" if "sqnr_db" in row[s] else "")
            for s in set_names
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    rows = list(results["accuracy"].values())
    lines += [
        "",
        f"Pooled over all views: .tflite agreement - ORT artifact agreement = "
        f"{100 * (rows[1]['pooled']['agreement'] - rows[0]['pooled']['agreement']):+.1f} points.",
        "",
        "### Bit-exactness: mismatching output elements against edgeq's integer reference",
        "",
        "| model | samples | output elements | TFLite Micro vs reference | LiteRT reference kernels vs reference (LiteRT semantics) | LiteRT vs TFLite Micro | reference s/sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["bit_exact"].items():
        lines.append(
            f"| {name} | {row['samples']} | {row['elements']} | {row['tflite_micro']} | {row['litert_reference']} "
            f"| {row['litert_vs_tflite_micro']} | {row['reference_s_per_sample']:.3f} |"
        )
    lines += [
        "",
        "LiteRT 2.3's reference FULLY_CONNECTED rounds once where TFLite Micro rounds twice: the last column counts those",
        "one-step differences in the logits; the reference reproduces each runtime exactly.",
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
        "Where the time goes: single MobileNetV2 layers, XNNPACK, 1 thread, each timed in warm blocks of 50 runs",
        "(alternating float and int8). " + layer_summary(results["layer_latency"]),
        "",
        "| layer | float ms | int8 ms | int8 / float |",
        "|---|---|---|---|",
    ]
    for name, row in results["layer_latency"].items():
        lines.append(
            f"| {name} | {row['float .tflite']['ms']:.3f} | {row['int8 .tflite']['ms']:.3f} | "
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
    replace_section(MARKER, lines)


if __name__ == "__main__":
    main()
