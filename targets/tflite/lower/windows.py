"""Sliding-window geometry shared by convolutions and pools: ONNX pads -> TFLite SAME/VALID, output sizes, and
1-D window ops as 2-D ones.

TFLite pads a window op SAME or VALID only. Along one spatial axis of size n, with kernel k, stride s,
dilation d and the effective kernel e = (k - 1) * d + 1 (ComputeOutSize, ComputePaddingWithOffset):

    SAME   out = ceil(n / s), total padding max((out - 1) * s + e - n, 0) with the odd pixel at the END
    VALID  out = floor((n - e) / s) + 1, no padding

ONNX pads become SAME only when they equal SAME's pads for that input size (so symmetric pads with stride 2
are often not SAME), VALID when they are zero, and otherwise an explicit PAD before a VALID op (pad.py).

A 1-D window op (Conv, ConvTranspose, pools on a rank-3 [N, C, L] tensor) is the 2-D op on [N, C, 1, L]: its
attributes read as height 1 (kernel 1, stride 1, no pads). A rank-3 feature map is stored [N, L, C] in TFLite
(``NLC``, the channels last, as a 2-D op wants them), so a chain of 1-D ops needs no TRANSPOSE: each op only
RESHAPEs [N, L, C] to [N, 1, L, C] and back (no data moves); consumers that need ONNX order relayout it.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.targets.tflite.builtins import Builtin
from edgeq.targets.tflite.lower.context import TO_NHWC, Activation, LoweringContext, static_shape
from edgeq.targets.tflite.lower.layout import relayout, reshape
from edgeq.tflite_format.graph import Graph, Operator

NLC = (0, 2, 1)  # a rank-3 feature map [N, C, L] is stored [N, L, C]


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding of TFLite SAME along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def spatial_ints(node: ir.Node, name: str, default: int, rank: int) -> list[int]:
    """Attribute NAME of a 1-D or 2-D window op as two values (a 1-D op has height 1: DEFAULT)."""
    values = list(node.attributes.get_ints(name, [default] * (rank - 2)))
    return values if rank == 4 else [default, *values]


def onnx_pads(node: ir.Node, in_shape, kernel, strides, dilations) -> list[tuple[int, int]]:
    """The padding ONNX applies ([(top, bottom), (left, right)]), auto_pad resolved; IN_SHAPE is 2-D NCHW."""
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return [(0, 0), (0, 0)]
    same = [same_pads(in_shape[2 + i], kernel[i], strides[i], dilations[i]) for i in range(2)]
    if auto_pad == "SAME_UPPER":
        return same
    if auto_pad == "SAME_LOWER":
        return [(after, before) for before, after in same]
    raw = list(node.attributes.get_ints("pads", [0, 0, 0, 0]))
    if len(raw) == 2:  # 1-D: [begin, end] of the length axis
        raw = [0, raw[0], 0, raw[1]]
    return [(raw[0], raw[2]), (raw[1], raw[3])]


def tflite_padding(pads, in_shape, kernel, strides, dilations) -> tuple[str, list[tuple[int, int]]]:
    """'SAME'/'VALID' and the explicit pads a PAD must add first, for ONNX PADS on a 2-D NCHW IN_SHAPE."""
    if all(p == (0, 0) for p in pads):
        return "VALID", pads
    if pads == [same_pads(in_shape[2 + i], kernel[i], strides[i], dilations[i]) for i in range(2)]:
        return "SAME", [(0, 0), (0, 0)]
    return "VALID", pads


def spatial_padding(node: ir.Node, in_shape, kernel, strides, dilations) -> tuple[str, list[tuple[int, int]]]:
    """'SAME'/'VALID' and the explicit pads ([(top, bottom), (left, right)]) a PAD must add first."""
    return tflite_padding(
        onnx_pads(node, in_shape, kernel, strides, dilations), in_shape, kernel, strides, dilations
    )


def window_output(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """Output length along one spatial axis: SAME ceil(in / s), VALID floor((in - eff_k) / s) + 1."""
    if padding == "SAME":
        return -(-size // stride)
    return (size - ((kernel - 1) * dilation + 1)) // stride + 1


def window_shape(graph: Graph, op: Operator, kernel, dilation, channels: int, ranks) -> tuple[int, ...] | str:
    """The NHWC output shape of a window op over input 0, or why it has none (the validator's message).
    RANKS are the ranks of the tensors that must be 4-D (the input, and the weights of a convolution)."""
    x = graph.tensors[op.inputs[0]]
    if tuple(ranks) != (4,) * len(ranks):
        return f"needs 4-D input{' and weights' if len(ranks) == 2 else ''}, has ranks {tuple(ranks)}"
    strides = (op.options.get("StrideH", 1), op.options.get("StrideW", 1))
    if min(strides) < 1 or min(dilation) < 1 or min(kernel) < 1:
        return f"needs positive strides {strides}, dilations {dilation} and window {tuple(kernel)}"
    padding = op.options.get("Padding", "SAME")
    spatial = tuple(
        window_output(x.shape[1 + i], kernel[i], strides[i], dilation[i], padding) for i in range(2)
    )
    if min(spatial) < 1:
        return f"VALID window {tuple(kernel)} (dilation {dilation}) does not fit the input {x.shape}"
    return (x.shape[0], *spatial, channels)


# ----------------------------------------------------------------------------------- 1-D ops as 2-D ones


def planar_shape(shape) -> list[int]:
    """A window op's ONNX shape as 2-D NCHW: [N, C, L] is [N, C, 1, L]."""
    shape = list(shape)
    return shape if len(shape) == 4 else [shape[0], shape[1], 1, *shape[2:]]


def window_input(ctx: LoweringContext, act: Activation, shape_onnx, name: str) -> Activation:
    """ACT as the NHWC input of a 2-D window op: a rank-3 map laid out NLC, then RESHAPEd to [N, 1, L, C]."""
    if len(shape_onnx) == 4:
        return act
    act = relayout(ctx, act, shape_onnx, NLC, f"{name}_nlc")
    n, c, length = shape_onnx
    source = ctx.graph.tensors[act.index]
    planar = ctx.tensor(f"{name}_2d", (n, 1, length, c), source.dtype, ctx.encoding_of(act.index))
    reshape(ctx, act.index, planar, (n, 1, length, c), f"{name}_2d")
    return Activation(planar, TO_NHWC)


def window_op(ctx: LoweringContext, node: ir.Node, builtin: Builtin, inputs, options) -> int:
    """Emit BUILTIN for NODE into its output (a fused Relu/Clip becomes the FusedActivationFunction option); a
    1-D op writes [N, 1, L, C] and a RESHAPE makes it the NLC output. Returns the output tensor."""
    shape = static_shape(node.outputs[0].shape)
    out, activation = ctx.output(node, shape, TO_NHWC if len(shape) == 4 else NLC)
    if builtin.same_encoding:
        ctx.check_shared(node, inputs[0], out)
    options = {**options, "FusedActivationFunction": activation}
    if len(shape) == 4:
        ctx.add_op(builtin, inputs, [out], options)
        return out
    final = ctx.graph.tensors[out]
    planar_out = (final.shape[0], 1, *final.shape[1:])
    planar = ctx.tensor(f"{final.name}_2d", planar_out, final.dtype, ctx.encoding_of(out))
    ctx.add_op(builtin, inputs, [planar], options)
    reshape(ctx, planar, out, final.shape, f"{final.name}_nlc")
    return out
