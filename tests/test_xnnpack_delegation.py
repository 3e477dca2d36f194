"""Which ops LiteRT's XNNPACK delegate took (targets/tflite/delegation.py), on real interpreters."""

from __future__ import annotations

import numpy as np

from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.delegation import delegated_ops, delegation_line
from edgeq.targets.tflite.interpreters import litert_interpreter
from edgeq.tflite_format.flatbuffer import Graph, Quantization, Tensor, write

SHAPE = (1, 8, 8, 4)


def _prelu_between_convolutions(float_island: bool) -> bytes:
    """CONV_2D -> PRELU (int8, or DEQUANTIZE -> float PRELU -> QUANTIZE) -> CONV_2D, per-channel slopes."""
    graph = Graph(inputs=[0], outputs=[])
    q = Quantization
    graph.add_tensor(Tensor("x", SHAPE, np.int8, q(0.05, -3)))
    weights = np.eye(4, dtype=np.int8).reshape(4, 1, 1, 4) * 100
    graph.add_tensor(Tensor("w", (4, 1, 1, 4), np.int8, q(np.full(4, 0.01, np.float32), 0, 0), weights))
    graph.add_tensor(Tensor("b", (4,), np.int32, q(np.full(4, 0.0005, np.float32), 0), np.zeros(4, np.int32)))
    graph.add_tensor(Tensor("h", SHAPE, np.int8, q(0.06, 0)))
    conv = {"Padding": "SAME", "StrideW": 1, "StrideH": 1, "DilationWFactor": 1, "DilationHFactor": 1}
    lookup("CONV_2D").add_to(graph, [0, 1, 2], [3], conv)
    slopes = np.array([0.1, 0.2, 0.25, 0.5], np.float32).reshape(1, 1, 4)
    if float_island:
        graph.add_tensor(Tensor("hf", SHAPE, np.float32))
        graph.add_tensor(Tensor("a", (1, 1, 4), np.float32, None, slopes))
        graph.add_tensor(Tensor("pf", SHAPE, np.float32))
        graph.add_tensor(Tensor("p", SHAPE, np.int8, q(0.06, 0)))
        lookup("DEQUANTIZE").add_to(graph, [3], [4])
        lookup("PRELU").add_to(graph, [4, 5], [6])
        lookup("QUANTIZE").add_to(graph, [6], [7])
    else:
        graph.add_tensor(Tensor("a", (1, 1, 4), np.int8, q(0.004, 0), np.round(slopes / 0.004).astype(np.int8)))
        graph.add_tensor(Tensor("p", SHAPE, np.int8, q(0.06, 0)))
        lookup("PRELU").add_to(graph, [3, 4], [5])
    prelu_out = len(graph.tensors) - 1
    graph.add_tensor(Tensor("y", SHAPE, np.int8, q(0.07, 0)))
    lookup("CONV_2D").add_to(graph, [prelu_out, 1, 2], [len(graph.tensors) - 1], conv)
    graph.outputs = [len(graph.tensors) - 1]
    return write(graph)


def test_an_int8_prelu_is_left_to_the_builtin_kernels_and_splits_the_delegated_runs():
    delegation = delegated_ops(litert_interpreter(_prelu_between_convolutions(float_island=False)))
    assert delegation == {"ops": 3, "delegated": 2, "runs": 2, "builtin": {"PRELU": 1}}
    assert delegation_line(delegation) == (
        "XNNPACK took 2 of 3 ops in 2 run(s); left to LiteRT's builtin kernels: PRELU x1"
    )


def test_a_float_prelu_between_quantize_and_dequantize_is_delegated_whole():
    delegation = delegated_ops(litert_interpreter(_prelu_between_convolutions(float_island=True)))
    assert delegation == {"ops": 5, "delegated": 5, "runs": 1, "builtin": {}}
