"""16x8 (int16 activations): RELU, RELU6, ABS and BROADCAST_TO are bit-exact with TFLite Micro and LiteRT BUILTIN_REF
(tflite_cases.assert_bit_exact; RELU and ABS under LiteRT's float32 multiplier); REDUCE_MAX, REDUCE_MIN and
RESIZE_BILINEAR have no int16 kernel in TFLite Micro and equal LiteRT BUILTIN_REF; ARG_MAX / ARG_MIN of int16 run
nowhere and are refused. Every builtin is written with the int16 signature's minimum op version (op_version.cc).

int16 activations are symmetric (zero point 0). Scales are drawn from a continuous range and from powers of two,
which make the multipliers exact powers of two and rounding ties common; inputs cover the whole int16 range.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from tflite_cases import SETTINGS, assert_bit_exact, constant, outputs_of_all, seeds, single_op
from tflite_cases import activation as quantized

from edgeq import reference
from edgeq.data import ArrayData, input_specs
from edgeq.errors import UnsupportedError
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import validate_model
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import Tensor, read, write

POWERS_OF_TWO = [2.0**-k for k in range(4, 16)]
int16_scales = st.one_of(st.floats(1e-5, 0.05), st.sampled_from(POWERS_OF_TWO))
ratios = st.one_of(st.floats(0.05, 20.0), st.sampled_from([2.0**k for k in range(-6, 7)]))
shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4)
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16).reshape(1, 256, 256)
# double(S_in) / double(S_out) and float32(S_in / S_out) give M0 1958764223 and 1958764160: TFLite Micro's and
# LiteRT's RELU differ by one on 8 of the 65536 inputs, their ABS on 16 (the others saturate or tie alike)
SPLIT_SCALES = (0.040713146328926086, 0.022317850962281227)
RELU6_SCALES = [12 / 2001, 12 / 4095, 12 / 40001, 6 / 32767, 6 / 32768]  # float32 6 / S: 1000.5, 2047.5, 20000.5, ..


def activation(name, shape, scale, dtype=np.int16):
    return quantized(name, tuple(shape), scale, 0, dtype)


def versions(model: bytes) -> dict[str, int]:
    return {op.opcode: op.version for op in read(model).operators}


def edges(rng, shape) -> np.ndarray:
    """Random int16 values over the whole range, with its two extremes and zero planted."""
    x = rng.integers(-32768, 32768, shape, dtype=np.int64)
    flat = x.reshape(-1)
    for value in (-32768, 32767, 0):
        flat[rng.random(flat.size) < 0.1] = value
    return x.astype(np.int16)


def assert_equals_litert(model: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    """The reference (under LiteRT's semantics) equals LiteRT BUILTIN_REF on every element; the reference output."""
    [want] = reference.run(read(model), inputs, semantics="litert")
    [got] = run_litert(model, inputs, kernels="reference")
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return want


# ------------------------------------------------------------------------------------------- RELU, RELU6, ABS


@SETTINGS
@given(st.sampled_from(["RELU", "ABS"]), shapes, int16_scales, ratios, st.booleans(), seeds)
def test_relu_and_abs_int16(opcode, shape, s_in, ratio, same_encoding, seed):
    """MultiplyByQuantizedMultiplier of x (|x| for ABS) by S_in / S_out, clamped at 0 (RELU) and to int16."""
    s_out = s_in if same_encoding else s_in * ratio
    model = single_op(opcode, [activation("x", shape, s_in)], [activation("y", shape, s_out)])
    assert versions(model) == {opcode: 3}
    x = edges(np.random.default_rng(seed), shape)
    [y] = assert_bit_exact(model, [x])
    assert y.min() >= 0
    if same_encoding:
        np.testing.assert_array_equal(y, np.clip(np.abs(x.astype(np.int64)) if opcode == "ABS" else x, 0, 32767))


@pytest.mark.parametrize("opcode", ["RELU", "ABS"])
@pytest.mark.parametrize("scales", [(0.01, 0.013), (2.0**-10, 2.0**-12), (2.0**-12, 2.0**-9), (0.003, 0.0007)])
def test_relu_and_abs_int16_over_every_input(opcode, scales):
    model = single_op(opcode, [activation("x", ALL_INT16.shape, scales[0])], [activation("y", ALL_INT16.shape, scales[1])])
    assert_bit_exact(model, [ALL_INT16])


@pytest.mark.parametrize("opcode", ["RELU", "ABS"])
def test_relu_and_abs_int16_follow_each_runtimes_multiplier(opcode):
    """TFLite Micro divides the scales in double, LiteRT in float32: on SPLIT_SCALES the two runtimes disagree on
    some outputs, and each equals the reference under its own semantics."""
    model = single_op(opcode, [activation("x", ALL_INT16.shape, SPLIT_SCALES[0])],
                      [activation("y", ALL_INT16.shape, SPLIT_SCALES[1])])  # fmt: skip
    results = outputs_of_all(model, [ALL_INT16])
    assert np.count_nonzero(results["tflm"][0] != results["litert_ref"][0]) >= 8
    np.testing.assert_array_equal(results["tflm"][0], results["reference"][0])
    np.testing.assert_array_equal(results["litert_ref"][0], results["reference_litert"][0])


@SETTINGS
@given(shapes, st.one_of(st.floats(1e-5, 0.05), st.sampled_from([*POWERS_OF_TWO, *RELU6_SCALES])), seeds)
def test_relu6_int16(shape, scale, seed):
    """On one encoding: x clamped to [0, min(32767, round(6 / S))], 6 / S in float32 rounded half away from zero
    (RELU6_SCALES: 6 / S at a half, and at the int16 limit)."""
    model = single_op("RELU6", [activation("x", shape, scale)], [activation("y", shape, scale)])
    assert versions(model) == {"RELU6": 3}
    x = edges(np.random.default_rng(seed), shape)
    [y] = assert_bit_exact(model, [x])
    six = min(32767, int(np.floor(np.float32(6.0) / np.float32(scale) + 0.5)))
    np.testing.assert_array_equal(y, np.clip(x, 0, six))


def test_relu6_int16_over_every_input():
    for scale in (2.0**-12, 0.0005, 12 / 2001, 12 / 40001, 6 / 32767.4, 1e-5):
        model = single_op("RELU6", [activation("x", ALL_INT16.shape, scale)], [activation("y", ALL_INT16.shape, scale)])
        assert_bit_exact(model, [ALL_INT16])


# ------------------------------------------------------------------------------------------- BROADCAST_TO


@SETTINGS
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.data(), int16_scales, seeds)
def test_broadcast_to_int16(target, data, scale, seed):
    target = [1, *target[1:]]
    shape = [d if data.draw(st.booleans()) else 1 for d in target]
    model = single_op(
        "BROADCAST_TO",
        [activation("x", shape, scale), constant("shape", np.array(target, np.int32))],
        [activation("y", target, scale)],
    )
    assert versions(model) == {"BROADCAST_TO": 3}
    x = edges(np.random.default_rng(seed), shape)
    [y] = assert_bit_exact(model, [x])
    np.testing.assert_array_equal(y, np.broadcast_to(x, target))


