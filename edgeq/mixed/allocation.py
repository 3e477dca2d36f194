"""Bit allocation under a size budget: one precision per layer, chosen by an integer linear program.

With binary x[l, p] (layer l at precision p, p among the target's allowed precisions), the sensitivity table's
added noise n[l, p] (edgeq.mixed.sensitivity: noise powers add across layers) and b[l, p] the weight bytes:

    minimize    sum_{l,p} n[l, p] x[l, p]
    subject to  sum_p x[l, p] = 1                       for every layer l
                other + sum_{l,p} b[l, p] x[l, p] <= B   (B: the budget; other: the artifact's bytes that are no
                                                          layer weights, measured on the base build)

solved by scipy.optimize.milp (HiGHS). The predicted SQNR of a mix is -10 log10(N_base + sum n[l, p]). The mix
becomes ``Recipe.layers`` and is built by the pipeline; its REAL serialized size must fit B: when it does not (the
byte model misses a few scales and a float layer's bias), the cap is lowered by the overshoot and the program
solved again, up to REFITS times, and then the mix predicted smallest is tried. Noise powers do not always add:
when the chosen mix measures a lower SQNR than the uniform base build and the base build fits the budget, the
base build is kept and the allocation says why (MediaPipe's face detector: its mix at uniform int8's size
measured 9.2 dB, uniform int8 12.4 dB).

What each target allows (TARGET_RULES): ONNX Runtime runs any layer float between Q/DQ pairs and stores int4
weights packed (QDQ INT4, opset 21). TFLite and TFLite Micro keep every layer integer: a float Conv or
FullyConnected island would need a float32 reference kernel that LiteRT and TFLite Micro match bit for bit, which
edgeq's reference does not have (targets/tflite/lower/island.py), and they store 4-bit weights in int8, so int4
buys no bytes there. Arena and latency budgets are refused: the weight precision of a layer does not change the
activations the arena holds, and the per-op latency of each choice is not measured.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from edgeq.errors import RecipeError
from edgeq.mixed.layers import PRECISION_BITS, Layer, weight_bytes
from edgeq.mixed.sensitivity import SensitivityTable, noise_power
from edgeq.mixed.workbench import Measured, Workbench

REFITS = 3
UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
BUDGET_KINDS = ("size", "arena", "latency")


@dataclass(frozen=True)
class TargetRule:
    precisions: tuple[str, ...]
    packed_int4: bool
    note: str

    @property
    def tensor_precision(self) -> str:
        """The wider precision an activation tensor can take: float where float layers run, else int16 (16x8)."""
        return "float" if "float" in self.precisions else "int16"


TARGET_RULES = {
    "onnxruntime": TargetRule(
        ("float", "int8", "int4"), True, "float layers between Q/DQ pairs; int4 weights packed (QDQ INT4, opset 21)"
    ),
    "tflite": TargetRule(
        ("int8", "int4"),
        False,
        "every layer integer (no bit-exact float32 Conv/FullyConnected island); int4 weights stored as int8, so "
        "int4 buys no bytes",
    ),
}
TARGET_RULES["tflm"] = TARGET_RULES["tflite"]
TARGET_RULES["onnxruntime-integer"] = TARGET_RULES["tflite"]


def target_rule(targets: list[str]) -> TargetRule:
    """The rule every one of TARGETS accepts: the precisions they all allow, int4 packed only if all pack it."""
    rules = [TARGET_RULES[t] for t in targets]
    precisions = tuple(p for p in rules[0].precisions if all(p in r.precisions for r in rules))
    notes = "; ".join(dict.fromkeys(f"{t}: {TARGET_RULES[t].note}" for t in targets))
    return TargetRule(precisions, all(r.packed_int4 for r in rules), notes)


def parse_budget(text: str) -> int:
    """``size=1.2MB`` (B, KB, MB, GB, KiB, MiB, GiB) as bytes; arena and latency budgets are refused with why."""
    kind, sep, amount = text.partition("=")
    kind = kind.strip().lower()
    if not sep or kind not in BUDGET_KINDS:
        raise RecipeError(f"--budget {text!r}: expected size=AMOUNT, e.g. size=1.2MB")
    if kind == "arena":
        raise RecipeError(
            f"--budget {text!r}: a layer's weight precision does not change the activations the TFLite Micro arena "
            "holds (and float layers are no TFLite option), so no choice of precisions can meet an arena budget"
        )
    if kind == "latency":
        raise RecipeError(f"--budget {text!r}: latency budgets need a per-layer latency of each precision, which edgeq does not measure yet")
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", amount)
    unit = match.group(2).upper() if match else None
    if unit not in UNITS:
        raise RecipeError(f"--budget {text!r}: expected an amount like 1.2MB, 96KB, 300KiB or 150000")
    value = float(match.group(1)) * UNITS[unit]
    if not value > 0 or not math.isfinite(value):
        raise RecipeError(f"--budget {text!r}: the size must be positive")
    return int(value)


@dataclass
class Allocation:
    """A mix chosen under a budget: ``layers`` (node -> precision, the Recipe.layers table), its predicted and
    measured SQNR and its real size."""

    budget: int
    layers: dict[str, str]
    predicted_sqnr_db: float
    measured: Measured
    refits: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    note: str | None = None  # why the uniform base build was kept instead of the program's mix

    def to_dict(self) -> dict:
        return {
            "budget_bytes": self.budget,
            "size_bytes": self.measured.size,
            "fits": self.measured.size <= self.budget,
            "predicted_sqnr_db": round(self.predicted_sqnr_db, 3),
            "measured_sqnr_db": round(self.measured.sqnr_db, 3),
            "precisions": self.counts,
            "layers": self.layers,
            "refits": self.refits,
            **({"note": self.note} if self.note else {}),
        }


@dataclass
class ByteModel:
    """Bytes of a mix's artifact: ``other`` (what is no layer weight) plus, per layer, its weights at the
    precision and that precision's per-layer ``overhead`` (an INT4 weight adds a Cast node and its names), fitted
    on real builds so that the uniform int8 and int4 builds' sizes are exact."""

    table: SensitivityTable
    packed_int4: bool
    other: float
    overhead: dict[str, float]

    def bytes(self, layer: Layer, precision: str) -> float:
        return weight_bytes(layer.params, precision, self.packed_int4) + self.overhead.get(precision, 0.0)

    def size(self, mix: dict[str, str]) -> int:
        """Predicted bytes of MIX (every layer -> precision)."""
        return round(self.other + sum(self.bytes(layer, mix[layer.name]) for layer in self.table.layers))

    def smallest(self, precisions: tuple[str, ...]) -> dict[str, str]:
        return {layer.name: min(precisions, key=lambda p: self.bytes(layer, p)) for layer in self.table.layers}

    def largest(self, precisions: tuple[str, ...]) -> dict[str, str]:
        return {layer.name: max(precisions, key=lambda p: self.bytes(layer, p)) for layer in self.table.layers}


