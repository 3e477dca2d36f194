"""Constant weights and biases of convolutions and fully-connected layers, stored as the QDQ model holds them.

Weights keep their integers, scales and zero points (int8, per channel along the output-channel axis of the
TFLite layout). A quantized convolution needs an int32 bias (int64 when its input activation is int16: the 16x8
kernels accumulate in int64 and read the bias as int64) with zero point 0 and scale[c] = float32(S_in *
S_w[c]) (zeros with that scale when the ONNX node has none); a QDQ bias keeps its integers and scales (the
validator checks the scale rule). At float precision both are their real values in float32: (q - zp) * S.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.targets.tflite.lower.context import Activation, LoweringContext
from edgeq.tflite_format.graph import Quantization, Tensor


def weights(ctx: LoweringContext, name: str, values: np.ndarray, scale, zero, axis: int) -> int:
    """The weight tensor: int8 VALUES with their encoding per channel along AXIS (or float32 real values)."""
    if ctx.float:
        shape = [1] * values.ndim
        shape[axis] = -1
        real = (values.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
        return ctx.tensor(name, values.shape, np.float32, data=real.astype(np.float32))
    q = Quantization(scale, zero, axis if scale.size > 1 else 0)
    return ctx.graph.add_tensor(Tensor(name, values.shape, np.int8, q, np.ascontiguousarray(values)))


def bias(ctx: LoweringContext, node: ir.Node, bias_input: int, act: Activation, w_scale, channels: int) -> int:
    """The int32 bias, int64 for an int16 input (zeros when the ONNX node has none: int8 TFLite convolutions
    require one)."""
    in_scale = ctx.encoding_of(act.index)[0] if not ctx.float else 1.0
    expected = (np.float32(in_scale) * np.broadcast_to(w_scale, (channels,))).astype(np.float32)
    dtype = np.int64 if ctx.graph.tensors[act.index].dtype == np.int16 else np.int32
    value = node.inputs[bias_input] if len(node.inputs) > bias_input else None
    if value is None:
        values, scale = np.zeros(channels, dtype), expected
    else:
        values, scale, _ = ctx.constant(value, node)
        values = np.broadcast_to(values.astype(dtype).reshape(-1), (channels,))
        scale = np.broadcast_to(scale, (channels,)).astype(np.float32)
    if ctx.float:
        return ctx.tensor(f"{node.name}.bias", (channels,), np.float32, data=(values * scale).astype(np.float32))
    q = Quantization(scale if w_scale.size > 1 else scale[:1], 0)
    return ctx.graph.add_tensor(Tensor(f"{node.name}.bias", (channels,), dtype, q, np.array(values)))
