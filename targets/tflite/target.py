"""The TFLite target: ``<name>.tflite`` (int8, NHWC), written without TensorFlow and run in LiteRT.

The int8 QDQ model is lowered (targets/tflite/lower), serialized and checked once per conversion (``tflite_of``;
the TFLite Micro target embeds the same bytes). In LiteRT it runs with three kernel sets (targets/tflite/
interpreters.py): the default (XNNPACK, what a CPU deployment computes: the validation on data and the speed),
the builtin kernels without delegates (which keep every intermediate tensor: `edgeq compare` and the per-op check
of `edgeq verify`) and the reference kernels (held to the integer reference bit for bit, under LiteRT's own
semantics: edgeq/reference/executor.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import ModelError, UnsupportedError
from edgeq.io.files import write_bytes_atomic
from edgeq.passes.insert_qdq import placeholder_qdq
from edgeq.quantization.qparams import ACTIVATION_TYPES
from edgeq.reference.interface import dequantized, graph_batch, model_inputs
from edgeq.targets import register
from edgeq.targets.target import Build, Emitted, IntegerRun, Option, Target, output_summary
from edgeq.targets.tflite import profile
from edgeq.targets.tflite.analysis import analyze_tflite
from edgeq.targets.tflite.artifact import TfliteModel, build, validate_on_data
from edgeq.targets.tflite.delegation import delegation_line
from edgeq.targets.tflite.interpreters import flatbuffer_refusal, invoke_litert, litert_interpreter
from edgeq.targets.tflite.lower import IO_TYPES, KERNELS, Lowered, lower
from edgeq.tflite_format.flatbuffer import Graph, read, read_file


def tflite_of(target: Target, conversion: Build) -> TfliteModel:
    """The conversion's int8 .tflite, built once and shared by the targets that embed it."""
    if "tflite" not in conversion.shared:
        qdq = conversion.integer_quantized().model
        kernels = conversion.option(target, "kernels")
        if kernels == "auto":  # one .tflite serves both targets: a microcontroller's arena is the scarcer resource
            kernels = "micro" if "tflm" in conversion.targets else "xnnpack"
        conversion.shared["tflite"] = build(qdq, io=conversion.option(target, "io"), kernels=kernels)
    return conversion.shared["tflite"]


def float_tflite(target: Target, conversion: Build) -> list[Path]:
    """With the precision option "float": ``<name>.float.tflite``, the same graph in float32 for speed comparisons."""
    if conversion.option(target, "precision") != "float":
        return []
    path = conversion.outdir / f"{conversion.name}.float.tflite"
    if "float tflite" not in conversion.shared:
        write_bytes_atomic(path, build(conversion.integer_quantized().model, precision="float").data)
        conversion.shared["float tflite"] = path
    return [path]


# Calibrated ranges of the QDQ models surveyed without data: some lowerings depend on a range's sign (a DIV's
# divisor), so a node lowered differently under the two depends on the data, and its row says so.
PLACEHOLDER_RANGES = ((-1.0, 1.0), (0.0, 1.0))


def surveyed(model, shared: dict) -> tuple[Lowered, list[dict]]:
    """The int8 lowering of MODEL (a preprocessed float model) with every node tried (``lower(survey=True)``) on a
    QDQ model built without data (passes.insert_qdq.placeholder_qdq) with ranges of both signs, and the rows of
    a node plan (Target.node_plan) from it, each checked against the lowering with one-signed ranges. Built once
    per model, in SHARED."""
    if "tflite survey" not in shared:
        for value in model.graph.inputs:
            dynamic = [str(d.value or "?") for d in (value.shape or [])[1:] if not isinstance(d, int)]
            if value.shape is None or dynamic:
                raise UnsupportedError(
                    f"input {value.name!r} has dynamic dimensions ({', '.join(dynamic) or 'no shape'}): convert "
                    "fixes them from the calibration data; give --input-shape to see what the TFLite targets do"
                )
        both, one = (
            lower(placeholder_qdq(model, ACTIVATION_TYPES["int8"], span, shared.get("exclusions")), survey=True)
            for span in PLACEHOLDER_RANGES
        )
        one_signed = {record.node: record.plan_row() for record in one.coverage}
        rows = []
        for record in both.coverage:
            row, other = record.plan_row(), one_signed.get(record.node)
            if other is not None and other["outcome"] != row["outcome"]:
                row["reason"] = (
                    f"depends on the calibrated ranges: {row['outcome']} if they take both signs "
                    f"({row.get('reason', '')}), {other['outcome']} if one-signed"
                )
            rows.append(row)
        shared["tflite survey"] = both, rows
    return shared["tflite survey"]


