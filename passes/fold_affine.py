"""Fold per-channel affine ops ``y = x * s + t`` into a neighbouring Conv/Gemm, or make them one depthwise Conv.

Unfolded BatchNorms (Keras 3's Sub/Mul/Add, a BatchNormalization after an Add) and input normalizations
(``(x - mean) / std``) would each be quantized as one or two Add/Mul nodes: a Q/DQ pair and a rounding each,
and their constants quantized per tensor, so a channel whose factor is 100x smaller than the largest loses it.
passes.affine_chain first brings every chain into the form ``Add(Mul(x, s), t)``; then, in this order (each
step to a fixed point, so a chain folds backward wherever it can before it folds forward):

1. **Into the preceding linear op** ``z = W * x + b`` (Conv, ConvTranspose, Gemm, MatMul with constant
   weights), when s and t are scalars or vary along its output-channel axis only (Conv/ConvTranspose [C,1,1],
   [1,C,1,1]; Gemm/MatMul [C], [1,C]) and z is read by nothing else and is not a graph output, per output
   channel c:  ``W'[c] = W[c] * s[c]``, ``b'[c] = b[c] * s[c]`` for the Mul, ``b'[c] = b[c] + t[c]`` for the
   Add. Gemm computes ``alpha * A @ W + beta * C``: C' = beta * C * s, C' = beta * C + t, beta becomes 1.
   MatMul has no bias: ``MatMul(x, W) + t`` becomes ``Gemm(x, W, t)`` for a rank-2 x (it stays otherwise).
2. **Into the following Conv/Gemm/MatMul** ``W * y + b``, when s, t vary along its input-channel axis only
   (input normalization at the model's start): per input channel i, ``W'[:, i] = W[:, i] * s[i]``; the shift
   ``b' = b + sum_i W[:, i] * t[i]`` (summed over the kernel window too) only for a Gemm and an unpadded Conv:
   a padded Conv would see the shifted input's zero (t) at the border, where the original sees 0. MatMul takes
   the scale only (it has no bias).
3. **What is left on a rank-3/4 feature map** (``Mul`` or ``Add`` by a per-channel constant, or a ``Mul``+``Add``
   pair, e.g. a BatchNormalization after an Add) becomes ONE ``Conv(x, W, b, group=C)`` with a 1x1 (1) kernel,
   ``W[c] = s[c]``, ``b[c] = t[c]``: it quantizes with per-channel int8 weights (every s[c] at full precision)
   and an int32 bias, and lowers to TFLite's DEPTHWISE_CONV_2D. A Mul or Add by a scalar alone stays (its
   per-tensor constant is exact). Rank 2 ([N, C]) stays ``Mul``/``Add``. Measured with edgeq's default recipe on
   Gemm(64->128)-Relu-BatchNorm-Relu-Gemm(128->10), BN scales spread over 150x, 4 seeds, output SQNR against
   fp32: a Reshape to [N, C, 1, 1], the 1x1 depthwise Conv and a Reshape back was -0.9 to +0.1 dB against
   Mul+Add (the Reshape between the Conv and the Relu keeps the Relu from fusing, Mul+Add fuses it into the
   Add); a diagonal Gemm(x, diag(s), t) was +0.5 to +1.7 dB but costs C*C weights and multiplies for C.

All constants are computed in float64 and rounded once to float32; new initializers get names not yet in the
graph, and no existing initializer changes (a weight shared by two layers keeps its other reader).
"""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript import rewriter
from onnxscript.rewriter import RewriteRuleClassBase

from edgeq.passes.affine_chain import (
    LINEAR_OPS,
    canonical_rules,
    channel_vector,
    constant_array,
    graph_of,
    is_float_activation,
    new_constant,
    padded,
    rank_of,
)
from edgeq.passes.fold_batchnorm import BN_BETA_KEY, BN_GAMMA_KEY, batchnorm_statistics

_MAX_SWEEPS = 16  # each sweep folds at least one op of every chain it touches; chains are a few ops long


