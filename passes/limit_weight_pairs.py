"""Keep every GEMM layer's weight pairs within the CPU's limit after the passes that round weights again.

InsertQDQPass chooses scales under which no two integer weights of a channel of a layer ONNX Runtime runs as a
u8s8 GEMM add up to more than L in magnitude (edgeq.quantization.weight_pairs; L = 128 on x86 without VNNI, where
a larger pair overflows the kernel's int16 sums). AdaRound rounds weights up or down as it learns, and dyadic
scales re-round them: either may move a pair one step past L. For each such layer (a Conv, Gemm or MatMul whose
weights are a DequantizeLinear of constant integers), every channel whose two largest magnitudes exceed L has its
largest moved one step toward zero until they do not: a change of one step on a few weights, where without it
the deployed kernel would compute something else. The report counts the weights moved.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgeq.passes.stage import StageResult
from edgeq.quantization.cpus import runs_as_gemm
from edgeq.quantization.weight_pairs import limit_pairs, pair_sums


@dataclass
class LimitWeightPairsResult(StageResult):
    weights_moved: int = 0

    def summary(self) -> dict:
        return {"weights_moved": self.weights_moved}


def _output_channel_axis(node: ir.Node, rank: int) -> int:
    """The weights' output-channel axis (pairs never span two channels, whether the scale is per channel or not)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    return rank - 1  # MatMul


class LimitWeightPairsPass(ir.passes.InPlacePass):
    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def call(self, model: ir.Model) -> LimitWeightPairsResult:
        moved = 0
        for integers, q, axis in gemm_weights(model):
            limited = limit_pairs(q, axis, self.limit)
            changed = int(np.count_nonzero(limited != q))
            if changed:
                integers.const_value = ir.tensor(limited, name=integers.name)
                moved += changed
        return LimitWeightPairsResult(model, moved > 0, moved)


def gemm_weights(model: ir.Model) -> Iterator[tuple[ir.Value, np.ndarray, int]]:
    """(the stored integers, their array, the output-channel axis) of each layer ONNX Runtime runs as a u8s8 GEMM
    whose weights are a DequantizeLinear of constant integers."""
    for node in model.graph:
        dq = node.inputs[1].producer() if len(node.inputs) > 1 and node.inputs[1] is not None else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.inputs[0].const_value is None:
            continue
        q = dq.inputs[0].const_value.numpy()
        if runs_as_gemm(node.op_type, q.shape):
            yield dq.inputs[0], q, _output_channel_axis(node, q.ndim)


def pairs_within(model: ir.Model, limit: int) -> bool:
    """Are MODEL's GEMM weight pairs within LIMIT (so ONNX Runtime's fast kernels compute it exactly on any CPU)?"""
    return all(pair_sums(q, axis).max(initial=0) <= limit for _, q, axis in gemm_weights(model))
