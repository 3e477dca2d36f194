"""Cross-layer equalization and high-bias absorption (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", sections 4.1 and 4.2).

Equalization. Two layers y = W2 f(W1 x + b1) + b2 joined by a positively homogeneous activation f (f(s z) = s f(z)
for s > 0: Relu, PRelu, LeakyRelu, or no activation) compute the same function when output channel i of the first
layer is divided by s_i and input channel i of the second multiplied by s_i:

    W1[i] <- W1[i] / s_i,   b1[i] <- b1[i] / s_i,   W2[:, i] <- W2[:, i] * s_i.

With r1_i the range (max |w|) of W1's output channel i and r2_i that of W2's input channel i, the choice
s_i = sqrt(r1_i * r2_i) / r2_i gives both channels the range sqrt(r1_i * r2_i), which maximizes the precision of
per-tensor weight quantization of both layers. A depthwise convolution is both: its channel i is the input and the
output channel i, so conv -> depthwise -> conv triplets equalize pair by pair. The pairs are swept until no scale
moves by more than 0.1% (the paper's iteration).

Relu6 / Clip(0, 6) is not positively homogeneous (the bound 6 would have to become 6 / s_i per channel). With
``clipped="to-relu"`` (the default) such a Clip between two layers is replaced by Relu first, as the paper does for
MobileNetV2; that changes the float model where activations exceed 6, and the pass measures and reports the change
on a fixed random input. With ``clipped="keep"`` those pairs are left alone and the function is untouched.

High-bias absorption. After equalization some channels of the first layer carry large biases, which widen the
activation ranges. If the folded BatchNorm says channel i's pre-activation is ~N(beta_i, gamma_i^2) and f is Relu,
then for c_i = max(0, beta_i - 3 |gamma_i|) almost every input satisfies f(z) = f(z - c_i) + c_i, so

    b1[i] <- b1[i] - c_i,   b2 <- b2 + W2 c   (summed over the kernel)

moves the constant into the next layer. It is exact except in the 3-sigma tail; it is applied only where the second
layer has no spatial padding (zero padding would see -c_i at the borders otherwise). The BatchNorm statistics kept
by passes.fold_batchnorm are rescaled along with their layer.

The equalized float model is checked against the original on a fixed random input: equalization alone must not
change any output by more than 1e-4 relative (an internal error otherwise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
import onnxruntime as ort

from edgeq.errors import EdgeqError
from edgeq.modelio import model_bytes
from edgeq.passes.fold_batchnorm import BN_BETA_KEY, BN_GAMMA_KEY, batchnorm_statistics

HOMOGENEOUS = {"Relu", "PRelu", "LeakyRelu"}
LAYERS = {"Conv", "Gemm"}
TOLERANCE = 1e-4
CLIP_POLICIES = ("bounded", "to-relu", "keep")


@dataclass
class Pair:
    first: ir.Node
    activation: ir.Node | None
    second: ir.Node


def _constant(node: ir.Node, index: int) -> np.ndarray | None:
    value = node.inputs[index] if len(node.inputs) > index else None
    return None if value is None or value.const_value is None else value.const_value.numpy()


def _set_constant(node: ir.Node, index: int, array: np.ndarray) -> None:
    value = node.inputs[index]
    value.const_value = ir.tensor(array.astype(np.float32), name=value.name)


def _add_bias(node: ir.Node, bias: np.ndarray) -> None:
    name = f"{node.name}.absorbed_bias"
    value = ir.Value(name=name, const_value=ir.tensor(bias.astype(np.float32), name=name))
    value.shape = ir.Shape(bias.shape)
    value.dtype = ir.DataType.FLOAT
    node.graph.register_initializer(value)
    node.resize_inputs(3)
    node.replace_input_with(2, value)


def _is_depthwise(node: ir.Node, weights: np.ndarray) -> bool:
    return node.op_type == "Conv" and weights.shape[1] == 1 and node.attributes.get_int("group", 1) == weights.shape[0]


def _output_axis(node: ir.Node) -> int:
    """The weight axis of a layer's output channels."""
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    return 0


def _input_axis(node: ir.Node, weights: np.ndarray) -> int:
    """The weight axis of a layer's input channels (a depthwise conv's channels are on axis 0)."""
    if node.op_type == "Gemm":
        return 1 if node.attributes.get_int("transB", 0) else 0
    return 0 if _is_depthwise(node, weights) else 1


def _channel_max(weights: np.ndarray, axis: int) -> np.ndarray:
    return np.abs(np.moveaxis(weights, axis, 0)).reshape(weights.shape[axis], -1).max(axis=1)


def _scaled(weights: np.ndarray, axis: int, factors: np.ndarray) -> np.ndarray:
    shape = [1] * weights.ndim
    shape[axis] = -1
    return weights * factors.reshape(shape)


def _shareable(value: ir.Value) -> bool:
    """A weight tensor equalization may rewrite: a constant used by this node only."""
    return value is not None and value.const_value is not None and len(list(value.uses())) == 1


