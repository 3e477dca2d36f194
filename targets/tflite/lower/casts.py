"""ONNX Cast of an integer tensor to float32 (quantized after it) -> CAST int32 -> float32, then QUANTIZE:

    out = clamp(round_half_away(float32(x) / S) + zp)          (edgeq/reference/cast.py, quantize.py)

float32(x) is exact for |x| < 2^24 (masks, ids, counts). The integer tensor is an input of the graph
(integers.py); passes.integer_casts moves such Casts to where the integers enter, and the quantization plan
gives the Cast's output its own calibrated encoding (edgeq.quantization.integer_sources). At float precision
the CAST alone. Casts of float tensors are not lowered (the front end removes those that change nothing).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import Builtin, input_shape, register
from edgeq.targets.tflite.lower.context import LoweringContext, static_shape
from edgeq.targets.tflite.lower.edges import QUANTIZE
from edgeq.targets.tflite.lower.integers import is_integer
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.tflite_format.graph import TENSOR_TYPES, Graph, Operator


def _cast_version(graph: Graph, op: Operator) -> int:
    types = {graph.tensors[op.inputs[0]].dtype, graph.tensors[op.outputs[0]].dtype}
    return 3 if np.dtype(np.int8) in types else 1


CAST = register(
    Builtin(
        "CAST",
        options="CastOptions",
        micro_resolver="AddCast",
        kind="elementwise",
        version=_cast_version,
        output_shape=input_shape,
        verified={
            "int8": "int32 -> float32 before a QUANTIZE: bit-exact with TFLite Micro and LiteRT BUILTIN_REF "
            "(reference kernel edgeq/reference/cast.py); ONNX Runtime QDQ within 1 LSB (QUANTIZE's rounding)",
        },
    )
)


@lowers("Cast")
def cast(ctx: LoweringContext, node: ir.Node) -> None:
    value = node.inputs[0]
    act = ctx.values.get(id(value))
    if not is_integer(value) or act is None:
        raise unsupported(node, f"a Cast of {value.name} ({value.dtype}), which is not integer data", "dtype")
    out, _ = ctx.output(node, static_shape(value.shape), act.perm)
    options = {
        "InDataType": TENSOR_TYPES[np.dtype(np.int32)],
        "OutDataType": TENSOR_TYPES[np.dtype(np.float32)],
    }
    if ctx.float:
        ctx.add_op(CAST, [act.index], [out], options)
        return
    real = ctx.tensor(f"{node.name}_float32", ctx.graph.tensors[act.index].shape, np.float32)
    ctx.add_op(CAST, [act.index], [real], options)
    ctx.add_op(QUANTIZE, [real], [out])
