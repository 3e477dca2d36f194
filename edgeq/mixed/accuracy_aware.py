"""Accuracy-aware mode: from the base build, revert the most harmful layers, then the most harmful activation
tensors, until a metric's drop against the float model is at most ``max_drop``, then stop.

Metrics (``metric_of``), each a number where higher is better, measured on the evaluation samples:

    agreement   top-1 agreement with the float model, in % (float: 100)
    top1        top-1 accuracy against the labels, in %
    auc         ROC AUC of the positive-class score against 0/1 labels, in % (Mann-Whitney: the share of
                (positive, negative) pairs ranked right, ties half)
    sqnr        the worst output SQNR in dB; the float model's is infinite, so its drop is measured against the
                uniform int8 build of the same recipe
    module:fn   fn(reference_outputs, outputs, labels) -> float, higher is better

drop = metric(reference) - metric(mix). Two ladders, the first climbed to its top before the second starts:

1. **Weights, int4 -> int8**, one layer at a time (a base build of int4 weights), ranked by what the sensitivity
   table measured (edgeq.mixed.sensitivity): the output noise n[l, int4] - n[l, int8] each move removes, largest
   first. Each mix is measured on the edited base model (edgeq.mixed.layers.with_choices); once the drop is met,
   the mix is built by the pipeline and measured again, and the walk goes on from there if that build misses. A
   move is kept even where the metric dipped: a few samples' flips are noise that the next moves outweigh, and
   the ranking, not the last measurement, is what orders them.
2. **Activation tensors, to the target's wider precision**: "float" where the target runs float layers (ONNX
   Runtime: the tensor's unit computes in float, its weights included), else "int16" (TFLite and TFLite Micro:
   16x8 kernels, int8 weights). A tensor moves with its unit (edgeq.mixed.tensor_units: its writer, its readers).
   The units are ranked by their measured sensitivity (the pipeline's build with only that unit moved, on the
   sensitivity samples), and mix(k) moves the first k. The activations are what bounds an int8 model on the
   evaluation models here: MobileNetV2 with every weight float agrees with fp32 on 90.6% of 256 views, so
   weight reverts alone cannot meet a 0.5 point drop. mix(N), every unit moved, is built first: if it misses,
   no mix on this ladder meets the drop and the result says so; else the smallest k that meets it is found by
   bisection over [0, N], every probe a pipeline build (about log2 N builds instead of N). The drop is not strictly monotone in k, but both ends of the bisection's interval are
   measured builds, so the mix returned was built and met the drop, and the one with one unit fewer missed it.

A weight move changes a layer; a tensor move changes its unit's nodes. ``reverted`` counts both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from edgeq.data.callables import load_callable
from edgeq.errors import DataError, RecipeError
from edgeq.measure.metrics import accuracy, is_class_scores, top1_agreement
from edgeq.mixed.allocation import TargetRule
from edgeq.mixed.layers import weight_bytes, with_choices
from edgeq.mixed.sensitivity import SensitivityTable
from edgeq.mixed.tensor_units import TensorSensitivity, measure_tensor_sensitivity, unit_layers
from edgeq.mixed.workbench import Workbench, run_model, worst_sqnr

METRICS = ("agreement", "top1", "auc", "sqnr")

Metric = Callable[[list[np.ndarray], list[np.ndarray], np.ndarray | None], float]


def _scores(outputs: list[np.ndarray], metric: str) -> np.ndarray:
    first = outputs[0]
    if not is_class_scores(first):
        raise RecipeError(f"metric {metric} needs the model's first output to be class scores [samples, classes]")
    return first


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of SCORES for 0/1 LABELS (Mann-Whitney U / (positives * negatives))."""
    labels = np.asarray(labels).reshape(-1).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        raise DataError("metric auc needs labels of both classes (0 and 1)")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _positive_score(outputs: list[np.ndarray]) -> np.ndarray:
    first = np.asarray(outputs[0])
    return first[:, -1] if first.ndim == 2 and first.shape[1] > 1 else first.reshape(len(first), -1)[:, 0]


def metric_of(name: str, labels: np.ndarray | None) -> Metric:
    """The metric NAME (see the module docstring); refuses one that needs LABELS when there are none."""
    if name in ("top1", "auc") and labels is None:
        raise RecipeError(f"metric {name} needs labels: give --eval-data as an .npz with a 'label' key")
    if name == "agreement":
        return lambda ref, out, _: 100.0 * top1_agreement(_scores(ref, name), _scores(out, name))
    if name == "top1":
        return lambda ref, out, lab: 100.0 * accuracy(_scores(out, name), lab[: len(out[0])])
    if name == "auc":
        return lambda ref, out, lab: 100.0 * roc_auc(lab[: len(out[0])], _positive_score(out))
    if name == "sqnr":
        return lambda ref, out, _: worst_sqnr(ref, out)
    if ":" in name:
        function = load_callable(name)
        return lambda ref, out, lab: float(function(ref, out, lab))
    raise RecipeError(f"--metric must be one of {', '.join(METRICS)} or module:function, not {name!r}")


@dataclass
class Step:
    layer: str | None  # the layer a weight move changed; None for a build of the whole mix
    change: str
    metric: float
    drop: float
    weight_bytes: int

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "change": self.change,
            "metric": round(self.metric, 4),
            "drop": round(self.drop, 4),
            "weight_bytes": self.weight_bytes,
        }


