"""LayerNormalization (targets/tflite/lower/normalization.py): the int8 lowering runs it as a float island
(its int8 refusal is "no-int8-kernel"); the float lowering (MEAN, MUL, ADD, RSQRT in float32) runs identically in TFLite Micro and
LiteRT and agrees with ONNX Runtime's LayerNormalization to float rounding, in any layout and over any trailing
axes. RSQRT's reference kernel is bit-exact in both runtimes, int8 (every input value, random scales) and float32.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from ops_cases import onnx_model, quantized
from test_integer_onnx import assert_matches_reference
from tflite_cases import SETTINGS, activation, assert_bit_exact, single_op, zero_points

from edgeq.errors import EdgeqError
from edgeq.io.session import session as ort_session
from edgeq.reference.executor import run as reference
from edgeq.reference.interface import float_outputs, model_inputs
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import check_model
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import Tensor, read, write

log_scales = st.floats(np.log(1e-4), np.log(2.0)).map(lambda s: float(np.exp(s)))


@SETTINGS
@given(s_in=log_scales, s_out=log_scales, zp_in=st.integers(-128, -60), zp_out=zero_points)
def test_rsqrt_int8_is_bit_exact_on_every_input(s_in, s_out, zp_in, zp_out):
    x = np.arange(zp_in, 128, dtype=np.int64).astype(np.int8)[None]  # every value at or above the zero point
    model = single_op(
        "RSQRT", [activation("x", x.shape, s_in, zp_in)], [activation("y", x.shape, s_out, zp_out)]
    )
    [y] = assert_bit_exact(model, [x])
    real = 1 / np.sqrt((x[0, 1:].astype(np.float64) - zp_in) * s_in)
    expected = np.clip(np.rint(real / s_out) + zp_out, -128, 127)
    assert np.abs(y[0, 1:] - expected).max() <= 1  # 1/sqrt to within one step
    assert y[0, 0] == 127  # 1/sqrt(0): the largest output


def test_rsqrt_of_a_value_below_the_zero_point_is_refused_by_every_runtime():
    model = single_op("RSQRT", [activation("x", (1, 3), 0.1, 0)], [activation("y", (1, 3), 0.1, 0)])
    x = np.array([[4, -3, 9]], np.int8)
    for run in (lambda: run_litert(model, [x]), lambda: run_tflm(model, [x])):
        with pytest.raises(
            (EdgeqError, RuntimeError), match="Rsqrt is only defined for positive values|invocation"
        ):
            run()
    with pytest.raises(EdgeqError, match="RSQRT y: an input below the zero point"):
        reference(read(model), [x])


def test_rsqrt_float32_is_bit_exact():
    x = np.abs(np.random.default_rng(0).normal(size=(1, 200)) * 10).astype(np.float32) + np.float32(1e-6)
    model = single_op("RSQRT", [Tensor("x", x.shape, np.float32)], [Tensor("y", x.shape, np.float32)])
    assert_bit_exact(model, [x])


def _layer_norm(shape, axis, rng, gamma=True, beta=True, epsilon=1e-3):
    """x * 1.5 -> LayerNormalization(axis) with random gamma/beta."""
    params_shape = shape[axis % len(shape) :]
    inputs = ["m", "gamma" if gamma else "ones"] + (["beta"] if beta else [])  # ORT 1.32 crashes on a "" bias
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("LayerNormalization", inputs, ["y"], axis=axis, epsilon=epsilon),
    ]
    inits = [
        ("k", np.array(1.5, np.float32)),
        ("gamma", rng.normal(size=params_shape).astype(np.float32)),
        ("ones", np.ones(params_shape, np.float32)),
        ("beta", rng.normal(size=params_shape).astype(np.float32)),
    ]
    return onnx_model(nodes, [("x", shape)], [("y", TensorProto.FLOAT)], inits)


def test_int8_lowering_runs_it_as_a_float_island():
    """tests/test_float_island.py checks the island's numbers; here: what it is made of."""
    rng = np.random.default_rng(0)
    lowered = lower(quantized(_layer_norm((1, 6, 16), -1, rng), [("x", (1, 6, 16))]))
    assert lowered.ops == {"ADD": 3, "DEQUANTIZE": 1, "MEAN": 2, "MUL": 5, "QUANTIZE": 1, "RSQRT": 1}  # x * 1.5 too
    [record] = [r for r in lowered.coverage if r.op == "LayerNormalization"]
    assert record.lowered == "float-island" and "TFLite has no layer-norm operator" in record.reason


@pytest.mark.parametrize(
    ("shape", "axis", "gamma", "beta"),
    [
        ((1, 6, 16), -1, True, True),  # a transformer's hidden states
        ((1, 6, 16), 1, True, False),  # over the last two axes
        ((1, 3, 5, 7), -1, False, True),  # the width of an NHWC tensor: TFLite axis 2
        ((1, 3, 5, 7), 1, True, True),  # channels, height and width: TFLite axes 1, 2, 3
    ],
)
def test_float_lowering_runs_alike_in_both_runtimes_and_matches_onnxruntime(shape, axis, gamma, beta):
    rng = np.random.default_rng(1)
    proto = _layer_norm(shape, axis, rng, gamma, beta)
    lowered = lower(quantized(proto, [("x", shape)]), precision="float")
    expected_ops = {
        "MEAN": 2,
        "RSQRT": 1,
        "MUL": 4 + gamma,
        "ADD": 2 + beta,
    }  # MUL: x * 1.5, -mean, c^2, c * r
    assert lowered.ops == expected_ops
    model_bytes = write(lowered.graph)
    check_model(model_bytes)
    graph = read(model_bytes)
    x = rng.normal(size=shape).astype(np.float32)
    inputs = model_inputs(graph, {"x": x})
    litert = run_litert(model_bytes, inputs, kernels="reference")
    np.testing.assert_array_equal(litert[0], run_tflm(model_bytes, inputs)[0])
    want = ort_session(proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(float_outputs(graph, litert)[0], want, atol=2e-6 * np.abs(want).max())


@SETTINGS
@given(s_in=log_scales, s_out=log_scales, zp_in=st.integers(-128, -60), zp_out=zero_points)
def test_integer_onnx_rsqrt_equals_the_reference(s_in, s_out, zp_in, zp_out):
    x = activation("x", (1, 4, 5, 6), s_in, zp_in)
    graph = read(single_op("RSQRT", [x], [activation("y", x.shape, s_out, zp_out)]))
    feeds = {
        "x": np.abs(np.random.default_rng(0).normal(0, 60, (1, 6, 4, 5))).astype(np.float32)
        * np.float32(s_in)
    }
    assert_matches_reference(graph, feeds)
