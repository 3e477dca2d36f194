"""``edgeq verify``: one integer semantics across every target, checked by running them all on the same inputs.

The oracle is edgeq's integer reference (edgeq.reference, TFLite Micro's reference kernels in numpy) run on the
TFLite graph: the ``.tflite`` among the artifacts, or else the lowering of the QDQ ``.onnx`` given. Every runtime
gets the same int8 inputs: the data quantized the way TFLite's QUANTIZE does (artifact.model_inputs); the ONNX
models, whose interface is float, get those integers dequantized, which their QuantizeLinear maps back exactly.

Runtimes and what they must show:

* exact (0 mismatching elements): the integer-only ONNX model in onnxruntime, TFLite Micro, and LiteRT with
  BUILTIN_REF kernels (against the reference's "litert" semantics: LiteRT 2.3's reference FULLY_CONNECTED rounds
  once where TFLite Micro rounds twice; the report also counts where LiteRT and TFLite Micro differ);
* float-scale (not bit-exact by design): the QDQ ONNX model in onnxruntime and LiteRT's optimized kernels, which
  requantize in float or with their own rounding, must stay within 1 LSB *per op*: every op's output is compared
  with the reference kernel applied to the runtime's own inputs of that op (so differences do not accumulate
  along the network). The QDQ model's intermediate integers are its ``<tensor>_quantized`` QuantizeLinear outputs
  (a uint8 model's are moved by 128 to the int8 encoding); LiteRT's come from ``preserve_all_tensors``, which
  runs its builtin optimized kernels without the XNNPACK delegate. XNNPACK itself (LiteRT's default) exposes only
  the outputs: their difference is reported in output steps.

Outputs of float-interface models are turned back into integers with the output tensor's encoding:
round(y / s) + zp recovers the integer exactly, since y = (q - zp) * s in float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgeq.data.sources import CalibrationData, InputSpec
from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import read_proto
from edgeq.io.session import session
from edgeq.reference.executor import kernel, run_all_semantics
from edgeq.targets.tflite.artifact import dequantized, model_inputs, quantized
from edgeq.targets.tflite.interpreters import (
    default_arena_size,
    invoke_litert,
    invoke_tflm,
    litert_interpreter,
    tflm_interpreter,
)
from edgeq.tflite_format.flatbuffer import Graph, read

INTEGER_ONNX_SUFFIX = ".integer.onnx"


def _is_integer_only(path: Path) -> bool:
    return path.name.endswith(INTEGER_ONNX_SUFFIX)


def reference_graph(artifacts: list[Path]) -> tuple[Graph, bytes | None]:
    """The TFLite graph the reference runs: the .tflite given, else the lowering of the QDQ .onnx given."""
    tflites = [p for p in artifacts if p.suffix == ".tflite"]
    if len(tflites) > 1:
        raise EdgeqError("give at most one .tflite (the artifacts must come from one quantized model)")
    if tflites:
        data = tflites[0].read_bytes()
        return read(data), data
    qdq = [p for p in artifacts if p.suffix == ".onnx" and not _is_integer_only(p)]
    if not qdq:
        raise EdgeqError("verify needs the .tflite or the QDQ .onnx the other artifacts were built from")
    from edgeq.io.onnx_model import load_model
    from edgeq.targets.tflite.lower import lower

    model = load_model(qdq[0])
    if not any(node.op_type == "QuantizeLinear" for node in model.graph):
        raise EdgeqError(f"{qdq[0]} is not a quantized (QDQ) model: verify compares quantized artifacts")
    return lower(model).graph, None


def _integers(graph: Graph, index: int, real: np.ndarray) -> np.ndarray:
    """The stored integers of output INDEX from its dequantized ONNX-layout values."""
    tensor = graph.tensors[index]
    if real.ndim == 4:
        real = real.transpose(0, 2, 3, 1)
    if tensor.quantization is None or tensor.dtype == np.float32:
        return real
    return quantized(tensor, real)


def _differences(got: list[np.ndarray], want: list[np.ndarray], names: list[str]) -> dict:
    """Per output: mismatching elements and the largest difference (in integer steps)."""
    rows = {}
    for name, g, w in zip(names, got, want, strict=True):
        diff = np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64))
        rows[name] = {"mismatches": int(np.count_nonzero(diff)), "max_abs_diff": float(diff.max(initial=0.0))}
    return rows


def per_op_steps(graph: Graph, inputs: list[np.ndarray], observed: dict[int, np.ndarray]) -> dict[str, float]:
    """For each op whose output the runtime exposed (OBSERVED: tensor index -> integers, TFLite layout): the largest
    difference between that output and the reference kernel run on the runtime's own inputs of the op. Ops whose
    output was not exposed are computed by the reference and feed the next op."""
    values = dict(zip(graph.inputs, inputs, strict=True)) | observed
    steps = {}
    for number, op in enumerate(graph.operators):
        args = [None if i < 0 else values[i] if i in values else graph.tensors[i].data for i in op.inputs]
        results = kernel(op.opcode)(graph, op, args)
        for index, result in zip(op.outputs, results, strict=True):
            if index in observed:
                diff = np.abs(observed[index].astype(np.int64) - result.astype(np.int64))
                steps[f"{number} {op.opcode} {graph.tensors[index].name}"] = float(diff.max(initial=0))
            else:
                values[index] = result
    return steps


def _qdq_integers(model: onnx.ModelProto, graph: Graph, feeds: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """The QDQ model's integers of every TFLite tensor it quantizes (its <name>_quantized), int8 encoding, NHWC."""
    produced = {out for node in model.graph.node if node.op_type == "QuantizeLinear" for out in node.output}
    wanted = {
        index: f"{tensor.name}_quantized"
        for index, tensor in enumerate(graph.tensors)
        if f"{tensor.name}_quantized" in produced and tensor.quantization is not None
    }
    exposing = onnx.ModelProto()
    exposing.CopyFrom(model)
    del exposing.graph.output[:]
    exposing.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in wanted.values())
    arrays = session(exposing).run(list(wanted.values()), feeds)
    integers = {}
    for (index, _), array in zip(wanted.items(), arrays, strict=True):
        if array.dtype == np.uint8 and graph.tensors[index].dtype == np.int8:
            array = (array.astype(np.int16) - 128).astype(np.int8)  # the same scale, the zero point moved by 128
        integers[index] = array.transpose(0, 2, 3, 1) if array.ndim == 4 else array
    return integers


