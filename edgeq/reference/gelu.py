"""GELU, int8 or int16 (a 256- or 513-entry table, edgeq/reference/lookup_table.py; LiteRT activations.cc GeluPrepare with
reference_ops::GeluTransform / GeluTransformApproximate):

    exact        gelu(v) = 0.5 v erfc(-v / sqrt 2)              (GeluOptions.approximate = false; = 0.5 v (1 + erf(v / sqrt 2)),
                                                                written with erfc as LiteRT does: measured, the
                                                                1 + erf form rounds differently near v = 5.4)
    approximate  gelu(v) = 0.5 v (1 + tanh(sqrt(2 / pi) (v + 0.044715 v^3)))

int16 (LiteRT's GeluPrepare/GeluEval for int16): the same float32 function in a 513-entry table
(lookup_table.populate_int16, float32), read with the interpolating look_up_int16 (measured bit-exact over all
65536 inputs, both forms, ai-edge-litert 2.3.0; zero points 0 in the 16x8 scheme).

TFLite Micro's Python interpreter has no GELU kernel (measured, tflite-micro 0.dev20261023: the model does not
load), so this kernel is LiteRT's.
"""

from __future__ import annotations

import math

import numpy as np

from edgeq.reference.lookup_table import libm, look_up, look_up_int16, populate, populate_int16
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("GELU",)

MINUS_SQRT_HALF = np.float32(-math.sqrt(0.5))
SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))


def gelu_transform(approximate: bool):
    """The float32 function LiteRT fills the table with."""
    half = np.float32(0.5)
    one = np.float32(1.0)
    erfc = libm("erfcf", np.vectorize(math.erfc, otypes=[np.float64]))
    tanh = libm("tanhf", np.tanh)

    def exact(v):
        return half * v * erfc(v * MINUS_SQRT_HALF)

    def tanh_form(v):
        return half * v * (one + tanh(SQRT_2_OVER_PI * (v + np.float32(0.044715) * v * v * v)))

    return tanh_form if approximate else exact


def evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray]) -> list[np.ndarray]:
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    int16 = graph.tensors[op.inputs[0]].dtype == np.int16
    table = (populate_int16 if int16 else populate)(
        gelu_transform(bool(op.options.get("Approximate", False))),
        input_q.scale[0],
        int(input_q.zero_point[0]),
        output_q.scale[0],
        int(output_q.zero_point[0]),
    )
    return [look_up_int16(table, inputs[0]).astype(np.int16) if int16 else look_up(table, inputs[0])]
