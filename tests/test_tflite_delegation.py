"""The int8 .tflite's operators are ones LiteRT's XNNPACK delegate runs: an int8 PRelu is written as QUANTIZE, MUL
and ADD (targets/tflite/lower/prelu.py), which compute PRELU's integers, unless the kernels option asks for TFLite
Micro's single PRELU."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from hypothesis import example, given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from ops_cases import onnx_model
from tflite_cases import SETTINGS, act_scales, outputs_of_all, zero_points

from edgeq.data import ArrayData, input_specs
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.targets.tflite.delegation import delegated_ops
from edgeq.targets.tflite.interpreters import litert_interpreter, run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.tflite_format.flatbuffer import write

CHANNELS = 3
SHAPE = (1, CHANNELS, 16, 16)  # 256 pixels: every int8 value once per channel


def _conv_prelu_conv() -> ir.Model:
    """Conv -> PRelu (per-channel slopes, one negative) -> Conv, MTCNN's pattern, quantized by edgeq (int8)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["h", "slope"], ["p"]),
        helper.make_node("Conv", ["p", "w2"], ["y"]),
    ]
    inits = [
        ("w1", rng.normal(0, 0.3, (CHANNELS, CHANNELS, 3, 3)).astype(np.float32)),
        ("slope", np.array([0.25, -0.1, 0.6], np.float32).reshape(CHANNELS, 1, 1)),
        ("w2", rng.normal(0, 0.3, (2, CHANNELS, 1, 1)).astype(np.float32)),
    ]
    model = ir.serde.deserialize_model(onnx_model(nodes, [("x", SHAPE)], [("y", TensorProto.FLOAT)], inits))
    calib = {"x": rng.normal(0, 1, (8, *SHAPE[1:])).astype(np.float32)}
    pipeline = Pipeline(Recipe(), progress=False)
    return pipeline.quantize(pipeline.calibrate(model, ArrayData(calib, input_specs(model), "calib"))).model


def test_an_int8_prelu_lowers_to_operators_xnnpack_runs_in_one_delegated_run():
    qdq = _conv_prelu_conv()
    fast = lower(qdq, kernels="xnnpack")
    assert [op.opcode for op in fast.graph.operators] == ["CONV_2D", "QUANTIZE", "MUL", "MUL", "ADD", "CONV_2D"]
    assert {row.lowered for row in fast.coverage} == {"int8"}
    assert delegated_ops(litert_interpreter(write(fast.graph))) == {
        "ops": 6, "delegated": 6, "runs": 1, "builtin": {}
    }  # fmt: skip
    micro = lower(qdq)  # the default: TFLite Micro's PRELU (the TFLite target's option defaults to xnnpack)
    assert [op.opcode for op in micro.graph.operators] == ["CONV_2D", "PRELU", "CONV_2D"]
    assert delegated_ops(litert_interpreter(write(micro.graph)))["builtin"] == {"PRELU": 1}


def _qdq_prelu(s_in, zp_in, alpha_q, s_alpha, zp_alpha, s_out, zp_out) -> ir.Model:
    """x -> Q/DQ -> PRelu(DQ(alpha_q)) -> Q/DQ -> y with the given encodings."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_in", "zp_in"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "s_in", "zp_in"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["alpha_q", "s_alpha", "zp_alpha"], ["alpha"]),
        helper.make_node("PRelu", ["x_dq", "alpha"], ["p"]),
        helper.make_node("QuantizeLinear", ["p", "s_out", "zp_out"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "s_out", "zp_out"], ["y"]),
    ]
    inits = [
        ("s_in", np.float32(s_in)), ("zp_in", np.int8(zp_in)), ("s_out", np.float32(s_out)),
        ("zp_out", np.int8(zp_out)), ("s_alpha", np.float32(s_alpha)), ("zp_alpha", np.int8(zp_alpha)),
        ("alpha_q", np.asarray(alpha_q, np.int8).reshape(CHANNELS, 1, 1)),
    ]  # fmt: skip
    proto = onnx_model(nodes, [("x", SHAPE)], [("y", TensorProto.FLOAT, SHAPE)], inits)
    return ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(proto))


slopes = st.lists(st.integers(-128, 127), min_size=CHANNELS, max_size=CHANNELS)


@SETTINGS
@given(s_in=act_scales, zp_in=zero_points, alpha_q=slopes, s_alpha=st.floats(1e-3, 0.1), zp_alpha=zero_points,
       s_out=act_scales, zp_out=zero_points)  # fmt: skip
@example(s_in=0.05, zp_in=127, alpha_q=[-128, 0, 127], s_alpha=0.01, zp_alpha=0, s_out=0.04, zp_out=-128)
@example(s_in=0.375, zp_in=-128, alpha_q=[16, -16, 1], s_alpha=0.001, zp_alpha=3, s_out=0.012, zp_out=5)
@example(s_in=0.5, zp_in=0, alpha_q=[127, -127, 64], s_alpha=0.1, zp_alpha=-128, s_out=0.002, zp_out=0)
def test_the_xnnpack_form_computes_prelus_integers(s_in, zp_in, alpha_q, s_alpha, zp_alpha, s_out, zp_out):
    """Every int8 input in every channel, under both reference semantics (TFLite Micro's double and LiteRT's
    float32 multipliers: the second example's S_in S_alpha / S_out is 2^-5 in double only), in LiteRT's reference
    kernels and TFLite Micro: the QUANTIZE/MUL/ADD graph gives PRELU's integers; XNNPACK stays within 1 step of them."""
    qdq = _qdq_prelu(s_in, zp_in, alpha_q, s_alpha, zp_alpha, s_out, zp_out)
    fast, micro = write(lower(qdq, kernels="xnnpack").graph), write(lower(qdq, kernels="micro").graph)
    every_value = np.tile(np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1), (1, 1, 1, CHANNELS))
    got, want = outputs_of_all(fast, [every_value]), outputs_of_all(micro, [every_value])
    for runtime, outputs in want.items():
        np.testing.assert_array_equal(got[runtime][0], outputs[0], err_msg=runtime)
    xnnpack = run_litert(fast, [every_value], kernels="default")[0].astype(np.int64)
    assert np.abs(xnnpack - want["reference_litert"][0]).max() <= 1