class _LiteRTProbe:
    """The float model's tensors a .tflite keeps (edgeq keeps the ONNX names), from LiteRT's builtin kernels
    without delegates, one sample at a time (TFLite graphs are built for a batch of one)."""

    kernels = "LiteRT builtin kernels, no delegates"

    def __init__(self, path: Path, names: list[str]):
        data = path.read_bytes()
        self.graph = read(data)
        by_name = {t.name: i for i, t in enumerate(self.graph.tensors) if not t.is_constant}
        self.index = {name: by_name[name] for name in names if name in by_name}
        self.names = list(self.index)
        self.interpreter = litert_interpreter(data, kernels="optimized", preserve_all_tensors=True)

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        per_sample, step = [], graph_batch(self.graph)  # one invocation per sample (or per batch a model fixed)
        for i in range(0, len(next(iter(batch.values()))), step):
            sample = {name: array[i : i + step] for name, array in batch.items()}
            invoke_litert(self.interpreter, model_inputs(self.graph, sample))
            per_sample.append(
                [
                    dequantized(self.graph, index, self.interpreter.get_tensor(index))
                    for index in self.index.values()
                ]
            )
        return {
            name: np.concatenate(parts)
            for name, parts in zip(self.names, zip(*per_sample, strict=True), strict=True)
        }


def _litert_outputs(data: bytes, kernels: str, inputs: list[list[np.ndarray]]) -> list[np.ndarray]:
    interpreter = litert_interpreter(data, kernels=kernels)
    per_sample = [invoke_litert(interpreter, sample) for sample in inputs]
    return [np.concatenate(parts) for parts in zip(*per_sample, strict=True)]


def _litert_tensors(data: bytes, graph: Graph, inputs: list[list[np.ndarray]]) -> dict[int, np.ndarray]:
    """Every op output of LiteRT's builtin optimized kernels (preserve_all_tensors drops the XNNPACK delegate)."""
    interpreter = litert_interpreter(data, kernels="optimized", preserve_all_tensors=True)
    produced = [i for op in graph.operators for i in op.outputs]
    per_sample = []
    for sample in inputs:
        invoke_litert(interpreter, sample)
        per_sample.append([interpreter.get_tensor(i).copy() for i in produced])
    return {
        i: np.concatenate(parts) for i, parts in zip(produced, zip(*per_sample, strict=True), strict=True)
    }


