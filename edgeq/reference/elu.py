"""ELU, int8 (a 256-entry table, edgeq/reference/lookup_table.py): elu(v) = v for v >= 0, exp(v) - 1 below.

TFLite Micro (micro/kernels/elu.cc) fills the table with ``std::exp(v) - 1.0f``, LiteRT (activations.cc
EluPrepare) with ``std::expm1(v)``: near 0 the two differ by float32 rounding, which changes an output only at a
rounding tie. LiteRT's BUILTIN_REF resolver has no ELU at all (measured, ai-edge-litert 2.3.0: "Didn't find op for
builtin opcode 'ELU'"); its default kernels have it. evaluate() follows TFLite Micro unless asked for
transform="expm1", LiteRT's.

Neither runtime has an int16 ELU (measured: TFLite Micro "ELU only supports float32 and int8 currently, got
INT16", LiteRT's default kernels "Only float32 and int8 is supported currently, got INT16"), so this kernel
refuses int16.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import UnsupportedError
from edgeq.reference.lookup_table import libm, look_up, populate
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("ELU",)
LITERT_VARIANT = {"transform": "expm1"}  # LiteRT's default kernels (BUILTIN_REF has no ELU)


def elu_transform(transform: str):
    """The float32 function the kernel's table is filled with: TFLite Micro's "exp-1" or LiteRT's "expm1"."""
    if transform == "exp-1":
        exp = libm("expf", np.exp)
        return lambda v: np.where(v < 0, exp(v) - np.float32(1.0), v)
    if transform == "expm1":
        expm1 = libm("expm1f", np.expm1)
        return lambda v: np.where(v < 0, expm1(v), v)
    raise ValueError(f"unknown ELU transform {transform!r}")


def evaluate(
    graph: Graph, op: Operator, inputs: list[np.ndarray], transform: str = "exp-1"
) -> list[np.ndarray]:
    if graph.tensors[op.inputs[0]].dtype == np.int16:
        raise UnsupportedError("ELU int16 is not supported by the integer reference")
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    table = populate(
        elu_transform(transform),
        input_q.scale[0],
        int(input_q.zero_point[0]),
        output_q.scale[0],
        int(output_q.zero_point[0]),
    )
    return [look_up(table, inputs[0])]