def _litert_tensors(tflite_bytes: bytes, graph: Graph, inputs: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Every op output of LiteRT's builtin optimized kernels (preserve_all_tensors drops the XNNPACK delegate),
    the batch run one sample at a time."""
    interpreter = litert_interpreter(tflite_bytes, kernels="optimized", preserve_all_tensors=True)
    produced = [i for op in graph.operators for i in op.outputs]
    per_sample = []
    for n in range(len(inputs[0])):
        invoke_litert(interpreter, [array[n : n + 1] for array in inputs])
        per_sample.append([interpreter.get_tensor(i).copy() for i in produced])
    return {i: np.concatenate(parts) for i, parts in zip(produced, zip(*per_sample, strict=True), strict=True)}


def _summary(steps: dict[str, float]) -> dict:
    worst = max(steps, key=steps.get) if steps else None
    return {
        "ops_checked": len(steps),
        "max_steps": steps[worst] if worst else 0.0,
        "worst_op": worst,
        "ops_over_1_lsb": sorted(name for name, d in steps.items() if d > 1),
    }


def check_artifacts(artifacts: list[str | Path]) -> list[Path]:
    paths = [Path(p) for p in artifacts]
    for path in paths:
        if path.suffix not in (".onnx", ".tflite"):
            raise EdgeqError(f"{path}: verify takes .onnx and .tflite artifacts")
        if not path.is_file():
            raise EdgeqError(f"{path} does not exist")
    return paths


def data_specs(graph: Graph) -> list[InputSpec]:
    """What the data must hold: one float array per graph input (either layout; model_inputs lays it out)."""
    return [
        InputSpec(graph.tensors[i].name, (None,) * len(graph.tensors[i].shape), np.dtype(np.float32))
        for i in graph.inputs
    ]


def verify(
    artifacts: list[str | Path],
    data: CalibrationData,
    *,
    samples: int = 16,
    reference: tuple[Graph, bytes | None] | None = None,
) -> dict:
    """Run every artifact and the integer reference on the first SAMPLES samples of DATA; see the module doc.
    REFERENCE is reference_graph(ARTIFACTS) when the caller already has it."""
    paths = check_artifacts(artifacts)
    graph, tflite_bytes = reference or reference_graph(paths)
    names = [graph.tensors[i].name for i in graph.outputs]

    batches = []
    for batch in data.batches(1):
        batches.append(model_inputs(graph, batch))
        if len(batches) == samples:
            break
    if not batches:
        raise EdgeqError("the data has no samples")
    inputs = [np.concatenate(parts) for parts in zip(*batches, strict=True)]
    float_feeds = {
        graph.tensors[i].name: dequantized(graph, i, array) for i, array in zip(graph.inputs, inputs, strict=True)
    }
    expected = {"tflite-micro": [], "litert": []}
    for sample in batches:  # one sample at a time keeps the reference's temporaries small
        for semantics, outputs in run_all_semantics(graph, sample).items():
            expected[semantics].append(outputs)
    reference = {k: [np.concatenate(p) for p in zip(*v, strict=True)] for k, v in expected.items()}

    exact, float_scale, per_op = {}, {}, {}
    for path in paths:
        if path.suffix == ".onnx":
            model = read_proto(path)  # the safe loader: external data only from its folder
            outputs = session(model).run(names, float_feeds)
            integers = [_integers(graph, i, o) for i, o in zip(graph.outputs, outputs, strict=True)]
            rows = _differences(integers, reference["tflite-micro"], names)
            (exact if _is_integer_only(path) else float_scale)[f"onnxruntime {path.name}"] = rows
            if not _is_integer_only(path):
                per_op[f"onnxruntime {path.name}"] = _summary(
                    per_op_steps(graph, inputs, _qdq_integers(model, graph, float_feeds))
                )
    if tflite_bytes is not None:

        def litert(kernels: str) -> list[np.ndarray]:
            interpreter = litert_interpreter(tflite_bytes, kernels=kernels)
            per_sample = [invoke_litert(interpreter, sample) for sample in batches]
            return [np.concatenate(parts) for parts in zip(*per_sample, strict=True)]

        litert_reference = litert("reference")
        exact["LiteRT reference kernels"] = _differences(litert_reference, reference["litert"], names)
        float_scale["LiteRT default kernels (XNNPACK)"] = _differences(
            litert("default"), reference["tflite-micro"], names
        )
        per_op["LiteRT optimized kernels"] = _summary(
            per_op_steps(graph, inputs, _litert_tensors(tflite_bytes, graph, inputs))
        )
        try:
            import tflite_micro  # noqa: F401
        except ImportError:
            micro = None
        else:
            micro = tflm_interpreter(tflite_bytes, default_arena_size(graph))
        if micro is not None:
            per_sample = [invoke_tflm(micro, sample, len(graph.outputs)) for sample in batches]
            outputs = [np.concatenate(parts) for parts in zip(*per_sample, strict=True)]
            exact["TFLite Micro"] = _differences(outputs, reference["tflite-micro"], names)
        litert_vs_micro = _differences(litert_reference, reference["tflite-micro"], names)
    else:
        litert_vs_micro = None
    mismatching = sum(row["mismatches"] for rows in exact.values() for row in rows.values())
    return {
        "samples": len(batches),
        "output_elements": int(sum(r.size for r in reference["tflite-micro"])),
        "exact": exact,
        "float_scale": float_scale,
        "per_op": per_op,
        "within_1_lsb_per_op": all(not row["ops_over_1_lsb"] for row in per_op.values()),
        "litert_reference_vs_tflite_micro": litert_vs_micro,
        "bit_exact": mismatching == 0,
    }


def format_verification(report: dict) -> str:
    lines = [
        f"{report['samples']} samples, {report['output_elements']} output elements; against edgeq's integer "
        "reference (TFLite Micro semantics; LiteRT's reference kernels against its LiteRT semantics):"
    ]
    for kind, title in (("exact", "must be exact"), ("float_scale", "float-scale requantization")):
        for runtime, rows in report[kind].items():
            for output, row in rows.items():
                lines.append(
                    f"  {runtime:<44} {output}: {row['mismatches']} mismatching, "
                    f"max diff {row['max_abs_diff']:g} LSB ({title})"
                )
    for runtime, row in report["per_op"].items():
        lines.append(
            f"  {runtime:<44} per op: at most {row['max_steps']:g} LSB over {row['ops_checked']} ops"
            + (f", over 1 LSB: {', '.join(row['ops_over_1_lsb'])}" if row["ops_over_1_lsb"] else "")
        )
    if report["litert_reference_vs_tflite_micro"]:
        for output, row in report["litert_reference_vs_tflite_micro"].items():
            lines.append(f"  LiteRT reference vs TFLite Micro {output}: {row['mismatches']} mismatching")
    lines.append("bit-exact: yes" if report["bit_exact"] else "bit-exact: NO")
    lines.append("float-scale runtimes within 1 LSB per op: " + ("yes" if report["within_1_lsb_per_op"] else "NO"))
    return "\n".join(lines)
