"""Ranges of the activations that layers with constant weights read, chosen by the error in those layers' outputs.

A calibration method picks a tensor's range from its own values: percentile 99.99 (the default) drops the rarest
0.01% of them, which on a CNN's Relu outputs costs nothing and buys resolution. Transformers break that
assumption: a few tokens carry "massive activations" (Sun et al. 2024, "Massive Activations in Large Language
Models"; the outlier features of Dettmers et al. 2022, "LLM.int8()") in a few channels, tens to hundreds of times
the typical magnitude, and the layers after them depend on those values. Measured on all-MiniLM-L6-v2 (8
sentences), the first feed-forward block's output layer, whose input is a GELU output, gave its output an SQNR
of 0.3 dB with the percentile range of that input; on paraphrase-MiniLM-L3 (32 sentences), 2.1 dB against 31.3 dB
with the input's min/max range.

So for every activation X that a MatMul or Gemm multiplies by a constant matrix W (rows of X along its last axis),
the range comes from the candidate, the recipe's calibrated range or X's observed [min, max], whose quantization
error does least harm in the layers that read X:

    error(range) = sum over readers W of || (Q_range(X) - X) W ||^2     on the first ROWS rows seen in calibration

with Q_range the per-tensor quantize-dequantize of the activation type (the grid of activation_encoding). The same
choice holds for the whole encoding group of X (tensors joined by data movement share one encoding): each member
takes its min/max range where min/max wins. Only groups that nothing but such products reads are chosen this way:
where another op reads the tensor too (a block's input that also feeds the residual Add), the products' error is
not all the error, and the calibrated range stays. Convolutions are left to the calibration method: their weights are
no plain matrix of X's last axis, and per-pixel outliers have not been seen to matter there.

The choice is made where the products' outputs stay float, in the ONNX Runtime placement of a transformer
(edgeq.quantization.placement): there the error in the products' outputs is the error the range causes. In an int8
.tflite every product's output is rounded again to its own range, and the local criterion misled: PP-OCRv4 rec's
.tflite lost 2 points of CTC string agreement (0.635 -> 0.615) with its ranges chosen this way.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.quantization.plan import QuantPlan
from edgeq.quantization.qparams import QType, activation_encoding

ROWS = 1024  # rows of each tensor kept from calibration: 64 tokens x 16 sentences, 6 MB at 1536 channels


def weight_readers(graph: ir.Graph, names: set[str]) -> dict[str, list[np.ndarray]]:
    """For each tensor of NAMES that a MatMul or Gemm multiplies by a constant 2-D matrix: those matrices, laid
    out as [channels of the tensor's last axis, outputs]."""
    readers: dict[str, list[np.ndarray]] = {}
    for node in graph:
        if node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2 or node.inputs[0] is None:
            continue
        x, w = node.inputs[0], node.inputs[1]
        if x.name not in names or w is None or w.const_value is None or len(w.const_value.shape) != 2:
            continue
        if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
            continue
        matrix = w.const_value.numpy().astype(np.float32)
        if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
            matrix = matrix.T
        readers.setdefault(x.name, []).append(matrix)
    return readers


def choose_ranges(
    plan: QuantPlan,
    graph: ir.Graph,
    ranges: dict[str, tuple[float, float]],
    minmax: dict[str, tuple[float, float]],
    rows: dict[str, np.ndarray],
    qtype: QType,
) -> tuple[dict[str, tuple[float, float]], dict[str, dict]]:
    """RANGES with the min/max ranges of the groups where min/max errs less in the weight layers reading them
    (ROWS: tensor -> its sampled rows), and what was measured for every group compared: tensor -> SQNR in dB of
    its readers' outputs under either range, and the range kept."""
    readers = weight_readers(graph, set(rows))
    values = {v.name: v for v in graph.inputs} | {v.name: v for node in graph for v in node.outputs}
    chosen, measured = dict(ranges), {}
    for members in plan.groups().values():
        sampled = [m for m in members if m in readers and m in ranges]
        if not sampled or any(m in plan.fixed_output or m in plan.softmax_inputs for m in members):
            continue
        if not _only_products_read(members, values, readers):
            continue
        candidates = {"calibrated": _union(ranges, members), "minmax": _union(minmax, members)}
        if candidates["calibrated"] == candidates["minmax"]:
            continue
        sqnr = {
            kind: _reader_sqnr(sampled, rows, readers, activation_encoding(*bounds, qtype), qtype)
            for kind, bounds in candidates.items()
        }
        kept = max(sqnr, key=lambda kind: (sqnr[kind], kind == "calibrated"))
        measured[sampled[0]] = {**{f"{kind}_db": round(float(v), 2) for kind, v in sqnr.items()}, "kept": kept}
        if kept == "minmax":
            chosen.update((m, minmax[m]) for m in members if m in minmax)
    return chosen, measured


def _only_products_read(members: list[str], values: dict[str, ir.Value], readers) -> bool:
    """Whether every reader of the group's tensors is a product with a constant matrix or moves data within the
    group: the error measured is then all the error the range causes. (In an int8 .tflite a layer norm's output
    also feeds the residual Add, whose error the products do not see.)"""
    group = set(members)
    for name in members:
        value = values.get(name)
        if value is None:
            continue
        for use in value.uses():
            node = use.node
            product = node.op_type in ("MatMul", "Gemm") and use.idx == 0 and name in readers
            if not product and not any(out.name in group for out in node.outputs):
                return False
    return True


def _union(ranges: dict[str, tuple[float, float]], members: list[str]) -> tuple[float, float]:
    known = [ranges[m] for m in members if m in ranges]
    return min(r[0] for r in known), max(r[1] for r in known)


def _reader_sqnr(names, rows, readers, encoding, qtype: QType) -> float:
    """SQNR (dB) of the readers' outputs when their inputs NAMES are quantized with ENCODING."""
    signal = noise = 0.0
    scale, zero = float(encoding.scale), encoding.zero_point
    for name in names:
        x = np.nan_to_num(rows[name])
        error = (np.clip(np.rint(x / scale) + zero, qtype.qmin, qtype.qmax) - zero) * scale - x
        for matrix in readers[name]:
            signal += float(np.square(x @ matrix).sum())
            noise += float(np.square(error @ matrix).sum())
    return 10.0 * np.log10(signal / noise) if noise > 0 else np.inf