def _single_user(value: ir.Value, graph: ir.Graph) -> ir.Node | None:
    users = list(value.uses())
    if len(users) != 1 or any(value is out for out in graph.outputs):
        return None
    return users[0][0]


def _is_relu6(node: ir.Node) -> bool:
    if node.op_type != "Clip":
        return False
    bounds = [_constant(node, i) for i in (1, 2)]
    return bounds[0] is not None and bounds[1] is not None and float(bounds[0]) == 0.0 and float(bounds[1]) == 6.0


def find_pairs(graph: ir.Graph, clipped: str) -> list[Pair]:
    """Layer pairs joined through at most one activation, each link used by nothing else."""
    pairs = []
    for first in graph:
        if first.op_type not in LAYERS or not _shareable(first.inputs[1]):
            continue
        user = _single_user(first.outputs[0], graph)
        activation = None
        if user is not None and (user.op_type in HOMOGENEOUS or (clipped != "keep" and _is_relu6(user))):
            activation = user
            user = _single_user(user.outputs[0], graph)
        if user is None or user.op_type not in LAYERS or not _shareable(user.inputs[1]):
            continue
        if user.inputs[0] is not (activation or first).outputs[0]:
            continue
        second_weights = user.inputs[1].const_value.numpy()
        grouped = user.op_type == "Conv" and user.attributes.get_int("group", 1) != 1
        if grouped and not _is_depthwise(user, second_weights):
            continue
        if first.op_type == "Conv" and first.attributes.get_int("group", 1) != 1:
            if not _is_depthwise(first, first.inputs[1].const_value.numpy()):
                continue
        pairs.append(Pair(first, activation, user))
    return pairs


def _rescale_statistics(node: ir.Node, factors: np.ndarray) -> None:
    statistics = batchnorm_statistics(node)
    if statistics is not None:
        gamma, beta = statistics
        node.metadata_props[BN_GAMMA_KEY] = json.dumps((gamma / factors).astype(np.float64).tolist())
        node.metadata_props[BN_BETA_KEY] = json.dumps((beta / factors).astype(np.float64).tolist())


def _clip_safe_scales(pair: Pair, scales: np.ndarray, sigmas: float) -> np.ndarray:
    """Scales that keep a Relu6 between the layers exact: channel i's pre-activation stays below
    beta_i + SIGMAS |gamma_i| (its BatchNorm statistics); if that is below 6 the clip never acts, and stays
    inactive after scaling while s_i >= (beta_i + SIGMAS |gamma_i|) / 6; other channels keep s_i = 1."""
    statistics = batchnorm_statistics(pair.first)
    if statistics is None:
        return np.ones_like(scales)
    gamma, beta = (x.astype(np.float64) for x in statistics)
    peak = beta + sigmas * np.abs(gamma)
    return np.where(peak < 6.0, np.maximum(scales, np.maximum(peak, 0.0) / 6.0), 1.0)


def equalize_pair(pair: Pair, sigmas: float = 6.0) -> np.ndarray:
    """Equalize one pair in place; returns the scales s."""
    w1 = pair.first.inputs[1].const_value.numpy().astype(np.float64)
    w2 = pair.second.inputs[1].const_value.numpy().astype(np.float64)
    out_axis, in_axis = _output_axis(pair.first), _input_axis(pair.second, w2)
    r1, r2 = _channel_max(w1, out_axis), _channel_max(w2, in_axis)
    scales = np.ones_like(r1)
    valid = (r1 > 0) & (r2 > 0)
    scales[valid] = np.sqrt(r1[valid] * r2[valid]) / r2[valid]
    if pair.activation is not None and _is_relu6(pair.activation):
        scales = _clip_safe_scales(pair, scales, sigmas)
    _set_constant(pair.first, 1, _scaled(w1, out_axis, 1.0 / scales))
    bias = _constant(pair.first, 2)
    if bias is not None:
        _set_constant(pair.first, 2, bias / scales)
    _set_constant(pair.second, 1, _scaled(w2, in_axis, scales))
    _rescale_statistics(pair.first, scales)
    return scales


def absorb_high_bias(pair: Pair) -> np.ndarray | None:
    """Move c = max(0, beta - 3|gamma|) from the first layer's bias into the second's; returns c (or None)."""
    if pair.activation is None or pair.activation.op_type != "Relu":
        return None
    statistics = batchnorm_statistics(pair.first)
    bias = _constant(pair.first, 2)
    if statistics is None or bias is None:
        return None
    if pair.second.op_type == "Conv" and any(pair.second.attributes.get_ints("pads", [0])):
        return None
    gamma, beta = statistics
    shift = np.maximum(0.0, beta - 3.0 * np.abs(gamma))
    if not shift.any():
        return None
    w2 = pair.second.inputs[1].const_value.numpy().astype(np.float64)
    in_axis = _input_axis(pair.second, w2)
    # W2 c summed over the input channel and kernel axes: the shift every output channel receives
    moved = _scaled(w2, in_axis, shift)
    out_axis = _output_axis(pair.second)
    delta = np.moveaxis(moved, out_axis, 0).reshape(moved.shape[out_axis], -1).sum(axis=1)
    second_bias = _constant(pair.second, 2)
    _set_constant(pair.first, 2, bias - shift)
    if second_bias is None:
        _add_bias(pair.second, delta)
    else:
        _set_constant(pair.second, 2, second_bias + delta)
    pair.first.metadata_props[BN_BETA_KEY] = json.dumps((beta - shift).astype(np.float64).tolist())
    return shift