def _weights(node: ir.Node) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(W, bias) of a linear op as float64 arrays, or None when they are not float32 constants."""
    w = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or (node.op_type in ("Gemm", "MatMul") and w.ndim != 2) or w.ndim < 2:
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    b = constant_array(bias) if bias is not None else None
    if bias is not None and b is None:
        return None
    return w.astype(np.float64), None if b is None else b.astype(np.float64)


def _output_layout(node: ir.Node, x: ir.Value, w: np.ndarray) -> tuple[int, int, int] | None:
    """(rank, channel axis, channels) of a linear op's output."""
    if node.op_type == "Conv":
        return w.ndim, 1, w.shape[0]
    if node.op_type == "ConvTranspose":
        return w.ndim, 1, w.shape[1] * node.attributes.get_int("group", 1)
    if node.op_type == "Gemm":
        return 2, 1, w.shape[0] if node.attributes.get_int("transB", 0) else w.shape[1]
    rank = rank_of(x)  # MatMul(x, W[K, N]): x's rank, N channels last
    return None if rank is None else (rank, rank - 1, w.shape[1])


def _input_layout(node: ir.Node, x: ir.Value, w: np.ndarray) -> tuple[int, int, int] | None:
    """(rank, channel axis, channels) of a linear op's data input."""
    if node.op_type == "Conv":
        return w.ndim, 1, w.shape[1] * node.attributes.get_int("group", 1)
    if node.op_type == "Gemm":
        if node.attributes.get_int("transA", 0):
            return None
        return 2, 1, w.shape[1] if node.attributes.get_int("transB", 0) else w.shape[0]
    rank = rank_of(x)
    return None if node.op_type != "MatMul" or rank is None else (rank, rank - 1, w.shape[0])


