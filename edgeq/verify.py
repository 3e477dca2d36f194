"""``edgeq verify``: one integer semantics across every target, checked by running them all on the same inputs.

The oracle is edgeq's integer reference (edgeq.reference, TFLite Micro's reference kernels in numpy) run on the
TFLite graph: the ``.tflite`` among the artifacts, or else the lowering of the QDQ ``.onnx`` given. Every runtime
gets the same int8 inputs: the data quantized the way TFLite's QUANTIZE does (artifact.model_inputs); the ONNX
models, whose interface is float, get those integers dequantized, which their QuantizeLinear maps back exactly.

Runtimes and what they must show:

* exact (0 mismatching elements): the integer-only ONNX model in onnxruntime, TFLite Micro, and LiteRT with
  BUILTIN_REF kernels (against the reference's "litert" semantics: LiteRT 2.3's reference FULLY_CONNECTED rounds
  once where TFLite Micro rounds twice; the report also counts where LiteRT and TFLite Micro differ);
* float-scale (reported, not required to be exact): the QDQ ONNX model in onnxruntime and LiteRT's default
  kernels (XNNPACK), which requantize in float or with their own rounding; their largest difference is reported in
  output steps (LSB).

Outputs of float-interface models are turned back into integers with the output tensor's encoding:
round(y / s) + zp recovers the integer exactly, since y = (q - zp) * s in float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgeq.data import CalibrationData, InputSpec
from edgeq.errors import EdgeqError
from edgeq.reference.arithmetic import round_half_away
from edgeq.reference.executor import run_all_semantics
from edgeq.targets.tflite.artifact import dequantized, model_inputs
from edgeq.targets.tflite.interpreters import (
    default_arena_size,
    invoke_litert,
    invoke_tflm,
    litert_interpreter,
    tflm_interpreter,
)
from edgeq.tflite_graph import Graph, read

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
    from edgeq.modelio import load_model
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
    q = tensor.quantization
    info = np.iinfo(tensor.dtype)
    steps = round_half_away(np.asarray(real, np.float32) / np.float32(q.scale[0]))
    return np.clip(steps + q.zero_point[0], info.min, info.max).astype(tensor.dtype)


def _differences(got: list[np.ndarray], want: list[np.ndarray], names: list[str]) -> dict:
    """Per output: mismatching elements and the largest difference (in integer steps)."""
    rows = {}
    for name, g, w in zip(names, got, want, strict=True):
        diff = np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64))
        rows[name] = {"mismatches": int(np.count_nonzero(diff)), "max_abs_diff": float(diff.max(initial=0.0))}
    return rows


def _onnx_session(path: Path) -> ort.InferenceSession:
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, OSError) as exc:
        raise EdgeqError(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0]}") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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

    exact, float_scale = {}, {}
    for path in paths:
        if path.suffix == ".onnx":
            session = _onnx_session(path)
            outputs = session.run(names, float_feeds)
            integers = [_integers(graph, i, o) for i, o in zip(graph.outputs, outputs, strict=True)]
            rows = _differences(integers, reference["tflite-micro"], names)
            (exact if _is_integer_only(path) else float_scale)[f"onnxruntime {path.name}"] = rows
    if tflite_bytes is not None:

        def litert(kernels: str) -> list[np.ndarray]:
            interpreter = litert_interpreter(tflite_bytes, kernels=kernels)
            per_sample = [invoke_litert(interpreter, sample) for sample in batches]
            return [np.concatenate(parts) for parts in zip(*per_sample, strict=True)]

        litert_reference = litert("reference")
        exact["LiteRT reference kernels"] = _differences(litert_reference, reference["litert"], names)
        float_scale["LiteRT default kernels"] = _differences(litert("default"), reference["tflite-micro"], names)
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
    if report["litert_reference_vs_tflite_micro"]:
        for output, row in report["litert_reference_vs_tflite_micro"].items():
            lines.append(f"  LiteRT reference vs TFLite Micro {output}: {row['mismatches']} mismatching")
    lines.append("bit-exact: yes" if report["bit_exact"] else "bit-exact: NO")
    return "\n".join(lines)