# ------------------------------------------------------------------------------------------- LiteRT only


@st.composite
def reduce_cases(draw):
    """(input shape, non-batch axes) of a rank-2..4 tensor."""
    shape = (1, *draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    axes = draw(st.lists(st.integers(1, len(shape) - 1), min_size=1, max_size=len(shape) - 1, unique=True))
    return shape, axes


@SETTINGS
@given(st.sampled_from(["REDUCE_MAX", "REDUCE_MIN"]), reduce_cases(), st.booleans(), int16_scales, seeds)
def test_reduce_max_min_int16_matches_litert(opcode, case, keep_dims, scale, seed):
    """The extreme stored value over the axes, on one encoding: equal to LiteRT BUILTIN_REF."""
    shape, axes = case
    out_shape = [1 if a in axes else d for a, d in enumerate(shape) if keep_dims or a not in axes]
    model = single_op(
        opcode,
        [activation("x", shape, scale), constant("axes", np.array(axes, np.int32))],
        [activation("y", out_shape, scale)],
        {"KeepDims": keep_dims},
    )
    assert versions(model) == {opcode: 3}
    x = edges(np.random.default_rng(seed), shape)
    y = assert_equals_litert(model, [x])
    extreme = np.max if opcode == "REDUCE_MAX" else np.min
    np.testing.assert_array_equal(y, extreme(x, axis=tuple(axes), keepdims=keep_dims))


@SETTINGS
@given(
    st.tuples(st.integers(1, 6), st.integers(1, 6)),
    st.tuples(st.integers(1, 13), st.integers(1, 13)),
    st.integers(1, 3),
    st.sampled_from([(False, False), (True, False), (False, True)]),
    int16_scales,
    seeds,
)
def test_resize_bilinear_int16_matches_litert(input_size, output_size, channels, flags, scale, seed):
    """Q10 positions, int64 sums of four Q20 products, rounded half away: equal to LiteRT BUILTIN_REF."""
    in_shape, out_shape = (1, *input_size, channels), (1, *output_size, channels)
    model = single_op(
        "RESIZE_BILINEAR",
        [activation("x", in_shape, scale), constant("size", np.array(output_size, np.int32))],
        [activation("y", out_shape, scale)],
        {"AlignCorners": flags[0], "HalfPixelCenters": flags[1]},
    )
    assert versions(model) == {"RESIZE_BILINEAR": 4}
    x = edges(np.random.default_rng(seed), in_shape)
    y = assert_equals_litert(model, [x])
    assert x.min() <= y.min() and y.max() <= x.max()


def test_tflite_micro_has_no_int16_reduce_max_min_or_resize_bilinear():
    x = edges(np.random.default_rng(0), (1, 3, 4, 2))
    axes = constant("axes", np.array([1, 2], np.int32))
    models = [single_op(opcode, [activation("x", x.shape, 0.001), axes], [activation("y", (1, 2), 0.001)],
                        {"KeepDims": False}) for opcode in ("REDUCE_MAX", "REDUCE_MIN")]  # fmt: skip
    models.append(single_op("RESIZE_BILINEAR", [activation("x", x.shape, 0.001), constant("size", np.array([5, 7], np.int32))],
                            [activation("y", (1, 5, 7, 2), 0.001)], {"AlignCorners": False, "HalfPixelCenters": True}))  # fmt: skip
    for model in models:
        with pytest.raises(RuntimeError, match="invocation failed"):
            run_tflm(model, [x])
        run_litert(model, [x], kernels="reference")
    for opcode in ("REDUCE_MAX", "REDUCE_MIN", "RESIZE_BILINEAR"):
        builtin = lookup(opcode)
        assert "LiteRT BUILTIN_REF only" in builtin.verified["int16"] and "int16" not in builtin.micro_types


@pytest.mark.parametrize("opcode", ["ARG_MAX", "ARG_MIN"])
def test_arg_max_min_of_int16_runs_nowhere_and_is_refused(opcode):
    x = edges(np.random.default_rng(1), (1, 4, 5))
    model = single_op(opcode, [activation("x", x.shape, 0.01), constant("axis", np.array([2], np.int32))],
                      [Tensor("y", (1, 4), np.int32)], {"OutputType": 2})  # fmt: skip
    with pytest.raises(UnsupportedError, match=f"{opcode} int16 is not supported by the integer reference"):
        reference.run(read(model), [x])
    with pytest.raises(Exception, match="LiteRT cannot load the model: Unknown input type"):
        run_litert(model, [x], kernels="reference")
    with pytest.raises(RuntimeError, match="invocation failed"):
        run_tflm(model, [x])
    assert "int16" not in lookup(opcode).verified


# ------------------------------------------------------------------------------------------- lowered from ONNX


def test_16x8_lowering_of_relu_clip_abs_expand_reduce_max_and_resize():
    """Relu, Clip(0, 6), Abs, Expand, ReduceMax and a linear Resize quantized with int16 activations lower to their
    int16 builtins at the int16 versions, none a float island, and the .tflite is bit-exact in LiteRT BUILTIN_REF
    (TFLite Micro has no int16 REDUCE_MAX or RESIZE_BILINEAR)."""
    shape = [1, 3, 1, 5]
    nodes = [
        helper.make_node("Add", ["x", "b"], ["s"]),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("Clip", ["s", "zero", "six"], ["r6"]),
        helper.make_node("Abs", ["s"], ["a"]),
        helper.make_node("Expand", ["a", "target"], ["e"]),
        helper.make_node("ReduceMax", ["e", "axes"], ["m"], keepdims=1),
        helper.make_node("Resize", ["m", "", "scales"], ["y"], mode="linear", coordinate_transformation_mode="half_pixel"),
    ]  # fmt: skip
    inits = [
        ("zero", np.array(0, np.float32)),
        ("six", np.array(6, np.float32)),
        ("target", np.array([1, 3, 4, 5], np.int64)),
        ("axes", np.array([1], np.int64)),
        ("scales", np.array([1, 1, 2, 2], np.float32)),
    ]
    graph = helper.make_graph(
        nodes,
        "int16_misc",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in ("x", "b")],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("r", "r6", "y")],
        [helper.make_tensor(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape, v.reshape(-1).tolist()) for n, v in inits],
    )  # fmt: skip
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    rng = np.random.default_rng(0)
    calib = {name: rng.normal(0, 4, (24, *shape[1:])).astype(np.float32) for name in ("x", "b")}
    pipeline = Pipeline(Recipe(activation_type="int16"), progress=False)
    qdq = pipeline.quantize(pipeline.calibrate(model, ArrayData(calib, input_specs(model), "calib"))).model
    lowered = lower(qdq).graph
    int16_ops = {op.opcode: op.version for op in lowered.operators if lowered.tensors[op.inputs[0]].dtype == np.int16}
    # Clip(0, 6) is one RELU: its calibrated output grid lies inside [0, 6]; no DEQUANTIZE: no float island
    assert int16_ops == {"ADD": 3, "RELU": 3, "ABS": 3, "BROADCAST_TO": 3, "REDUCE_MAX": 3, "RESIZE_BILINEAR": 4}
    model_bytes = write(lowered)
    assert not validate_model(model_bytes)
    inputs = [edges(rng, lowered.tensors[i].shape) for i in lowered.inputs]
    for got, expected in zip(run_litert(model_bytes, inputs, kernels="reference"),
                             reference.run(read(model_bytes), inputs, semantics="litert"), strict=True):  # fmt: skip
        np.testing.assert_array_equal(got, expected)


