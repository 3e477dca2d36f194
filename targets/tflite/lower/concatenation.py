"""ONNX Concat -> CONCATENATION along the TFLite axis of the ONNX axis, in any layout.

    out = concat(in_1, ..., in_k, axis)

The output takes the layout of the first activation input (NHWC for rank 4 unless that input has another, e.g.
the channels-last tensors of an NHWC export, whose Concat on axis 3 stays on the last TFLite axis); an input in
another layout is moved to it, a constant input is laid out like it.

TFLite's int8 kernels copy the stored values and never rescale: every input must carry the output's encoding
(the quantization plan gives a Concat group one), which both runtimes check (edgeq/reference/concatenation.py).
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, by_input_type, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import Graph, Operator


def _output_shape(graph: Graph, op: Operator):
    """The inputs' common shape with the axis summed."""
    inputs = [graph.tensors[t] for t in op.inputs if t >= 0]
    x = inputs[0]
    rank = len(x.shape)
    axis = op.options.get("Axis", 0)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank or any(len(t.shape) != rank for t in inputs):
        return f"inputs of ranks {[len(t.shape) for t in inputs]} cannot be joined along axis {op.options.get('Axis')}"
    others = {t.shape[:axis] + t.shape[axis + 1 :] for t in inputs}
    if len(others) > 1:
        return f"input shapes {[t.shape for t in inputs]} differ outside axis {axis}"
    return (*x.shape[:axis], sum(t.shape[axis] for t in inputs), *x.shape[axis + 1 :])


CONCATENATION = register(
    Builtin(
        "CONCATENATION",
        options="ConcatenationOptions",
        micro_resolver="AddConcatenation",
        kind="data_movement",
        version=by_input_type(int8=2, int16=3),
        output_shape=_output_shape,
        same_encoding=True,
        verified={
            "int8": BIT_EXACT.format("concatenation.py") + "; ONNX Runtime QDQ within 1 LSB",
            "int16": BIT_EXACT.format("concatenation.py"),
        },
        micro_types=("int8", "int16", "float32"),
    )
)


@lowers("Concat")
def concat(ctx: LoweringContext, node: ir.Node) -> None:
    out_value = node.outputs[0]
    rank = len(out_value.shape)
    perm = ctx.follow_perm(node, rank)
    inputs = [ctx.operand(v, node, rank, perm) for v in node.inputs]
    axis = node.attributes.get_int("axis") % rank
    out, activation = ctx.output(node, static_shape(out_value.shape), perm)
    options = {"Axis": list(perm).index(axis), "FusedActivationFunction": activation}
    ctx.add_op(CONCATENATION, inputs, [out], options)
