"""The sound model the validator tests mutate, and the helpers they share (tests/test_tflite_validate*.py).

``sound_graph`` is written by the rules of docs/tflite-format.md; a test mutates a fresh copy (``mutated``) and
checks that the validator names the broken rule (``assert_reported``), and where the runtimes silently compute
something else, that they do (``differs``).
"""

from __future__ import annotations

import numpy as np
from tflite_cases import activation, constant

from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.validate import validate_model
from edgeq.tflite_format.flatbuffer import Graph, Operator, Tensor, write

OUTPUTS = ["conv1", "dw", "logits", "probs", "sigmoid"]


def sound_graph() -> Graph:
    """QUANTIZE, CONV_2D, DEPTHWISE (multiplier 2), PAD, AVERAGE_POOL, MAX_POOL, CONCATENATION, RESHAPE,
    FULLY_CONNECTED, SOFTMAX and LOGISTIC, written by the rules; intermediates are graph outputs to compare."""
    rng = np.random.default_rng(0)
    graph = Graph()

    def add(tensor: Tensor) -> int:
        return graph.add_tensor(tensor)

    def op(opcode: str, inputs: list[int], outputs: list[int], **options) -> None:
        lookup(opcode).add_to(graph, inputs, outputs, options)

    def weights(name, shape, input_scale, axis):
        channels = shape[axis]
        scales = rng.uniform(0.004, 0.02, channels).astype(np.float32)
        w = add(constant(f"{name}.w", rng.integers(-127, 128, shape, dtype=np.int8), scales, 0, axis))
        bias_scales = (np.float64(np.float32(input_scale)) * scales).astype(np.float32)
        b = add(constant(f"{name}.b", rng.integers(-300, 300, channels).astype(np.int32), bias_scales, 0))
        return w, b

    x = add(Tensor("x", (1, 8, 8, 3), np.float32))
    xq = add(activation("x.q", (1, 8, 8, 3), 0.02, -5))
    op("QUANTIZE", [x], [xq])
    w1, b1 = weights("conv1", (8, 3, 3, 3), 0.02, 0)
    c1 = add(activation("conv1", (1, 8, 8, 8), 0.03, -128))
    op("CONV_2D", [xq, w1, b1], [c1], Padding="SAME", StrideW=1, StrideH=1, FusedActivationFunction="RELU")
    w2, b2 = weights("dw", (1, 3, 3, 16), 0.03, 3)
    dw = add(activation("dw", (1, 4, 4, 16), 0.05, 3))
    op("DEPTHWISE_CONV_2D", [c1, w2, b2], [dw], Padding="SAME", StrideW=2, StrideH=2, DepthMultiplier=2)
    paddings = add(constant("pad.paddings", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)))
    padded = add(activation("padded", (1, 6, 6, 16), 0.05, 3))
    op("PAD", [dw, paddings], [padded])
    pool = {"StrideW": 1, "StrideH": 1, "FilterWidth": 3, "FilterHeight": 3, "Padding": "VALID"}
    avg = add(activation("avgpool", (1, 4, 4, 16), 0.05, 3))
    op("AVERAGE_POOL_2D", [padded], [avg], **pool)
    pool.update(StrideW=2, StrideH=2, FilterWidth=2, FilterHeight=2)
    mx = add(activation("maxpool", (1, 2, 2, 16), 0.05, 3))
    op("MAX_POOL_2D", [avg], [mx], **pool)
    cat = add(activation("concat", (1, 2, 2, 32), 0.05, 3))
    op("CONCATENATION", [mx, mx], [cat], Axis=-1)
    shape = add(constant("flat.shape", np.array([1, 128], np.int32)))
    flat = add(activation("flat", (1, 128), 0.05, 3))
    op("RESHAPE", [cat, shape], [flat])
    w3, b3 = weights("fc", (10, 128), 0.05, 0)
    logits = add(activation("logits", (1, 10), 0.25, 2))
    op("FULLY_CONNECTED", [flat, w3, b3], [logits])
    probs = add(activation("probs", (1, 10), 1 / 256, -128))
    op("SOFTMAX", [logits], [probs], Beta=1.0)
    sigmoid = add(activation("sigmoid", (1, 10), 1 / 256, -128))
    op("LOGISTIC", [logits], [sigmoid])
    graph.inputs = [x]
    graph.outputs = [index(graph, name) for name in OUTPUTS]
    return graph


def index(graph: Graph, name: str) -> int:
    return next(i for i, t in enumerate(graph.tensors) if t.name == name)


def tensor(graph: Graph, name: str) -> Tensor:
    return graph.tensors[index(graph, name)]


def operator(graph: Graph, opcode: str) -> Operator:
    return next(op for op in graph.operators if op.opcode == opcode)


SAMPLE = np.random.default_rng(1).normal(0, 1, (1, 8, 8, 3)).astype(np.float32)


def mutated(mutate) -> bytes:
    graph = sound_graph()
    mutate(graph)
    return write(graph)


def assert_reported(model_bytes: bytes, *fragments: str) -> None:
    violations = validate_model(model_bytes)
    assert any(all(f in v for f in fragments) for v in violations), violations


def differs(outputs: list[np.ndarray], expected: list[np.ndarray]) -> bool:
    return any(
        got.shape != want.shape or np.any(got != want) for got, want in zip(outputs, expected, strict=True)
    )
