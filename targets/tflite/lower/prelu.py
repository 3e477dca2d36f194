"""ONNX PRelu -> PRELU (edgeq/reference/prelu.py): y = x for x >= 0, slope * x below.

The slope is a quantized constant with one per-tensor encoding; per-channel values [C, 1, 1] are laid out like
the input ([1, 1, 1, C] for NHWC). The output encoding is calibrated; PRELU has no fused activation.

In a 16x8 model (int16 activations) the slope stays int8: TFLite Micro's PRELU refuses any other alpha for an
int16 output, and LiteRT reads an int16 PRELU's alpha as int8 data whatever its type (an int16 alpha gives wrong
outputs there; measured, ai-edge-litert 2.3.0). The quantization plan gives PRelu slopes an int8 encoding in every
scheme (plan.int8_constants), so the QDQ model and the .tflite compute with the same slope.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import Builtin, input_shape, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.registry import lowers

PRELU = register(
    Builtin(
        "PRELU",
        options=None,
        micro_resolver="AddPrelu",
        micro_types=("int8", "int16", "float32"),
        kind="elementwise",
        version=lambda graph, op: 1,  # LiteRT registers version 1 only; op_version.cc gives 1 for every type
        output_shape=input_shape,
        required_inputs=2,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/prelu.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (float32 multipliers); ONNX Runtime QDQ within "
            "1 LSB",
            "int16": "int16 input and output with an int8 alpha: bit-exact with TFLite Micro (reference kernel "
            "edgeq/reference/prelu.py) and with LiteRT BUILTIN_REF under the reference's litert semantics "
            "(float32 multipliers)",
            "float32": "LiteRT and TFLite Micro (float .tflite)",
        },
    )
)


@lowers("PRelu")
def prelu(ctx: LoweringContext, node: ir.Node) -> None:
    x_value, slope = node.inputs[0], node.inputs[1]
    act = ctx.activation(x_value, node)
    rank = len(x_value.shape)
    if rank > 4:
        raise unsupported(node, f"a rank-{rank} input; TFLite PRELU broadcasts up to rank 4", "layout")
    if not ctx.is_quantized_constant(slope):
        raise unsupported(node, f"slope {slope.name} is not a quantized constant", "not-quantized")
    alpha = ctx.operand(slope, node, rank, act.perm)
    out, activation = ctx.output(node, static_shape(x_value.shape), act.perm)
    if activation != "NONE":
        raise unsupported(node, "PRELU has no fused activation for the Relu/Clip after it", "attribute")
    ctx.add_op(PRELU, [act.index, alpha], [out])
