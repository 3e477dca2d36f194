"""Nonlinear activations, one TFLite operator each on one int8 input; the output has the shape and layout of
the input (a tensor stays in whatever layout it has) and the encoding of the Q that follows the node:

    Sigmoid    -> LOGISTIC     y = 1 / (1 + exp(-x))          output encoding fixed: (1/256, -128)
    Tanh       -> TANH         y = tanh(x)                    output encoding fixed: (1/128, 0)
    HardSwish  -> HARD_SWISH   y = x * relu6(x + 3) / 6       output encoding calibrated
    Softmax    -> SOFTMAX      y = exp(beta x) / sum exp(beta x) over the last TFLite axis, beta = 1;
                                                              output encoding fixed: (1/256, -128)
    LeakyRelu  -> LEAKY_RELU   y = x for x >= 0, alpha * x below (alpha: the ONNX attribute, default 0.01,
                               stored as the float32 LeakyReluOptions.alpha); output encoding calibrated
    Elu        -> ELU          y = x for x >= 0, exp(x) - 1 below (alpha = 1 only); output encoding calibrated
    Gelu       -> GELU         y = x * Phi(x), exact (erf) or approximate="tanh"; output encoding calibrated

The quantization plan gives Sigmoid, Softmax and Tanh outputs TFLite's fixed encodings. The integer arithmetic of
each is its reference kernel's (edgeq/reference/logistic.py, tanh.py, hard_swish.py, softmax.py, leaky_relu.py,
elu.py, gelu.py; docs/integer-arithmetic.md). PRelu -> PRELU is in prelu.py. ONNX Softmax's axis must be the last TFLite axis (the
channels of an NHWC tensor, the last ONNX axis otherwise).
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import (
    BIT_EXACT,
    PROBABILITY_ENCODING,
    TANH_ENCODING,
    Builtin,
    by_input_type,
    input_shape,
    register,
)
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.registry import lowers

ORT_1_LSB = "; ONNX Runtime QDQ within 1 LSB"
SOFTMAX_INT16 = BIT_EXACT.format("softmax.py") + " (LiteRT under the reference's litert semantics)"

LOGISTIC = register(
    Builtin(
        "LOGISTIC",
        options=None,
        micro_resolver="AddLogistic",
        micro_types=("int8", "int16", "float32"),
        kind="elementwise",
        version=by_input_type(int8=2, int16=3),
        output_shape=input_shape,
        fixed_output=PROBABILITY_ENCODING,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/logistic.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (a float table: 1 LSB apart on rare inputs)"
            + ORT_1_LSB,
            "int16": BIT_EXACT.format("logistic.py"),
        },
    )
)
TANH = register(
    Builtin(
        "TANH",
        options=None,
        micro_resolver="AddTanh",
        micro_types=("int8", "int16", "float32"),
        kind="elementwise",
        version=by_input_type(int8=2, int16=3),
        output_shape=input_shape,
        fixed_output=TANH_ENCODING,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/tanh.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (a float table: 1 LSB apart on rare inputs)"
            + ORT_1_LSB,
            "int16": BIT_EXACT.format("tanh.py"),
            "float32": "LiteRT and TFLite Micro (float .tflite)",
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
            "scales)" + ORT_1_LSB,
        },
    )
)
SOFTMAX = register(
    Builtin(
        "SOFTMAX",
        options="SoftmaxOptions",
        micro_resolver="AddSoftmax",
        micro_types=("int8", "int16", "float32"),
        kind="elementwise",
        version=by_input_type(int8=2, int16=3),
        output_shape=input_shape,
        fixed_output=PROBABILITY_ENCODING,
        verified={"int8": BIT_EXACT.format("softmax.py") + ORT_1_LSB, "int16": SOFTMAX_INT16},
    )
)
LEAKY_RELU = register(
    Builtin(
        "LEAKY_RELU",
        options="LeakyReluOptions",
        micro_resolver="AddLeakyRelu",
        micro_types=("int8", "int16", "float32"),
        kind="elementwise",
        version=by_input_type(int8=1, int16=2),
        output_shape=input_shape,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/leaky_relu.py) and with LiteRT "
            "BUILTIN_REF under the reference's litert semantics (float32 multipliers); LiteRT default kernels "
            "and ONNX Runtime QDQ within 1 LSB",
            "int16": BIT_EXACT.format("leaky_relu.py") + " (LiteRT under the reference's litert semantics)",
            "float32": "LiteRT BUILTIN_REF (float .tflite): exactly x if x > 0 else float32(alpha) * x",
        },
    )
)
ELU = register(
    Builtin(
        "ELU",
        options=None,
        micro_resolver="AddElu",
        kind="elementwise",
        version=lambda graph, op: 1,  # LiteRT's default kernels register version 1 only
        output_shape=input_shape,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/elu.py) and with LiteRT's "
            "default kernels under the reference's litert semantics (expm1 instead of exp - 1: 1 LSB apart on "
            "rare inputs); LiteRT BUILTIN_REF has no ELU" + ORT_1_LSB,
            "float32": "LiteRT default kernels and TFLite Micro (float .tflite)",
        },
    )
)
GELU = register(
    Builtin(
        "GELU",
        options="GeluOptions",
        micro_resolver="AddGelu",  # not in tflite-micro 0.dev20261023's interpreter: LiteRT only
        micro_types=(),
        kind="elementwise",
        version=by_input_type(int8=2, int16=1),  # op_version.cc: 2 for int8/uint8 only
        output_shape=input_shape,
        verified={
            "int8": "bit-exact with LiteRT BUILTIN_REF and default kernels (reference kernel edgeq/reference/"
            "gelu.py); TFLite Micro has no GELU" + ORT_1_LSB,
            "int16": "bit-exact with LiteRT BUILTIN_REF only (reference kernel edgeq/reference/gelu.py); "
            "TFLite Micro has no GELU",
            "float32": "LiteRT (float .tflite); TFLite Micro has no GELU",
        },
    )
)


def _unary(ctx: LoweringContext, node: ir.Node, builtin: Builtin, options=None) -> None:
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    out, activation = ctx.output(node, static_shape(x_value.shape), act.perm)
    if activation != "NONE":
        raise unsupported(
            node, f"{builtin.opcode} has no fused activation for the Relu/Clip after it", "attribute"
        )
    ctx.add_op(builtin, [act.index], [out], options)


@lowers("Sigmoid")
def sigmoid(ctx: LoweringContext, node: ir.Node) -> None:
    _unary(ctx, node, LOGISTIC)


@lowers("Tanh")
def tanh(ctx: LoweringContext, node: ir.Node) -> None:
    _unary(ctx, node, TANH)


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


@lowers("Elu")
def elu(ctx: LoweringContext, node: ir.Node) -> None:
    alpha = node.attributes.get_float("alpha", 1.0)
    if alpha != 1.0:
        raise unsupported(node, f"alpha {alpha}; TFLite ELU has alpha 1 only", "attribute")
    _unary(ctx, node, ELU)


@lowers("Gelu")
def gelu(ctx: LoweringContext, node: ir.Node) -> None:
    approximate = node.attributes.get_string("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise unsupported(node, f"approximate={approximate!r}", "attribute")
    _unary(ctx, node, GELU, {"Approximate": approximate == "tanh"})
