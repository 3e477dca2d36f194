"""Bit allocation under a size and an arena budget: one precision per layer and, for an arena budget, the int16
activation tensors, chosen by an integer linear program.

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

**Arena budget** (TFLite Micro's tensor arena, for the TFLite targets): a layer's weight precision does not change
the arena, an activation tensor's does. So an arena budget adds a binary y[t] per candidate tensor t (its unit at
int16, edgeq.mixed.tensor_units), with m[t] its measured added noise (negative: what int16 removes), the arena
model's rows (edgeq.mixed.arena: at every step, other + sum of the live tensors' bytes <= A) and
y[t] <= x[l, int8] for each weighted layer l of t's unit (16x8 kernels take 8-bit weights):

    minimize    sum n[l, p] x[l, p] + sum_t m[t] y[t]

The chosen mix's arena is measured in TFLite Micro (the caller's ``arena_of``) and, like the size, the arena cap
is lowered by any overshoot and the program solved again. Without an arena budget no tensor goes int16: int16
costs no bytes, but doubles its tensor's arena and leaves XNNPACK (LiteRT runs no 16x8 operator in it), which a
size budget does not price.

What each target allows (TARGET_RULES): ONNX Runtime runs any layer float between Q/DQ pairs and stores int4
weights packed (QDQ INT4, opset 21). TFLite and TFLite Micro keep every layer integer: a float Conv or
FullyConnected island would need a float32 reference kernel that LiteRT and TFLite Micro match bit for bit, which
edgeq's reference does not have (targets/tflite/lower/island.py), and they store 4-bit weights in int8, so int4
buys no bytes there. Latency budgets are refused: the per-op latency of each choice is not measured (LiteRT's
XNNPACK partitions change with the mix, so per-op times do not add), and edgeq's Cortex-M estimate prices int8
kernels only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from edgeq.errors import RecipeError
from edgeq.mixed.arena import ArenaModel
from edgeq.mixed.layers import PRECISION_BITS, Layer, weight_bytes
from edgeq.mixed.sensitivity import SensitivityTable, noise_power
from edgeq.mixed.tensor_units import TensorSensitivity, unit_layers
from edgeq.mixed.workbench import Measured, Workbench

REFITS = 3
ARENA_PROBES = 8  # programs solved, at most, to fit an arena budget (each measured in TFLite Micro: about 1 s)
ARENA_STEP = 64  # bytes: the bisection over the arena cap stops when the interval is this narrow (or 1%)
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


@dataclass(frozen=True)
class Budget:
    """What a mix may take: ``size`` bytes of the ONNX Runtime model, ``arena`` bytes of TFLite Micro's arena."""

    size: int | None = None
    arena: int | None = None

    def __str__(self) -> str:
        return ", ".join(f"{kind}={value} bytes" for kind, value in (("size", self.size), ("arena", self.arena)) if value)


def parse_budget(text: str) -> Budget:
    """``size=1.2MB``, ``arena=96KB`` or both, comma-separated (B, KB, MB, GB, KiB, MiB, GiB); latency budgets are
    refused with why."""
    amounts = {}
    for part in text.split(","):
        kind, sep, amount = part.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in BUDGET_KINDS:
            raise RecipeError(f"--budget {text!r}: expected size=AMOUNT and/or arena=AMOUNT, e.g. size=1.2MB,arena=96KB")
        if kind == "latency":
            raise RecipeError(
                f"--budget {text!r}: latency budgets need a per-layer latency of each precision that adds up, which "
                "edgeq does not have (LiteRT's XNNPACK partitions change with the mix; the Cortex-M estimate prices "
                "int8 kernels only)"
            )
        if kind in amounts:
            raise RecipeError(f"--budget {text!r}: {kind} is given twice")
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", amount)
        unit = match.group(2).upper() if match else None
        if unit not in UNITS:
            raise RecipeError(f"--budget {text!r}: expected an amount like 1.2MB, 96KB, 300KiB or 150000")
        value = float(match.group(1)) * UNITS[unit]
        if not value > 0 or not math.isfinite(value):
            raise RecipeError(f"--budget {text!r}: the {kind} must be positive")
        amounts[kind] = int(value)
    return Budget(**amounts)


