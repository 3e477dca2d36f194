"""Single-op TFLite models for kernel tests, and the three-way bit-exactness check.

A case is built with :func:`single_op`, serialized with edgeq's writer, and run by edgeq's integer reference,
LiteRT with BUILTIN_REF kernels and TFLite Micro; :func:`assert_bit_exact` requires identical outputs.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from edgeq.reference.executor import run_all_semantics
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import Graph, Quantization, Tensor, read, write


def activation(name, shape, scale, zero_point, dtype=np.int8) -> Tensor:
    return Tensor(name, shape, dtype, Quantization(scale, zero_point))


def constant(name, array, scale=None, zero_point=0, axis=0) -> Tensor:
    array = np.asarray(array)
    quantization = None if scale is None else Quantization(scale, zero_point, axis)
    return Tensor(name, array.shape, array.dtype, quantization, data=array)


def single_op(opcode: str, inputs: list[Tensor | None], outputs: list[Tensor], options=None) -> bytes:
    """A one-operator model; non-constant inputs become graph inputs, in order. None is an absent input."""
    graph = Graph()
    input_indices = []
    for tensor in inputs:
        input_indices.append(-1 if tensor is None else graph.add_tensor(tensor))
    output_indices = [graph.add_tensor(t) for t in outputs]
    lookup(opcode).add_to(graph, input_indices, output_indices, options)
    graph.inputs = [i for i, t in zip(input_indices, inputs, strict=True) if t is not None and not t.is_constant]
    graph.outputs = output_indices
    return write(graph)


def random_input(tensor: Tensor, rng: np.random.Generator) -> np.ndarray:
    if tensor.dtype == np.float32:
        return rng.normal(0, 1, tensor.shape).astype(np.float32)
    info = np.iinfo(tensor.dtype)
    return rng.integers(info.min, info.max + 1, tensor.shape, dtype=np.int64).astype(tensor.dtype)


def outputs_of_all(model_bytes: bytes, inputs: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    by_semantics = run_all_semantics(read(model_bytes), inputs)
    return {
        "reference": by_semantics["tflite-micro"],
        "reference_litert": by_semantics["litert"],
        "litert_ref": run_litert(model_bytes, inputs, kernels="reference"),
        "tflm": run_tflm(model_bytes, inputs),
    }


def assert_bit_exact(model_bytes: bytes, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """TFLM equals the reference and LiteRT BUILTIN_REF equals the reference with LiteRT's semantics (they differ
    only in FULLY_CONNECTED's rounding), on every element; returns the reference outputs."""
    results = outputs_of_all(model_bytes, inputs)
    for runtime, oracle in (("tflm", "reference"), ("litert_ref", "reference_litert")):
        expected = results[oracle]
        for i, (want, got) in enumerate(zip(expected, results[runtime], strict=True)):
            assert got.dtype == want.dtype and got.shape == want.shape, (runtime, i, got.shape, want.shape)
            mismatches = int(np.count_nonzero(got != want))
            if mismatches:
                diff = np.abs(got.astype(np.int64) - want.astype(np.int64)).max()
                raise AssertionError(f"{runtime} output {i}: {mismatches}/{want.size} elements differ, max {diff}")
    return results["reference"]


# ----------------------------------------------------------------------------- hypothesis strategies and checks

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

act_scales = st.floats(1e-3, 0.5)
zero_points = st.integers(-128, 127)
fused = st.sampled_from(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
paddings = st.sampled_from(["SAME", "VALID"])
seeds = st.integers(0, 2**32 - 1)


def int8_weights(rng, shape):
    return rng.integers(-127, 128, shape).astype(np.int8)


def bias_for(rng, s_in, w_scales, size, magnitude=3000):
    scale = (np.float32(s_in) * np.asarray(w_scales, np.float32)).astype(np.float32)
    return constant("bias", rng.integers(-magnitude, magnitude + 1, size).astype(np.int32), scale)


def check(model, rng):
    """assert_bit_exact on random inputs of MODEL's input types; returns the reference outputs."""
    graph = read(model)
    inputs = [random_input(graph.tensors[i], rng) for i in graph.inputs]
    return assert_bit_exact(model, inputs)
