"""Speed of the int8 models against fp32, edgeq's default against onnxruntime's own quantizer, in ONNX Runtime and
in LiteRT, in one run; writes BENCHMARKS.md's "Speed in ONNX Runtime and LiteRT" section.

    python benchmarks/bench_speed.py            # prints the tables (about 15 minutes on 2 cores)
    python benchmarks/bench_speed.py --write    # and replaces the section

Models: one-layer probes of MobileNetV2's and a transformer's layer shapes (random weights and inputs: the int8
kernels' own speed, the ceiling of any model), MobileNetV2 (torchvision weights, 64 calibration photo views) and
every CNN of ../shared/corpus (the transformer and the refused If model are left out). Quantizers, each calibrated on the same data: edgeq's default
(`edgeq.convert(targets=["onnxruntime", "tflite"], precision="float")`: its model.qdq.onnx for this machine's CPU,
its int8 .tflite and the same graph in float, .float.tflite) and onnxruntime's quant_pre_process +
quantize_static (QDQ, MinMax, per-channel int8 weights) with uint8 (u8s8) or int8 (s8s8) activations, and u8s8
with ``reduce_range`` (7-bit weights, its advice for x86 without VNNI).

ONNX Runtime: one inference of batch 1 (the first evaluation sample), 1 thread, all graph optimizations. Each
model runs on the kernels under which it computes what its Q/DQ nodes define on this CPU: on x86 without VNNI,
onnxruntime's default u8s8 kernels saturate unless weight pairs are bounded (docs/runtimes.md §5.4), so the
8-bit ORT models run with its exact kernels (``session.x64quantprecision=1``) there, and edgeq's and the
reduce_range model with the default ones; one more column shows ORT u8s8 on the default kernels anyway (fast, and
its SQNR shows what the saturation costs). The models run round-robin, RUNS runs each per round; the speedup is
the median over rounds of fp32's mean latency over the model's. SQNR: all outputs against fp32's on the first 32
evaluation samples, with the same kernels. LiteRT: edgeq's int8 .tflite against its float .tflite, XNNPACK, 1
thread, alternating rounds (bench_tflite.interleaved).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import statistics
import sys
import tempfile
import textwrap
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
from benchmarks.bench_tflite import interleaved  # noqa: E402
from benchmarks.ort_quantize import ort_worker  # noqa: E402
from edgeq.errors import first_line  # noqa: E402
from edgeq.io.session import session  # noqa: E402
from edgeq.measure.metrics import sqnr_db  # noqa: E402
from edgeq.quantization.cpus import host_cpu  # noqa: E402

MARKER = "## Speed in ONNX Runtime and LiteRT"
LEFT_OUT = {"paraphrase_minilm_l3", "silero_vad_stateful"}
ROUNDS, RUNS = 15, 5
SQNR_SAMPLES = 32
SATURATING = "ORT u8s8, default kernels"
# (column, activation type, reduce_range) of onnxruntime's quantize_static
ORT_QUANTIZERS = (("ORT u8s8", "QUInt8", False), ("ORT s8s8", "QInt8", False), ("ORT u8s8 reduce_range", "QUInt8", True))
_EXACT_KERNELS_NEEDED = host_cpu().gemm_pair_limit is not None  # x86 without VNNI
# per column: run with onnxruntime's exact int8 kernels? (only the 8-bit ORT models need them, and only here)
KERNELS = {
    "fp32": False,
    "edgeq": False,
    "ORT u8s8": _EXACT_KERNELS_NEEDED,
    "ORT s8s8": _EXACT_KERNELS_NEEDED,
    "ORT u8s8 reduce_range": False,
    SATURATING: False,
}


def feeds(model: Path, arrays: dict[str, np.ndarray], count: int = 1) -> dict[str, np.ndarray]:
    """The first COUNT samples as a batch; an input of the sample's own rank (no batch axis) is fed as it is."""
    ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in onnx.load(model, load_external_data=False).graph.input}
    return {
        name: np.asarray(a[0]) if ranks.get(name) == a.ndim - 1 else a[:count]
        for name, a in arrays.items()
        if name in ranks
    }


