"""Accuracy-aware mode: from the base build, revert the most harmful layers one at a time until a metric's drop
against the float model is at most ``max_drop``, then stop.

Metrics (``metric_of``), each a number where higher is better, measured on the evaluation samples:

    agreement   top-1 agreement with the float model, in % (float: 100)
    top1        top-1 accuracy against the labels, in %
    auc         ROC AUC of the positive-class score against 0/1 labels, in % (Mann-Whitney: the share of
                (positive, negative) pairs ranked right, ties half)
    sqnr        the worst output SQNR in dB; the float model's is infinite, so its drop is measured against the
                uniform int8 build of the same recipe
    module:fn   fn(reference_outputs, outputs, labels) -> float, higher is better

drop = metric(reference) - metric(mix). The revert ladder of a layer is int4 -> int8 -> float (float where the
target allows it). The moves are ranked by what the sensitivity table measured (edgeq.mixed.sensitivity): the
output noise n[l, from] - n[l, to] each removes, largest first, every int4 -> int8 move before any -> float move
(a float layer costs 4x the bytes of an int8 one). The moves are made one at a time and each mix is measured on
the edited base model (edgeq.mixed.layers.with_choices); once the drop is met, the mix is built by the pipeline and
measured again, and the search goes on from there if that build misses. A move is kept even where the metric
dipped: a few samples' flips are noise that the next reverts outweigh, and the ranking, not the last measurement,
is what orders them. MAX_REVERTS caps the number of moves: the result then says the floor was not met.
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
from edgeq.mixed.workbench import Workbench, run_model, worst_sqnr

METRICS = ("agreement", "top1", "auc", "sqnr")
LADDER = ("int4", "int8", "float")

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
    layer: str | None
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

    @property
    def reverted(self) -> list[Step]:
        return [s for s in self.steps if s.layer is not None]

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "max_drop": self.max_drop,
            "reference": round(self.reference, 4),
            "met": self.met,
            "final_metric": round(self.final_metric, 4),
            "final_drop": round(self.reference - self.final_metric, 4),
            "size_bytes": self.size,
            "reverted": len(self.reverted),
            "layers": self.layers,
            "steps": [s.to_dict() for s in self.steps],
            **({"note": self.note} if self.note else {}),
        }


def _moves(table: SensitivityTable, rule: TargetRule) -> list[tuple[str, str, str]]:
    """(layer, from, to) up the ladder from the base precision, ranked as the module docstring says."""
    allowed = [p for p in LADDER if p in rule.precisions and p in table.precisions]
    start = LADDER.index(table.base_precision)
    moves = []
    for low, high in zip(allowed, allowed[1:], strict=False):
        if LADDER.index(low) < start:
            continue
        ranked = sorted(
            table.layers,
            key=lambda layer: table.added_noise(layer.name, high) - table.added_noise(layer.name, low),
        )
        moves += [(layer.name, low, high) for layer in ranked]
    return moves


def search(
    bench: Workbench,
    table: SensitivityTable,
    rule: TargetRule,
    *,
    max_drop: float,
    metric: str = "agreement",
    labels: np.ndarray | None = None,
    max_reverts: int | None = None,
) -> AccuracyAware:
    """The fewest reverts (in rank order) that bring the METRIC drop to MAX_DROP (see the module docstring)."""
    if not max_drop >= 0 or not math.isfinite(max_drop):
        raise RecipeError(f"--max-drop must be a number >= 0, not {max_drop!r}")
    score = metric_of(metric, labels)
    reference_outputs = bench.reference
    if metric == "sqnr":  # the float model's SQNR is infinite: measure the drop against uniform int8
        reference = bench.build({layer.name: "int8" for layer in table.layers}).sqnr_db
    else:
        reference = score(reference_outputs, reference_outputs, labels)
    params = {layer.name: layer.params for layer in table.layers}

    def weights(choice: dict[str, str]) -> int:
        return sum(weight_bytes(n, choice.get(name, table.base_precision), rule.packed_int4) for name, n in params.items())

    def measured(choice: dict[str, str]) -> float:
        model = bench.base if not choice else with_choices(bench.base, bench.calibrated.model, choice, bench.recipe)
        return score(reference_outputs, run_model(model, bench.feeds), labels)

    choice: dict[str, str] = {}
    current = measured(choice)
    steps = [Step(None, f"base ({table.base_precision})", current, reference - current, weights(choice))]
    moves = _moves(table, rule)
    built = None
    while True:
        if reference - current <= max_drop:
            built = bench.build(choice)
            current = score(reference_outputs, built.outputs, labels)
            steps.append(Step(None, "built by the pipeline", current, reference - current, weights(choice)))
            if reference - current <= max_drop:
                break
        if not moves or (max_reverts is not None and sum(1 for s in steps if s.layer) >= max_reverts):
            break
        layer, low, high = moves.pop(0)
        if choice.get(layer, table.base_precision) != low:
            continue
        choice = {**choice, layer: high}
        current = measured(choice)
        steps.append(Step(layer, f"{low} -> {high}", current, reference - current, weights(choice)))
    if built is None or steps[-1].layer is not None:
        built = bench.build(choice)
        current = score(reference_outputs, built.outputs, labels)
        steps.append(Step(None, "built by the pipeline", current, reference - current, weights(choice)))
    met = reference - current <= max_drop
    note = "" if met else (
        f"the drop {reference - current:.3g} is above {max_drop:g} after "
        + (f"the cap of {max_reverts} reverts" if max_reverts is not None and moves else "every revert the target allows")
    )
    return AccuracyAware(metric, max_drop, reference, choice, met, current, built.size, steps, note)
