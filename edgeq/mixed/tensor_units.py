"""Activation tensors as the units of a mix, and the output error when only one unit changes precision.

A layers table (edgeq.quantization.layer_precision) gives precisions to nodes, but what an activation's precision
changes is a *tensor*: it is stored at the type of its writer, and a reader of another type reads a requantized
copy (int16), or the pair around it stays because a quantized neighbour writes it (float). So a tensor's unit is
the set of quantized nodes that must change with it:

* its writer (the anchor of a fused Relu/Clip: the pair goes on the activation's output) and every quantized
  node that reads it;
* the other readers of any constant those nodes read: a constant read by an int16 node and an 8-bit node cannot
  be stored for both (edgeq.quantization.plan).

With the whole unit at "int16" the tensor is stored in int16 and no reader reads an int8 copy; with the whole unit
at "float" no Q/DQ pair is left on it (the unit's weighted nodes then compute with float weights too). Tensors
whose writer or a reader stores more than TABLE_BYTES of constants in its activation type are no candidates (an
embedding lookup's table takes its output's type: int16 would double it).

``measure_tensor_sensitivity``: for every unit t, the pipeline's build with only t at precision p (one
calibration serves every build), run on the measurement samples: its worst output SQNR S[t, p] against the float
model. The units ranked by S[t, p], highest first, are the order in which edgeq.mixed.accuracy_aware moves them.
Each is a real build (a float unit changes which tensors the neighbours quantize, which an edit of the base model
would miss): MobileNetV2's 66 units take about 50 s on this 2-core machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import onnx_ir as ir
from tqdm import tqdm

from edgeq.mixed.workbench import Workbench, run_model, worst_sqnr
from edgeq.quantization.integer_sources import is_embedding
from edgeq.quantization.plan import QuantPlan, constant_data_inputs

TABLE_BYTES = 1 << 20


def tensor_units(plan: QuantPlan) -> dict[str, set[str]]:
    """Candidate tensor -> the quantized nodes of its unit (module docstring), in PLAN's tensor order."""
    quantized = {node.name: node for node in plan.quantized}
    anchor_of = {act.name: anchor for anchor, act in plan.fused_activation.items()}
    readers_of: dict[str, set[str]] = {}
    for node in plan.quantized:
        for constant in constant_data_inputs(node):
            readers_of.setdefault(constant.name, set()).add(node.name)
    units = {}
    for value in plan.tensors:
        writer = value.producer()
        nodes = {use.node.name for use in value.uses() if use.node.name in quantized}
        if writer is not None and writer.name in quantized:
            nodes.add(anchor_of.get(writer.name, writer.name))
        pending, unit = list(nodes), set()
        while pending:
            name = pending.pop()
            if name in unit:
                continue
            unit.add(name)
            if name in plan.fused_activation:
                pending.append(plan.fused_activation[name].name)
            for constant in constant_data_inputs(quantized[name]):
                pending.extend(readers_of[constant.name])
        if unit and not any(_stores_large_table(quantized[name]) for name in unit):
            units[value.name] = unit
    return units


def _stores_large_table(node: ir.Node) -> bool:
    """Whether NODE stores more than TABLE_BYTES of constants in its activation type: an embedding lookup's table
    (TFLite's GATHER copies rows of the output's type) or a constant operand."""
    tables = [*constant_data_inputs(node), *(node.inputs[:1] if is_embedding(node) else [])]
    return any(v.const_value is not None and v.const_value.nbytes > TABLE_BYTES for v in tables)


def unit_layers(units: dict[str, set[str]], tensors: list[str], precision: str) -> dict[str, str]:
    """The layers table (node -> precision) that puts the units of TENSORS at PRECISION."""
    return {name: precision for tensor in tensors for name in sorted(units[tensor])}


@dataclass
class TensorSensitivity:
    """Per candidate tensor: its unit's nodes and the worst output SQNR (dB) with only that unit at ``precision``."""

    precision: str
    base_sqnr_db: float
    sqnr_db: dict[str, float]
    units: dict[str, set[str]]
    samples: int
    seconds: float

    def ranked(self) -> list[str]:
        """The tensors, the unit whose move helps most first (ties in the plan's order)."""
        return sorted(self.sqnr_db, key=lambda t: -self.sqnr_db[t])

    def to_dict(self) -> dict:
        return {
            "precision": self.precision,
            "base_sqnr_db": _rounded(self.base_sqnr_db),
            "samples": self.samples,
            "seconds": round(self.seconds, 3),
            "tensors": [
                {"tensor": t, "nodes": sorted(self.units[t]), "sqnr_db": _rounded(self.sqnr_db[t])} for t in self.ranked()
            ],
        }


def _rounded(value: float) -> float | str:
    return round(value, 3) if math.isfinite(value) else str(value)


def measure_tensor_sensitivity(
    bench: Workbench, precision: str, *, base: dict[str, str] | None = None, samples: int | None = None
) -> TensorSensitivity:
    """S[t, PRECISION] for every unit of BENCH's plan (the int16 plan for "int16"), each unit moved on top of the
    layers table BASE (default: none; keys after the unit's node names), measured on the first SAMPLES of BENCH's samples (default: all)."""
    start = time.perf_counter()
    base = base or {}
    units = tensor_units(bench.calibration(int16=precision == "int16").plan)
    feeds = {name: array[:samples] for name, array in bench.feeds.items()}
    reference = [array[:samples] for array in bench.reference]

    def sqnr(layers: dict[str, str]) -> float:
        return worst_sqnr(reference, run_model(bench.quantized(layers), feeds))

    base_sqnr = sqnr(base)
    # node names first: the first layers key that matches a node gives its precision
    bar = tqdm(units, desc="per-tensor sensitivity", unit="build", disable=not bench.progress)
    measured = {t: sqnr({**unit_layers(units, [t], precision), **base}) for t in bar}
    return TensorSensitivity(
        precision, base_sqnr, measured, units, len(next(iter(feeds.values()))), time.perf_counter() - start
    )
