"""ONNX PRelu -> PRELU (edgeq/reference/prelu.py): y = x for x >= 0, slope * x below; in an int8 model, the same
integers from QUANTIZE, MUL and ADD, which LiteRT's XNNPACK delegate runs (it takes float PRELU only).

The slope is a quantized constant with one per-tensor encoding; per-channel values [C, 1, 1] are laid out like
the input ([1, 1, 1, C] for NHWC). The output encoding is calibrated; PRELU has no fused activation.

int8 PRELU computes, with a = x - zp_in and b = alpha - zp_alpha,

    y = clamp(zp_out + MBQM(a, M_1), -128, 127)        a >= 0,   M_1 = S_in / S_out
    y = clamp(zp_out + MBQM(a * b, M_2), -128, 127)    a < 0,    M_2 = S_in S_alpha / S_out

and XNNPACK leaves it to LiteRT's builtin kernel, a per-element broadcast loop: MTCNN ONet's five PRELUs took
longer than its whole float model and split XNNPACK's graph into six runs (docs/runtimes.md §3.4). The int8
lowering writes instead (``one``: the constant 1 on scale 1, zero point 0):

    m = QUANTIZE(x) on (S_in, 127)             stored 127 + min(a, 0): the int8 saturation at 127 is the min
    n = MUL(m, alpha) on (S_out, zp_out)       zp_out + MBQM(min(a, 0) * b, M_2)
    p = MUL(x, one), RELU, on (S_out, zp_out)  zp_out + MBQM(max(a, 0), M_1): MBQM is monotone, MBQM(0) = 0
    y = ADD(p, n) on (S_out, zp_out)           zp_out + (p - zp_out) + (n - zp_out)

Where M_1 or M_2 lies outside what XNNPACK's int8 MUL computes (XNNPACK_MUL_RATIOS), PRELU stays.

m's requantization multiplier S_in / S_in is exactly 1 (MBQM by 1 is the identity) and a >= -255, so m is exact.
MUL computes its multiplier S_1 S_2 / S_out as PRELU's Prepare computes M_1 and M_2, in double (TFLite Micro) or
with float32 operands (LiteRT), so n and p are PRELU's two branches bit for bit under either semantics. One of
p - zp_out and n - zp_out is 0, and an int8 ADD of three equal encodings adds exactly (its multipliers 1/2 and
2^-19 are powers of two), so y is PRELU's output. XNNPACK computes m and the ADD exactly and each branch within
1 LSB.

Float (the float .tflite) and 16x8 models keep PRELU (XNNPACK takes float PRELU, int16 MUL needs zero points 0),
and so does ``kernels="micro"`` (lower()'s default; the TFLite target's option defaults to "xnnpack"): for
TFLite Micro the four operators cost more than PRELU's one (an arena one activation larger; MTCNN ONet's grew from
144 384 to 214 416 B), and the integer-only ONNX model computes PRELU as one table.

In a 16x8 model the slope stays int8: TFLite Micro's PRELU refuses any other alpha for an int16 output, and
LiteRT reads an int16 PRELU's alpha as int8 data whatever its type (an int16 alpha gives wrong outputs there;
measured, ai-edge-litert 2.3.0). The quantization plan gives PRelu slopes an int8 encoding in every scheme
(plan.int8_constants), so the QDQ model and the .tflite compute with the same slope.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import Builtin, input_shape, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.edges import QUANTIZE
from edgeq.targets.tflite.lower.elementwise import ADD, MUL
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
    if ctx.float or ctx.integer != np.int8 or ctx.kernels == "micro" or not _xnnpack_multipliers(ctx, act, alpha, out):
        ctx.add_op(PRELU, [act.index, alpha], [out])
        return
    shape, s_in, s_out = ctx.graph.tensors[out].shape, ctx.encoding_of(act.index)[0], ctx.encoding_of(out)
    one = ctx.tensor(f"{node.name}_one", (1,) * rank, np.int8, (1.0, 0), np.ones((1,) * rank, np.int8))
    negative = ctx.tensor(f"{node.name}_negative_input", shape, np.int8, (s_in, 127))
    negative_out = ctx.tensor(f"{node.name}_negative_part", shape, np.int8, s_out)
    positive_out = ctx.tensor(f"{node.name}_positive_part", shape, np.int8, s_out)
    ctx.add_op(QUANTIZE, [act.index], [negative])
    ctx.add_op(MUL, [negative, alpha], [negative_out], {"FusedActivationFunction": "NONE"})
    ctx.add_op(MUL, [act.index, one], [positive_out], {"FusedActivationFunction": "RELU"})
    ctx.add_op(ADD, [positive_out, negative_out], [out], {"FusedActivationFunction": "NONE"})


# XNNPACK's int8 MUL requantizes by product-to-output scale ratios in [2^-16, 2^8) only; outside (a PRelu whose
# output scale is 500x finer than its input's, found by hypothesis) it gave 126 steps off LiteRT's reference
XNNPACK_MUL_RATIOS = (2.0**-16, 2.0**8)


def _xnnpack_multipliers(ctx: LoweringContext, act, alpha: int, out: int) -> bool:
    """Whether both branches' multipliers, M_1 = S_in / S_out and M_2 = S_in S_alpha / S_out, are ones XNNPACK's
    MUL computes (XNNPACK_MUL_RATIOS); else the lowering keeps PRELU, which LiteRT's builtin kernel computes."""
    s_in, s_alpha, s_out = ctx.encoding_of(act.index)[0], ctx.encoding_of(alpha)[0], ctx.encoding_of(out)[0]
    low, high = XNNPACK_MUL_RATIOS
    return all(low <= float(m) < high for m in (s_in / s_out, s_in * s_alpha / s_out))