def byte_model(bench: Workbench, table: SensitivityTable, rule: TargetRule) -> ByteModel:
    """The byte model of BENCH's artifacts, fitted on the base build and, where RULE packs int4, the uniform int4
    build. A float layer is counted at 4 bytes a weight and no overhead: it drops its dequantizers and scales, so
    the real size is a little smaller (an all-float build would fit an overhead for the whole graph, whose
    activation Q/DQ pairs go too, not for one layer)."""
    base = table.base_precision
    weights = {p: sum(weight_bytes(layer.params, p, rule.packed_int4) for layer in table.layers) for p in PRECISION_BITS}
    other = bench.build({}).size - weights[base]
    overhead = {}
    if rule.packed_int4 and "int4" in rule.precisions and base != "int4" and table.layers:
        uniform = bench.build({layer.name: "int4" for layer in table.layers}).size
        overhead["int4"] = (uniform - other - weights["int4"]) / len(table.layers)
    return ByteModel(table, rule.packed_int4, other, overhead)


def solve(table: SensitivityTable, sizes: ByteModel, budget: int, rule: TargetRule) -> tuple[dict[str, str], float]:
    """The mix (every layer -> precision) of least predicted noise whose predicted size fits BUDGET bytes, and its
    predicted SQNR; RecipeError when not even the smallest fits."""
    choices = [(layer, p) for layer in table.layers for p in rule.precisions if p in table.precisions]
    cost = np.array([table.added_noise(layer.name, p) for layer, p in choices])
    size = np.array([sizes.bytes(layer, p) for layer, p in choices], float)
    one_each = np.array([[1.0 if layer is other else 0.0 for layer, _ in choices] for other in table.layers])
    cap = budget - sizes.other + 0.5  # sizes are predicted to the byte: half a byte of rounding is no overshoot
    # HiGHS's tolerances are absolute (1e-6 and up): noise powers of 1e-5 are scaled to a largest cost of 1, and
    # ties go to the smaller choice, by a byte cost a million times below the largest noise cost
    scaled = cost / max(float(np.abs(cost).max()), 1e-30) + 1e-6 * size / max(float(size.max()), 1.0)
    result = milp(
        scaled,
        constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(size[None, :], -np.inf, cap)],
        integrality=np.ones(len(choices)),
        bounds=Bounds(0, 1),
        # a few hundred binaries need no presolve, whose postsolve of each new incumbent makes HiGHS print a line
        # of its own on stdout (MobileNetV2)
        options={"presolve": False},
    )
    if not result.success:
        raise RecipeError(f"no mix of {', '.join(rule.precisions)} is predicted to fit {budget} bytes ({result.message})")
    picked = {layer.name: p for (layer, p), x in zip(choices, result.x, strict=True) if x > 0.5}
    return picked, predicted_sqnr(table, picked)


