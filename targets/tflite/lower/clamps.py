"""Clamps that are not fused into the op before them: standalone Relu and Clip, and HardSigmoid.

A standalone Relu or Clip(lo, hi) is a follower op: its output has its own calibrated encoding (S_out, zp_out).
Quantization Q is monotone, so the QDQ model computes

    Q(clip(v, lo, hi)) = clamp(Q(v), Q(lo), Q(hi))          Q(v) = zp_out + round(v / S_out), saturated

i.e. a requantization to the output's encoding followed by a clamp of the stored values, which is how it is
lowered (edgeq/reference/relu.py, quantize.py, maximum_minimum.py):

    Relu, or Clip with lo >= 0     RELU (requantizes and clamps at Q(0) = zp_out in both runtimes)
    Clip with lo < 0               QUANTIZE int8 -> int8 (requantizes), when the encodings differ
    then                           MAXIMUM with Q(lo) where Q(lo) is above what the first op already clamps,
                                   MINIMUM with Q(hi) where Q(hi) < 127 (constants in the output's encoding)
    Clip(0, 6) on one encoding     RELU6 alone (TFLite Micro's RELU6 clamps stored values without requantizing,
                                   so it is only emitted where input and output share an encoding)

Usually the calibrated output grid lies inside [lo, hi] and the clamp is the int8 saturation itself: Relu6 is then
one RELU. RELU_N1_TO_1 and RELU_0_TO_1 are not used: TFLite Micro has no kernel for them.

HardSigmoid(x) = clip(alpha x + beta, 0, 1) (ONNX defaults alpha 0.2, beta 0.5; MobileNetV3 exports alpha 1/6)
has no TFLite builtin. It is lowered with one rounding, exactly where ONNX Runtime's QDQ model rounds:

    t = MUL(x, sign(alpha))        t's encoding is (|alpha| S_x, zp_x) (or (|alpha| S_x, -1 - zp_x) for alpha < 0),
                                   so t's stored values are x's (negated), copied exactly: t = alpha x in real terms
    y = ADD(t, beta, RELU)         the one requantization, to the output's encoding, clamped at 0
    y = MINIMUM(y, Q(1))           only where the output grid reaches above 1

Measured against ONNX Runtime's QDQ HardSigmoid on all 256 stored inputs (tests/test_ops_activations.py; alpha 1/6,
0.2 and -0.3, six calibrations each): at most one input per model differs, by 1 LSB, the output tie at y = beta
that ADD rounds half away from zero and ORT half to even; every other value is ORT's. Any construction that
rounds more than once (a MUL onto an intermediate grid, then ADD) can only add error to this.
At float precision the same construction is float32 MUL, ADD (fused RELU) and MINIMUM.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.quantization.plan import activation_bounds
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, by_input_type, input_shape, register
from edgeq.targets.tflite.lower.context import Activation, LoweringContext, static_shape
from edgeq.targets.tflite.lower.edges import QUANTIZE
from edgeq.targets.tflite.lower.elementwise import ADD, MAXIMUM, MINIMUM, MUL
from edgeq.targets.tflite.lower.registry import lowers

_RELU_LIKE = dict(
    options=None,
    kind="elementwise",
    version=by_input_type(int8=2, int16=3),
    output_shape=input_shape,
    micro_types=("int8", "int16", "float32"),
)
_BOTH_FLOAT = {"float32": "LiteRT and TFLite Micro (float .tflite)"}
RELU = register(
    Builtin(
        "RELU",
        micro_resolver="AddRelu",
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/relu.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (the multiplier divided in float32: 1 LSB apart "
            "on rare scales); ONNX Runtime QDQ within 1 LSB",
            "int16": "bit-exact with TFLite Micro (reference kernel edgeq/reference/relu.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (the multiplier divided in float32)",
            **_BOTH_FLOAT,
        },
        **_RELU_LIKE,
    )
)
RELU6 = register(
    Builtin(
        "RELU6",
        micro_resolver="AddRelu6",
        same_encoding=True,  # TFLite Micro clamps the stored values with the input's encoding, not the output's
        verified={
            "int8": "bit-exact with TFLite Micro and LiteRT BUILTIN_REF (reference kernel edgeq/reference/relu.py) "
            "on one encoding; ONNX Runtime QDQ exactly",
            "int16": BIT_EXACT.format("relu.py") + " on one encoding",
            **_BOTH_FLOAT,
        },
        **_RELU_LIKE,
    )
)


def quantized(ctx: LoweringContext, real: float, encoding) -> int:
    """Q(REAL) on ENCODING as ONNX Runtime's QuantizeLinear computes it (float32, half to even), saturated to the
    graph's integer type."""
    lowest, highest = ctx.qtype.qmin, ctx.qtype.qmax
    if math.isinf(real):
        return highest if real > 0 else lowest
    scale, zero_point = encoding
    return int(np.clip(np.rint(np.float32(real) / np.float32(scale)) + zero_point, lowest, highest))


def _bound(ctx: LoweringContext, name: str, real: float, encoding, rank: int) -> int:
    """A constant of shape (1,) * RANK holding REAL: Q(REAL) on ENCODING, or float32 REAL at float precision."""
    data = (
        np.full((1,) * rank, real, np.float32)
        if ctx.float
        else np.full((1,) * rank, quantized(ctx, real, encoding), ctx.integer)
    )
    return ctx.tensor(name, data.shape, data.dtype, encoding, data)


