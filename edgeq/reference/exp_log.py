"""EXP and LOG, int8: 256-entry tables (edgeq/reference/lookup_table.py) of LiteRT's kernels (exp.cc;
elementwise.cc LogLUTPrepare):

    EXP:  exp(v)
    LOG:  log(v) for v > 0; for v <= 0 the output grid's lowest value, S_out * (-128 - zp_out)

TFLite Micro has float32 kernels only for both (measured, tflite-micro 0.dev20261023: "input->type !=
kTfLiteFloat32 (INT8 != FLOAT32)"), so these are LiteRT's.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.lookup_table import libm, look_up, populate
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("EXP", "LOG")


def log_transform(output_scale, output_zero_point: int):
    lowest = np.float32(-128 - output_zero_point) * np.float32(output_scale)
    log = libm("logf", np.log)
    return lambda v: np.where(v <= 0, lowest, log(np.maximum(v, np.float32(1e-30))))


def evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray]) -> list[np.ndarray]:
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    out_scale, out_zp = output_q.scale[0], int(output_q.zero_point[0])
    transform = libm("expf", np.exp) if op.opcode == "EXP" else log_transform(out_scale, out_zp)
    table = populate(transform, input_q.scale[0], int(input_q.zero_point[0]), out_scale, out_zp)
    return [look_up(table, inputs[0])]
