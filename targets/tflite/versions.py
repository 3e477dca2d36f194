"""The minimum operator version for each op signature, as tensorflow/lite/tools/versioning/op_version.cc picks it.

TFLite selects a kernel by (op, version) and rejects versions above what it registers; TFLite Micro ignores
versions. Writing the minimum version a signature needs keeps models loadable by the oldest runtimes
(TFLITE_FACTS.md §3.1).
"""

from __future__ import annotations

import numpy as np

from edgeq.tflite_format.flatbuffer import Graph, Operator


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
        if len(op.inputs) == 2:  # an absent bias written as -1 keeps the 3-input signature
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
        if out.quantization is not None and out.quantization.per_channel:
            return 3
        return 2 if out.dtype == np.int16 else 1
    if code == "ADD":
        return 3 if int16 else 2 if int8 else 1
    if code == "MUL":
        if int16:
            return 4
        if int8:
            second = tensors[op.inputs[1]]
            multiplier = first.quantization.scale[0] * second.quantization.scale[0] / out.quantization.scale[0]
            return 3 if multiplier >= 1 else 2  # kernels before v3 assume a multiplier below one
        return 1
    if code in {"MAXIMUM", "MINIMUM"}:
        if int16:
            return 4
        second = tensors[op.inputs[1]]
        if first.shape != second.shape and max(len(first.shape), len(second.shape)) > 4:
            return 3  # 5-D broadcasting
        return 2 if int8 else 1
    if code in {"AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX"}:
        return 3 if int16 else 2 if int8 else 1
    rank = len(first.shape)
    if code == "TRANSPOSE":
        return 6 if rank > 5 else 4 if rank > 4 else 5 if int16 else 2 if int8 else 1
    if code in {"PAD", "PADV2"}:
        return 4 if rank > 4 else 3 if int16 else 2 if int8 else 1
    if code in {"CONCATENATION", "MEAN", "LOGISTIC"}:
        return 3 if int16 else 2 if int8 else 1
    if code in {"RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"}:
        if int16:
            return 4
        if op.options.get("HalfPixelCenters") or (code == "RESIZE_NEAREST_NEIGHBOR" and op.options.get("AlignCorners")):
            return 3
        return 2 if int8 else 1
    return 1