def _along(vector: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """VECTOR shaped to broadcast along AXIS of an NDIM-dimensional array."""
    return vector.reshape([-1 if i == axis else 1 for i in range(ndim)])


def _gemm_bias(node: ir.Node, bias: np.ndarray | None, channels: int) -> np.ndarray:
    """beta * C as [N] (or [M, N] when C is a full matrix); zeros when there is no C."""
    if bias is None:
        return np.zeros(channels)
    full = padded(bias * node.attributes.get_float("beta", 1.0), 2)
    return np.broadcast_to(full, (1, channels)).reshape(channels) if full.shape[0] == 1 else full


def _scale_output_weights(node: ir.Node, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    if node.op_type == "ConvTranspose":  # [C_in, C_out/group, k...]: output channel g * C_out/group + j
        group = node.attributes.get_int("group", 1)
        grouped = w.reshape(group, w.shape[0] // group, *w.shape[1:])
        return (grouped * s.reshape(group, 1, w.shape[1], *[1] * (w.ndim - 2))).reshape(w.shape)
    axis = (
        0
        if node.op_type == "Conv" or (node.op_type == "Gemm" and node.attributes.get_int("transB", 0))
        else 1
    )
    return w * _along(s, axis, w.ndim)


class _AffineNextToLinear(RewriteRuleClassBase):
    """A Mul or Add (AFFINE) by a constant next to a linear op (OP_TYPE); ``_vector`` gives the constant per
    channel when it folds, else None."""

    refusal = ""

    def __init__(self, affine: str, op_type: str):
        super().__init__(f"{affine}{type(self).__name__}{op_type}")
        self.affine, self.op_type = affine, op_type

    def _vector(self, x, c, z) -> np.ndarray | None:
        raise NotImplementedError

    def check(self, context, x, c, z) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        return result.fail(self.refusal) if self._vector(x, c, z) is None else result


class _IntoPreceding(_AffineNextToLinear):
    """``Mul(Linear(x), s)`` or ``Add(Linear(x), t)`` -> ``Linear'(x)`` (step 1)."""

    refusal = "not a per-output-channel constant of a linear op with constant weights"

    def pattern(self, op, x, c):
        linear = getattr(op, self.op_type)(
            x, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["z"]
        )
        return getattr(op, self.affine)(linear, c)

    def _vector(self, x, c, z) -> np.ndarray | None:
        node = z.producer()
        weights, array = _weights(node), constant_array(c)
        if weights is None or array is None or not is_float_activation(x):
            return None
        layout = _output_layout(node, x, weights[0])
        if layout is None or (self.op_type == "MatMul" and self.affine == "Add" and layout[0] != 2):
            return None
        return channel_vector(array, *layout)

    def rewrite(self, op, x, c, z):
        node, vector = z.producer(), self._vector(x, c, z)
        w, b = _weights(node)
        attributes = {k: v for k, v in node.attributes.items() if k != "beta"}
        graph = graph_of(z)
        if self.affine == "Mul":
            w = _scale_output_weights(node, w, vector)
        weights = new_constant(op, graph, w, node.inputs[1].name, "folded")
        if self.op_type == "MatMul":  # no bias: the scale only, or Gemm(x, W, t) for the shift
            return (
                op.MatMul(x, weights)
                if self.affine == "Mul"
                else op.Gemm(x, weights, new_constant(op, graph, vector, node.inputs[1].name, "bias"))
            )
        if self.op_type == "Gemm":
            b = _gemm_bias(node, b, len(vector))
            b = b * _along(vector, b.ndim - 1, b.ndim) if self.affine == "Mul" else b + vector
        elif self.affine == "Mul":
            b = None if b is None else b * vector
        else:
            b = vector if b is None else b + vector
        inputs = [x, weights] + (
            [] if b is None else [new_constant(op, graph, b, node.inputs[1].name, "bias")]
        )
        folded = getattr(op, self.op_type)(*inputs, **attributes)
        _keep_statistics(node, folded.producer(), vector, self.affine)
        return folded


def _keep_statistics(node: ir.Node, folded: ir.Node, vector: np.ndarray, affine: str) -> None:
    """A BatchNorm folded into NODE earlier described its output as mean beta, deviation |gamma| per channel
    (passes.fold_batchnorm); the affine op moves them to gamma * s, beta * s, or beta + t."""
    statistics = batchnorm_statistics(node)
    if statistics is not None and len(statistics[0]) == len(vector):
        gamma, beta = (v.astype(np.float64) for v in statistics)
        gamma, beta = (gamma * vector, beta * vector) if affine == "Mul" else (gamma, beta + vector)
        folded.metadata_props[BN_GAMMA_KEY] = json.dumps(gamma.tolist())
        folded.metadata_props[BN_BETA_KEY] = json.dumps(beta.tolist())


def _unpadded(node: ir.Node) -> bool:
    if node.op_type != "Conv":
        return True
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    return auto_pad in ("NOTSET", "VALID") and not any(node.attributes.get_ints("pads", []))


class _IntoFollowing(_AffineNextToLinear):
    """``Linear(Mul(x, s))`` or ``Linear(Add(x, t))`` -> ``Linear'(x)`` (step 2)."""

    refusal = "not a per-input-channel constant that folds exactly"

    def pattern(self, op, x, c):
        inner = getattr(op, self.affine)(x, c)
        return getattr(op, self.op_type)(
            inner, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["z"]
        )

    def _vector(self, x, c, z) -> np.ndarray | None:
        node = z.producer()
        weights, array = _weights(node), constant_array(c)
        if weights is None or array is None or not is_float_activation(x):
            return None
        if self.affine == "Add" and (self.op_type == "MatMul" or not _unpadded(node)):
            return None
        layout = _input_layout(node, x, weights[0])
        return None if layout is None else channel_vector(array, *layout)

    def rewrite(self, op, x, c, z):
        node, vector = z.producer(), self._vector(x, c, z)
        w, b = _weights(node)
        graph = graph_of(z)
        attributes = dict(node.attributes)
        if self.op_type == "Conv":  # W[o, i] reads input channel (o // (C_out/group)) * (C_in/group) + i
            out_per_group = w.shape[0] // node.attributes.get_int("group", 1)
            channel = (np.arange(w.shape[0]) // out_per_group)[:, None] * w.shape[1] + np.arange(w.shape[1])
            per_weight = vector[channel].reshape(*channel.shape, *[1] * (w.ndim - 2))
        else:  # W[K, N] (transB: W[N, K])
            trans_b = node.attributes.get_int("transB", 0)
            per_weight = _along(vector, 1 if trans_b else 0, 2)
        if self.affine == "Mul":
            inputs = [x, new_constant(op, graph, w * per_weight, node.inputs[1].name, "folded")]
            if b is not None:
                inputs.append(node.inputs[2])
            return getattr(op, self.op_type)(*inputs, **attributes)
        shift = (w * per_weight).sum(axis=tuple(range(1, w.ndim))) if self.op_type == "Conv" else None
        if self.op_type == "Gemm":
            alpha = node.attributes.get_float("alpha", 1.0)
            shift = alpha * (vector @ (w.T if node.attributes.get_int("transB", 0) else w))
            b = _gemm_bias(node, b, len(shift))
            attributes.pop("beta", None)
        bias = shift if b is None else b + shift
        return getattr(op, self.op_type)(
            x, node.inputs[1], new_constant(op, graph, bias, node.inputs[1].name, "bias"), **attributes
        )


def _depthwise_factors(
    x: ir.Value, s: ir.Value | None, t: ir.Value | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (scale, shift) of ``x * s + t`` on a rank-3/4 x when one depthwise Conv is worth having."""
    rank = rank_of(x)
    if rank not in (3, 4) or not is_float_activation(x):
        return None
    arrays = [np.ones(1) if s is None else constant_array(s), np.zeros(1) if t is None else constant_array(t)]
    if any(a is None or padded(a, rank) is None for a in arrays):
        return None
    if (s is None or t is None) and all(a.size == 1 for a in arrays):
        return None  # a Mul or an Add by a scalar alone quantizes exactly per tensor
    channels = x.shape[1] if isinstance(x.shape[1], int) else max(padded(a, rank).shape[1] for a in arrays)
    if not isinstance(x.shape[1], int) and channels == 1:
        return None  # scalars on an unknown number of channels
    scale, shift = (channel_vector(a, rank, 1, channels) for a in arrays)
    return None if scale is None or shift is None else (scale, shift)


class _ToDepthwise(RewriteRuleClassBase):
    """``Add(Mul(x, s), t)``, ``Mul(x, s)`` or ``Add(x, t)`` -> ``Conv(x, s, t, group=C)`` (step 3)."""

    def __init__(self, form: str):
        super().__init__(f"{form}ToDepthwiseConv")
        self.form = form

    def pattern(self, op, x, s, t):
        if self.form == "Mul":
            return op.Mul(x, s)
        return op.Add(op.Mul(x, s), t) if self.form == "MulAdd" else op.Add(x, t)

    def _operands(self, s, t):
        return (None if self.form == "Add" else s), (None if self.form == "Mul" else t)

    def check(self, context, x, s=None, t=None) -> rewriter.MatchResult:
        result = rewriter.MatchResult()
        if _depthwise_factors(x, *self._operands(s, t)) is None:
            return result.fail("not a per-channel affine op on a rank-3/4 feature map")
        return result

    def rewrite(self, op, x, s=None, t=None):
        scale, shift = _depthwise_factors(x, *self._operands(s, t))
        rank, graph = rank_of(x), graph_of(x)
        weights = new_constant(op, graph, scale.reshape(-1, 1, *[1] * (rank - 2)), x.name, "dw_weight")
        bias = new_constant(op, graph, shift, x.name, "dw_bias")
        return op.Conv(x, weights, bias, group=len(scale), kernel_shape=[1] * (rank - 2))


def _fold_rules(*, forward: bool) -> list:
    rules = [
        r.rule(affine, op_type)
        for r in (_IntoPreceding,)
        for affine in ("Mul", "Add")
        for op_type in LINEAR_OPS
    ]
    if forward:
        rules += [
            _IntoFollowing.rule(affine, op_type)
            for affine in ("Mul", "Add")
            for op_type in ("Conv", "Gemm", "MatMul")
        ]
    return canonical_rules() + rules


def _to_fixed_point(model: ir.Model, rules: list) -> int:
    rule_set, total = rewriter.RewriteRuleSet(rules, commute=True), 0
    for _ in range(_MAX_SWEEPS):
        # the rewriter gives new values no type or shape; the rules need them (a cheap pass, 0.06 s on PP-OCR)
        common_passes.ShapeInferencePass(check_type=False, strict_mode=False)(model)
        count = rule_set.apply_to_model(model)
        total += count
        if not count:
            break
    return total


class FoldAffinePass(ir.passes.InPlacePass):
    """Canonical affine chains folded backward, then forward, and the rest made depthwise Convs."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = _to_fixed_point(model, _fold_rules(forward=False))
        count += _to_fixed_point(model, _fold_rules(forward=True))
        depthwise = [_ToDepthwise.rule(form) for form in ("MulAdd", "Mul", "Add")]
        count += _to_fixed_point(model, _fold_rules(forward=False) + depthwise)  # an Add folds into a new one
        return ir.passes.PassResult(model, modified=bool(count))