class TfliteTarget(Target):
    name = "tflite"
    description = "int8 (or 16x8) .tflite (NHWC), written without TensorFlow, validated in LiteRT"
    options = (
        Option(
            "io", "Input/output type of the .tflite (int8 is what microcontrollers want).", "int8", IO_TYPES
        ),
        Option(
            "precision",
            "float also writes <name>.float.tflite, the same graph in float32, for speed comparisons.",
            "int8",
            ("int8", "float"),
        ),
        Option(
            "kernels",
            "The kernels the int8 .tflite's operators are chosen for: xnnpack (LiteRT's CPU delegate; an int8 PRelu "
            "becomes QUANTIZE, MUL and ADD, which it runs, where it leaves PRELU to a slow builtin kernel) or micro "
            "(TFLite Micro: PRELU, one operator and a smaller arena); auto: micro when the conversion includes the "
            "tflm target (both embed one .tflite), else xnnpack. Both compute the same integers.",
            "auto",
            ("auto", *KERNELS),
        ),
    )
    suffixes = (".tflite",)
    activation_types = ("int8", "int16")
    takes_int16_choice = True
    stores_integer_graph = True

    def emit(self, conversion: Build) -> Emitted:
        tflite = tflite_of(self, conversion)
        path = conversion.outdir / f"{conversion.name}.tflite"
        write_bytes_atomic(path, tflite.data)
        artifacts = [path, *float_tflite(self, conversion)]
        return Emitted(
            artifacts, {**tflite.describe(), **conversion.integer_quantized().report}, tflite.lowered.graph
        )

    def artifact_names(self, stem: str) -> tuple[str, ...]:
        return f"{stem}.tflite", f"{stem}.float.tflite"

    def validate(self, conversion: Build, emitted: Emitted) -> dict:
        return validate_on_data(
            conversion.float_path,
            tflite_of(self, conversion).data,
            conversion.eval_data,
            labels=conversion.labels,
            quantized_onnx=conversion.integer_quantized().model,
        )

    def summary(self, report: dict) -> str:
        inputs = ", ".join(f"{i['name']} {i['dtype']} {i['shape']} {i['layout']}" for i in report["inputs"])
        coverage = report["coverage"]
        if coverage.get("int8") and coverage.get("int16"):  # int16 layers in an 8-bit model
            counts = f"{coverage['int8']} int8 and {coverage['int16']} int16 of {coverage['nodes']} nodes"
        else:
            integer = "int16" if coverage.get("int16") else "int8"
            counts = f"{coverage.get(integer, 0)} of {coverage['nodes']} nodes {integer}"
        line = f"input {inputs}; {counts}; "
        if coverage.get("float_island_ops"):
            ops = ", ".join(f"{op} x{n}" for op, n in coverage["float_island_ops"].items())
            line += f"{coverage['float-island']} in float32 islands ({ops}); "
        line += output_summary(report["validation"])
        if "int16_choice" in report:  # edgeq.mixed.int16_choice
            choice = report["int16_choice"]
            line += (
                f"; int16 tensors chosen by measured error: {choice['int16_tensors']} of {choice['candidates']} "
                f"(worst output SQNR {choice['sqnr_db']['0']} dB all int8, {choice['chosen_sqnr_db']} dB chosen; "
                "LiteRT runs 16x8 operators without XNNPACK: --activation-type int8 for the faster int8 model)"
            )
        for row in report.get("largest_losses", [])[:1]:  # where the accuracy goes
            line += f"; most noise added by {row['op']} {row['node']} ({row['input_sqnr_db']:.1f} -> {row['sqnr_db']:.1f} dB)"
        if report["validation"]["xnnpack"]["builtin"]:  # what keeps it from running in XNNPACK alone
            line += "\n  " + delegation_line(report["validation"]["xnnpack"])
        return line

    def check_file(self, path: Path) -> None:
        # LiteRT and TFLite Micro read out of bounds or abort on broken flatbuffers: edgeq's reader (tensor
        # references) and LiteRT's flatbuffer verifier (offsets, vector lengths) pass the file first
        read_file(path)
        refusal = flatbuffer_refusal(path.read_bytes())
        if refusal is not None:
            raise ModelError(f"{path}: LiteRT's flatbuffer verifier rejects it: {refusal}")

    def profile(self, path: Path, *, runs: int, warmup: int, threads: list[int], progress: bool) -> dict:
        return profile.profile(path, runs=runs, warmup=warmup, threads=threads, progress=progress)

    def format_profile(self, result: dict) -> str:
        return profile.format_profile(result)

    def runner(self, path: Path, threads: int):
        return profile.runner(path, threads)

    def analyze(self, path: Path) -> dict:
        return analyze_tflite(read(path.read_bytes()))

    def node_plan(self, model, shared: dict) -> dict:
        return {"nodes": surveyed(model, shared)[1]}

    def probe(self, path: Path, names: list[str]) -> _LiteRTProbe:
        return _LiteRTProbe(path, names)

    def integer_graph(self, path: Path) -> Graph:
        graph = read(path.read_bytes())
        if not any(t.dtype in (np.int8, np.int16) for t in graph.tensors):
            raise UnsupportedError(f"{path} is a float .tflite: verify compares quantized artifacts")
        return graph

    def integer_runs(self, path: Path, graph: Graph, inputs: list[list[np.ndarray]]) -> list[IntegerRun]:
        data = path.read_bytes()
        return [
            IntegerRun(
                "LiteRT reference kernels", True, "litert", _litert_outputs(data, "reference", inputs)
            ),
            IntegerRun(
                "LiteRT default kernels (XNNPACK)", False, outputs=_litert_outputs(data, "default", inputs)
            ),
            IntegerRun("LiteRT optimized kernels", False, per_op=_litert_tensors(data, graph, inputs)),
        ]


register(TfliteTarget())