@dataclass
class AccuracyAware:
    metric: str
    max_drop: float
    reference: float
    layers: dict[str, str]
    met: bool
    final_metric: float
    size: int
    steps: list[Step] = field(default_factory=list)
    note: str = ""
    tensors: TensorSensitivity | None = None  # the second ladder's units and ranking, where it was climbed
    moved_tensors: list[str] = field(default_factory=list)

    @property
    def reverted_layers(self) -> list[Step]:
        return [s for s in self.steps if s.layer is not None]

    @property
    def reverted(self) -> int:
        return len(self.reverted_layers) + len(self.moved_tensors)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "max_drop": self.max_drop,
            "reference": round(self.reference, 4),
            "met": self.met,
            "final_metric": round(self.final_metric, 4),
            "final_drop": round(self.reference - self.final_metric, 4),
            "size_bytes": self.size,
            "reverted": self.reverted,
            "layers": self.layers,
            "steps": [s.to_dict() for s in self.steps],
            **({"note": self.note} if self.note else {}),
            **(
                {"tensors": {**self.tensors.to_dict(), "moved": self.moved_tensors}}
                if self.tensors is not None
                else {}
            ),
        }


def _weight_moves(table: SensitivityTable) -> list[str]:
    """The layers to move from int4 to int8, ranked as the module docstring says (none from an int8 base)."""
    if table.base_precision != "int4" or "int8" not in table.precisions:
        return []
    return [
        layer.name
        for layer in sorted(
            table.layers, key=lambda layer: table.added_noise(layer.name, "int8") - table.added_noise(layer.name, "int4")
        )
    ]


def search(
    bench: Workbench,
    table: SensitivityTable,
    rule: TargetRule,
    *,
    max_drop: float,
    metric: str = "agreement",
    labels: np.ndarray | None = None,
    sensitivity_samples: int | None = None,
) -> AccuracyAware:
    """The fewest moves (in rank order) that bring the METRIC drop to MAX_DROP (see the module docstring); the
    tensors' sensitivity is measured on the first SENSITIVITY_SAMPLES samples (default: all)."""
    if not max_drop >= 0 or not math.isfinite(max_drop):
        raise RecipeError(f"--max-drop must be a number >= 0, not {max_drop!r}")
    score = metric_of(metric, labels)
    reference_outputs = bench.reference
    if metric == "sqnr":  # the float model's SQNR is infinite: measure the drop against uniform int8
        reference = bench.build({layer.name: "int8" for layer in table.layers}).sqnr_db
    else:
        reference = score(reference_outputs, reference_outputs, labels)

    def weights(choice: dict[str, str]) -> int:  # a layer's key is its name, else its op type
        return sum(
            weight_bytes(layer.params, choice.get(layer.name, choice.get(layer.op, table.base_precision)), rule.packed_int4)
            for layer in table.layers
        )

    def edited(choice: dict[str, str]) -> float:
        model = bench.base if not choice else with_choices(bench.base, bench.calibrated.model, choice, bench.recipe)
        return score(reference_outputs, run_model(model, bench.feeds), labels)

    def built(choice: dict[str, str], change: str) -> Step:
        measured = bench.build(choice)
        value = score(reference_outputs, measured.outputs, labels)
        return Step(None, change, value, reference - value, weights(choice))

    def result(choice: dict[str, str], met: bool, note: str = "", **tensors) -> AccuracyAware:
        last = steps[-1]
        return AccuracyAware(
            metric, max_drop, reference, choice, met, last.metric, bench.build(choice).size, steps, note, **tensors
        )

    # 1. weights, int4 -> int8, one layer at a time
    choice: dict[str, str] = {}
    current = edited(choice)
    steps = [Step(None, f"base ({table.base_precision})", current, reference - current, weights(choice))]
    for layer in [None, *_weight_moves(table)]:
        if layer is not None:
            choice = {**choice, layer: "int8"}
            current = edited(choice)
            steps.append(Step(layer, "int4 -> int8", current, reference - current, weights(choice)))
        if reference - current <= max_drop:
            steps.append(built(choice, "built by the pipeline"))
            current = steps[-1].metric
            if reference - current <= max_drop:
                return result(choice, True)
    if steps[-1].layer is not None:
        steps.append(built(choice, "built by the pipeline"))

    # 2. activation tensors, to the target's wider precision; every weight at int8 now
    precision = rule.tensor_precision
    weights_int8 = {op: "int8" for op in sorted({layer.op for layer in table.layers})} if choice else {}
    tensors = measure_tensor_sensitivity(bench, precision, base=weights_int8, samples=sensitivity_samples)
    order = tensors.ranked()

    def mix(k: int) -> dict[str, str]:
        # node names first: the first key that matches a node gives its precision
        return {**unit_layers(tensors.units, order[:k], precision), **weights_int8}

    def meets(k: int) -> bool:
        steps.append(built(mix(k), f"{k} of {len(order)} tensors {precision}"))
        return steps[-1].drop <= max_drop

    if not order or not meets(len(order)):
        note = (
            f"the drop {steps[-1].drop:.3g} is above {max_drop:g} with every activation tensor {precision}"
            + (" and every weight int8" if precision == "int16" else "") + f" ({rule.note})"
        )
        return result(mix(len(order)), False, note, tensors=tensors, moved_tensors=order)
    low, high = 0, len(order)  # mix(low) was built and misses, mix(high) was built and meets
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if meets(middle) else (middle, high)
    steps.append(built(mix(high), "built by the pipeline"))
    return result(mix(high), True, tensors=tensors, moved_tensors=order[:high])
