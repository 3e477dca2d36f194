"""ONNX LayerNormalization -> a float32 sub-graph of TFLite builtins (TFLite has no layer-norm operator):

    m = MEAN(x, axes)              the mean over the normalized axes (axis .. rank-1), KeepDims
    c = ADD(x, MUL(m, -1))         x - m (negation and addition: exactly float32(x - m), without SUB)
    v = MEAN(MUL(c, c), axes)      the variance
    y = MUL(c, RSQRT(ADD(v, eps)))  then MUL by gamma and ADD beta (each skipped when it is 1 / 0 / absent)

in the tensor's TFLite layout (each ONNX axis a is TFLite axis perm.index(a); gamma and beta are laid out to
match). The int8 lowering refuses with "no-int8-kernel": LayerNormalization is a float island between DEQUANTIZE
and QUANTIZE. Measured on paraphrase-MiniLM-L3's 7 LayerNormalizations (48 eval sentences): an int8 chain of the
same ops, every intermediate quantized with its calibrated range, was 0.42-0.56 LSB off the float result on average
and up to 9 LSB (1.4-4 % of outputs more than 1 LSB; 5-6 % relative error), where the float island is ONNX
Runtime's own DQ -> LayerNormalization -> Q. TFLite Micro has float32 MEAN, MUL, ADD and RSQRT kernels, so the
island runs there too (measured). The decomposed form other exporters write (ReduceMean, Sub, Pow, Sqrt, Div) is
lowered op by op.

RSQRT is also declared for int8 and int16 (edgeq/reference/rsqrt.py, bit-exact in both runtimes; in int16 the
two runtimes compute it differently, each reproduced) for chains that need it.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import BIT_EXACT, Builtin, by_input_type, input_shape, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.elementwise import ADD, MUL
from edgeq.targets.tflite.lower.reductions import MEAN
from edgeq.targets.tflite.lower.registry import lowers

RSQRT = register(
    Builtin(
        "RSQRT",
        options=None,
        micro_resolver="AddRsqrt",
        micro_types=("int8", "int16", "float32"),
        kind="elementwise",
        version=by_input_type(int8=2, int16=3),
        output_shape=input_shape,
        verified={
            "int8": BIT_EXACT.format("rsqrt.py"),
            "int16": BIT_EXACT.format("rsqrt.py") + " (LiteRT under the reference's litert semantics: a float "
            "table, thousands of outputs apart from TFLite Micro's fixed point)",
            "float32": "TFLite Micro and LiteRT BUILTIN_REF: 1 / sqrt(x) in float32, bit-exact",
        },
    )
)


@lowers("LayerNormalization")
def layer_normalization(ctx: LoweringContext, node: ir.Node) -> None:
    if not ctx.float:
        raise unsupported(node, "TFLite has no layer-norm operator; it runs as float32 ops", "no-int8-kernel")
    x_value = node.inputs[0]
    act = ctx.activation(x_value, node)
    shape = static_shape(x_value.shape)
    rank = len(shape)
    axis = node.attributes.get_int("axis", -1) % rank
    if axis == 0:
        raise unsupported(node, "normalizing over the batch axis", "attribute")
    params = []  # gamma, beta (None: absent)
    for value in (node.inputs[i] if len(node.inputs) > i else None for i in (1, 2)):
        if value is not None and value.const_value is None:
            raise unsupported(node, "a scale or bias computed at run time", "dynamic")
        params.append(None if value is None else value.const_value.numpy())
    perm = act.perm
    tfl_shape = tuple(shape[a] for a in perm)
    axes = sorted(list(perm).index(a) for a in range(axis, rank))
    kept_shape = tuple(1 if i in axes else d for i, d in enumerate(tfl_shape))
    name = node.name
    axes_index = ctx.tensor(f"{name}_axes", (len(axes),), np.int32, data=np.array(axes, np.int32))

    def tensor(suffix: str, shape=tfl_shape) -> int:
        return ctx.tensor(f"{name}_{suffix}", shape, np.float32)

    def constant(suffix: str, array) -> int:
        array = np.asarray(array, np.float32)
        array = array.reshape((1,) * (rank - array.ndim) + array.shape).transpose(perm)
        return ctx.tensor(f"{name}_{suffix}", array.shape, np.float32, data=np.ascontiguousarray(array))

    def op(builtin: Builtin, inputs: list[int], out: int, activation: str = "NONE") -> int:
        options = {"KeepDims": True} if builtin is MEAN else {"FusedActivationFunction": activation}
        ctx.add_op(builtin, inputs, [out], options if builtin is not RSQRT else None)
        return out

    mean = op(MEAN, [act.index, axes_index], tensor("mean", kept_shape))
    negated = op(MUL, [mean, constant("minus_one", -1.0)], tensor("negated_mean", kept_shape))
    centered = op(ADD, [act.index, negated], tensor("centered"))
    variance = op(
        MEAN, [op(MUL, [centered, centered], tensor("squares")), axes_index], tensor("variance", kept_shape)
    )
    epsilon = constant("epsilon", node.attributes.get_float("epsilon", 1e-5))
    inverse = op(
        RSQRT,
        [op(ADD, [variance, epsilon], tensor("variance_eps", kept_shape))],
        tensor("inverse_std", kept_shape),
    )
    factors = [(MUL, inverse, "normalized")]
    for builtin, param, neutral, suffix in ((MUL, params[0], 1.0, "gamma"), (ADD, params[1], 0.0, "beta")):
        if param is not None and not np.all(param == neutral):
            factors.append((builtin, constant(suffix, param), f"{suffix}_applied"))
    out, activation = ctx.output(node, shape, perm)
    current = centered
    for i, (builtin, operand, suffix) in enumerate(factors):
        final = i == len(factors) - 1
        current = op(
            builtin, [current, operand], out if final else tensor(suffix), activation if final else "NONE"
        )
