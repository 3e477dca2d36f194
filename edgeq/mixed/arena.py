"""The TFLite Micro arena of a mix of int8 and int16 activations, as linear constraints of the budget's program.

TFLite Micro plans every activation tensor of a ``.tflite`` into one arena. No planner can place the tensors live
at one step in less memory than their total (edgeq.measure.footprint), so the arena of a mix is modelled as
``other + packing x peak``: ``other`` the persistent data (the arena's tail: allocator, tensor and node structs),
``packing`` what the planner's placement loses over the peak, both fitted on the uniform int8 build (the tail it
records, and its measured arena minus the tail over its predicted peak; digits CNN: 1.19).

What a mix changes, with w_r = 1 when node r computes in int16 (it is in a chosen unit, edgeq.mixed.tensor_units)
and e_s the elements of planned tensor s:

* a tensor is stored at its writer's type: z_s = w_writer(s) (a graph input: z_s = 1 when it is a chosen unit's
  own tensor), e_s more bytes at int16, for as long as s is live;
* a reader of the other type reads a requantized copy (a QUANTIZE int8 <-> int16 before it): an int16 reader of
  an int8 tensor a copy of 2 e_s bytes, c16 >= w_r - z_s; an int8 reader of an int16 tensor one of e_s bytes,
  c8 >= z_s - w_r; counted from the step its source is first live to the reader's (the QDQ pass sorts the
  copy's nodes anywhere between; this bounds it from above).

So for every step k, with L_k the tensors live at k and C_k the (reader, tensor) copies live at k:

    other + packing (sum_{s in L_k} e_s (1 + z_s) + sum_{(r, s) in C_k} (2 e_s c16_rs + e_s c8_rs)) <= A

and w_r is tied to the units' choices y_t by y_t <= w_r <= sum_{t: r in unit t} y_t, all linear. On the digits
CNN the copies are most of what a mix adds: one unit at int16 took its measured arena from 9152 to 14992 bytes
while the tensors it stores in int16 were not live at the peak step. The model stays a prediction (the planner's
packing is not modelled): the chosen mix's real arena is what decides (edgeq.mixed.allocation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgeq.measure.footprint import Step, live_ranges
from edgeq.quantization.plan import QuantPlan


@dataclass
class ArenaModel:
    """Per planned tensor its elements and writer (None: a graph input); per step (a quantized node, graph order)
    its node and the planned tensors it reads; which tensors are live at each step (``live[k, s]``); ``other``."""

    tensors: list[str]
    elements: np.ndarray
    writers: list[str | None]
    nodes: list[str]
    reads: list[list[int]]
    live: np.ndarray
    other: float = 0.0
    packing: float = 1.0

    @property
    def born(self) -> np.ndarray:
        """Per tensor, the first step at which it is live."""
        return self.live.argmax(axis=0)

    def bytes_per_step(self, int16_nodes: set[str], int16_inputs: set[str] = frozenset()) -> np.ndarray:
        """The bytes live at each step (module docstring) when INT16_NODES compute in int16 and the graph inputs
        INT16_INPUTS are stored in int16."""
        z = np.array(
            [1.0 if (w in int16_nodes if w is not None else t in int16_inputs) else 0.0 for t, w in zip(self.tensors, self.writers, strict=True)]
        )
        steps = self.live @ (self.elements * (1.0 + z))
        for k, (node, reads) in enumerate(zip(self.nodes, self.reads, strict=True)):
            w = 1.0 if node in int16_nodes else 0.0
            for s in reads:
                steps[self.born[s] : k + 1] += self.elements[s] * (2.0 * max(w - z[s], 0.0) + max(z[s] - w, 0.0))
        return steps

    def predicted(self, int16_nodes: set[str], int16_inputs: set[str] = frozenset()) -> int:
        """The predicted arena (bytes) of that mix."""
        return round(self.other + self.packing * float(self.bytes_per_step(int16_nodes, int16_inputs).max(initial=0.0)))

    def fitted(self, measured_int8: int, persistent: int) -> ArenaModel:
        """This model fitted on the uniform int8 build's MEASURED_INT8 arena, PERSISTENT bytes of it its tail."""
        peak = float(self.bytes_per_step(set()).max(initial=0.0))
        packing = (measured_int8 - persistent) / peak if peak > 0 else 1.0
        return ArenaModel(self.tensors, self.elements, self.writers, self.nodes, self.reads, self.live, persistent, packing)

    def rows(
        self, units: dict[str, set[str]], chosen: list[str], y: int, first: int, cap: float
    ) -> tuple[list[list[tuple[int, float]]], list[float], int]:
        """The program's arena constraints, where variable Y + j is y for candidate unit CHOSEN[j]
        (edgeq.mixed.allocation) and the model's own variables (w, c16, c8) start at FIRST: (rows, their upper
        bounds, the count of the model's variables). A row is [(variable, coefficient)]: sum <= bound."""
        int16_nodes = sorted({name for t in chosen for name in units[t]})
        w = {name: first + i for i, name in enumerate(int16_nodes)}
        index = {t: i for i, t in enumerate(self.tensors)}

        def z(s: int) -> int | None:  # the variable saying tensor s is int16, if it can be
            writer = self.writers[s]
            if writer is not None:
                return w.get(writer)
            return y + chosen.index(self.tensors[s]) if self.tensors[s] in chosen else None

        pairs = [
            (k, s, kind)
            for k, (node, reads) in enumerate(zip(self.nodes, self.reads, strict=True))
            for s in reads
            for kind in ("c16", "c8")
            if (node in w if kind == "c16" else z(s) is not None)
        ]
        copy = {pair: first + len(w) + i for i, pair in enumerate(pairs)}
        count = len(w) + len(pairs)
        rows, bounds = [], []

        def row(entries: list[tuple[int, float]], bound: float) -> None:
            rows.append(entries)
            bounds.append(bound)

        for j, t in enumerate(chosen):  # y_t <= w_r for every node r of its unit
            for name in units[t]:
                row([(y + j, 1.0), (w[name], -1.0)], 0.0)
        for name, variable in w.items():  # w_r <= sum of the y_t whose unit holds r
            row([(variable, 1.0), *((y + j, -1.0) for j, t in enumerate(chosen) if name in units[t])], 0.0)
        for (k, s, kind), variable in copy.items():  # c16 >= w_r - z_s, c8 >= z_s - w_r
            reader, stored = w.get(self.nodes[k]), z(s)
            sign = 1.0 if kind == "c16" else -1.0
            row([(variable, -1.0), *([(reader, sign)] if reader is not None else []),
                 *([(stored, -sign)] if stored is not None else [])], 0.0)  # fmt: skip
        base, born = self.live @ self.elements, self.born
        for k in range(len(self.nodes)):
            entries = [(z(index[t]), self.elements[index[t]]) for t in self.tensors if self.live[k, index[t]]]
            entries = [(v, e) for v, e in entries if v is not None]
            entries += [  # a copy lives from its source's first step to its reader's (where the pass sorts it)
                (v, self.elements[s] * (2.0 if kind == "c16" else 1.0))
                for (reader, s, kind), v in copy.items()
                if born[s] <= k <= reader
            ]
            if entries:
                row(entries, (cap - self.other + 0.5) / self.packing - base[k])  # half a byte of rounding: no overshoot
        return rows, bounds, count


