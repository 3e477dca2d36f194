"""The minimum operator version for each op signature, as tensorflow/lite/tools/versioning/op_version.cc picks it.

TFLite selects a kernel by (op, version) and rejects versions above what it registers; TFLite Micro ignores
versions. Writing the minimum version a signature needs keeps models loadable by the oldest runtimes
(TFLITE_FACTS.md §3.1).
"""

from __future__ import annotations

import numpy as np

from edgeq.tflite_graph import Graph, Operator


def op_version(graph: Graph, op: Operator) -> int:
    tensors = graph.tensors
    first = tensors[op.inputs[0]]
    out = tensors[op.outputs[0]]
    int8 = first.dtype == np.int8
    int16 = first.dtype == np.int16
    code = op.opcode
    if code == "CONV_2D":
        weights = tensors[op.inputs[1]]
        if first.shape[-1] != weights.shape[-1]:
            return 6  # grouped convolution
        return 3 if int8 else 1
    if code == "DEPTHWISE_CONV_2D":
        dilated = op.options.get("DilationWFactor", 1) != 1 or op.options.get("DilationHFactor", 1) != 1
        if int8:
            return 3
        return 2 if dilated else 1
    if code == "FULLY_CONNECTED":
        if len(op.inputs) == 2 or (len(op.inputs) == 3 and op.inputs[2] < 0):
            return 6
        if op.options.get("KeepNumDims"):
            return 5
        return 4 if int8 else 1
    if code == "DEQUANTIZE":
        if int16:
            return 3
        if first.dtype == np.int8:
            return 5 if first.quantization is not None and first.quantization.per_channel else 2
        return 1
    if code == "QUANTIZE":
        return 2 if out.dtype == np.int16 else 1
    if code in {"ADD", "MUL"}:
        return 3 if int16 else 2 if int8 else 1
    if code in {"AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX"}:
        return 3 if int16 else 2 if int8 else 1
    if code in {"CONCATENATION", "MEAN", "PAD", "PADV2", "TRANSPOSE", "LOGISTIC"}:
        return 2 if int8 else 1
    if code in {"RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"}:
        if op.options.get("HalfPixelCenters"):
            return 3
        return 2 if int8 else 1
    return 1
