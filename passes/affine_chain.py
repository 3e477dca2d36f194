"""Canonical form of elementwise affine chains: every run of Sub/Mul/Add by constants becomes ``x * s + t``.

Exporters spell an inference BatchNorm and an input normalization as chains of elementwise ops with constant
operands (Keras 3: ``Sub(x, mean)``, ``Mul(., gamma/sqrt(var+eps))``, ``Add(., beta)``; image models:
``(x - mean) / std``, which passes.div_to_mul has already made a Mul). passes.fold_affine folds ``x * s + t``
into a neighbouring Conv/Gemm or makes it one depthwise Conv; these rules bring every chain into that form.
Every rule is exact up to one float32 rounding of the new constant (computed in float64):

    Sub(x, c)             = Add(x, -c)                                        (exact: negation)
    Mul(Mul(x, a), b)     = Mul(x, a * b)
    Add(Add(x, a), b)     = Add(x, a + b)
    Mul(Add(x, a), b)     = Add(Mul(x, b), a * b)
    BatchNormalization(x) = Add(Mul(x, s), t),  s = gamma / sqrt(var + eps),  t = beta - mean * s
                            (inference mode; s and t shaped [C, 1, ..., 1] for channel axis 1)

Broadcasting is associative, so each rewrite keeps the output shape. An affine op and a Transpose commute
(``Mul(Transpose(x, p), c) = Transpose(Mul(x, c'), p)`` with c' the constant, padded to the tensor's rank,
transposed by the inverse permutation); the chain moves across a Transpose only toward a Conv/Gemm/MatMul
that can absorb it (an NHWC Keras BatchNorm sits behind the Transpose that follows its Conv).

Only float32 tensors with finite float32 constants are rewritten (a constant that is a graph input can be
overridden, so it is not constant). An intermediate value read by another node or a graph output is never
rewritten away (onnxscript's matcher checks it). New constants get names not yet in the graph: one scalar
initializer shared by many nodes, as onnx-simplifier writes, gives every node its own new constant.
"""

from __future__ import annotations

import re

