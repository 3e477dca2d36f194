"""ONNX MaxPool, AveragePool (1-D and 2-D), GlobalMaxPool -> MAX_POOL_2D, AVERAGE_POOL_2D.

Both work on the stored integers of one encoding (edgeq/reference/pooling.py): over the window pixels inside
the image, MAX takes the largest, AVG the sum rounded half away from zero divided by their count n. SAME
padding pixels are not counted, so ONNX's count_include_pad=0 is TFLite SAME; AVG with count_include_pad=1
pads with a PAD before a VALID pool, which counts the padded zeros; MAX pads that are not SAME become a PADV2
of the lowest integer (ONNX pads max pooling with -inf, and -128 never wins over an input). Pads that
count_include_pad=0 excludes but that are not SAME, and dilations, are refused.

ceil_mode=1 rounds the number of windows up: out = ceil((n + pads - k) / s) + 1, less one when the last window
would start inside the end padding (ONNX Runtime's rule, and the opset-22 shape inference's; a model whose
declared shape keeps that window is refused). The extra windows read past the padded input, so the lowering
pads the end by the overhang e = (out - 1) s + k - (n + pads) as well: MAX pads it with the lowest integer,
which never wins; AVG excludes it from the count only as SAME padding (ONNX counts only the pixels of the
input and, with count_include_pad=1, its explicit pads), so a ceil-mode AVG whose overhang is not SAME padding
is refused. GlobalMaxPool is MAX_POOL_2D with the whole image as window. 1-D pools are the 2-D ones on
[N, 1, L, C] (windows.py).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, by_input_type, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.pad import pad_spatial
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.targets.tflite.lower.windows import (
    onnx_pads,
    planar_shape,
    spatial_ints,
    tflite_padding,
    window_input,
    window_op,
    window_shape,
)
from edgeq.tflite_format.graph import Graph, Operator


def _output_shape(graph: Graph, op: Operator):
    x = graph.tensors[op.inputs[0]]
    kernel = (op.options.get("FilterHeight", 1), op.options.get("FilterWidth", 1))
    channels = x.shape[-1] if x.shape else 0
    return window_shape(graph, op, kernel, (1, 1), channels, (len(x.shape),))


def _pool_builtin(opcode: str, resolver: str) -> Builtin:
    return register(
        Builtin(
            opcode,
            options="Pool2DOptions",
            micro_resolver=resolver,
            kind="pool",
            version=by_input_type(int8=2, int16=3),
            output_shape=_output_shape,
            same_encoding=True,
            verified={
                "int8": BIT_EXACT.format("pooling.py") + "; ONNX Runtime QDQ within 1 LSB",
                "int16": BIT_EXACT.format("pooling.py"),
            },
            micro_types=("int8", "int16", "float32"),
        )
    )


MAX_POOL_2D = _pool_builtin("MAX_POOL_2D", "AddMaxPool2D")
AVERAGE_POOL_2D = _pool_builtin("AVERAGE_POOL_2D", "AddAveragePool2D")


def ceil_overhang(size: int, kernel: int, stride: int, pads: tuple[int, int]) -> int:
    """How far ceil_mode's last window reaches past the padded input along one axis (0: it does not)."""
    span = size + sum(pads) - kernel
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pads[0]:  # the last window would start in the end padding: ONNX drops it
        out -= 1
    return max((out - 1) * stride - span, 0)


def _pool_options(padding: str, kernel, strides) -> dict:
    return {
        "Padding": padding,
        "StrideW": strides[1],
        "StrideH": strides[0],
        "FilterWidth": kernel[1],
        "FilterHeight": kernel[0],
    }


@lowers("MaxPool", "AveragePool")
def pool(ctx: LoweringContext, node: ir.Node) -> None:
    builtin = MAX_POOL_2D if node.op_type == "MaxPool" else AVERAGE_POOL_2D
    x_value = node.inputs[0]
    in_shape = static_shape(x_value.shape)
    rank = len(in_shape)
    if rank not in (3, 4):
        raise unsupported(node, "only 1-D and 2-D pooling is lowered", "attribute")
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        raise unsupported(node, "MaxPool's Indices output", "attribute")
    if set(spatial_ints(node, "dilations", 1, rank)) != {1}:
        raise unsupported(node, "dilated pooling", "attribute")
    planar = planar_shape(in_shape)
    kernel = spatial_ints(node, "kernel_shape", 1, rank)
    strides = spatial_ints(node, "strides", 1, rank)
    explicit = onnx_pads(node, planar, kernel, strides, [1, 1])
    pads = explicit
    if node.attributes.get_int("ceil_mode", 0):
        overhang = [ceil_overhang(planar[2 + i], kernel[i], strides[i], explicit[i]) for i in range(2)]
        pads = [(before, after + extra) for (before, after), extra in zip(explicit, overhang, strict=True)]
        _check_declared_length(node, planar, kernel, strides, pads)
    counted = builtin is AVERAGE_POOL_2D and node.attributes.get_int("count_include_pad", 0)
    if counted and any(p != (0, 0) for p in explicit):  # a PAD's zeros are counted, SAME's pixels never
        if pads != explicit:
            raise unsupported(
                node, "ceil_mode average pooling that counts its pads (not the overhang)", "attribute"
            )
        padding = "VALID"
    else:
        padding, pads = tflite_padding(pads, planar, kernel, strides, [1, 1])
    padded = padding == "VALID" and any(p != (0, 0) for p in pads)
    # AVG counts a PAD's zeros: only count_include_pad's own pads may be PADded (never a ceil overhang)
    if padded and builtin is AVERAGE_POOL_2D and not (counted and pads == explicit):
        raise unsupported(
            node, f"pads {pads} are not TFLite SAME padding and the count excludes them", "attribute"
        )
    act = window_input(ctx, ctx.activation(x_value, node), in_shape, node.name)
    if padded:  # MAX: ONNX pads with -inf; AVG: zeros the count includes
        lowest = (float(np.finfo(np.float32).min) if ctx.float else ctx.qtype.qmin) if builtin is MAX_POOL_2D else None
        act, planar = pad_spatial(ctx, act, pads, planar, node.name, fill=lowest)
    window_op(ctx, node, builtin, [act.index], _pool_options(padding, kernel, strides))


def _check_declared_length(node: ir.Node, planar, kernel, strides, pads) -> None:
    """ONNX's shape inference before opset 22 keeps a ceil-mode window that starts in the end padding, which ONNX
    Runtime (and the opset-22 rule) drops: such a model declares shapes that no runtime computes."""
    computed = [(planar[2 + i] + sum(pads[i]) - kernel[i]) // strides[i] + 1 for i in range(2)]
    declared = planar_shape(static_shape(node.outputs[0].shape))[2:]
    if computed != declared:
        raise unsupported(
            node,
            f"ceil_mode output {declared} is declared where ONNX Runtime computes {computed} (the last window "
            "would start in the end padding; shape inference before opset 22 keeps it)",
            "attribute",
        )


@lowers("GlobalMaxPool")
def global_max_pool(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    in_shape = static_shape(x_value.shape)
    if len(in_shape) not in (3, 4):
        raise unsupported(node, "only 1-D and 2-D global pooling is lowered", "attribute")
    act = window_input(ctx, ctx.activation(x_value, node), in_shape, node.name)
    window = planar_shape(in_shape)[2:]
    window_op(ctx, node, MAX_POOL_2D, [act.index], _pool_options("VALID", window, [1, 1]))
