"""ONNX Conv (1-D and 2-D) -> CONV_2D, or DEPTHWISE_CONV_2D when every input channel has its own filters.

    acc[n, y, x, c] = sum_{i, j, k} (in[n, y*sh + i*dh - pad_t, x*sw + j*dw - pad_l, g*D + k] - zp_in) * w[c, i, j, k]
                      + bias[c]
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0[c], shift[c]) + zp_out, act_min, act_max)

with M0[c] * 2^(shift[c] - 31) ~ S_in * S_w[c] / S_out (edgeq/reference/conv.py, docs/integer-arithmetic.md). ONNX
weights OIHW become OHWI (quantized_dimension 0); a depthwise Conv (group = C_in, one input channel per group)
has weights [C*M, 1, KH, KW] that become [1, KH, KW, C*M] (quantized_dimension 3) and depth_multiplier M. Any
other grouped Conv is a grouped CONV_2D: filters of depth D = C_in / group, output channel c in group
g = c / (C_out / group) (version 6; LiteRT's default and reference kernels and TFLite Micro all run it). A 1-D Conv
is the 2-D one on [N, 1, L, C] (windows.py). Pads become SAME/VALID or an explicit PAD (windows.py), a following
Relu/Clip the fused activation.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.pad import pad_spatial
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.targets.tflite.lower.weights import bias, weights
from edgeq.targets.tflite.lower.windows import (
    planar_shape,
    spatial_ints,
    spatial_padding,
    window_input,
    window_op,
    window_shape,
)
from edgeq.tflite_format.graph import Graph, Operator


def _conv_version(graph: Graph, op: Operator) -> int:
    x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    if x.shape[-1] != w.shape[-1]:
        return 6  # grouped convolution
    # 16x8 (int16 input, int8 weights) is 1: op_version.cc's int16 branch (version 4) wants int16 weights, and its
    # 16x8 branch (version 8) only a quantized_bias_type option, which edgeq does not write
    return 3 if x.dtype == np.int8 else 1


def _depthwise_version(graph: Graph, op: Operator) -> int:
    dilated = op.options.get("DilationWFactor", 1) != 1 or op.options.get("DilationHFactor", 1) != 1
    if graph.tensors[op.inputs[0]].dtype == np.int8:
        return 3
    return 2 if dilated else 1  # float and 16x8 alike (op_version.cc's int16 version 5 wants int16 weights)


def _output_shape(graph: Graph, op: Operator):
    x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    ranks = (len(x.shape), len(w.shape))
    dilation = (op.options.get("DilationHFactor", 1), op.options.get("DilationWFactor", 1))
    if ranks != (4, 4):
        return window_shape(graph, op, (1, 1), dilation, 0, ranks)
    if op.opcode == "CONV_2D" and x.shape[3] % w.shape[3]:
        return f"input has {x.shape[3]} channels, not a multiple of the weights' {w.shape[3]}"
    channels = w.shape[0] if op.opcode == "CONV_2D" else w.shape[3]
    return window_shape(graph, op, w.shape[1:3], dilation, channels, ranks)


def _conv_macs(graph: Graph, op: Operator) -> int:  # filter [OC, KH, KW, IC]
    out_elements = int(np.prod(graph.tensors[op.outputs[0]].shape))
    return out_elements * int(np.prod(graph.tensors[op.inputs[1]].shape[1:]))


def _depthwise_macs(graph: Graph, op: Operator) -> int:  # filter [1, KH, KW, C * M]
    out_elements = int(np.prod(graph.tensors[op.outputs[0]].shape))
    w = graph.tensors[op.inputs[1]].shape
    return out_elements * w[1] * w[2]


def _depth_multiplier_rule(graph: Graph, op: Operator) -> list[str]:
    """depth_multiplier = C_out / C_in (TFLite Micro loops over the option; a wrong one computes garbage)."""
    x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    if len(x.shape) != 4 or len(w.shape) != 4:
        return []  # reported by the shape rules
    cin, cout = x.shape[3], w.shape[3]
    if w.shape[0] != 1:
        return [f"weight tensor '{w.name}' has shape {w.shape}, must be [1, KH, KW, Cout]"]
    if cout % cin:
        return [f"weight tensor '{w.name}' has {cout} output channels, not a multiple of {cin} input channels"]
    multiplier = op.options.get("DepthMultiplier")
    if multiplier != cout // cin:
        return [f"depth_multiplier {multiplier}, must be Cout / Cin = {cout} / {cin} = {cout // cin}"]
    return []


CONV_2D = register(
    Builtin(
        "CONV_2D",
        options="Conv2DOptions",
        micro_resolver="AddConv2D",
        kind="conv",
        version=_conv_version,
        output_shape=_output_shape,
        macs=_conv_macs,
        required_inputs=2,
        weight_axis=0,
        bias_required=True,
        verified={
            "int8": BIT_EXACT.format("conv.py") + "; ONNX Runtime QDQ within 1 LSB",
            "int16": BIT_EXACT.format("conv.py"),
        },
        micro_types=("int8", "int16", "float32"),
    )
)
DEPTHWISE_CONV_2D = register(
    Builtin(
        "DEPTHWISE_CONV_2D",
        options="DepthwiseConv2DOptions",
        micro_resolver="AddDepthwiseConv2D",
        kind="depthwise",
        version=_depthwise_version,
        output_shape=_output_shape,
        macs=_depthwise_macs,
        required_inputs=2,
        weight_axis=3,
        bias_required=True,
        rules=_depth_multiplier_rule,
        verified={
            "int8": BIT_EXACT.format("depthwise_conv.py") + "; ONNX Runtime QDQ within 1 LSB",
            "int16": BIT_EXACT.format("depthwise_conv.py"),
        },
        micro_types=("int8", "int16", "float32"),
    )
)


@lowers("Conv")
def conv(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    in_shape = static_shape(x_value.shape)
    rank = len(in_shape)
    if rank not in (3, 4):
        raise unsupported(node, "only 1-D and 2-D convolutions are lowered", "attribute")
    w, w_scale, w_zero = ctx.constant(node.inputs[1], node)
    w = w if rank == 4 else w[:, :, None, :]  # [C_out, C_in / group, 1, K]
    planar = planar_shape(in_shape)
    group = node.attributes.get_int("group", 1)
    kernel = list(w.shape[2:])
    strides = spatial_ints(node, "strides", 1, rank)
    dilations = spatial_ints(node, "dilations", 1, rank)
    padding, pads = spatial_padding(node, planar, kernel, strides, dilations)
    act = window_input(ctx, ctx.activation(x_value, node), in_shape, node.name)
    if padding == "VALID" and any(p != (0, 0) for p in pads):
        act, planar = pad_spatial(ctx, act, pads, planar, node.name)
    c_in, c_out = planar[1], w.shape[0]
    depthwise = group != 1 and group == c_in and w.shape[1] == 1
    if depthwise:
        laid_out, axis = w.transpose(1, 2, 3, 0), 3  # [C*M, 1, KH, KW] -> [1, KH, KW, C*M]
    else:
        laid_out, axis = w.transpose(0, 2, 3, 1), 0  # OIHW -> OHWI (grouped: I = C_in / group)
    bias_q = bias(ctx, node, 2, act, w_scale, c_out)
    w_index = weights(ctx, f"{node.name}.weight", laid_out, w_scale, w_zero, axis)
    options = {
        "Padding": padding,
        "StrideW": strides[1],
        "StrideH": strides[0],
        "DilationWFactor": dilations[1],
        "DilationHFactor": dilations[0],
    }
    if depthwise:
        options["DepthMultiplier"] = c_out // c_in
    window_op(ctx, node, DEPTHWISE_CONV_2D if depthwise else CONV_2D, [act.index, w_index, bias_q], options)