def test_16x8_cast_of_integers_is_cast_to_float32_then_an_int16_quantize():
    """A Cast of an integer input lowers to CAST int32 -> float32 (no int16 tensor: version 1, as for int8) and
    QUANTIZE float32 -> int16 (version 2): there is no int16 CAST to verify."""
    nodes = [helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "maskf"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "int16_cast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6]), helper.make_tensor_value_info("mask", TensorProto.INT64, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
    )  # fmt: skip
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    rng = np.random.default_rng(3)
    calib = {"x": rng.normal(0, 2, (24, 6)).astype(np.float32), "mask": rng.integers(0, 2, (24, 6))}
    pipeline = Pipeline(Recipe(activation_type="int16"), progress=False)
    qdq = pipeline.quantize(pipeline.calibrate(model, ArrayData(calib, input_specs(model), "calib"))).model
    lowered = lower(qdq).graph
    ops = [(op.opcode, op.version, lowered.tensors[op.outputs[0]].dtype) for op in lowered.operators]
    assert ops[:2] == [("CAST", 1, np.float32), ("QUANTIZE", 2, np.int16)], ops
    assert "int16" not in lookup("CAST").verified
    model_bytes = write(lowered)
    inputs = [
        edges(rng, t.shape) if t.dtype == np.int16 else rng.integers(0, 2, t.shape).astype(t.dtype)
        for t in (lowered.tensors[i] for i in lowered.inputs)
    ]
    assert_bit_exact(model_bytes, inputs)
