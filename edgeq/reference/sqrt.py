"""SQRT, int8 and int16, as LiteRT computes it (elementwise.cc SqrtEvalQuantized<T>); TFLite Micro has a float32
kernel only (measured for int16 too, tflite-micro 0.dev20261023: "input->type != expected_type (INT16 != FLOAT32)").

Each element is dequantized, rooted and requantized in float32, truncating toward zero (not rounding):

    y = clamp(int(sqrtf(S_in * float32(x - zp_in)) / S_out) + zp_out, T_min, T_max)

A negative dequantized input makes LiteRT fail the invocation ("Sqrt is only defined for non-negative values");
the output here holds the grid's lowest value there (T_min), and the lowering only emits int8 SQRT for an input
whose encoding has no negative values (zp_in = -128). int16 (zero points 0 in the 16x8 scheme) is the same
arithmetic, measured bit-exact over all 32768 non-negative inputs (ai-edge-litert 2.3.0); as a symmetric int16
encoding always has negative values, the lowering runs an int16 Sqrt as a float island instead.

float32: ``std::sqrt`` in both runtimes, correctly rounded (IEEE 754), so numpy's float32 sqrt gives the same bits
(NaN below 0).
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.lookup_table import look_up
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("SQRT",)
FLOAT32 = True


def sqrt_quantized(x, input_q, output_q, dtype) -> np.ndarray:
    """SqrtEvalQuantized<DTYPE> on the integers X (negative dequantized inputs: DTYPE's lowest value)."""
    info = np.iinfo(dtype)
    dequantized = np.float32(input_q.scale[0]) * (np.asarray(x, np.int64) - int(input_q.zero_point[0])).astype(
        np.float32
    )
    root = np.sqrt(np.maximum(dequantized, np.float32(0)))
    quantized = np.trunc(root / np.float32(output_q.scale[0])).astype(np.int64) + int(output_q.zero_point[0])
    return np.where(dequantized < 0, info.min, np.clip(quantized, info.min, info.max)).astype(dtype)


def evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if inputs[0].dtype == np.float32:
        with np.errstate(invalid="ignore"):
            return [np.sqrt(inputs[0]).astype(np.float32)]
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    if graph.tensors[op.inputs[0]].dtype == np.int16:
        return [sqrt_quantized(inputs[0], input_q, output_q, np.int16)]
    table = sqrt_quantized(np.arange(-128, 128), input_q, output_q, np.int8)
    return [look_up(table, inputs[0])]
