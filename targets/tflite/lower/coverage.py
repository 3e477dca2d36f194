"""What the lowering did with each node of the QDQ model: the coverage report of the TFLite targets.

Every node but the QuantizeLinear/DequantizeLinear pairs gets one record: ``lowered`` is "int8" (int8 builtins),
"int16" (16x8 builtins),
"float-island" (float32 builtins between DEQUANTIZE and QUANTIZE, with the int8 refusal that sent it there as
the ``reason``; island.py), "float" (float32 builtins: the float-precision graph) or "refused", with the reason ``code``
(edgeq.errors.REASON_CODES) and the one-line ``reason`` where it is refused. A Relu/Clip fused into the op before
it is lowered with it and says so. :func:`summary` counts them; :func:`refusal_line` is the one-line error of a
graph with refusals: the first, and how many more, by op type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import onnx_ir as ir

from edgeq.errors import UnsupportedError


@dataclass
class NodeCoverage:
    node: str
    op: str
    lowered: str  # "int8" | "int16" | "float-island" | "float" | "refused"
    code: str | None = None
    reason: str | None = None

    @classmethod
    def refused(cls, node: ir.Node, error: UnsupportedError) -> NodeCoverage:
        return cls(node.name, node.op_type, "refused", error.code, error.reason)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def plan_row(self) -> dict:
        """The record as a row of a target's node plan (edgeq.targets.target.Target.node_plan): outcome
        "quantized" (int8/int16 builtins) or "float" (a float island), ``as`` saying which, or "refused"."""
        outcome = {"int8": "quantized", "int16": "quantized", "float-island": "float"}.get(self.lowered, self.lowered)
        row = {"node": self.node, "op": self.op, "outcome": outcome}
        if outcome != self.lowered:
            row["as"] = self.lowered
        return row | {k: v for k, v in (("code", self.code), ("reason", self.reason)) if v is not None}


def summary(records: list[NodeCoverage]) -> dict:
    """Counts per outcome and, for the refused nodes, per op type and reason code."""
    counts = Counter(r.lowered for r in records)
    result = {"nodes": len(records), **{k: counts[k] for k in ("int8", "int16", "float-island", "float", "refused") if counts[k]}}
    refused = [r for r in records if r.lowered == "refused"]
    if refused:
        result["refused_ops"] = dict(Counter(r.op for r in refused).most_common())
        result["refused_codes"] = dict(Counter(r.code for r in refused).most_common())
    islands = [r for r in records if r.lowered == "float-island" and not (r.reason or "").startswith("fused")]
    if islands:
        result["float_island_ops"] = dict(Counter(r.op for r in islands).most_common())
    return result


def refusal_line(records: list[NodeCoverage], first: UnsupportedError) -> str:
    """FIRST's message, and the other refused nodes counted by op type: every refusal in one line."""
    others = [r for r in records if r.lowered == "refused" and r.node != first.node]
    if not others:
        return str(first)
    ops = ", ".join(f"{op} x{n}" for op, n in Counter(r.op for r in others).most_common())
    return f"{first} (and {len(others)} more nodes refused: {ops})"
