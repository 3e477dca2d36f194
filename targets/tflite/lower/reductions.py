"""ONNX GlobalAveragePool (2-D) -> MEAN over the spatial axes of the NHWC tensor, KeepDims.

    out[n, 0, 0, c] = clamp(MBQM(sum_{y, x} (in[n, y, x, c] - zp_in), M', shift') + zp_out)

with 1/(H W) folded into the multiplier of S_in / S_out (edgeq/reference/mean.py, reference_ops::QuantizedMeanOrSum).
The axes operand is the int32 constant [1, 2]; input and output may have different encodings.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, by_input_type, register
from edgeq.targets.tflite.lower.context import TO_NHWC, LoweringContext, static_shape
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator


def _output_shape(graph: Graph, op: Operator):
    """The input shape without the reduced axes, or with them as 1 (KeepDims)."""
    x = graph.tensors[op.inputs[0]]
    axes = graph.tensors[op.inputs[1]].data if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    if axes is None:
        return None
    reduced = {int(a) % len(x.shape) for a in np.atleast_1d(axes)} if x.shape else set()
    if op.options.get("KeepDims"):
        return tuple(1 if i in reduced else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in reduced)


MEAN = register(
    Builtin(
        "MEAN",
        options="ReducerOptions",
        micro_resolver="AddMean",
        kind="pool",
        version=by_input_type(int8=2, int16=3),
        output_shape=_output_shape,
        required_inputs=2,
        parameter_input=1,
        verified={"int8": BIT_EXACT.format("mean.py") + "; ONNX Runtime QDQ within 1 LSB"},
    )
)


@lowers("GlobalAveragePool")
def global_average_pool(ctx: LoweringContext, node: ir.Node) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    if len(x_value.shape) != 4:
        raise unsupported(node, "only 2-D global pooling is lowered", "attribute")
    in_shape = static_shape(x_value.shape)
    out, _ = ctx.output(node, [in_shape[0], in_shape[1], 1, 1], TO_NHWC)
    axes = ctx.tensor(f"{node.name}_axes", (2,), np.int32, data=np.array([1, 2], np.int32))
    ctx.add_op(MEAN, [act.index, axes], [out], {"KeepDims": True})
