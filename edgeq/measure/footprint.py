"""Static analysis of a model, shared by every format: layers, parameters, MACs and peak activation memory.

Computed without running the model, from shapes alone; each format's reader (the targets' ``analyze``) turns its
graph into layer rows and liveness steps, and this module sums them up.

Layers. One row per compute operator ``{"name", "op", "kind", "macs", "params", "output_bytes"}``, kind one of
conv, depthwise, fully_connected, pool, elementwise, data_movement (or other). Quantization scales and zero points
are not counted as parameters, and neither are index tensors (shapes, axes, paddings, permutations) nor the
constant operands of pools and data movement.

MACs (multiply-accumulates), for batch 1 (a symbolic batch dimension counts as 1):

* convolution: output elements x kernel height x kernel width x input channels per group (a depthwise
  convolution has one input channel per group);
* transposed convolution: input elements x kernel size x output channels per group;
* fully connected / matrix product: output elements x the reduced dimension;
* everything else counts 0 MACs: pooling, means, element-wise ops and activations are adds, compares or
  per-element multiplies, not multiply-accumulates, and are reported through their output size instead.

Peak activation memory, by tensor liveness in execution order (the operators' order in the file, which is the
order TFLite Micro and a sequential executor run them in). A tensor lives from the operator that writes it to the
last operator that reads it, both included, since an operator's inputs and outputs exist at the same time.
Graph inputs live from the start, graph outputs until the end. The peak is the largest sum of the live tensors'
sizes over the operators. No allocator can place the live tensors of one step in less memory, so the peak is a
lower bound of a runtime's activation memory (TFLite Micro's arena adds persistent data, kernel scratch buffers
and the planner's packing losses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_PARAMETERS = {"data_movement", "pool"}  # their constant inputs are shapes, axes and paddings


@dataclass
class Step:
    """One operator as the liveness analysis sees it: the activation tensors it reads and writes."""

    name: str
    reads: list[str]
    writes: list[str]


def live_ranges(steps: list[Step], inputs: list[str], outputs: list[str]) -> dict[str, tuple[int, int]]:
    """Tensor -> the first and last step (both included) at which it is live (module docstring)."""
    first: dict[str, int] = {name: 0 for name in inputs}
    last: dict[str, int] = {name: len(steps) - 1 for name in outputs}
    for index, step in enumerate(steps):
        for name in step.reads:  # read before any step writes it: it exists from the start, like an input
            first.setdefault(name, 0)
        for name in step.writes:
            first.setdefault(name, index)
        for name in [*step.reads, *step.writes]:
            last[name] = max(last.get(name, index), index)
    return {name: (start, last.get(name, start)) for name, start in first.items()}


def peak(
    steps: list[Step], sizes: dict[str, int], inputs: list[str], outputs: list[str]
) -> tuple[int, str]:
    """The largest total size of the tensors live at one step, and that step's name."""
    if not steps:
        return sum(sizes[name] for name in {*inputs, *outputs}), ""
    live = np.zeros(len(steps), np.int64)
    for name, (start, end) in live_ranges(steps, inputs, outputs).items():
        live[start : end + 1] += sizes[name]
    at = int(np.argmax(live))
    return int(live[at]), steps[at].name


def report(fmt: str, layers: list[dict], params: int, param_bytes: int, peak: int, peak_at: str) -> dict:
    return {
        "format": fmt,
        "layers": layers,
        "summary": {
            "params": int(params),
            "param_bytes": int(param_bytes),
            "macs": int(sum(layer["macs"] for layer in layers)),
            "peak_activation_bytes": peak,
            "peak_at": peak_at,
        },
    }


def format_analysis(result: dict) -> str:
    """A plain-text table of the layers and the summary."""
    lines = [f"{'layer':<48} {'op':<20} {'MACs':>12} {'params':>10} {'output B':>10}"]
    for layer in result["layers"]:
        lines.append(
            f"{layer['name'][:48]:<48} {layer['op']:<20} {layer['macs']:>12,} {layer['params']:>10,} "
            f"{layer['output_bytes']:>10,}"
        )
    s = result["summary"]
    lines.append(
        f"total: {s['macs']:,} MACs, {s['params']:,} parameters ({s['param_bytes']:,} B), peak activation memory "
        f"{s['peak_activation_bytes']:,} B at {s['peak_at']}"
    )
    return "\n".join(lines)