@dataclass
class Int16Tensors:
    """What an arena budget chooses among: the candidate tensors' units and measured int16 sensitivity, the
    fitted arena model, and ``arena_of(layers)``, the measured arena of a mix (a layers table)."""

    sensitivity: TensorSensitivity
    arena: ArenaModel
    arena_of: Callable[[dict[str, str]], int]

    def candidates(self) -> list[str]:
        return [t for t in self.sensitivity.sqnr_db if t in set(self.arena.tensors)]

    def added_noise(self, tensor: str) -> float:
        return noise_power(self.sensitivity.sqnr_db[tensor]) - noise_power(self.sensitivity.base_sqnr_db)

    def predicted_arena(self, tensors: list[str]) -> int:
        """The arena model's bytes with the units of TENSORS at int16."""
        return self.arena.predicted({name for t in tensors for name in self.sensitivity.units[t]}, set(tensors))


@dataclass
class Allocation:
    """A mix chosen under a budget: ``layers`` (node -> precision, the Recipe.layers table), its int16 tensors (an
    arena budget's), its predicted and measured SQNR, its real size and, under an arena budget, its measured arena."""

    budget: Budget
    layers: dict[str, str]
    predicted_sqnr_db: float
    measured: Measured
    refits: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    note: str | None = None  # why the uniform base build was kept instead of the program's mix
    int16_tensors: list[str] = field(default_factory=list)
    arena: int | None = None  # the mix's TFLite Micro arena, measured (arena budgets)
    predicted_arena: int | None = None

    def to_dict(self) -> dict:
        size_fits = self.budget.size is None or self.measured.size <= self.budget.size
        arena_fits = self.budget.arena is None or (self.arena is not None and self.arena <= self.budget.arena)
        return {
            "budget_bytes": self.budget.size,
            "size_bytes": self.measured.size,
            "fits": size_fits and arena_fits,
            # None where the added noise powers sum below zero: int16 gains measured one unit at a time do not add
            "predicted_sqnr_db": round(self.predicted_sqnr_db, 3) if math.isfinite(self.predicted_sqnr_db) else None,
            "measured_sqnr_db": round(self.measured.sqnr_db, 3),
            "precisions": self.counts,
            "layers": self.layers,
            "refits": self.refits,
            **({"note": self.note} if self.note else {}),
            **(
                {
                    "arena_budget_bytes": self.budget.arena,
                    "arena_bytes": self.arena,
                    "predicted_arena_bytes": self.predicted_arena,
                    "int16_tensors": self.int16_tensors,
                }
                if self.budget.arena is not None
                else {}
            ),
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


@dataclass
class Mix:
    """A solution of the program: every layer's precision, the int16 tensors, and the predicted SQNR."""

    layers: dict[str, str]
    int16: list[str]
    predicted_sqnr_db: float


def solve(
    table: SensitivityTable,
    sizes: ByteModel,
    budget: int | None,
    rule: TargetRule,
    int16: Int16Tensors | None = None,
    arena: int | None = None,
) -> Mix:
    """The mix of least predicted noise whose predicted size fits BUDGET bytes (None: any) and, with INT16, whose
    predicted arena fits ARENA bytes (module docstring); RecipeError when no mix fits."""
    # with no size budget the weights have nothing to buy: they stay at the base precision (or int8, for 16x8)
    allowed = rule.precisions if budget is not None else {table.base_precision, "int8"} & set(rule.precisions)
    choices = [(layer, p) for layer in table.layers for p in rule.precisions if p in table.precisions and p in allowed]
    tensors = int16.candidates() if int16 is not None and arena is not None else []
    n, m = len(choices), len(tensors)
    arena_rows, arena_bounds, extra = (
        int16.arena.rows(int16.sensitivity.units, tensors, n, n + m, arena) if tensors else ([], [], 0)
    )
    total = n + m + extra
    cost = np.zeros(total)
    cost[:n] = [table.added_noise(layer.name, p) for layer, p in choices]
    cost[n : n + m] = [int16.added_noise(t) for t in tensors]
    size = np.zeros(total)
    size[:n] = [sizes.bytes(layer, p) for layer, p in choices]
    one_each = np.zeros((len(table.layers), total))
    for i, (layer, _) in enumerate(choices):
        one_each[table.layers.index(layer), i] = 1.0
    constraints = [LinearConstraint(one_each, 1, 1)]
    if budget is not None:  # sizes are predicted to the byte: half a byte of rounding is no overshoot
        constraints.append(LinearConstraint(size[None, :], -np.inf, budget - sizes.other + 0.5))
    if tensors:
        index = {(layer.name, p): i for i, (layer, p) in enumerate(choices)}
        # 16x8 kernels take 8-bit weights: y_t <= x[l, int8] for each weighted layer l of t's unit
        coupling = [
            [(n + j, 1.0), (index[(name, "int8")], -1.0)]
            for j, t in enumerate(tensors)
            for name in int16.sensitivity.units[t]
            if (name, "int8") in index
        ]
        matrix = np.zeros((len(arena_rows) + len(coupling), total))
        for r, entries in enumerate([*arena_rows, *coupling]):
            for variable, coefficient in entries:
                matrix[r, variable] += coefficient
        constraints.append(LinearConstraint(matrix, -np.inf, np.array([*arena_bounds, *[0.0] * len(coupling)])))
    # HiGHS's tolerances are absolute (1e-6 and up): noise powers of 1e-5 are scaled to a largest cost of 1, and
    # ties go to the smaller choice, by a byte cost a million times below the largest noise cost
    scaled = cost / max(float(np.abs(cost).max()), 1e-30) + 1e-6 * size / max(float(size.max()), 1.0)
    result = milp(
        scaled,
        constraints=constraints,
        integrality=np.ones(len(cost)),
        bounds=Bounds(0, 1),
        # a few hundred binaries need no presolve, whose postsolve of each new incumbent makes HiGHS print a line
        # of its own on stdout (MobileNetV2)
        options={"presolve": False},
    )
    if not result.success:
        caps = Budget(budget, arena if tensors else None)
        raise RecipeError(f"no mix of {', '.join(rule.precisions)} is predicted to fit {caps} ({result.message})")
    picked = {layer.name: p for (layer, p), x in zip(choices, result.x[:n], strict=True) if x > 0.5}
    chosen = [t for t, y in zip(tensors, result.x[n : n + m], strict=True) if y > 0.5]
    return Mix(picked, chosen, predicted_sqnr(table, picked, int16, chosen))


def predicted_sqnr(
    table: SensitivityTable, mix: dict[str, str], int16: Int16Tensors | None = None, tensors: list[str] = ()
) -> float:
    """-10 log10 of the base build's noise plus what each layer of MIX and each int16 tensor of TENSORS adds."""
    noise = noise_power(table.base_sqnr_db) + sum(table.added_noise(name, p) for name, p in mix.items())
    noise += sum(int16.added_noise(t) for t in tensors) if int16 is not None else 0.0
    return -10.0 * math.log10(noise) if noise > 0 else math.inf


def layers_table(table: SensitivityTable, mix: Mix, int16: Int16Tensors | None) -> dict[str, str]:
    """MIX as a Recipe.layers table: the int16 tensors' unit nodes first (the first matching key decides), then
    every layer not at the base precision."""
    units = unit_layers(int16.sensitivity.units, mix.int16, "int16") if int16 is not None else {}
    return {**units, **{name: p for name, p in mix.layers.items() if p != table.base_precision and name not in units}}


def allocate(
    bench: Workbench,
    table: SensitivityTable,
    budget: int | Budget,
    rule: TargetRule,
    sizes: ByteModel | None = None,
    int16: Int16Tensors | None = None,
) -> Allocation:
    """The least-noise mix whose real artifact fits BUDGET (bytes: a size budget) and, with INT16 and an arena
    budget, whose measured arena fits it too, built and measured (module docstring)."""
    budget = budget if isinstance(budget, Budget) else Budget(size=budget)
    if budget.arena is not None and int16 is None:
        raise RecipeError("an arena budget chooses int16 tensors for TFLite Micro: give --target tflm or tflite")
    sizes = sizes or byte_model(bench, table, rule)
    smallest = sizes.size(sizes.smallest(rule.precisions))
    if budget.size is not None and smallest > budget.size:
        raise RecipeError(
            f"budget size={budget.size} bytes cannot be met: the smallest mix ({', '.join(rule.precisions)} allowed) "
            f"takes {smallest} bytes"
        )
    if budget.arena is None:
        mix, layers, measured, refits = _fit_size(bench, table, budget.size, rule, sizes)
        arena = base_arena = predicted_arena = None
    else:
        base_arena = int16.arena_of({})
        if base_arena > budget.arena:
            raise RecipeError(
                f"budget arena={budget.arena} bytes cannot be met: uniform int8's TFLite Micro arena is {base_arena} "
                "bytes (a layer's weights do not change the arena, and int16 tensors only add to it)"
            )
        mix, layers, measured, refits, arena = _fit_arena(bench, table, budget, rule, sizes, int16)
        predicted_arena = int16.predicted_arena(mix.int16)
    counts = {p: sum(1 for q in mix.layers.values() if q == p) for p in rule.precisions}
    base = bench.build({})
    base_fits = budget.size is None or base.size <= budget.size
    if layers and base_fits and base.sqnr_db > measured.sqnr_db:
        described = [f"{n} {p}" for p, n in counts.items() if n] + ([f"{len(mix.int16)} int16 tensors"] if mix.int16 else [])
        note = (
            f"the program's mix ({', '.join(described)}) measured {measured.sqnr_db:.2f} dB, under uniform "
            f"{table.base_precision}'s {base.sqnr_db:.2f} dB, which fits: uniform {table.base_precision} kept"
        )
        counts = {p: len(mix.layers) if p == table.base_precision else 0 for p in rule.precisions}
        predicted_arena = int16.predicted_arena([]) if budget.arena is not None else None
        return Allocation(budget, {}, predicted_sqnr(table, {}), base, refits, counts, note, [], base_arena, predicted_arena)
    return Allocation(budget, layers, mix.predicted_sqnr_db, measured, refits, counts, None, mix.int16, arena, predicted_arena)


def _fit_size(
    bench: Workbench,
    table: SensitivityTable,
    size: int | None,
    rule: TargetRule,
    sizes: ByteModel,
    int16: Int16Tensors | None = None,
    arena_cap: int | None = None,
) -> tuple[Mix, dict[str, str], Measured, int]:
    """The program's mix under SIZE bytes (None: any) and the predicted ARENA_CAP, built, with the size cap lowered
    by the real overshoot up to REFITS times, then the mix predicted smallest; (mix, layers, build, refits)."""
    cap, refits = size, 0
    smallest = sizes.size(sizes.smallest(rule.precisions))
    while True:
        mix = solve(table, sizes, cap, rule, int16, arena_cap)
        layers = layers_table(table, mix, int16)
        measured = bench.build(layers)
        if size is None or measured.size <= size:
            return mix, layers, measured, refits
        cap -= measured.size - size
        refits += 1
        if refits > REFITS or cap < smallest:  # the last resort: the mix predicted smallest, no int16 tensor
            last = sizes.smallest(rule.precisions)
            mix = Mix(last, [], predicted_sqnr(table, last))
            layers = layers_table(table, mix, None)
            measured = bench.build(layers)
            if measured.size > size:
                raise RecipeError(f"budget size={size} bytes cannot be met: the smallest mix built is {measured.size} bytes")
            return mix, layers, measured, refits


def _fit_arena(
    bench: Workbench, table: SensitivityTable, budget: Budget, rule: TargetRule, sizes: ByteModel, int16: Int16Tensors
) -> tuple[Mix, dict[str, str], Measured, int, int]:
    """The mix under the arena budget. The arena model is a bound (module docstring of edgeq.mixed.arena), so the
    program's cap is searched: a bisection between uniform int8's predicted arena (which fits) and the predicted
    arena of every candidate at int16 (no cap above it changes the mix), starting at the budget, each program's
    mix measured in TFLite Micro; ARENA_PROBES programs at most. The fitting mix of highest measured SQNR;
    (mix, layers, build, programs solved, measured arena)."""
    low, high = int16.predicted_arena([]), int16.predicted_arena(int16.candidates()) + 1
    cap, best, probes = min(budget.arena, high), None, 0
    while probes < ARENA_PROBES:
        probes += 1
        mix, layers, measured, _ = _fit_size(bench, table, budget.size, rule, sizes, int16, cap)
        arena = int16.arena_of(layers)
        if arena <= budget.arena:
            if best is None or measured.sqnr_db > best[2].sqnr_db:
                best = (mix, layers, measured, probes, arena)
            low = cap
        else:
            high = cap
        if high - low <= max(ARENA_STEP, budget.arena // 100):
            break
        cap = (low + high) // 2
    if best is None:  # uniform int8 fits (allocate checked): no int16 tensor
        mix, layers, measured, _ = _fit_size(bench, table, budget.size, rule, sizes)
        best = (mix, layers, measured, probes, int16.arena_of(layers))
    return best


def predicted_front(table: SensitivityTable, sizes: ByteModel, rule: TargetRule, points: int = 24) -> list[dict]:
    """The predicted Pareto front: (size, predicted SQNR) of the least-noise mix at POINTS budgets between the
    smallest and the largest mix (no build)."""
    low = sizes.size(sizes.smallest(rule.precisions))
    high = sizes.size(sizes.largest(rule.precisions))
    front = []
    for budget in np.linspace(low, high, points):
        mix = solve(table, sizes, int(budget), rule)
        size = sizes.size(mix.layers)
        if not front or front[-1]["size_bytes"] != size:
            front.append({"size_bytes": size, "predicted_sqnr_db": round(mix.predicted_sqnr_db, 3)})
    return front