def predicted_sqnr(table: SensitivityTable, mix: dict[str, str]) -> float:
    """-10 log10 of the base build's noise plus what each layer of MIX adds."""
    noise = noise_power(table.base_sqnr_db) + sum(table.added_noise(name, p) for name, p in mix.items())
    return -10.0 * math.log10(noise) if noise > 0 else math.inf


def allocate(
    bench: Workbench, table: SensitivityTable, budget: int, rule: TargetRule, sizes: ByteModel | None = None
) -> Allocation:
    """The least-noise mix whose real artifact fits BUDGET bytes, built and measured (see the module docstring)."""
    sizes = sizes or byte_model(bench, table, rule)
    smallest = sizes.size(sizes.smallest(rule.precisions))
    if smallest > budget:
        raise RecipeError(
            f"budget size={budget} bytes cannot be met: the smallest mix ({', '.join(rule.precisions)} allowed) "
            f"takes {smallest} bytes"
        )
    cap, refits = budget, 0
    while True:
        picked, predicted = solve(table, sizes, cap, rule)
        layers = {name: p for name, p in picked.items() if p != table.base_precision}
        measured = bench.build(layers)
        if measured.size <= budget:
            break
        cap -= measured.size - budget
        refits += 1
        if refits > REFITS or cap < smallest:  # the last resort: the mix predicted smallest
            picked = sizes.smallest(rule.precisions)
            layers = {name: p for name, p in picked.items() if p != table.base_precision}
            measured = bench.build(layers)
            if measured.size > budget:
                raise RecipeError(
                    f"budget size={budget} bytes cannot be met: the smallest mix built is {measured.size} bytes"
                )
            predicted = predicted_sqnr(table, picked)
            break
    counts = {p: sum(1 for q in picked.values() if q == p) for p in rule.precisions}
    base = bench.build({})
    if layers and base.size <= budget and base.sqnr_db > measured.sqnr_db:
        note = (
            f"the program's mix ({', '.join(f'{n} {p}' for p, n in counts.items() if n)}) measured "
            f"{measured.sqnr_db:.2f} dB, under uniform {table.base_precision}'s {base.sqnr_db:.2f} dB, which fits: "
            f"uniform {table.base_precision} kept"
        )
        counts = {p: len(picked) if p == table.base_precision else 0 for p in rule.precisions}
        return Allocation(budget, {}, predicted_sqnr(table, {}), base, refits, counts, note)
    return Allocation(budget, layers, predicted, measured, refits, counts)


def predicted_front(table: SensitivityTable, sizes: ByteModel, rule: TargetRule, points: int = 24) -> list[dict]:
    """The predicted Pareto front: (size, predicted SQNR) of the least-noise mix at POINTS budgets between the
    smallest and the largest mix (no build)."""
    low = sizes.size(sizes.smallest(rule.precisions))
    high = sizes.size(sizes.largest(rule.precisions))
    front = []
    for budget in np.linspace(low, high, points):
        picked, predicted = solve(table, sizes, int(budget), rule)
        size = sizes.size(picked)
        if not front or front[-1]["size_bytes"] != size:
            front.append({"size_bytes": size, "predicted_sqnr_db": round(predicted, 3)})
    return front
