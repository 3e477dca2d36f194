"""EXP and LOG, int8 or int16: 256- or 513-entry tables (edgeq/reference/lookup_table.py) of LiteRT's kernels (exp.cc;
elementwise.cc LogLUTPrepare):

    EXP:  exp(v)
    LOG:  log(v) for v > 0; for v <= 0 the output grid's lowest value, S_out * (-128 - zp_out)

int16 (the same kernels' int16 paths; zero points 0 in the 16x8 scheme): the same float32 functions in 513-entry
tables (lookup_table.populate_int16, float32; LOG's lowest value S_out * (-32768 - zp_out)), read with the
interpolating look_up_int16. Measured bit-exact over all 65536 inputs (ai-edge-litert 2.3.0), including input
ranges where exp overflows float32: table entries that become NaN read as 0 and neighbours 32767 / -32768
interpolate through int16 wrap-around, as LiteRT's do (lookup_table.populate_int16, look_up_int16).

TFLite Micro has float32 kernels only for both (measured, tflite-micro 0.dev20261023: "input->type !=
kTfLiteFloat32 (INT8 != FLOAT32)", and the same for INT16), so these are LiteRT's.
"""

from __future__ import annotations

import numpy as np

from edgeq.reference.lookup_table import libm, look_up, look_up_int16, populate, populate_int16
from edgeq.tflite_format.flatbuffer import Graph, Operator

OPCODES = ("EXP", "LOG")


def log_transform(output_scale, output_zero_point: int, lowest_integer: int = -128):
    lowest = np.float32(lowest_integer - output_zero_point) * np.float32(output_scale)
    log = libm("logf", np.log)
    return lambda v: np.where(v <= 0, lowest, log(np.maximum(v, np.float32(1e-30))))


def evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray]) -> list[np.ndarray]:
    input_q, output_q = graph.tensors[op.inputs[0]].quantization, graph.tensors[op.outputs[0]].quantization
    int16 = graph.tensors[op.inputs[0]].dtype == np.int16
    out_scale, out_zp = output_q.scale[0], int(output_q.zero_point[0])
    if op.opcode == "EXP":
        transform = libm("expf", np.exp)
    else:
        transform = log_transform(out_scale, out_zp, -32768 if int16 else -128)
    table = (populate_int16 if int16 else populate)(
        transform, input_q.scale[0], int(input_q.zero_point[0]), out_scale, out_zp
    )
    return [look_up_int16(table, inputs[0]).astype(np.int16) if int16 else look_up(table, inputs[0])]
