"""Output-aware activation ranges: clip each encoding group further where the network's output error falls.

A calibrated range (percentile 99.99 by default) is chosen per tensor, blind to what the tensor's error does
downstream. Whether clipping a tensor's rare large values hurts depends on the network: on MobileNetV2 after
equalization, halving the range of the residual stream in blocks 14-16 (the worst-quantized tensors there) lowers
the logits' error from that tensor alone by 4-6 dB (fewer rounding steps lost to outliers that barely move the
output), while clipping the input or the first Relu6 output by 15% costs 12-16 dB. A tensor-local criterion
(``--calib-method mse``) cannot tell the two apart; the output can. So, as in loss-aware post-training quantization
(Nahshan et al. 2021, "Loss Aware Post-training Quantization", Machine Learning 110, section 3), the ranges are
chosen by the network's output error, here by coordinate descent over one factor per encoding group:

    range_g = f_g * calibrated range_g,   f_g in FACTORS (1 included: a group is never clipped for nothing)
    loss(f) = sum over outputs o of ||y_o(f) - y_o^float||^2 / ||y_o^float||^2   on SAMPLES calibration samples

Groups are visited in topological order, each trying every factor with the others at their current choice and
keeping the lowest loss, so the loss on the search samples never rises. Scaling a range [lo, hi] by f scales the
scale by f and keeps the zero point, so the search model feeds each group's factor as a graph input that
multiplies the group's stored scales (one onnxruntime session for the whole search; the model runs Q/DQ in
float, as onnxruntime does when scales are not constant). The biases keep their stored integers during the
search; the caller rebuilds the QDQ model from the chosen factors (``edgeq.quantization.plan.assign_encodings``), so
the artifact's bias scales are s_in * s_w exactly.

Groups with a fixed encoding (Softmax, Sigmoid, Tanh outputs) are not searched. Cost: groups x len(FACTORS) runs
of the model on SAMPLES inputs. MobileNetV2 after equalization (65 groups, 32 samples; BENCHMARKS.md, "Accuracy
passes"): with bias correction 19.5 -> 21.5 dB logits SQNR on 256 photo views, agreement 0.898 -> 0.922 (1000 other
views: 0.895 -> 0.922); the search clips blocks 14-16's residual stream and projection outputs to 0.18-0.35 of
their percentile ranges and block 14's expansion Relu6 to 0.7; the whole quantize command takes 4.3 minutes on 2
cores (15 s without range search).

Pipeline stage (passes.stage): phase "quantized", when the recipe lists "range-search", first of the quantized
phase's passes. When the recipe also corrects biases, the search runs on a copy whose biases are corrected
(clipping shifts a tensor's mean, which bias correction removes); the QDQ model is then rebuilt from the
calibration with the chosen ranges (bias scales follow) and the passes after it run on that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
from tqdm import tqdm

from edgeq.data import CalibrationData
from edgeq.io.onnx_model import clone_model
from edgeq.io.session import fixed_batch_size, session
from edgeq.measure.metrics import float_pairs
from edgeq.passes import bias_correction
from edgeq.passes.insert_qdq import activation_scale_name
from edgeq.passes.stage import StageContext, StageResult
from edgeq.quantization.plan import QuantPlan

PHASE = "quantized"
FACTORS = (0.7, 0.5, 0.35, 0.25, 0.18)
SAMPLES = 32
_FACTOR_INPUT = "range_search.factor.{}"


@dataclass
class RangeSearch:
    """The chosen factor per encoding group (root tensor name -> f) and the search's losses."""

    factors: dict[str, float] = field(default_factory=dict)
    loss_before: float = 0.0
    loss_after: float = 0.0
    samples: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        clipped = {group: f for group, f in self.factors.items() if f != 1.0}
        return {
            "groups": len(self.factors),
            "clipped_groups": clipped,
            "output_loss_on_search_samples": [round(self.loss_before, 6), round(self.loss_after, 6)],
            "samples": self.samples,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class RangeSearchResult(StageResult):
    search: RangeSearch = field(default_factory=RangeSearch)

    def summary(self) -> dict:
        return self.search.summary()


def stage(context: StageContext) -> RangeSearchPass | None:
    if "range-search" not in context.recipe.passes:
        return None
    return RangeSearchPass(
        searchable_groups(context.plan),
        context.float_model,
        context.data,
        rebuild=context.rebuild,
        correct_biases=bias_correction.stage(context),
        progress=context.progress,
    )


class RangeSearchPass(ir.passes.FunctionalPass):
    """Search the range factors on (a bias-corrected copy of) the QDQ model, then return REBUILD(factors): the QDQ
    model built afresh from the calibration with those ranges. FACTORS and SAMPLES default to the module's."""

    def __init__(
        self,
        tensor_groups: dict[str, str],
        float_model: ir.Model,
        data: CalibrationData,
        *,
        rebuild,
        correct_biases: ir.passes.PassBase | None = None,
        factors: tuple[float, ...] | None = None,
        samples: int | None = None,
        progress: bool = True,
    ):
        super().__init__()
        self.tensor_groups = tensor_groups
        self.float_model = float_model
        self.data = data
        self.rebuild = rebuild
        self.correct_biases = correct_biases
        self.factors = factors
        self.samples = samples
        self.progress = progress

    def call(self, model: ir.Model) -> RangeSearchResult:
        trial = clone_model(model)
        if self.correct_biases is not None:
            self.correct_biases(trial)
        search = search_ranges(
            trial,
            self.tensor_groups,
            self.float_model,
            self.data,
            factors=self.factors or FACTORS,
            samples=self.samples or SAMPLES,
            progress=self.progress,
        )
        return RangeSearchResult(self.rebuild(search.factors), True, search)


def search_ranges(
    qdq_model: ir.Model,
    tensor_groups: dict[str, str],
    float_model: ir.Model,
    data: CalibrationData,
    *,
    factors: tuple[float, ...] = FACTORS,
    samples: int = SAMPLES,
    progress: bool = True,
) -> RangeSearch:
    """Coordinate descent over the range factors of the encoding groups of QDQ_MODEL (built by InsertQDQPass)
    against FLOAT_MODEL's outputs on the first SAMPLES samples of DATA. TENSOR_GROUPS maps every activation tensor
    to search (its name before InsertQDQPass) to its group (``searchable_groups``)."""
    start = time.perf_counter()
    search_model, groups = _factor_inputs(qdq_model, tensor_groups)
    batches = _first_samples(qdq_model, data, samples)
    reference = session(float_model)
    expected = [reference.run(None, batch) for batch in batches]
    search = session(search_model)

    measured = len(float_pairs(expected[0], expected[0]))

    def loss(choice: dict[str, float]) -> float:
        feeds = {_FACTOR_INPUT.format(i): np.array(choice[g], np.float32) for i, g in enumerate(groups)}
        errors = np.zeros(measured)
        powers = np.zeros(measured)
        for batch, wanted in zip(batches, expected, strict=True):
            for o, (r, y) in enumerate(float_pairs(wanted, search.run(None, {**batch, **feeds}))):
                errors[o] += float(np.sum((y.astype(np.float64) - r) ** 2))
                powers[o] += float(np.sum(np.square(r, dtype=np.float64)))
        return float(np.sum(errors / np.maximum(powers, np.finfo(np.float64).tiny)))

    choice = dict.fromkeys(groups, 1.0)
    result = RangeSearch(samples=sum(len(next(iter(b.values()))) for b in batches))
    result.loss_before = best = loss(choice)
    for group in tqdm(groups, desc="range search", unit="group", disable=None if progress else True):
        for f in factors:
            trial = loss({**choice, group: f})
            if trial < best:
                best, choice[group] = trial, f
    result.factors, result.loss_after = choice, best
    result.seconds = time.perf_counter() - start
    return result


def searchable_groups(plan: QuantPlan) -> dict[str, str]:
    """Activation tensor name -> encoding group, for every group without a fixed encoding (call before
    InsertQDQPass renames the float tensors)."""
    fixed = {plan.group_of(name) for name in plan.fixed_output}
    groups = {v.name: plan.group_of(v.name) for v in plan.tensors}
    return {name: group for name, group in groups.items() if group not in fixed}


def _factor_inputs(qdq_model: ir.Model, tensor_groups: dict[str, str]) -> tuple[ir.Model, list[str]]:
    """A copy of QDQ_MODEL where every searched group's activation scales are multiplied by a scalar graph input;
    returns it with the groups in graph order (input i is group i's factor)."""
    model = clone_model(qdq_model)
    graph = model.graph
    scale_group = {activation_scale_name(name): group for name, group in tensor_groups.items()}
    factor_of: dict[str, ir.Value] = {}  # group -> its factor input, in topological order
    scaled: dict[str, ir.Value] = {}  # stored scale name -> scale x factor
    for node in list(graph):
        scale = node.inputs[1] if node.op_type in ("QuantizeLinear", "DequantizeLinear") else None
        if scale is None or scale.name not in scale_group:
            continue
        if scale.name not in scaled:
            group = scale_group[scale.name]
            if group not in factor_of:
                factor_of[group] = ir.Value(
                    name=_FACTOR_INPUT.format(len(factor_of)),
                    type=ir.TensorType(ir.DataType.FLOAT),
                    shape=ir.Shape([]),
                )
                graph.inputs.append(factor_of[group])
            multiply = ir.node("Mul", [scale, factor_of[group]], name=f"{scale.name}_range_factor")
            graph.insert_before(node, multiply)
            scaled[scale.name] = multiply.outputs[0]
        node.replace_input_with(1, scaled[scale.name])
    return model, list(factor_of)


def _first_samples(model: ir.Model, data: CalibrationData, samples: int) -> list[dict[str, np.ndarray]]:
    batch_size = fixed_batch_size(model) or min(samples, 16)
    batches, count = [], 0
    for batch in data.batches(batch_size):
        batches.append(batch)
        count += len(next(iter(batch.values())))
        if count >= samples:
            break
    return batches
