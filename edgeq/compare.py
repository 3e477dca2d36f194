"""Per-output and per-layer error of a quantized model against its float model.

Both models run in onnxruntime on the same data with every tensor they share (by name) exposed. The QDQ
model's DequantizeLinear outputs carry the float tensors' names (passes.insert_qdq), and the float model is
preprocessed exactly as ``edgeq quantize`` preprocesses it, so the names line up. For each tensor the error
is accumulated over all samples as

    SQNR = 10 log10( sum x_float^2 / sum (x_float - x_quant)^2 )   [dB]

(edgeq.metrics.ErrorSums: streaming sums, so memory does not grow with the data).
"""

from __future__ import annotations

import onnx
import onnxruntime as ort

from edgeq.data import CalibrationData
from edgeq.metrics import ErrorSums
from edgeq.modelio import load_model, read_proto, to_proto
from edgeq.passes.preprocess import preprocess
from edgeq.targets.onnxruntime import run_batches


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
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


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
    float_names = [o.name for o in float_session.get_outputs()]
    quant_outputs = [o.name for o in quant_session.get_outputs()]
    for batch, float_outputs in run_batches(float_session, float_names, data, batch_size):
        ref = dict(zip(float_names, float_outputs, strict=True))
        test = dict(zip(quant_outputs, quant_session.run(quant_outputs, batch), strict=True))
        for name in names:
            sums[name].add(ref[name], test[name])

    return {
        "samples": data.num_samples,
        "outputs": {name: sums[name].to_dict() for name in outputs},
        "layers": {name: sums[name].to_dict() for name in layers},
    }