import numpy as np
import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.rewriter import RewriteRuleClassBase

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """VALUE's array if it is a finite float32 constant that no graph input can override, else None."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    if value.dtype != ir.DataType.FLOAT:
        return None
    array = value.const_value.numpy()
    return array if np.all(np.isfinite(array)) else None


def is_float_activation(value: ir.Value) -> bool:
    return value.dtype == ir.DataType.FLOAT and value.const_value is None


def rank_of(value: ir.Value) -> int | None:
    return None if value.shape is None else len(value.shape)


def padded(array: np.ndarray, rank: int) -> np.ndarray | None:
    """ARRAY with leading 1-dims up to RANK (how it broadcasts against a rank-RANK tensor), None if longer."""
    if array.ndim > rank:
        return None
    return array.reshape((1,) * (rank - array.ndim) + array.shape)


def channel_vector(array: np.ndarray, rank: int, axis: int, channels: int) -> np.ndarray | None:
    """ARRAY as CHANNELS float64 factors when, broadcast against a rank-RANK tensor with CHANNELS entries on
    AXIS, it varies along AXIS only (a scalar gives one factor for all); None when it is not per channel or would
    widen the tensor."""
    full = padded(array, rank)
    if full is None:
        return None
    axis %= rank
    if any(d != 1 for i, d in enumerate(full.shape) if i != axis) or full.shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(full.reshape(-1).astype(np.float64), (channels,))


_ROLES = (
    "negated",
    "merged",
    "scaled",
    "transposed",
    "folded",
    "bias",
    "bn_mul",
    "bn_add",
    "dw_weight",
    "dw_bias",
)
_ROLE_SUFFIX = re.compile(rf"(_({'|'.join(_ROLES)})(_\d+)?)+$")


def new_constant(op, graph: ir.Graph, array: np.ndarray, like: str, role: str) -> ir.Value:
    """A new float32 initializer named after LIKE (without the roles earlier rewrites appended) and ROLE, with a
    numeric suffix when the graph already holds that name. No role ends like the names passes.insert_qdq gives
    Q/DQ constants later (``<tensor>_scale``, ``_zero_point``, ``_quantized``)."""
    base = f"{_ROLE_SUFFIX.sub('', like or 'affine')}_{role}"
    name, index = base, 0
    while name in graph.initializers:
        index += 1
        name = f"{base}_{index}"
    return op.initializer(ir.tensor(np.asarray(array, np.float32)), name=name)


def graph_of(value: ir.Value) -> ir.Graph:
    return value.graph if value.graph is not None else value.producer().graph


class _ConstantOperand(RewriteRuleClassBase):
    """A binary op ``x (op) c`` with a float activation x and a finite float32 constant c."""

    def check(self, context, x, c, **_) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        if not is_float_activation(x) or constant_array(c) is None:
            return result.fail("not a float activation and a finite float32 constant")
        return result


class _SubConstant(_ConstantOperand):
    def pattern(self, op, x, c):
        return op.Sub(x, c)

    def rewrite(self, op, x, c):
        return op.Add(x, new_constant(op, graph_of(c), -constant_array(c), c.name, "negated"))


class _ChainOfTwo(RewriteRuleClassBase):
    """``(x OUTER a) INNER b`` for two constants a, b."""

    def check(self, context, x, a, b, **_) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        if not is_float_activation(x) or constant_array(a) is None or constant_array(b) is None:
            return result.fail("not a float activation with two finite float32 constants")
        return result

    @staticmethod
    def merged(a, b, combine):
        return combine(constant_array(a).astype(np.float64), constant_array(b).astype(np.float64))


class _MulMul(_ChainOfTwo):
    def pattern(self, op, x, a, b):
        return op.Mul(op.Mul(x, a), b)

    def rewrite(self, op, x, a, b):
        return op.Mul(x, new_constant(op, graph_of(b), self.merged(a, b, np.multiply), b.name, "merged"))


class _AddAdd(_ChainOfTwo):
    def pattern(self, op, x, a, b):
        return op.Add(op.Add(x, a), b)

    def rewrite(self, op, x, a, b):
        return op.Add(x, new_constant(op, graph_of(b), self.merged(a, b, np.add), b.name, "merged"))


class _MulOfAdd(_ChainOfTwo):
    def pattern(self, op, x, a, b):
        return op.Mul(op.Add(x, a), b)

    def rewrite(self, op, x, a, b):
        shift = new_constant(op, graph_of(a), self.merged(a, b, np.multiply), a.name, "scaled")
        return op.Add(op.Mul(x, b), shift)


class _BatchNormToAffine(RewriteRuleClassBase):
    def pattern(self, op, x, gamma, beta, mean, var):
        return op.BatchNormalization(x, gamma, beta, mean, var, _allow_other_attributes=True, _outputs=["y"])

    def check(self, context, x, gamma, beta, mean, var, y) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        node = y.producer()
        if len(node.outputs) != 1 or node.attributes.get_int("training_mode", 0):
            return result.fail("training-mode BatchNormalization")
        if node.attributes.get_int("spatial", 1) != 1:  # opset < 9: statistics per element, not per channel
            return result.fail("non-spatial BatchNormalization")
        if not is_float_activation(x) or (rank_of(x) or 0) < 2:
            return result.fail("input rank unknown")
        if any(constant_array(v) is None or constant_array(v).ndim != 1 for v in (gamma, beta, mean, var)):
            return result.fail("statistics are not float32 constant vectors")
        return result

    def rewrite(self, op, x, gamma, beta, mean, var, y):
        eps = y.producer().attributes.get_float("epsilon", 1e-5)
        g, b, m, v = (constant_array(value).astype(np.float64) for value in (gamma, beta, mean, var))
        scale = g / np.sqrt(v + eps)
        shape = (-1,) + (1,) * (rank_of(x) - 2)
        graph = graph_of(gamma)
        s = new_constant(op, graph, scale.reshape(shape), gamma.name, "bn_mul")
        t = new_constant(op, graph, (b - m * scale).reshape(shape), beta.name, "bn_add")
        return op.Add(op.Mul(x, s), t)


def _perm(transpose: ir.Node, rank: int) -> list[int]:
    perm = transpose.attributes.get_ints("perm", None)
    return list(perm) if perm is not None else list(range(rank))[::-1]


class _AffineAfterTranspose(RewriteRuleClassBase):
    """``Affine(Transpose(y, p), c) = Transpose(Affine(y, c'), p)`` when y comes from a Conv/Gemm/MatMul."""

    def __init__(self, op_type: str):
        super().__init__(f"{op_type}BeforeTranspose")
        self.op_type = op_type

    def pattern(self, op, y, c):
        return getattr(op, self.op_type)(op.Transpose(y, _allow_other_attributes=True, _outputs=["t"]), c)

    def check(self, context, y, c, t) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        producer = y.producer()
        if producer is None or producer.op_type not in LINEAR_OPS or not is_float_activation(y):
            return result.fail("the Transpose does not follow a linear op")
        if y.is_graph_output() or len(y.uses()) != 1:
            return result.fail("the linear op's output is read elsewhere: nothing would fold")
        array, rank = constant_array(c), rank_of(y)
        if array is None or rank is None or padded(array, rank) is None:
            return result.fail("not a float32 constant that keeps the rank")
        return result

    def rewrite(self, op, y, c, t):
        perm = _perm(t.producer(), rank_of(y))
        moved = padded(constant_array(c), len(perm)).transpose(np.argsort(perm))
        inner = getattr(op, self.op_type)(y, new_constant(op, graph_of(c), moved, c.name, "transposed"))
        return op.Transpose(inner, perm=perm)


class _TransposeOfAffine(RewriteRuleClassBase):
    """``Transpose(Affine(x, c), p) = Affine(Transpose(x, p), c'')`` when the Transpose feeds only a
    Conv/Gemm/MatMul and x does not come from one (then the chain folds backward instead)."""

    def __init__(self, op_type: str):
        super().__init__(f"TransposeBefore{op_type}")
        self.op_type = op_type

    def pattern(self, op, x, c):
        return op.Transpose(getattr(op, self.op_type)(x, c), _allow_other_attributes=True, _outputs=["t"])

    def check(self, context, x, c, t) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        uses = t.uses()
        if t.is_graph_output() or len(uses) != 1 or uses[0].node.op_type not in LINEAR_OPS or uses[0].idx:
            return result.fail("the Transpose does not feed one linear op")
        producer = x.producer()
        if producer is not None and producer.op_type in LINEAR_OPS:
            return result.fail("the chain folds into the preceding linear op")
        array, rank = constant_array(c), rank_of(x)
        if not is_float_activation(x) or array is None or rank is None or padded(array, rank) is None:
            return result.fail("not a float activation and a float32 constant that keeps the rank")
        return result

    def rewrite(self, op, x, c, t):
        perm = _perm(t.producer(), rank_of(x))
        moved = padded(constant_array(c), len(perm)).transpose(perm)
        transposed = op.Transpose(x, perm=perm)
        return getattr(op, self.op_type)(
            transposed, new_constant(op, graph_of(c), moved, c.name, "transposed")
        )


def canonical_rules() -> list:
    """The rules that bring affine chains into the form ``Add(Mul(x, s), t)`` (commuted variants included)."""
    rules = [_SubConstant.rule(), _BatchNormToAffine.rule()]
    rules += [r.rule() for r in (_MulMul, _AddAdd, _MulOfAdd)]
    rules += [
        rule.rule(op_type)
        for rule in (_AffineAfterTranspose, _TransposeOfAffine)
        for op_type in ("Mul", "Add")
    ]
    return rules
