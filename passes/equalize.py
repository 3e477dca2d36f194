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

Scaling by activation ranges (``scaling="activations"``, for per-channel weights; needs calibration data). With one
weight scale per output channel, dividing W1's output channel i by s_i costs the first layer nothing, and so does
multiplying a depthwise W2's channel i. What the scales can still improve is the per-tensor quantized activation
between the layers, whose channels span very different ranges a_i (MobileNetV2's first Relu6 output: 0.3 to 5.9;
a channel with range 0.3 gets 13 of the 255 levels). With a_i = max |activation_i| on the calibration data:

    second layer depthwise:   s_i = a_i / max_j a_j         every channel gets the full range, at no weight cost
    otherwise:                s_i = sqrt(a_i / r2_i)        activation channel and W2 column both get sqrt(a_i r2_i)

(the second is CLE's balance with the activation range in place of W1's weight range, SmoothQuant's alpha = 1/2,
Xiao et al. 2023). The ranges are measured once, before any scaling; channels that never activate keep s_i = 1.

Relu6 / Clip(0, h) is not positively homogeneous: scaling channel i by 1/s_i turns the bound h into h / s_i,
different per channel. With ``clipped="exact"`` (the default) such a Clip between two layers is rewritten as

    Clip(z, 0, h) / s_i  =  Min(Relu(z / s_i), h / s_i)      (a per-channel constant bound, exact in float),

