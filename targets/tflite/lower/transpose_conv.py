"""ONNX ConvTranspose (1-D and 2-D) -> TRANSPOSE_CONV.

    acc[n, y*sh - pad_t + i, x*sw - pad_l + j, c] += (in[n, y, x, k] - zp_in) * w[c, i, j, k]   (outside: dropped)
    out = clamp(MultiplyByQuantizedMultiplier(acc + bias[c], M0[c], shift[c]) + zp_out, act_min, act_max)

(edgeq/reference/transpose_conv.py). ONNX's weights [C_in, C_out / group, KH, KW] become OHWI
[C_out, KH, KW, C_in] per channel along dimension 0; the scales, per channel along ONNX axis 1, repeat for
every group. TFLite has no grouped transposed convolution: a grouped one (depthwise included) becomes the
dense one with zero weights between groups (exact; it costs C_in / group times the MACs), and a dilated one
the kernel with zeros between its taps.

Geometry: ONNX places input pixel y at y*s - pads_begin and crops the output to its size (output_padding and
the end pads only move the end). TFLite takes the output size from its shape operand and derives the leading
pad from it (SAME or VALID); so the lowering keeps ONNX's output size and picks the padding whose leading pad
is ONNX's pads_begin, adding zero taps before or after the kernel where neither matches (each leading zero tap
moves the scatter origin by one pixel; edgeq/reference/transpose_conv.py `leading_pad`). auto_pad SAME_* and
the output_shape attribute, whose pads ONNX implementations split differently, are refused.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.reference.transpose_conv import leading_pad, source_size
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.targets.tflite.lower.weights import bias, weights
from edgeq.targets.tflite.lower.windows import onnx_pads, planar_shape, spatial_ints, window_input, window_op
from edgeq.targets.tflite.validate import _weight_violations
from edgeq.tflite_format.graph import Graph, Operator


def _version(graph: Graph, op: Operator) -> int:  # the same for 16x8 (no quantized_bias_type option written)
    if op.options.get("FusedActivationFunction", "NONE") != "NONE":
        return 4
    if len(op.inputs) > 3 and op.inputs[3] >= 0:
        return 3
    return 2 if graph.tensors[op.inputs[1]].dtype == np.int8 else 1


def _output_shape(graph: Graph, op: Operator):
    """The shape operand's values, when the weights and the input agree with them (LiteRT derives the input's
    size from the output's and refuses any other)."""
    shape_tensor, w, x = (graph.tensors[op.inputs[i]] for i in range(3))
    if len(w.shape) != 4 or len(x.shape) != 4:
        return f"needs 4-D input and weights, has ranks {(len(x.shape), len(w.shape))}"
    if w.shape[3] != x.shape[3]:
        return f"input has {x.shape[3]} channels, the weights {w.shape[3]}"
    if shape_tensor.data is None or shape_tensor.data.shape != (4,):
        return "the output shape operand must be a constant int32 [4]"
    shape = tuple(int(d) for d in shape_tensor.data)
    if shape[0] != x.shape[0] or shape[3] != w.shape[0]:
        return f"output shape {shape} does not match the input's batch {x.shape[0]} and {w.shape[0]} filters"
    padding = op.options.get("Padding", "SAME")
    strides = (op.options.get("StrideH", 1), op.options.get("StrideW", 1))
    derived = tuple(source_size(padding, shape[1 + i], w.shape[1 + i], strides[i]) for i in range(2))
    if derived != tuple(x.shape[1:3]):
        return (
            f"{padding} output {shape[1:3]} derives an input of {derived}, the input is {tuple(x.shape[1:3])}"
        )
    return shape


def _macs(graph: Graph, op: Operator) -> int:  # every input pixel times the whole filter [O, KH, KW, I]
    x = graph.tensors[op.inputs[2]]
    return int(np.prod(x.shape[:3])) * int(np.prod(graph.tensors[op.inputs[1]].shape))


def _weight_rules(graph: Graph, op: Operator) -> list[str]:
    """The weight and bias rules of a convolution, for TRANSPOSE_CONV's operand order (shape, weights, input,
    bias): int8 weights with zero point 0 per channel along dimension 0, an int32 bias of scale S_in * S_w[c]."""
    as_conv = Operator(op.opcode, [op.inputs[2], op.inputs[1], *op.inputs[3:4]], op.outputs, op.options)
    return _weight_violations(graph, as_conv, replace(TRANSPOSE_CONV, weight_axis=0))


