"""Run a TFLite graph with TFLite's reference integer kernels, in numpy: the oracle every target is checked against.

Each builtin has one kernel module in this package (one op per file, like TFLite Micro's reference kernels) with

    evaluate(graph: Graph, op: Operator, inputs: list[np.ndarray | None]) -> list[np.ndarray]

``inputs`` follows ``op.inputs`` (None for an absent optional input; constants are their stored arrays). Kernels read
shapes, quantization and options from ``graph.tensors`` and ``op.options``. Activations carry a leading batch axis
that may be larger than the graph's (the executor runs many samples at once): kernels never hard-code the batch.

``semantics`` picks whose reference kernels to follow where they differ: "tflite-micro" (the default, and the
contract of every edgeq target) or "litert": LiteRT's BUILTIN_REF FULLY_CONNECTED rounds once, its LOGISTIC looks
up a float table and its HARD_SWISH computes one multiplier in float32 (LITERT_VARIANTS; each differs from TFLite
Micro by one step on rare inputs). Everything else is the same in both.
"""

from __future__ import annotations

import functools
import importlib

import numpy as np

from edgeq.errors import EdgeqError
from edgeq.tflite_format.flatbuffer import Graph

KERNEL_MODULES = {
    "ADD": "add",
    "AVERAGE_POOL_2D": "pooling",
    "CONCATENATION": "concatenation",
    "CONV_2D": "conv",
    "DEPTHWISE_CONV_2D": "depthwise_conv",
    "DEQUANTIZE": "dequantize",
    "FULLY_CONNECTED": "fully_connected",
    "HARD_SWISH": "hard_swish",
    "LOGISTIC": "logistic",
    "MAXIMUM": "maximum_minimum",
    "MAX_POOL_2D": "pooling",
    "MEAN": "mean",
    "MINIMUM": "maximum_minimum",
    "MUL": "mul",
    "PAD": "pad",
    "PADV2": "pad",
    "QUANTIZE": "quantize",
    "RESHAPE": "reshape",
    "RESIZE_BILINEAR": "resize_bilinear",
    "RESIZE_NEAREST_NEIGHBOR": "resize_nearest_neighbor",
    "SOFTMAX": "softmax",
    "TRANSPOSE": "transpose",
}


SEMANTICS = ("tflite-micro", "litert")
# Where LiteRT 2.3's BUILTIN_REF kernels compute differently from TFLite Micro (each measured; see the kernels).
LITERT_VARIANTS = {
    "FULLY_CONNECTED": {"rounding": "single"},
    "LOGISTIC": {"method": "float-table"},
    "HARD_SWISH": {"output_multiplier_division": "float32"},
}


def kernel(opcode: str, semantics: str = "tflite-micro"):
    module = KERNEL_MODULES.get(opcode)
    if module is None:
        raise EdgeqError(f"the integer reference has no kernel for {opcode}")
    evaluate = importlib.import_module(f"edgeq.reference.{module}").evaluate
    if semantics == "litert":
        litert_variant = LITERT_VARIANTS.get(opcode)
        if litert_variant is not None:
            return functools.partial(evaluate, **litert_variant)
    return evaluate


def _feeds(graph: Graph, inputs: list[np.ndarray]) -> dict[int, np.ndarray]:
    if len(inputs) != len(graph.inputs):
        raise EdgeqError(f"the model has {len(graph.inputs)} inputs, got {len(inputs)}")
    values: dict[int, np.ndarray] = {}
    for index, array in zip(graph.inputs, inputs, strict=True):
        tensor = graph.tensors[index]
        array = np.asarray(array)
        if array.dtype != tensor.dtype or array.shape[1:] != tensor.shape[1:]:
            raise EdgeqError(
                f"input {tensor.name} wants {tensor.dtype} [N, {', '.join(map(str, tensor.shape[1:]))}], "
                f"got {array.dtype} {list(array.shape)}"
            )
        values[index] = array
    return values


def _execute(graph: Graph, values: dict[int, np.ndarray], first_op: int, semantics: str) -> None:
    """Run operators FIRST_OP.. in order, adding their outputs to VALUES."""
    for op in graph.operators[first_op:]:
        args = [None if i < 0 else values[i] if i in values else graph.tensors[i].data for i in op.inputs]
        results = kernel(op.opcode, semantics)(graph, op, args)
        for index, result in zip(op.outputs, results, strict=True):
            expected = graph.tensors[index].dtype
            if result.dtype != expected:
                raise AssertionError(f"{op.opcode} kernel returned {result.dtype} for a {expected} tensor")
            values[index] = result


def run(
    graph: Graph, inputs: list[np.ndarray], *, keep: bool = False, semantics: str = "tflite-micro"
) -> list[np.ndarray] | dict[int, np.ndarray]:
    """Outputs of GRAPH for INPUTS (one array per graph input, any batch size); with KEEP every tensor by index."""
    if semantics not in SEMANTICS:
        raise EdgeqError(f"semantics must be one of {', '.join(SEMANTICS)}")
    values = _feeds(graph, inputs)
    _execute(graph, values, 0, semantics)
    if keep:
        return values
    return [values[i] for i in graph.outputs]


def run_all_semantics(graph: Graph, inputs: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Outputs under every semantics; the ops before the first one whose kernels differ run once."""
    values = _feeds(graph, inputs)
    _execute(graph, values, 0, SEMANTICS[0])
    outputs = {SEMANTICS[0]: [values[i] for i in graph.outputs]}
    for semantics in SEMANTICS[1:]:
        first = next(
            (
                n
                for n, op in enumerate(graph.operators)
                if kernel(op.opcode, semantics) != kernel(op.opcode, SEMANTICS[0])
            ),
            len(graph.operators),
        )
        produced_later = {t for op in graph.operators[first:] for t in op.outputs}
        shared = {i: v for i, v in values.items() if i not in produced_later}
        _execute(graph, shared, first, semantics)
        outputs[semantics] = [shared[i] for i in graph.outputs]
    return outputs
