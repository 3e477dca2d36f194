"""ONNX Gemm and MatMul by a constant -> FULLY_CONNECTED (a MatMul of two activations: batch_matmul.py).

    acc[r, u] = sum_k (in[r, k] - zp_in) * w[u, k] + bias[u]
    out = clamp(MultiplyByQuantizedMultiplier(acc, M0[u], shift[u]) + zp_out, act_min, act_max)

over the rows r of the input read as [-1, in] (edgeq/reference/fully_connected.py). Weights are stored [out, in]
(Gemm's B transposed unless transB, MatMul's B transposed), per channel along dimension 0; Gemm's C is the bias,
MatMul has none (input -1). An input of rank > 2 keeps its leading dimensions (KeepNumDims). When the input is
a Flatten of a feature map absorbed by layout.py, the weight columns are permuted from ONNX's C,H,W order to
TFLite's H,W,C (``column_order``), so no TRANSPOSE is needed. Gemm's transA transposes the input first (a
TRANSPOSE: the rows must be contiguous); an input in another layout (a 1-D convolution's NLC map) is relaid out
to ONNX order. With int16 activations (16x8) the bias is stored as int64, which both runtimes read there.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgeq.errors import unsupported
from edgeq.targets.tflite.builtins import Builtin, register
from edgeq.targets.tflite.lower.batch_matmul import batch_matmul
from edgeq.targets.tflite.lower.context import Activation, LoweringContext, static_shape
from edgeq.targets.tflite.lower.layout import relayout
from edgeq.targets.tflite.lower.registry import lowers
from edgeq.targets.tflite.lower.weights import bias, weights
from edgeq.tflite_format.graph import Graph, Operator


def _version(graph: Graph, op: Operator) -> int:
    if len(op.inputs) == 2:  # an absent bias written as -1 keeps the 3-input signature
        return 6
    if op.options.get("KeepNumDims"):
        return 5
    return 4 if graph.tensors[op.inputs[0]].dtype == np.int8 else 1


def _output_shape(graph: Graph, op: Operator):
    """[elements / in, out], or the input's leading dimensions and out with KeepNumDims."""
    x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    if len(w.shape) != 2:
        return f"weights must be 2-D [out, in], have shape {w.shape}"
    units, depth = w.shape
    if op.options.get("KeepNumDims"):
        if not x.shape or x.shape[-1] != depth:
            return f"input shape {x.shape} does not end in the weights' {depth} inputs (KeepNumDims)"
        return (*x.shape[:-1], units)
    elements = int(np.prod(x.shape, dtype=np.int64))
    if elements % depth:
        return f"input shape {x.shape} does not split into rows of the weights' {depth} inputs"
    return (elements // depth, units)


def _macs(graph: Graph, op: Operator) -> int:  # weights [O, I]
    return int(np.prod(graph.tensors[op.outputs[0]].shape)) * graph.tensors[op.inputs[1]].shape[1]


FULLY_CONNECTED = register(
    Builtin(
        "FULLY_CONNECTED",
        options="FullyConnectedOptions",
        micro_resolver="AddFullyConnected",
        kind="fully_connected",
        version=_version,
        output_shape=_output_shape,
        macs=_macs,
        required_inputs=2,
        weight_axis=0,
        verified={
            "int8": "bit-exact with TFLite Micro (reference kernel edgeq/reference/fully_connected.py) and with "
            "LiteRT BUILTIN_REF under the reference's litert semantics (LiteRT rounds once: 1 LSB apart on rare "
            "ties); ONNX Runtime QDQ within 1 LSB",
            "int16": "bit-exact with TFLite Micro (reference kernel edgeq/reference/fully_connected.py) and with "
            "LiteRT BUILTIN_REF under the reference's litert semantics (LiteRT rounds acc * M in double, TFLite "
            "Micro with a 16-bit multiplier: 1 LSB apart on about 0.5 % of outputs)",
        },
        micro_types=("int8", "int16", "float32"),
    )
)


@lowers("Gemm")
def gemm(ctx: LoweringContext, node: ir.Node) -> None:
    w, scale, zero = ctx.constant(node.inputs[1], node)
    laid_out = w if node.attributes.get_int("transB", 0) else w.T  # -> [out, in]
    rows = _rows(ctx, node, transposed=bool(node.attributes.get_int("transA", 0)))
    _fully_connected(ctx, node, rows, laid_out, scale, zero, bias_input=2)


@lowers("MatMul")
def matmul(ctx: LoweringContext, node: ir.Node) -> None:
    if not ctx.is_quantized_constant(node.inputs[1]):
        batch_matmul(ctx, node)
        return
    w, scale, zero = ctx.constant(node.inputs[1], node)
    if w.ndim != 2:
        raise unsupported(node, "MatMul weights must be 2-D", "attribute")
    _fully_connected(ctx, node, _rows(ctx, node), w.T, scale, zero, bias_input=None)


def _rows(ctx: LoweringContext, node: ir.Node, transposed: bool = False) -> Activation:
    """The input as the TFLite tensor FULLY_CONNECTED reads as rows: in ONNX order, or A^T for Gemm's transA
    (ONNX's A laid out (1, 0)); a Flatten absorbed into the weights keeps its order (``column_order``)."""
    value = node.inputs[0]
    act = ctx.activation(value, node)
    if act.column_order is not None:
        return act
    order = (1, 0) if transposed else tuple(range(len(value.shape)))
    return relayout(ctx, act, static_shape(value.shape), order, f"{value.name}_rows")


def _fully_connected(ctx: LoweringContext, node: ir.Node, act: Activation, w, scale, zero, bias_input):
    rank = len(node.inputs[0].shape)
    if act.column_order is not None:
        w = w[:, act.column_order]
    w = np.ascontiguousarray(w)
    out_features = w.shape[0]
    bias_index = (
        bias(ctx, node, bias_input, act, scale, out_features)
        if bias_input is not None and len(node.inputs) > bias_input and node.inputs[bias_input] is not None
        else -1
    )
    w_index = weights(ctx, f"{node.name}.weight", w, scale, zero, 0)
    out_shape = static_shape(node.outputs[0].shape)
    out, activation = ctx.output(node, out_shape, tuple(range(rank)))
    options = {"FusedActivationFunction": activation, "KeepNumDims": rank > 2}
    ctx.add_op(FULLY_CONNECTED, [act.index, w_index, bias_index], [out], options)