def output_sqnr(runners: dict, model: Path, arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """Each model's SQNR (dB) against fp32 over all outputs of the first SQNR_SAMPLES evaluation samples, run one
    sample at a time (batch 1, as the latency)."""
    samples = min(SQNR_SAMPLES, len(next(iter(arrays.values()))))
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    for i in range(samples):
        feed = feeds(model, {k: v[i:] for k, v in arrays.items()})
        for name, runner in runners.items():
            outputs[name].append(np.concatenate([np.ravel(o) for o in runner.run(None, feed)]))
    reference = np.concatenate(outputs["fp32"])
    return {name: sqnr_db(reference, np.concatenate(v)) for name, v in outputs.items() if name != "fp32"}


def latencies(models: dict[str, Path], model: Path, arrays: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per model: median ms over all runs, the median over rounds of fp32's mean latency / the model's, and the
    SQNR against fp32; each on the kernels of KERNELS (True: onnxruntime's exact int8 kernels)."""
    runners = {name: session(path, threads=1, exact_int8=KERNELS[name]) for name, path in models.items()}
    feed = feeds(model, arrays)
    runs = {name: (lambda s=s: s.run(None, feed)) for name, s in runners.items()}
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
    sqnr = output_sqnr(runners, model, arrays)
    return {
        name: {"ms": statistics.median(times[name]), "speedup": statistics.median(ratios[name]), "sqnr": sqnr.get(name)}
        for name in runs
    }


def quantized_models(model: Path, calib: Path, tmp: Path) -> tuple[dict[str, Path | str], dict[str, Path]]:
    """The ONNX models (fp32, edgeq's, onnxruntime's quantizer's, or the one-line reason one failed) and edgeq's
    int8 and float .tflite."""
    out: dict[str, Path | str] = {"fp32": model}
    tflite: dict[str, Path] = {}
    try:
        converted = edgeq.convert(
            model, calib, outdir=tmp / "edgeq", targets=["onnxruntime", "tflite"], precision="float", progress=False
        )
        artifacts = converted.report["artifacts"]
        out["edgeq"] = Path(next(p for p in artifacts if p.endswith(".qdq.onnx")))
        tflite = {
            "float .tflite": Path(next(p for p in artifacts if p.endswith(".float.tflite"))),
            "int8 .tflite": Path(next(p for p in artifacts if p.endswith(".tflite") and ".float." not in p)),
        }
    except Exception as exc:  # a failing tool is a row of the table
        out["edgeq"] = first_line(exc)
    for label, activation, reduce_range in ORT_QUANTIZERS:
        path = tmp / f"ort_{activation}{'_rr' if reduce_range else ''}.onnx"
        with contextlib.chdir(tmp):  # its calibration writes files into the working folder
            try:
                ort_worker(str(model), str(calib), str(path), "MinMax", activation, reduce_range)
                out[label] = path
            except Exception as exc:
                out[label] = first_line(exc)
    if isinstance(out["ORT u8s8"], Path):
        out[SATURATING] = out["ORT u8s8"]
    return out, tflite


def litert_speed(tflite: dict[str, Path]) -> dict | str:
    """edgeq's int8 .tflite against its float one in LiteRT (XNNPACK, 1 thread): ms and speedup."""
    if not tflite:
        return "no .tflite"
    measured = interleaved({name: path.read_bytes() for name, path in tflite.items()}, "default")
    return {name: {"ms": row["ms"], "speedup": 1.0 / row["ratio_to_float"]} for name, row in measured.items()}


# One-layer probes of the int8 kernels themselves, MobileNetV2's and a transformer's shapes: (name, input shape,
# op, weight shape, groups[, stride]). What they show is this CPU's ceiling: no placement can make a model's int8
# layers faster than its int8 kernels are.
PROBES = (
    ("layer: 3x3/2 stem conv 3->32 @224x224", [1, 3, 224, 224], "Conv", [32, 3, 3, 3], 1, 2),
    ("layer: 1x1 conv 24->144 @56x56", [1, 24, 56, 56], "Conv", [144, 24, 1, 1], 1),
    ("layer: 3x3 depthwise 144 @56x56", [1, 144, 56, 56], "Conv", [144, 1, 3, 3], 144),
    ("layer: 1x1 conv 320->1280 @7x7", [1, 320, 7, 7], "Conv", [1280, 320, 1, 1], 1),
    ("layer: MatMul 64x384 by 384x1536", [1, 64, 384], "MatMul", [384, 1536], 1),
)


def probe(
    tmp: Path, name: str, shape: list[int], op: str, weight_shape: list[int], group: int, stride: int = 1
) -> tuple[Path, Path]:
    """A one-layer model (random weights, Relu after it so it quantizes as deployed) and 16 random calibration
    samples: only its speed is of interest."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal(weight_shape) * 0.1).astype(np.float32), "w")
    if op == "Conv":
        pad = weight_shape[-1] // 2
        layer = helper.make_node("Conv", ["x", "w"], ["h"], pads=[pad] * 4, group=group, strides=[stride] * 2)
        out_shape = [1, weight_shape[0], *(size // stride for size in shape[2:])]
    else:
        layer = helper.make_node("MatMul", ["x", "w"], ["h"])
        out_shape = [*shape[:-1], weight_shape[-1]]
    graph = helper.make_graph(
        [layer, helper.make_node("Relu", ["h"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [weight],
    )
    folder = tmp / "probes" / name.split(": ")[1].replace(" ", "_").replace(">", "").replace("/", "s")
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, folder / "model.onnx")
    np.savez(folder / "calib.npz", x=rng.standard_normal([16, *shape[1:]]).astype(np.float32))
    return folder / "model.onnx", folder / "calib.npz"


def cases(tmp: Path) -> dict[str, tuple[Path, Path, dict[str, np.ndarray]]]:
    found = {}
    for name, *spec in PROBES:
        model, calib = probe(tmp, name, *spec)
        found[name] = (model, calib, {"x": np.load(calib)["x"]})
    model, calib, _, views = mobilenet_photo_setup("speed")
    found["MobileNetV2"] = (model, calib, {"input": views[:SQNR_SAMPLES]})
    if CORPUS.is_dir():
        for case in sorted(p for p in CORPUS.iterdir() if (p / "case.json").exists()):
            if case.name not in LEFT_OUT:
                found[case.name] = (case / "model.onnx", case / "calib.npz", dict(np.load(case / "eval.npz")))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace BENCHMARKS.md's section")
    args = parser.parse_args()
    rows: dict[str, dict] = {}
    litert: dict[str, dict | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, calib, data) in cases(Path(tmp)).items():
            models, tflite = quantized_models(model, calib, Path(tmp) / name)
            runnable = {k: v for k, v in models.items() if isinstance(v, Path)}
            measured = latencies(runnable, model, data)
            rows[name] = {k: measured.get(k, models[k]) for k in models}
            litert[name] = litert_speed(tflite)
            print(name, json.dumps(rows[name], default=str), json.dumps(litert[name], default=str), flush=True)
    lines = section(rows, litert)
    print("\n".join(lines))
    if args.write:
        replace_section(MARKER, lines)


def cell(value) -> str:
    if isinstance(value, dict):
        sqnr = f", {value['sqnr']:.1f} dB" if value.get("sqnr") is not None else ""
        return f"{value['ms']:.2f} ms ({value['speedup']:.2f}x{sqnr})"
    return f"fails: {value}"


def section(rows: dict[str, dict], litert: dict[str, dict | str]) -> list[str]:
    columns = ["fp32", "edgeq", "ORT u8s8", "ORT s8s8", "ORT u8s8 reduce_range", SATURATING]
    exact_columns = columns[2:5]
    cpu = host_cpu()
    lines = [
        MARKER,
        "",
        "Command: `python benchmarks/bench_speed.py --write`  ",
        f"Machine: {machine()}; edgeq's CPU profile: {cpu.name} ({cpu.description})  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Versions: edgeq {edgeq.__version__}, onnxruntime {ort.__version__}, ai-edge-litert {litert_version()}",
        "",
        *textwrap.wrap(
            "Rows named `layer:` are one-layer models (random weights and inputs) that time the int8 kernels "
            "themselves against fp32: the ceiling no graph-level placement can pass on this CPU. "
            f"Batch 1, 1 thread; median latency over {ROUNDS} rounds of {RUNS} runs, models run round-robin; in "
            "brackets the speedup over fp32 (median over rounds of the per-round ratio) and the SQNR of all outputs "
            f"against fp32 on the first {SQNR_SAMPLES} evaluation samples. edgeq: its default `convert --target "
            "onnxruntime` model for this CPU; ORT: onnxruntime's quantize_static (QDQ, MinMax, per-channel int8 "
            "weights). Each runs on the kernels under which it computes what its Q/DQ nodes define here: "
            + (
                "the default ones for all (this CPU has VNNI)."
                if cpu.gemm_pair_limit is None
                else "ORT's 8-bit models on onnxruntime's exact kernels (`session.x64quantprecision=1`), edgeq's "
                "(weight pairs bounded for this CPU, edgeq.quantization.cpus) and reduce_range's (7-bit weights) on "
                "the default ones; the last column runs ORT u8s8 on the default kernels anyway: faster, but "
                "saturating (see its SQNR)."
            ),
            width=116,
        ),
    ]
    lines += [
        "",
        "### ONNX Runtime",
        "",
        "| model | " + " | ".join(columns) + " | edgeq / best exact ORT speedup |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for name, row in rows.items():
        best = max((row[c]["speedup"] for c in exact_columns if isinstance(row.get(c), dict)), default=None)
        ratio = f"{row['edgeq']['speedup'] / best:.2f}" if best and isinstance(row["edgeq"], dict) else "-"
        lines.append(f"| {name} | " + " | ".join(cell(row.get(c, "-")) for c in columns) + f" | {ratio} |")
    lines += [
        "",
        "### LiteRT (XNNPACK): edgeq's int8 .tflite against the same graph in float",
        "",
        "| model | float .tflite | int8 .tflite (speedup) |",
        "|---|---|---|",
    ]
    for name, row in litert.items():
        if isinstance(row, dict):
            lines.append(
                f"| {name} | {row['float .tflite']['ms']:.2f} ms | {row['int8 .tflite']['ms']:.2f} ms "
                f"({row['int8 .tflite']['speedup']:.2f}x) |"
            )
        else:
            lines.append(f"| {name} | - | {row} |")
    lines.append("")
    return lines


def litert_version() -> str:
    from importlib.metadata import version

    return version("ai-edge-litert")


if __name__ == "__main__":
    main()