def _chain(ctx: LoweringContext, node: ir.Node, src: int, out: int, steps) -> None:
    """Emit STEPS [(builtin, extra inputs, options)] from SRC, each into a tensor like OUT, the last into OUT."""
    template = ctx.graph.tensors[out]
    for number, (builtin, extra, options) in enumerate(steps):
        last = number == len(steps) - 1
        target = (
            out
            if last
            else ctx.tensor(f"{node.name}_{number}", template.shape, ctx.integer, ctx.encoding_of(out))
        )
        ctx.add_op(builtin, [src, *extra], [target], options)
        src = target


def _clamp_steps(ctx, node, out: int, lo: float, hi: float, floor: int, rank: int) -> list:
    """MAXIMUM/MINIMUM steps that clamp values on OUT's encoding to [Q(lo), Q(hi)], above FLOOR already done."""
    encoding = ctx.encoding_of(out)
    steps = []
    if ctx.float:
        if lo > -math.inf and lo != floor:
            steps.append((MAXIMUM, [_bound(ctx, f"{node.name}_min", lo, encoding, rank)], None))
        if hi < math.inf:
            steps.append((MINIMUM, [_bound(ctx, f"{node.name}_max", hi, encoding, rank)], None))
        return steps
    if quantized(ctx, lo, encoding) > floor:
        steps.append((MAXIMUM, [_bound(ctx, f"{node.name}_min", lo, encoding, rank)], None))
    if quantized(ctx, hi, encoding) < ctx.qtype.qmax:
        steps.append((MINIMUM, [_bound(ctx, f"{node.name}_max", hi, encoding, rank)], None))
    return steps


def _output(ctx: LoweringContext, node: ir.Node, act: Activation) -> int:
    out, activation = ctx.output(node, static_shape(node.inputs[0].shape), act.perm)
    if activation != "NONE":
        raise unsupported(node, f"a second clamp after it ({activation}); fold the two", "attribute")
    return out


@lowers("Relu", "Clip")
def clip(ctx: LoweringContext, node: ir.Node) -> None:
    bounds = activation_bounds(node)
    if bounds is None:
        raise unsupported(node, "bounds that are not constant", "dynamic")
    lo, hi = bounds
    if lo > hi:
        raise unsupported(node, f"min {lo} above max {hi}", "attribute")
    act = ctx.activation(node.inputs[0], node)
    out = _output(ctx, node, act)
    rank = len(node.inputs[0].shape)
    same = ctx.float or ctx.encoding_of(act.index) == ctx.encoding_of(out)
    if same and (lo, hi) == (0.0, 6.0):
        ctx.add_op(RELU6, [act.index], [out])
        return
    steps, floor = [], ctx.qtype.qmin
    if lo >= 0:
        steps.append((RELU, [], None))  # requantizes and clamps at Q(0)
        floor = 0.0 if ctx.float else quantized(ctx, 0.0, ctx.encoding_of(out))
    elif not same:
        steps.append((QUANTIZE, [], None))
    steps += _clamp_steps(ctx, node, out, lo, hi, floor, rank)
    if not steps:  # one encoding and bounds outside the grid: the clamp is the identity, still one operator
        steps = [(MAXIMUM, [_bound(ctx, f"{node.name}_min", -math.inf, ctx.encoding_of(out), rank)], None)]
    _chain(ctx, node, act.index, out, steps)


@lowers("HardSigmoid")
def hard_sigmoid(ctx: LoweringContext, node: ir.Node) -> None:
    alpha = node.attributes.get_float("alpha", 0.2)
    beta = node.attributes.get_float("beta", 0.5)
    if alpha == 0.0:
        raise unsupported(node, "alpha 0: the output is a constant", "attribute")
    act = ctx.activation(node.inputs[0], node)
    out = _output(ctx, node, act)
    rank = len(node.inputs[0].shape)
    shape = ctx.graph.tensors[act.index].shape
    magnitude = np.float32(abs(alpha))
    if ctx.float:
        scaled = ctx.tensor(f"{node.name}_scaled", shape, np.float32)
        sign = ctx.tensor(
            f"{node.name}_alpha", (1,) * rank, np.float32, data=np.full((1,) * rank, alpha, np.float32)
        )
    else:
        s_x, zp_x = ctx.encoding_of(act.index)
        t_encoding = (np.float32(magnitude * np.float32(s_x)), zp_x if alpha > 0 else -1 - zp_x)
        scaled = ctx.tensor(f"{node.name}_scaled", shape, ctx.integer, t_encoding)
        data = np.full((1,) * rank, 1 if alpha > 0 else -1, ctx.integer)
        sign = ctx.tensor(f"{node.name}_alpha", data.shape, ctx.integer, (magnitude, 0), data)
    ctx.add_op(MUL, [act.index, sign], [scaled], {"FusedActivationFunction": "NONE"})
    steps = []
    if beta != 0.0:
        if ctx.float:
            offset = ctx.tensor(
                f"{node.name}_beta", (1,) * rank, np.float32, data=np.full((1,) * rank, beta, np.float32)
            )
        else:
            data = np.full((1,) * rank, 1 if beta > 0 else -1, ctx.integer)
            offset = ctx.tensor(f"{node.name}_beta", data.shape, ctx.integer, (np.float32(abs(beta)), 0), data)
        steps.append((ADD, [offset], {"FusedActivationFunction": "RELU"}))
    else:
        steps.append((RELU, [], None))
    floor = 0.0 if ctx.float else quantized(ctx, 0.0, ctx.encoding_of(out))
    steps += _clamp_steps(ctx, node, out, 0.0, 1.0, floor, rank)
    _chain(ctx, node, scaled, out, steps)
