"""Write the integer-only ONNX artifact ``<name>.integer.onnx`` of a QDQ model (see the package docstring)."""

from __future__ import annotations

from pathlib import Path

from edgeq.errors import EdgeqError
from edgeq.io.files import write_bytes_atomic
from edgeq.targets.integer_onnx.model import integer_only_model
from edgeq.targets.integer_onnx.scan import scan_integer_only
from edgeq.targets.tflite.lower import lower


def emit(qdq_model, outdir: Path, name: str) -> dict:
    """Lower QDQ_MODEL (int8 activations) as the .tflite target does, build the integer-only model, check it
    has nothing but integers inside, and write it; returns the path, the lowered TFLite graph and the op counts."""
    lowered = lower(qdq_model)
    model = integer_only_model(
        lowered.graph, input_layouts=lowered.input_layouts, output_layouts=lowered.output_layouts
    )
    violations = scan_integer_only(model)
    if violations:  # the converters only emit integer ops: this is a bug, not bad input
        raise EdgeqError(f"internal error: the integer-only model is not integer-only: {violations[0]}")
    path = Path(outdir) / f"{name}.integer.onnx"
    write_bytes_atomic(path, model.SerializeToString())
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"path": path, "graph": lowered.graph, "nodes": len(model.graph.node), "ops": dict(sorted(ops.items()))}
