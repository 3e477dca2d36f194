"""Static analysis of a .tflite (edgeq.measure.footprint defines the rows and the liveness peak).

Each operator's kind and MACs come from its TFLite builtin's declaration (targets/tflite/builtins.py); an operator
edgeq does not write counts as "other" with 0 MACs. Every buffer size is rounded up to 16 bytes, TFLite Micro's
buffer alignment (MicroArenaBufferAlignment), which keeps the peak a lower bound of its arena. Data-movement
operators get their own output buffer, as TFLite Micro plans them: its memory planner gives every non-constant
tensor its own buffer, RESHAPE included (the RESHAPE kernel copies when the two buffers differ), so a RESHAPE's
input and output are both live at that step. (TFLite Micro's current source also marks outputs as created before
the first operator, AllocationInfoBuilder::MarkAllocationLifetimes in tensorflow/lite/micro/
micro_allocation_info.cc; the installed tflite-micro does not: with that rule MobileNetV2's bound exceeds its
planned activations by exactly the 1000-byte logits.)
"""

from __future__ import annotations

import numpy as np

from edgeq.measure.footprint import NO_PARAMETERS, Step, peak, report
from edgeq.targets.tflite import builtins
from edgeq.tflite_format.flatbuffer import Graph

TFLM_BUFFER_ALIGNMENT = 16


def _aligned(size: int) -> int:
    return -(-size // TFLM_BUFFER_ALIGNMENT) * TFLM_BUFFER_ALIGNMENT


def analyze_tflite(graph: Graph) -> dict:
    """Static analysis of a TFLite graph (see the module docstring)."""
    layers, steps = [], []
    counted: set[int] = set()
    params = param_bytes = 0
    for index, op in enumerate(graph.operators):
        builtin = builtins.find(op.opcode)
        kind = builtin.kind if builtin is not None else "other"
        inputs = [i for i in op.inputs if i >= 0]
        weights = [] if kind in NO_PARAMETERS else [i for i in inputs if graph.tensors[i].is_constant]
        out_name = graph.tensors[op.outputs[0]].name if op.outputs else f"op{index}"
        layers.append(
            {
                "name": out_name,
                "op": op.opcode,
                "kind": kind,
                "macs": builtin.macs(graph, op) if builtin is not None else 0,
                "params": sum(graph.tensors[i].data.size for i in weights),
                "output_bytes": sum(_tensor_bytes(graph, i) for i in op.outputs),
            }
        )
        for i in set(weights) - counted:
            params += graph.tensors[i].data.size
            param_bytes += graph.tensors[i].data.nbytes
        counted.update(weights)
        steps.append(
            Step(
                out_name,
                [str(i) for i in inputs if not graph.tensors[i].is_constant],
                [str(i) for i in op.outputs],
            )
        )
    sizes = {
        str(i): _aligned(_tensor_bytes(graph, i)) for i, t in enumerate(graph.tensors) if not t.is_constant
    }
    peak_bytes, peak_at = peak(steps, sizes, [str(i) for i in graph.inputs], [str(i) for i in graph.outputs])
    return report("tflite", layers, params, param_bytes, peak_bytes, peak_at)


def _tensor_bytes(graph: Graph, index: int) -> int:
    tensor = graph.tensors[index]
    return int(np.prod(tensor.shape)) * tensor.dtype.itemsize
