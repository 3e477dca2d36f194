"""ONNX MaxPool, AveragePool (2-D) -> MAX_POOL_2D, AVERAGE_POOL_2D.

Both work on the stored integers of one encoding (edgeq/reference/pooling.py): over the window pixels inside the
image, MAX takes the largest, AVG the sum rounded half away from zero divided by their count n. SAME padding
pixels are not counted, so ONNX's count_include_pad=0 is TFLite SAME; explicit pads that are not SAME become a
PAD before a VALID pool, which counts the padded zeros (count_include_pad=1) for AVG and pads MAX with the lowest
integer (ONNX pads max pooling with -inf). What TFLite cannot count that way (count_include_pad=1 with SAME pads,
count_include_pad=0 with other pads), ceil_mode and dilations are refused.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, by_input_type, register
from edgeq.targets.tflite.lower.context import TO_NHWC, LoweringContext, static_shape
from edgeq.targets.tflite.lower.pad import pad_spatial
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.targets.tflite.lower.windows import spatial_padding, window_shape
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
            verified={"int8": BIT_EXACT.format("pooling.py") + "; ONNX Runtime QDQ within 1 LSB"},
        )
    )


MAX_POOL_2D = _pool_builtin("MAX_POOL_2D", "AddMaxPool2D")
AVERAGE_POOL_2D = _pool_builtin("AVERAGE_POOL_2D", "AddAveragePool2D")


@lowers("MaxPool", "AveragePool")
def pool(ctx: LoweringContext, node: ir.Node) -> None:
    builtin = MAX_POOL_2D if node.op_type == "MaxPool" else AVERAGE_POOL_2D
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    in_shape = static_shape(x_value.shape)
    kernel = list(node.attributes.get_ints("kernel_shape"))
    strides = list(node.attributes.get_ints("strides", [1, 1]))
    if node.attributes.get_int("ceil_mode", 0):
        raise unsupported(node, "ceil_mode pooling", "attribute")
    if list(node.attributes.get_ints("dilations", [1, 1])) != [1, 1]:
        raise unsupported(node, "dilated pooling", "attribute")
    padding, pads = spatial_padding(node, in_shape, kernel, strides, [1, 1])
    explicit = padding == "VALID" and any(p != (0, 0) for p in pads)
    count_include_pad = node.attributes.get_int("count_include_pad", 0)
    if explicit and builtin is MAX_POOL_2D:  # ONNX pads max pooling with -inf
        lowest = float(np.finfo(np.float32).min) if ctx.float else -128
        act, in_shape = pad_spatial(ctx, act, pads, in_shape, node.name, fill=lowest)
    elif explicit:
        if not count_include_pad:
            raise unsupported(
                node, f"pads {pads} are not TFLite SAME padding and exclude the pad from the count", "attribute"
            )
        act, in_shape = pad_spatial(ctx, act, pads, in_shape, node.name)
    elif padding == "SAME" and builtin is AVERAGE_POOL_2D and count_include_pad:
        raise unsupported(node, "count_include_pad=1 with SAME pads", "attribute")
    out_shape = [in_shape[0], *static_shape(node.outputs[0].shape)[1:]]
    out, activation = ctx.output(node, out_shape, TO_NHWC)
    ctx.check_shared(node, act.index, out)
    options = {
        "Padding": padding,
        "StrideW": strides[1],
        "StrideH": strides[0],
        "FilterWidth": kernel[1],
        "FilterHeight": kernel[0],
        "FusedActivationFunction": activation,
    }
    ctx.add_op(builtin, [act.index], [out], options)