def arena_model(plan: QuantPlan, graph: ir.Graph) -> ArenaModel:
    """The live sets and reads of PLAN's planned activation tensors over its quantized nodes of GRAPH."""
    planned = {value.name: value for value in plan.tensors}
    steps = [
        Step(
            node.name,
            [v.name for v in node.inputs if v is not None and v.name in planned],
            [v.name for v in node.outputs if v.name in planned],
        )
        for node in plan.quantized
    ]
    inputs = [v.name for v in graph.inputs if v.name in planned]
    outputs = [v.name for v in graph.outputs if v.name in planned]
    ranges = live_ranges(steps, inputs, outputs)
    tensors = [name for name in planned if name in ranges]
    column = {name: i for i, name in enumerate(tensors)}
    live = np.zeros((len(steps), len(tensors)))
    for name, i in column.items():
        start, end = ranges[name]
        live[start : end + 1, i] = 1.0
    elements = np.array([_elements(planned[name].shape) for name in tensors], float)
    anchor_of = {act.name: anchor for anchor, act in plan.fused_activation.items()}
    writers = [_writer(planned[name], anchor_of) for name in tensors]
    reads = [sorted({column[name] for name in step.reads}) for step in steps]
    return ArenaModel(tensors, elements, writers, [step.name for step in steps], reads, live)


def _writer(value: ir.Value, anchor_of: dict[str, str]) -> str | None:
    """The node whose precision sets VALUE's type: its producer, or the anchor a fused activation belongs to."""
    producer = value.producer()
    return None if producer is None else anchor_of.get(producer.name, producer.name)


def _elements(shape) -> int:
    """Elements of one sample's tensor: a symbolic or unknown dimension counts as 1 (as for a batch)."""
    if shape is None:
        return 1
    return math.prod(d if isinstance(d, int) and d > 0 else 1 for d in shape)