so the function is unchanged; the quantized model pays one element-wise MINIMUM per rewritten Clip (its bound
shares the activation's encoding, edgeq.quantization.plan). ``clipped="to-relu"`` replaces the Clip by Relu first, as the
paper does for MobileNetV2; that changes the float model where activations exceed h, and the pass measures and
reports the change on a fixed random input. ``clipped="keep"`` leaves those pairs alone.

High-bias absorption. After equalization some channels of the first layer carry large biases, which widen the
activation ranges. If the folded BatchNorm says channel i's pre-activation is ~N(beta_i, gamma_i^2) and f is Relu,
then for c_i = max(0, beta_i - 3 |gamma_i|) almost every input satisfies f(z) = f(z - c_i) + c_i, so

    b1[i] <- b1[i] - c_i,   b2 <- b2 + W2 c   (summed over the kernel)

moves the constant into the next layer (a per-channel bound h_i / s_i moves with it: min(z, h) = min(z - c, h - c) + c,
with c_i capped at the bound). BatchNorm statistics describe the training data; real pre-activations are not
Gaussian and fall below beta - 3 sigma more often than that (on MobileNetV2's photo views, absorbing with the
statistics alone costs the float model 30 dB SQNR). Given calibration data, c_i is also capped at the smallest
value channel i takes on it, so absorption is exact on that data. It is exact except in the 3-sigma tail; it is applied only where the second
layer has no spatial padding (zero padding would see -c_i at the borders otherwise). The BatchNorm statistics kept
by passes.fold_batchnorm are rescaled along with their layer.

The equalized float model is checked against the original (after ``to-relu``'s conversion) on a fixed random
input: equalization must not change any output by more than 1e-4 relative (an internal error otherwise). With
calibration data, the report also gives the output SQNR of the equalized model against the original on the first
calibration batch ("to-relu" changes the function where activations exceed 6, absorption off the data).

Pipeline stage (passes.stage): phase "float", when the recipe lists "equalize"; ``equalize_scaling="auto"``
scales by activation ranges for per-channel weights and by weight ranges for per-tensor ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from edgeq.data import CalibrationData
from edgeq.errors import EdgeqError, RecipeError
from edgeq.io.session import exposing_copy, fixed_batch_size, random_inputs, session
from edgeq.measure.metrics import float_pairs, sqnr_db
from edgeq.passes.fold_batchnorm import BN_BETA_KEY, BN_GAMMA_KEY, batchnorm_statistics
from edgeq.passes.stage import StageContext, StageResult
from edgeq.quantization.plan import activation_bounds
from edgeq.quantization.recipe import EQUALIZE_CLIPS

PHASE = "float"
HOMOGENEOUS = {"Relu", "PRelu", "LeakyRelu"}
LAYERS = {"Conv", "Gemm"}
SCALINGS = ("weights", "activations")
TOLERANCE = 1e-4


@dataclass
class Pair:
    first: ir.Node
    activation: ir.Node | None
    second: ir.Node
    ceiling: ir.Node | None = None  # the Min(x, h / s) that replaced a Clip(0, h), per channel


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


def _clip_ceiling(node: ir.Node) -> float | None:
    """h for a Clip(0, h) with constant, positive h (Relu6 is h = 6); None for anything else."""
    bounds = activation_bounds(node) if node.op_type == "Clip" else None
    if bounds is None or bounds[0] != 0.0 or not 0.0 < bounds[1] < np.inf:
        return None
    return bounds[1]


def find_pairs(graph: ir.Graph, clipped: str) -> list[Pair]:
    """Layer pairs joined through at most one activation, each link used by nothing else."""
    pairs = []
    for first in graph:
        if first.op_type not in LAYERS or not _shareable(first.inputs[1]):
            continue
        user = _single_user(first.outputs[0], graph)
        activation = None
        if user is not None and (user.op_type in HOMOGENEOUS or (clipped != "keep" and _clip_ceiling(user) is not None)):
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


def weight_scales(pair: Pair) -> np.ndarray:
    """The paper's s_i = sqrt(r1_i * r2_i) / r2_i from the two layers' weight ranges."""
    w1 = pair.first.inputs[1].const_value.numpy().astype(np.float64)
    w2 = pair.second.inputs[1].const_value.numpy().astype(np.float64)
    r1, r2 = _channel_max(w1, _output_axis(pair.first)), _channel_max(w2, _input_axis(pair.second, w2))
    scales = np.ones(r1.shape, dtype=np.float64)
    valid = (r1 > 0) & (r2 > 0)
    scales[valid] = np.sqrt(r1[valid] * r2[valid]) / r2[valid]
    return scales


def activation_scales(pair: Pair, activation_range: np.ndarray) -> np.ndarray:
    """Scales for per-channel weights from the range a_i of the activation between the layers (see module doc)."""
    w2 = pair.second.inputs[1].const_value.numpy()
    scales = np.ones(activation_range.shape, dtype=np.float64)
    if _is_depthwise(pair.second, w2):
        valid = activation_range > 0
        scales[valid] = activation_range[valid] / activation_range.max()
        return scales
    r2 = _channel_max(w2, _input_axis(pair.second, w2))
    valid = (activation_range > 0) & (r2 > 0)
    scales[valid] = np.sqrt(activation_range[valid] / r2[valid])
    return scales


def equalize_pair(pair: Pair, scales: np.ndarray) -> None:
    """Divide the first layer's output channel i by s_i and multiply the second's input channel i by s_i."""
    w1 = pair.first.inputs[1].const_value.numpy().astype(np.float64)
    w2 = pair.second.inputs[1].const_value.numpy().astype(np.float64)
    _set_constant(pair.first, 1, _scaled(w1, _output_axis(pair.first), 1.0 / scales))
    bias = _constant(pair.first, 2)
    if bias is not None:
        _set_constant(pair.first, 2, bias / scales)
    _set_constant(pair.second, 1, _scaled(w2, _input_axis(pair.second, w2), scales))
    _rescale_statistics(pair.first, scales)


def absorbable(pair: Pair) -> bool:
    """A Relu pair whose first layer has a bias and BatchNorm statistics and whose second has no padding."""
    if pair.activation is None or pair.activation.op_type != "Relu":
        return False
    if batchnorm_statistics(pair.first) is None or _constant(pair.first, 2) is None:
        return False
    return not (pair.second.op_type == "Conv" and any(pair.second.attributes.get_ints("pads", [0])))


def absorb_high_bias(pair: Pair, floor: np.ndarray | None = None) -> np.ndarray | None:
    """Move c = max(0, min(beta - 3|gamma|, FLOOR)) from the first layer's bias into the second's, FLOOR being
    the smallest pre-activation per channel seen on calibration data; returns c (or None)."""
    if not absorbable(pair):
        return None
    gamma, beta = batchnorm_statistics(pair.first)
    bias = _constant(pair.first, 2)
    shift = np.maximum(0.0, beta - 3.0 * np.abs(gamma))
    if floor is not None:
        shift = np.maximum(0.0, np.minimum(shift, floor))
    ceiling = _constant(pair.ceiling, 1) if pair.ceiling is not None else None
    if ceiling is not None:
        shift = np.minimum(shift, ceiling.reshape(-1))  # keeps min(z - c, h - c) a clamp at h - c >= 0
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
    if ceiling is not None:
        _set_constant(pair.ceiling, 1, ceiling - shift.reshape(ceiling.shape))
    if second_bias is None:
        _add_bias(pair.second, delta)
    else:
        _set_constant(pair.second, 2, second_bias + delta)
    pair.first.metadata_props[BN_BETA_KEY] = json.dumps((beta - shift).astype(np.float64).tolist())
    return shift


def _channel_extrema(
    model: ir.Model, values: list[ir.Value], data: CalibrationData
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per value (channels on axis 1), the smallest and largest value each channel takes on DATA."""
    if not values:
        return {}
    runner = session(exposing_copy(model, values))
    names = [v.name for v in values]
    lows: dict[str, np.ndarray] = {}
    highs: dict[str, np.ndarray] = {}
    for batch in data.batches(fixed_batch_size(model) or 8):
        for name, out in zip(names, runner.run(names, batch), strict=True):
            channels = np.moveaxis(out, 1, 0).reshape(out.shape[1], -1)
            lows[name] = np.minimum(lows.get(name, np.inf), channels.min(axis=1))
            highs[name] = np.maximum(highs.get(name, -np.inf), channels.max(axis=1))
    return {name: (lows[name], highs[name]) for name in names}


def outputs_on_random_input(model: ir.Model) -> list[np.ndarray]:
    runner = session(model)
    return runner.run(None, random_inputs(runner, symbolic=2))


def relative_change(before: list, after: list) -> float:
    return max(
        (float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)) for b, a in float_pairs(before, after)),
        default=0.0,
    )


@dataclass
class EqualizeResult(StageResult):
    """What equalization did, and the per-channel factor s of every tensor it left as original / s."""

    report: dict = field(default_factory=dict)
    channel_scales: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self) -> dict:
        return dict(self.report)


def stage(context: StageContext) -> EqualizePass | None:
    recipe = context.recipe
    if "equalize" not in recipe.passes:
        return None
    scaling = recipe.equalize_scaling
    if scaling == "auto":
        scaling = "activations" if recipe.per_channel else "weights"
    return EqualizePass(clipped=recipe.equalize_clip, scaling=scaling, data=context.data)


class EqualizePass(ir.passes.InPlacePass):
    """Cross-layer equalization (and, with ``absorb_bias``, high-bias absorption) of a float model."""

    def __init__(
        self,
        *,
        clipped: str = "exact",
        absorb_bias: bool = True,
        data: CalibrationData | None = None,
        scaling: str = "weights",
        max_sweeps: int = 100,
    ):
        super().__init__()
        if clipped not in EQUALIZE_CLIPS:
            raise RecipeError(f"clipped must be one of {', '.join(EQUALIZE_CLIPS)}")
        if scaling not in SCALINGS:
            raise RecipeError(f"scaling must be one of {', '.join(SCALINGS)}")
        if scaling == "activations" and data is None:
            raise RecipeError("equalization by activation ranges needs calibration data")
        self.clipped = clipped
        self.scaling = scaling
        self.absorb_bias = absorb_bias
        self.data = data
        self.max_sweeps = max_sweeps

    def call(self, model: ir.Model) -> EqualizeResult:
        batch = next(iter(self.data.batches(fixed_batch_size(model) or 8))) if self.data is not None else None
        before_on_data = session(model).run(None, batch) if batch is not None else None
        original = outputs_on_random_input(model)
        pairs = find_pairs(model.graph, self.clipped)
        clipped_pairs = [p for p in pairs if p.activation is not None and _clip_ceiling(p.activation) is not None]
        if self.clipped == "to-relu":
            for pair in clipped_pairs:
                _replace_with_relu(model.graph, pair.activation)
            common_passes.RemoveUnusedNodesPass()(model)  # the Clips' bounds
            pairs = find_pairs(model.graph, self.clipped)
        baseline = outputs_on_random_input(model) if self.clipped == "to-relu" else original
        sweeps = 0
        if self.scaling == "activations":
            # one pass: the ranges are measured once, on the model before any scaling
            between = [(p.activation or p.first).outputs[0] for p in pairs]
            extrema = _channel_extrema(model, between, self.data)
            total = []
            for pair, value in zip(pairs, between, strict=True):
                low, high = extrema[value.name]
                total.append(activation_scales(pair, np.maximum(np.abs(low), np.abs(high))))
                equalize_pair(pair, total[-1])
        else:
            total = [np.ones(1)] * len(pairs)
            while sweeps < self.max_sweeps:
                sweeps += 1
                scales = [weight_scales(p) for p in pairs]
                for pair, scale in zip(pairs, scales, strict=True):
                    equalize_pair(pair, scale)
                total = [t * s for t, s in zip(total, scales, strict=True)]
                if max((float(np.abs(np.log(s)).max()) for s in scales), default=0.0) < 1e-3:
                    break
        if self.clipped == "exact":
            for pair, scale in zip(pairs, total, strict=True):
                if pair.activation is not None and _clip_ceiling(pair.activation) is not None:
                    _clip_to_relu_and_ceiling(model.graph, pair, scale)
            common_passes.RemoveUnusedNodesPass()(model)
        # the tensors between two equalized layers now hold original / s per channel
        channel_scales = {}
        for pair, scale in zip(pairs, total, strict=True):
            for node in (pair.first, pair.activation, pair.ceiling):
                if node is not None:
                    channel_scales[node.outputs[0].name] = scale
        equalized = outputs_on_random_input(model)
        change = relative_change(equalized, baseline)
        if change > TOLERANCE:
            raise EdgeqError(f"internal error: equalization changed the float model by {change:.2e} (relative)")
        candidates = [p for p in pairs if absorbable(p)] if self.absorb_bias else []
        floors = {}
        if self.data is not None:
            extrema = _channel_extrema(model, [p.first.outputs[0] for p in candidates], self.data)
            floors = {p.first.name: extrema[p.first.outputs[0].name][0] for p in candidates}
        absorbed = sum(absorb_high_bias(p, floors.get(p.first.name)) is not None for p in candidates)
        report = {
            "pairs": len(pairs),
            "scaling": self.scaling,
            "sweeps": sweeps,
            "clip_policy": self.clipped,
            "clips_between_pairs": len(clipped_pairs),
            "change_from_clip_to_relu": relative_change(baseline, original),
            "change_from_equalization": change,
            "high_bias_absorbed_pairs": absorbed,
            "change_from_bias_absorption": relative_change(outputs_on_random_input(model), equalized),
        }
        if batch is not None:
            after_on_data = session(model).run(None, batch)
            report["float_sqnr_db_on_calibration_batch"] = min(
                (sqnr_db(b, a) for b, a in float_pairs(before_on_data, after_on_data)), default=float("inf")
            )
        return EqualizeResult(model, bool(pairs), report, channel_scales)


def _replace_output(graph: ir.Graph, old: ir.Node, new_output: ir.Value) -> None:
    """Make NEW_OUTPUT take over OLD's output (its uses, graph-output slot and name) and remove OLD."""
    output = old.outputs[0]
    output.replace_all_uses_with(new_output)
    for i, graph_output in enumerate(graph.outputs):
        if graph_output is output:
            graph.outputs[i] = new_output
    graph.remove(old, safe=True)
    new_output.name = output.name


def _replace_with_relu(graph: ir.Graph, clip: ir.Node) -> ir.Node:
    relu = ir.node("Relu", [clip.inputs[0]], name=clip.name)
    graph.insert_after(clip, relu)
    _replace_output(graph, clip, relu.outputs[0])
    return relu


def _clip_to_relu_and_ceiling(graph: ir.Graph, pair: Pair, scale: np.ndarray) -> None:
    """Rewrite the pair's Clip(0, h) as Relu -> Min(x, h / s), h / s shaped to broadcast over the channel axis."""
    clip = pair.activation
    ceiling = _clip_ceiling(clip) / scale
    rank = len(pair.first.inputs[1].const_value.shape) if pair.first.op_type == "Conv" else 1
    name = f"{clip.name}.ceiling"
    shape = (1, -1, *([1] * (rank - 2))) if rank > 2 else (-1,)
    bound = ir.Value(name=name, const_value=ir.tensor(ceiling.reshape(shape).astype(np.float32), name=name))
    bound.shape = ir.Shape(bound.const_value.shape)
    bound.dtype = ir.DataType.FLOAT
    graph.register_initializer(bound)
    output = clip.outputs[0]
    relu = ir.node("Relu", [clip.inputs[0]], name=f"{clip.name}.relu")
    minimum = ir.node("Min", [relu.outputs[0], bound], name=clip.name)
    graph.insert_after(clip, [relu, minimum])
    relu.outputs[0].name = f"{output.name}.relu"
    for value in (relu.outputs[0], minimum.outputs[0]):
        value.shape, value.dtype = output.shape, output.dtype
    _replace_output(graph, clip, minimum.outputs[0])
    pair.activation, pair.ceiling = relu, minimum