def _outputs_on_random_input(model: ir.Model) -> list[np.ndarray]:
    session = ort.InferenceSession(model_bytes(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in spec.shape]
        feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return session.run(None, feeds)


def _relative_change(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    return max(
        float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)) for a, b in zip(after, before, strict=True)
    )


class EqualizePass(ir.passes.InPlacePass):
    """Cross-layer equalization (and, with ``absorb_bias``, high-bias absorption) of a float model."""

    def __init__(
        self, *, clipped: str = "bounded", sigmas: float = 6.0, absorb_bias: bool = True, max_sweeps: int = 100
    ):
        super().__init__()
        if clipped not in CLIP_POLICIES:
            raise EdgeqError(f"clipped must be one of {', '.join(CLIP_POLICIES)}")
        self.sigmas = sigmas
        self.clipped = clipped
        self.absorb_bias = absorb_bias
        self.max_sweeps = max_sweeps
        self.report: dict = {}
        self.channel_scales: dict[str, np.ndarray] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        original = _outputs_on_random_input(model)
        pairs = find_pairs(model.graph, self.clipped)
        clips = [p.activation for p in pairs if p.activation is not None and _is_relu6(p.activation)]
        if self.clipped == "to-relu":
            for clip in clips:
                _replace_with_relu(model.graph, clip)
            common_passes.RemoveUnusedNodesPass()(model)  # the Clips' bounds
            pairs = find_pairs(model.graph, self.clipped)
        # The scaling is exact up to the clips; check that part on a copy whose clips are Relu.
        kept_clips = {c.name for c in clips} if self.clipped == "bounded" else set()
        baseline = _outputs_on_random_input(_clips_as_relu(model, kept_clips))
        total = [np.ones(1)] * len(pairs)
        sweeps = 0
        while sweeps < self.max_sweeps:
            sweeps += 1
            scales = [equalize_pair(p, self.sigmas) for p in pairs]
            total = [t * s for t, s in zip(total, scales, strict=True)]
            if max((float(np.abs(np.log(s)).max()) for s in scales), default=0.0) < 1e-3:
                break
        # the tensors between two equalized layers now hold original / s per channel
        self.channel_scales = {}
        for pair, scale in zip(pairs, total, strict=True):
            for node in (pair.first, pair.activation):
                if node is not None:
                    self.channel_scales[node.outputs[0].name] = scale
        change = _relative_change(_outputs_on_random_input(_clips_as_relu(model, kept_clips)), baseline)
        if change > TOLERANCE:
            raise EdgeqError(f"internal error: equalization changed the float model by {change:.2e} (relative)")
        equalized = _outputs_on_random_input(model)
        absorbed = sum(absorb_high_bias(p) is not None for p in pairs) if self.absorb_bias else 0
        self.report = {
            "pairs": len(pairs),
            "sweeps": sweeps,
            "clip_policy": self.clipped,
            "relu6_between_pairs": len(clips),
            "change_from_relu6_to_relu": _relative_change(baseline, original) if self.clipped == "to-relu" else 0.0,
            "change_from_equalization": change,
            "high_bias_absorbed_pairs": absorbed,
            "change_from_bias_absorption": _relative_change(_outputs_on_random_input(model), equalized),
        }
        return ir.passes.PassResult(model, modified=bool(pairs))


def _replace_with_relu(graph: ir.Graph, clip: ir.Node) -> None:
    relu = ir.node("Relu", [clip.inputs[0]], name=clip.name)
    graph.insert_after(clip, relu)
    output = clip.outputs[0]
    output.replace_all_uses_with(relu.outputs[0])
    for i, graph_output in enumerate(graph.outputs):
        if graph_output is output:
            graph.outputs[i] = relu.outputs[0]
    graph.remove(clip, safe=True)
    relu.outputs[0].name = output.name


def _clips_as_relu(model: ir.Model, names: set[str]) -> ir.Model:
    """A copy of MODEL whose Clip nodes named in NAMES are Relu."""
    if not names:
        return model
    copy = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    for node in [n for n in copy.graph if n.name in names]:
        _replace_with_relu(copy.graph, node)
    common_passes.RemoveUnusedNodesPass()(copy)
    return copy
