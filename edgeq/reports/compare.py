"""Per-output and per-layer error of a quantized model against its float model.

Both models run in onnxruntime on the same data with every tensor they share (by name) exposed. The QDQ
model's DequantizeLinear outputs carry the float tensors' names (passes.insert_qdq), and the float model is
preprocessed exactly as ``edgeq quantize`` preprocesses it, so the names line up. For each tensor the error
is accumulated over all samples as

    SQNR = 10 log10( sum x_float^2 / sum (x_float - x_quant)^2 )   [dB]

(edgeq.measure.metrics.ErrorSums: streaming sums, so memory does not grow with the data).

A .tflite written by edgeq keeps the ONNX tensor names, so it is compared the same way: it runs in LiteRT's
builtin kernels without delegates (XNNPACK fuses tensors away; these kernels keep every intermediate), one sample
at a time, and rank-4 NHWC tensors are moved back to NCHW before they are compared.
"""

from __future__ import annotations

import graphlib
import itertools
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgeq.data.sources import CalibrationData
from edgeq.io.onnx_model import load_model, read_proto, to_proto
from edgeq.io.session import run_batches, session
from edgeq.measure.metrics import ErrorSums
from edgeq.passes.preprocess import preprocess
from edgeq.pipeline.stages import CHANNEL_SCALES_KEY


def _float_tensor_names(proto: onnx.ModelProto) -> list[str]:
    typed = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.value_info, *proto.graph.output]}
    return [
        out for node in proto.graph.node for out in node.output if typed.get(out) == onnx.TensorProto.FLOAT
    ]


def _exposing(proto: onnx.ModelProto, names: list[str]) -> ort.InferenceSession:
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    existing = {o.name for o in proto.graph.output}
    for name in names:
        if name not in existing:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return session(proto, optimization="disabled")


def channel_scales(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Per-channel factors s of tensors that equalization left as original / s (passes/equalize.py)."""
    for entry in proto.metadata_props:
        if entry.key == CHANNEL_SCALES_KEY:
            return {name: np.asarray(v, np.float32) for name, v in json.loads(entry.value).items()}
    return {}


def unscaled(value: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """VALUE in the float model's units: channels (axis 1) multiplied back by their equalization scale."""
    if scale is None:
        return value
    shape = [1] * value.ndim
    shape[1] = -1
    return value * scale.reshape(shape)


def compare_onnx(float_path, quant_path, data: CalibrationData, *, batch_size: int = 16) -> dict:
    """SQNR and max abs error per graph output and per shared intermediate tensor."""
    float_model = load_model(float_path)
    preprocess(float_model)
    float_proto = to_proto(float_model)
    quant_proto = read_proto(quant_path)
    outputs = [o.name for o in float_proto.graph.output]
    quant_names = set(_float_tensor_names(quant_proto)) | {o.name for o in quant_proto.graph.output}
    layers = [n for n in _float_tensor_names(float_proto) if n in quant_names and n not in outputs]
    names = outputs + layers
    float_session = _exposing(float_proto, names)
    quant_session = _exposing(quant_proto, names)
    sums = {name: ErrorSums() for name in names}
    scales = channel_scales(quant_proto)
    float_names = [o.name for o in float_session.get_outputs()]
    quant_outputs = [o.name for o in quant_session.get_outputs()]
    for batch, float_outputs in run_batches(float_session, float_names, data, batch_size):
        ref = dict(zip(float_names, float_outputs, strict=True))
        test = dict(zip(quant_outputs, quant_session.run(quant_outputs, batch), strict=True))
        for name in names:
            sums[name].add(ref[name], unscaled(test[name], scales.get(name)))

    return {
        "samples": data.num_samples,
        "outputs": {name: sums[name].to_dict() for name in outputs},
        "layers": {name: sums[name].to_dict() for name in layers},
    }


def compare(float_path, quant_path, data: CalibrationData, *, batch_size: int = 16) -> dict:
    """compare_onnx for .onnx, compare_tflite for .tflite."""
    if Path(quant_path).suffix == ".tflite":
        return compare_tflite(float_path, quant_path, data)
    return compare_onnx(float_path, quant_path, data, batch_size=batch_size)


def compare_tflite(float_path, tflite_path, data: CalibrationData) -> dict:
    from edgeq.targets.tflite.artifact import dequantized, float_outputs, model_inputs
    from edgeq.targets.tflite.interpreters import invoke_litert, litert_interpreter
    from edgeq.tflite_format.flatbuffer import read

    model_bytes = Path(tflite_path).read_bytes()
    graph = read(model_bytes)
    float_model = load_model(float_path)
    preprocess(float_model)
    float_proto = to_proto(float_model)
    outputs = [o.name for o in float_proto.graph.output]
    by_name = {t.name: i for i, t in enumerate(graph.tensors) if not t.is_constant}
    layers = [n for n in _float_tensor_names(float_proto) if n in by_name and n not in outputs]
    float_session = _exposing(float_proto, outputs + layers)
    interpreter = litert_interpreter(model_bytes, kernels="optimized", preserve_all_tensors=True)
    sums = {name: ErrorSums() for name in outputs + layers}
    for batch, float_values in run_batches(float_session, outputs + layers, data, 16):
        ref = dict(zip(outputs + layers, float_values, strict=True))
        count = len(next(iter(batch.values())))
        for i in range(count):
            feeds = {name: array[i : i + 1] for name, array in batch.items()}
            tested = float_outputs(graph, invoke_litert(interpreter, model_inputs(graph, feeds)))
            for name, value in zip(outputs, tested, strict=True):
                sums[name].add(ref[name][i : i + 1], value)
            for name in layers:
                index = by_name[name]
                value = dequantized(graph, index, interpreter.get_tensor(index))
                sums[name].add(ref[name][i : i + 1], value)
    return {
        "samples": data.num_samples,
        "kernels": "LiteRT builtin kernels, no delegates",
        "outputs": {name: sums[name].to_dict() for name in outputs},
        "layers": {name: sums[name].to_dict() for name in layers},
    }


def layer_order(results: dict[str, dict]) -> list[str]:
    """Every compared layer of RESULTS in the float model's graph order. Each result lists the float tensors its
    model also has (an equalized model has tensors the default one lacks, and the reverse), each list in graph
    order, so one layer keeps one x position across models: the union, ordered by every list's succession."""
    order = graphlib.TopologicalSorter()
    for result in results.values():
        names = list(result["layers"])
        for name in names[:1]:
            order.add(name)
        for before, after in itertools.pairwise(names):
            order.add(after, before)
    return list(order.static_order())


def plot_layers(results: dict[str, dict], path) -> None:
    """A PNG of per-layer SQNR: layers in graph order on the x-axis, one line per quantized model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeq.io.files import atomic_path

    figure, axes = plt.subplots(figsize=(12, 4.5))
    position = {name: i for i, name in enumerate(layer_order(results))}
    for label, result in results.items():
        x = [position[name] for name in result["layers"]]
        values = [row["sqnr_db"] for row in result["layers"].values()]
        axes.plot(x, values, marker=".", label=Path(label).name)
    axes.set_xlabel("layer (graph order)")
    axes.set_ylabel("SQNR vs float (dB)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