TRANSPOSE_CONV = register(
    Builtin(
        "TRANSPOSE_CONV",
        options="TransposeConvOptions",
        micro_resolver="AddTransposeConv",
        kind="conv",
        version=_version,
        output_shape=_output_shape,
        macs=_macs,
        required_inputs=3,
        parameter_input=0,
        rules=_weight_rules,
        verified={
            "int8": BIT_EXACT.format("transpose_conv.py") + "; ONNX Runtime QDQ within 1 LSB",
            "int16": BIT_EXACT.format("transpose_conv.py"),
        },
        micro_types=("int8", "int16", "float32"),
    )
)


def _dense_weights(w: np.ndarray, group: int, dilations) -> np.ndarray:
    """ONNX [C_in, C_out / group, KH, KW] -> OHWI [C_out, KH', KW', C_in]: zeros between groups and between
    dilated taps."""
    c_in, per_group, k_h, k_w = w.shape
    in_per_group = c_in // group
    d_h, d_w = dilations
    dense = np.zeros((per_group * group, (k_h - 1) * d_h + 1, (k_w - 1) * d_w + 1, c_in), w.dtype)
    for g in range(group):
        rows, cols = (
            slice(g * per_group, (g + 1) * per_group),
            slice(g * in_per_group, (g + 1) * in_per_group),
        )
        dense[rows, ::d_h, ::d_w, cols] = w[cols].transpose(1, 2, 3, 0)  # [C_out/g, KH, KW, C_in/g]
    return dense


def _zero_taps(padding: str, size_in: int, size_out: int, kernel: int, stride: int, pad_begin: int):
    """(leading, trailing) zero taps with which TFLite's PADDING places input pixel 0 at -PAD_BEGIN and derives
    SIZE_IN from SIZE_OUT, or None. With r = O - s (I - 1) - k + pad_begin (= output_padding - pads_end),
    VALID needs pad_begin = 0 and r trailing taps; SAME needs s (I - 1) < O <= s I and moves the origin by
    pad_begin + r taps (trailing if positive, leading otherwise)."""
    r = size_out - stride * (size_in - 1) - kernel + pad_begin
    if padding == "VALID":
        taps = (0, r)
    else:
        taps = (0, pad_begin + r) if pad_begin + r >= 0 else (-(pad_begin + r), 0)
    extended = kernel + sum(taps)
    fits = (
        min(taps) >= 0
        and source_size(padding, size_out, extended, stride) == size_in
        and leading_pad(padding, size_out, extended, stride) - taps[0] == pad_begin
    )
    return taps if fits else None


@lowers("ConvTranspose")
def conv_transpose(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    in_shape = static_shape(x_value.shape)
    rank = len(in_shape)
    if rank not in (3, 4):
        raise unsupported(node, "only 1-D and 2-D transposed convolutions are lowered", "attribute")
    if (
        node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID")
        or "output_shape" in node.attributes
    ):
        raise unsupported(
            node,
            "auto_pad SAME_* or output_shape (ONNX implementations split the pads "
            "differently); export explicit pads",
            "attribute",
        )
    w, w_scale, _ = ctx.constant(node.inputs[1], node)
    w = w if rank == 4 else w[:, :, None, :]
    group = node.attributes.get_int("group", 1)
    planar_in, planar_out = planar_shape(in_shape), planar_shape(static_shape(node.outputs[0].shape))
    strides = spatial_ints(node, "strides", 1, rank)
    dense = _dense_weights(w, group, spatial_ints(node, "dilations", 1, rank))
    pads = onnx_pads(node, planar_in, dense.shape[1:3], strides, [1, 1])
    for padding in ("VALID", "SAME"):
        taps = [
            _zero_taps(
                padding, planar_in[2 + i], planar_out[2 + i], dense.shape[1 + i], strides[i], pads[i][0]
            )
            for i in range(2)
        ]
        if None not in taps:
            break
    else:
        raise unsupported(
            node,
            f"pads {pads} with output size {planar_out[2:]}: TFLite derives the input size "
            "from the output size, and no SAME/VALID placement matches",
            "attribute",
        )
    dense = np.pad(dense, [(0, 0), taps[0], taps[1], (0, 0)])
    scale = np.tile(w_scale, group) if w_scale.size > 1 else w_scale  # ONNX axis 1 repeats for every group
    act = window_input(ctx, ctx.activation(x_value, node), in_shape, node.name)
    c_out = dense.shape[0]
    inputs = [
        ctx.tensor(
            f"{node.name}_output_shape",
            (4,),
            np.int32,
            data=np.array([planar_out[0], *planar_out[2:], c_out], np.int32),
        ),
        weights(ctx, f"{node.name}.weight", dense, scale, np.zeros_like(scale, np.int64), 0),
        act.index,
        bias(ctx, node, 2, act, scale, c_out),
    ]
    window_op(
        ctx, node, TRANSPOSE_CONV, inputs, {"Padding": padding, "StrideH": strides[0], "StrideW": strides[1]}
    )
