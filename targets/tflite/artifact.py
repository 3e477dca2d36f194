"""TFLite artifacts: build and validate on data.

* ``build``: lowers the QDQ model (targets/tflite/lower), serializes it (edgeq.tflite_format) and checks every
  file rule the runtimes rely on (targets/tflite/validate); the target writes it as ``<name>.tflite`` and, with
  the float precision option, ``<name>.float.tflite``, the same graph in float32 for speed comparisons.
* ``validate_on_data``: runs the .tflite in LiteRT's default kernels (what a CPU deployment computes) on the
  evaluation data against the float ONNX model (SQNR, top-1 agreement, accuracy). Inputs arrive in the ONNX
  layout as floats; edgeq.reference.interface lays them out and quantizes them as TFLite's QUANTIZE does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.data import CalibrationData
from edgeq.errors import ModelError, UnsupportedError
from edgeq.io.session import session
from edgeq.measure.metrics import ErrorSums, accuracy
from edgeq.reference.interface import float_outputs, graph_batch, model_inputs
from edgeq.targets.tflite.delegation import delegated_ops
from edgeq.targets.tflite.interpreters import invoke_litert, litert_interpreter
from edgeq.targets.tflite.lower import Lowered, lower
from edgeq.targets.tflite.lower.coverage import refusal_line, summary
from edgeq.targets.tflite.validate import check_model
from edgeq.tflite_format.flatbuffer import Tensor, read, write


@dataclass
class TfliteModel:
    """A lowered, serialized and checked .tflite (not yet written)."""

    data: bytes
    lowered: Lowered
    io: str

    def describe(self) -> dict:
        """Size, operators, and each input's and output's name, shape, type, layout and encoding."""
        graph, lowered = self.lowered.graph, self.lowered
        return {
            "size_bytes": len(self.data),
            "io": self.io,
            "ops": lowered.ops,
            "inputs": [
                _describe(graph.tensors[i], layout)
                for i, layout in zip(graph.inputs, lowered.input_layouts, strict=True)
            ],
            "outputs": [
                _describe(graph.tensors[i], layout)
                for i, layout in zip(graph.outputs, lowered.output_layouts, strict=True)
            ],
            "coverage": {**summary(lowered.coverage), "per_node": [r.to_dict() for r in lowered.coverage]},
        }


def build(qdq_model, *, io: str = "int8", precision: str = "int8", kernels: str = "micro") -> TfliteModel:
    """QDQ_MODEL lowered (with IO as the input/output type, in PRECISION, its operators chosen for KERNELS),
    serialized and checked against every file rule the runtimes rely on."""
    try:
        lowered = lower(qdq_model, io=io, precision=precision, kernels=kernels)
    except UnsupportedError as first:  # every refusal counted in the one line, not only the first
        surveyed = lower(qdq_model, io=io, precision=precision, kernels=kernels, survey=True)
        raise UnsupportedError(
            refusal_line(surveyed.coverage, first),
            op=first.op,
            node=first.node,
            code=first.code,
            reason=first.reason,
        ) from None
    data = write(lowered.graph)
    check_model(data)
    return TfliteModel(data, lowered, io)


def _describe(tensor: Tensor, layout: str) -> dict:
    row = {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype.name, "layout": layout}
    if tensor.quantization is not None:
        row["scale"] = float(tensor.quantization.scale[0])
        row["zero_point"] = int(tensor.quantization.zero_point[0])
    return row


def _samples(data: CalibrationData, input_names: list[str], size: int):
    """Float feed dicts of SIZE samples: the .tflite's batch (1, or the batch an ONNX model fixes)."""
    for batch in data.batches(16 * size):
        count = len(next(iter(batch.values())))
        for i in range(0, count - size + 1, size):
            yield {name: batch[name][i : i + size] for name in input_names if name in batch}


def validate_on_data(
    float_model: str | Path,
    model_bytes: bytes,
    data: CalibrationData,
    *,
    labels: np.ndarray | None = None,
    quantized_onnx=None,
) -> dict:
    """Run the .tflite (LiteRT default kernels) against the float ONNX model (and the QDQ model it was lowered
    from) on DATA: SQNR, max error and agreement per output, accuracy with LABELS."""
    graph = read(model_bytes)
    reference = session(Path(float_model))
    qdq_session = session(quantized_onnx) if quantized_onnx is not None else None
    input_names = [i.name for i in reference.get_inputs()]
    output_names = [o.name for o in reference.get_outputs()]
    if len(output_names) != len(graph.outputs):
        raise ModelError(f"the float model has {len(output_names)} outputs, the .tflite {len(graph.outputs)}")
    interpreter = litert_interpreter(model_bytes, kernels="default")
    sums = {name: ErrorSums() for name in output_names}
    vs_onnx = {name: ErrorSums() for name in output_names}
    scores: dict[str, list[np.ndarray]] = {"float": [], "quantized": []}
    for feeds in _samples(data, input_names, graph_batch(graph)):
        inputs = model_inputs(graph, feeds)
        test = float_outputs(graph, invoke_litert(interpreter, inputs))
        ref = reference.run(output_names, feeds)
        for name, r, t in zip(output_names, ref, test, strict=True):
            sums[name].add(r, t)
        if qdq_session is not None:
            for name, q, t in zip(output_names, qdq_session.run(output_names, feeds), test, strict=True):
                vs_onnx[name].add(q, t)
        scores["float"].append(ref[0])
        scores["quantized"].append(test[0])
    result = {
        "samples": sum(len(s) for s in scores["float"]),
        "kernels": "LiteRT default (XNNPACK)",
        "xnnpack": delegated_ops(interpreter),
        "outputs": {name: s.to_dict() for name, s in sums.items()},
    }
    if qdq_session is not None:
        result["against_qdq_onnx"] = {name: s.to_dict() for name, s in vs_onnx.items()}
    if labels is not None:
        labels = np.asarray(labels)[: result["samples"]]
        result["accuracy"] = {kind: accuracy(np.concatenate(s), labels) for kind, s in scores.items()}
    return result
