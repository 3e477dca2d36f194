"""Nonlinear activations, one TFLite operator each on one int8 input; the output has the shape and layout of
the input and the encoding of the Q that follows the node:

    Sigmoid    -> LOGISTIC     y = 1 / (1 + exp(-x))          output encoding fixed: (1/256, -128)
    HardSwish  -> HARD_SWISH   y = x * relu6(x + 3) / 6       output encoding calibrated
    Softmax    -> SOFTMAX      y = exp(beta x) / sum exp(beta x) over the last TFLite axis, beta = 1;
                                                              output encoding fixed: (1/256, -128)
    LeakyRelu  -> LEAKY_RELU   y = x for x >= 0, alpha * x below (alpha: the ONNX attribute, default 0.01,
                               stored as the float32 LeakyReluOptions.alpha); output encoding calibrated

The quantization plan gives Sigmoid and Softmax outputs TFLite's fixed encodings. The integer arithmetic of each
is its reference kernel's (edgeq/reference/logistic.py, hard_swish.py, softmax.py, leaky_relu.py;
docs/integer-arithmetic.md).
ONNX Softmax's axis must be the last TFLite axis (the channels of an NHWC tensor, the last ONNX axis otherwise).
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import (
    BIT_EXACT,
    PROBABILITY_ENCODING,
    Builtin,
    by_input_type,
    input_shape,
    register,
)
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.registry import lowers

LOGISTIC = register(
    Builtin(
        "LOGISTIC",
        options=None,
        micro_resolver="AddLogistic",
        kind="elementwise",
        version=by_input_type(int8=2, int16=3),
        output_shape=input_shape,
        fixed_output=PROBABILITY_ENCODING,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/logistic.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (a float table: 1 LSB apart on rare inputs); "
            "ONNX Runtime QDQ within 1 LSB",
        },
    )
)
HARD_SWISH = register(
    Builtin(
        "HARD_SWISH",
        options="HardSwishOptions",
        micro_resolver="AddHardSwish",
        kind="elementwise",
        version=lambda graph, op: 1,
        output_shape=input_shape,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/hard_swish.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (a float32 multiplier: 1 LSB apart on rare "
            "scales); ONNX Runtime QDQ within 1 LSB",
        },
    )
)
SOFTMAX = register(
    Builtin(
        "SOFTMAX",
        options="SoftmaxOptions",
        micro_resolver="AddSoftmax",
        kind="elementwise",
        version=by_input_type(int8=2, int16=3),
        output_shape=input_shape,
        fixed_output=PROBABILITY_ENCODING,
        verified={"int8": BIT_EXACT.format("softmax.py") + "; ONNX Runtime QDQ within 1 LSB"},
    )
)

LEAKY_RELU = register(
    Builtin(
        "LEAKY_RELU",
        options="LeakyReluOptions",
        micro_resolver="AddLeakyRelu",
        kind="elementwise",
        version=by_input_type(int8=1, int16=2),
        output_shape=input_shape,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/leaky_relu.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (float32 multipliers); LiteRT default kernels "
            "and ONNX Runtime QDQ within 1 LSB",
            "float32": "LiteRT BUILTIN_REF (float .tflite): exactly x if x > 0 else float32(alpha) * x",
        },
    )
)


def _unary(ctx: LoweringContext, node: ir.Node, builtin: Builtin, options=None) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    out, _ = ctx.output(node, static_shape(x_value.shape), act.perm)
    ctx.add_op(builtin, [act.index], [out], options)


@lowers("Sigmoid")
def sigmoid(ctx: LoweringContext, node: ir.Node) -> None:
    _unary(ctx, node, LOGISTIC)


@lowers("HardSwish")
def hard_swish(ctx: LoweringContext, node: ir.Node) -> None:
    _unary(ctx, node, HARD_SWISH)


@lowers("Softmax")
def softmax(ctx: LoweringContext, node: ir.Node) -> None:
    rank = len(node.inputs[0].shape)
    axis = node.attributes.get_int("axis", -1) % rank
    act = ctx.activation(node.inputs[0], node)
    if list(act.perm).index(axis) != rank - 1:
        raise unsupported(node, "TFLite SOFTMAX runs over the channel/last axis only", "layout")
    _unary(ctx, node, SOFTMAX, {"Beta": 1.0})


@lowers("LeakyRelu")
def leaky_relu(ctx: LoweringContext, node: ir.Node) -> None:
    _unary(ctx, node, LEAKY_RELU, {"Alpha": node.attributes.get_float("alpha", 0.01)})
