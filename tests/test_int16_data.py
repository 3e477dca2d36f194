"""16x8 (int16 activations): QUANTIZE, DEQUANTIZE, MEAN, the pools and the data-movement ops are bit-exact with
TFLite Micro and LiteRT BUILTIN_REF (tflite_cases.assert_bit_exact), and are written with the int16 signature's
minimum op version (op_version.cc).

int16 activations are symmetric (zero point 0). Scales are drawn from a continuous range and from powers of two,
which make the multipliers exact powers of two and rounding ties common; inputs cover the whole int16 range.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tflite_cases import SETTINGS, assert_bit_exact, check, constant, fused, paddings, seeds, single_op
from tflite_cases import activation as quantized

from edgeq import reference
from edgeq.errors import EdgeqError
from edgeq.reference.conv import output_size_and_padding
from edgeq.reference.strided_slice import index_ranges
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import Tensor, read

POWERS_OF_TWO = [2.0**-k for k in range(4, 16)]
int16_scales = st.one_of(st.floats(1e-5, 0.05), st.sampled_from(POWERS_OF_TWO))
ratios = st.one_of(st.floats(0.05, 20.0), st.sampled_from([2.0**k for k in range(-6, 7)]))
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4)


def activation(name, shape, scale, zero_point=0, dtype=np.int16):
    return quantized(name, tuple(shape), scale, zero_point, dtype)


def versions(model: bytes) -> dict[str, int]:
    return {op.opcode: op.version for op in read(model).operators}


def edges(rng, shape, dtype=np.int16) -> np.ndarray:
    """Random integers of DTYPE over its whole range, with its two extremes planted."""
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, shape, dtype=np.int64)
    flat = x.reshape(-1)
    flat[rng.random(flat.size) < 0.1] = info.min
    flat[rng.random(flat.size) < 0.1] = info.max
    return x.astype(dtype)


# ------------------------------------------------------------------------------------------- (de)quantization


@SETTINGS
@given(shapes, int16_scales, seeds)
def test_quantize_float_to_int16(shape, scale, seed):
    """x / S in float32, rounded half away from zero (exact ties planted), saturated to int16."""
    rng = np.random.default_rng(seed)
    model = single_op("QUANTIZE", [Tensor("x", tuple(shape), np.float32)], [activation("y", shape, scale)])
    assert versions(model) == {"QUANTIZE": 2}
    x = rng.normal(0, 20000 * scale, shape)
    ties = (rng.integers(-33000, 33000, shape) + 0.5) * np.float32(scale)
    x = np.where(rng.random(shape) < 0.5, ties, x).astype(np.float32)
    [y] = assert_bit_exact(model, [x])
    assert y.dtype == np.int16


@SETTINGS
@given(
    st.sampled_from([(np.int16, np.int16), (np.int8, np.int16), (np.int16, np.int8)]),
    int16_scales,
    ratios,
    st.integers(-128, 127),
    seeds,
)
def test_requantize_int16(dtypes, s_in, ratio, zp8, seed):
    """int16 -> int16, int8 -> int16 and int16 -> int8 QUANTIZE: MultiplyByQuantizedMultiplier of the centered
    input by S_in / S_out, saturated."""
    in_dtype, out_dtype = dtypes
    if in_dtype == np.int8:
        s_in, ratio = s_in * 256, ratio / 256  # an int8 tensor's scale, about that of the int16 output
    elif out_dtype == np.int8:
        ratio *= 256
    zp_in, zp_out = (zp8 if in_dtype == np.int8 else 0), (zp8 if out_dtype == np.int8 else 0)
    model = single_op(
        "QUANTIZE",
        [activation("x", (2, 5, 7), s_in, zp_in, in_dtype)],
        [activation("y", (2, 5, 7), s_in * ratio, zp_out, out_dtype)],
    )
    assert versions(model) == {"QUANTIZE": 2 if out_dtype == np.int16 else 1}
    x = edges(np.random.default_rng(seed), (2, 5, 7), in_dtype)
    assert_bit_exact(model, [x])


@SETTINGS
@given(shapes, int16_scales, seeds)
def test_dequantize_int16(shape, scale, seed):
    model = single_op("DEQUANTIZE", [activation("x", shape, scale)], [Tensor("y", tuple(shape), np.float32)])
    assert versions(model) == {"DEQUANTIZE": 3}
    x = edges(np.random.default_rng(seed), shape)
    [y] = assert_bit_exact(model, [x])
    np.testing.assert_array_equal(y, (x.astype(np.float64) * np.float32(scale)).astype(np.float32))


# ------------------------------------------------------------------------------------------- MEAN and the pools


@st.composite
def mean_cases(draw):
    """(input shape, axes): the spatial axes of an NHWC tensor, or the last axis of a rank-2..4 tensor."""
    if draw(st.booleans()):
        shape = (draw(st.integers(1, 2)), draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 5)))
        return shape, draw(st.sampled_from([[1, 2], [2, 1]]))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=2, max_size=4)))
    return shape, draw(st.sampled_from([[len(shape) - 1], [-1]]))


@SETTINGS
@given(mean_cases(), st.booleans(), st.booleans(), int16_scales, ratios, seeds)
def test_mean_int16(case, keep_dims, same_encoding, s_in, ratio, seed):
    shape, axes = case
    reduced = {a % len(shape) for a in axes}
    out_shape = [1 if a in reduced else d for a, d in enumerate(shape) if keep_dims or a not in reduced]
    s_out = s_in if same_encoding else s_in * ratio
    model = single_op(
        "MEAN",
        [activation("x", shape, s_in), constant("axes", np.array(axes, np.int32))],
        [activation("y", out_shape, s_out)],
        {"KeepDims": keep_dims},
    )
    assert versions(model) == {"MEAN": 3}
    assert_bit_exact(model, [edges(np.random.default_rng(seed), shape)])


@SETTINGS
@given(
    st.sampled_from(["AVERAGE_POOL_2D", "MAX_POOL_2D"]),
    st.integers(1, 2),
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 3),
    paddings,
    int16_scales,
    fused,
    seeds,
)
def test_pooling_int16(opcode, batch, height, width, channels, fh, fw, sh, sw, padding, scale, act, seed):
    """Averages round half away from zero (ties are common: sums of extremes), SAME padding pixels are not
    counted, the fused activation clamps on the int16 grid."""
    out_h = output_size_and_padding(padding, height, fh, sh)[0]
    out_w = output_size_and_padding(padding, width, fw, sw)[0]
    if out_h < 1 or out_w < 1:
        return
    model = single_op(
        opcode,
        [activation("x", (batch, height, width, channels), scale)],
        [activation("y", (batch, out_h, out_w, channels), scale)],
        {
            "Padding": padding,
            "StrideH": sh,
            "StrideW": sw,
            "FilterHeight": fh,
            "FilterWidth": fw,
            "FusedActivationFunction": act,
        },
    )
    assert versions(model) == {opcode: 3}
    assert_bit_exact(model, [edges(np.random.default_rng(seed), (batch, height, width, channels))])


def test_max_pool_int16_of_the_lowest_value_with_same_padding():
    """A window of -32768 only, next to SAME padding: the padding is not a candidate."""
    model = single_op(
        "MAX_POOL_2D",
        [activation("x", (1, 3, 3, 1), 0.001)],
        [activation("y", (1, 3, 3, 1), 0.001)],
        {"Padding": "SAME", "StrideH": 1, "StrideW": 1, "FilterHeight": 3, "FilterWidth": 3,
         "FusedActivationFunction": "NONE"},
    )  # fmt: skip
    [y] = assert_bit_exact(model, [np.full((1, 3, 3, 1), -32768, np.int16)])
    assert np.all(y == -32768)


# ------------------------------------------------------------------------------------------- data movement


@SETTINGS
@given(shapes, st.integers(2, 3), st.data(), int16_scales, seeds)
def test_concatenation_int16(shape, count, data, scale, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=count, max_size=count))
    in_shapes = [tuple(size if d == axis % len(shape) else n for d, n in enumerate(shape)) for size in sizes]
    out_shape = tuple(sum(sizes) if d == axis % len(shape) else n for d, n in enumerate(shape))
    model = single_op(
        "CONCATENATION",
        [activation(f"x{i}", s, scale) for i, s in enumerate(in_shapes)],
        [activation("y", out_shape, scale)],
        {"Axis": axis, "FusedActivationFunction": "NONE"},
    )
    assert versions(model) == {"CONCATENATION": 3}
    rng = np.random.default_rng(seed)
    inputs = [edges(rng, s) for s in in_shapes]
    [y] = assert_bit_exact(model, inputs)
    np.testing.assert_array_equal(y, np.concatenate(inputs, axis=axis))


def test_concatenation_int16_of_differently_encoded_inputs_is_refused_by_the_reference():
    """Neither runtime rescales int16 inputs: they copy the integers under another scale (measured: both return
    the plain concatenation), a different real value. The reference refuses the model, as for int8."""
    model = single_op(
        "CONCATENATION",
        [activation("a", (1, 2, 3), 0.001), activation("b", (1, 2, 3), 0.002)],
        [activation("y", (1, 2, 6), 0.002)],
        {"Axis": 2, "FusedActivationFunction": "NONE"},
    )
    x = np.arange(6, dtype=np.int16).reshape(1, 2, 3)
    for run in (run_litert, run_tflm):
        np.testing.assert_array_equal(run(model, [x, x])[0], np.concatenate([x, x], axis=2))
    with pytest.raises(EdgeqError, match="encoded differently"):
        reference.run(read(model), [x, x])


@SETTINGS
@given(shapes, st.sampled_from(["PAD", "PADV2"]), st.data(), int16_scales, st.integers(-32768, 32767), seeds)
def test_pad_int16(shape, opcode, data, scale, fill, seed):
    pads = np.array(
        data.draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=len(shape), max_size=len(shape))),
        np.int32,
    )
    out_shape = tuple(int(n + a + b) for n, (a, b) in zip(shape, pads, strict=True))
    inputs = [activation("x", shape, scale), constant("paddings", pads)]
    if opcode == "PADV2":
        inputs.append(constant("fill", np.array([fill], np.int16), scale, 0))
    model = single_op(opcode, inputs, [activation("y", out_shape, scale)])
    assert versions(model) == {opcode: 3}
    [y] = assert_bit_exact(model, [edges(np.random.default_rng(seed), shape)])
    border = np.ones(out_shape, bool)
    border[tuple(slice(a, a + n) for n, (a, _) in zip(shape, pads, strict=True))] = False
    assert np.all(y[border] == (fill if opcode == "PADV2" else 0))


@SETTINGS
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.booleans(), int16_scales, seeds)
def test_reshape_int16(shape, with_wildcard, scale, seed):
    size = int(np.prod(shape[1:]))
    new_shape = [shape[0], size] if size % 2 else [shape[0], 2, size // 2]
    stored = list(new_shape)
    if with_wildcard:
        stored[-1] = -1
    model = single_op(
        "RESHAPE",
        [activation("x", shape, scale), constant("shape", np.array(stored, np.int32))],
        [activation("y", new_shape, scale)],
    )
    assert versions(model) == {"RESHAPE": 1}
    x = edges(np.random.default_rng(seed), shape)
    [y] = assert_bit_exact(model, [x])
    np.testing.assert_array_equal(y, x.reshape(new_shape))


@SETTINGS
@given(st.lists(st.integers(1, 4), min_size=1, max_size=5), st.randoms(use_true_random=False), int16_scales, seeds)
def test_transpose_int16(shape, random, scale, seed):
    """Version 5 for int16 at any rank up to 5 (op_version.cc tests int16 before rank > 4)."""
    perm = list(range(len(shape)))
    random.shuffle(perm)
    model = single_op(
        "TRANSPOSE",
        [activation("x", shape, scale), constant("perm", np.array(perm, np.int32))],
        [activation("y", [shape[p] for p in perm], scale)],
    )
    assert versions(model) == {"TRANSPOSE": 5}
    x = edges(np.random.default_rng(seed), shape)
    [y] = assert_bit_exact(model, [x])
    np.testing.assert_array_equal(y, x.transpose(perm))


@SETTINGS
@given(shapes, st.data(), int16_scales, seeds)
def test_split_and_split_v_int16(shape, data, scale, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    size = shape[axis]
    equal = data.draw(st.booleans())
    if equal:
        count = data.draw(st.sampled_from([c for c in range(1, size + 1) if size % c == 0]))
        sizes = [size // count] * count
    else:
        cuts = sorted(data.draw(st.sets(st.integers(1, size - 1), max_size=3))) if size > 1 else []
        sizes = list(np.diff([0, *cuts, size]))
    outputs = [
        activation(f"y{k}", [s if a == axis % len(shape) else d for a, d in enumerate(shape)], scale)
        for k, s in enumerate(sizes)
    ]
    x, axis_const = activation("x", shape, scale), constant("axis", np.array([axis], np.int32))
    if equal:
        model = single_op("SPLIT", [axis_const, x], outputs, {"NumSplits": len(sizes)})
        assert versions(model) == {"SPLIT": 4}
    else:
        sizes_const = constant("sizes", np.array(sizes, np.int32))
        model = single_op("SPLIT_V", [x, sizes_const, axis_const], outputs, {"NumSplits": len(sizes)})
        assert versions(model) == {"SPLIT_V": 1}
    check(model, np.random.default_rng(seed))


@st.composite
def strided_slices(draw):
    """Non-empty slices of rank <= 4 with any strides, negative bounds and random begin/end masks."""
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    begin, end, strides, begin_mask, end_mask = [], [], [], 0, 0
    for axis, size in enumerate(shape):
        lo = draw(st.integers(0, size - 1))
        hi = draw(st.integers(lo, size - 1))
        stride = draw(st.sampled_from([1, 2, 3, -1, -2]))
        first, after = (lo, hi + 1) if stride > 0 else (hi, lo - 1)
        begin.append(first - size if draw(st.booleans()) else first)
        end.append(-size - 2 if after < 0 else after)
        strides.append(stride)
        begin_mask |= draw(st.booleans()) << axis
        end_mask |= draw(st.booleans()) << axis
    return shape, begin, end, strides, begin_mask, end_mask


@SETTINGS
@given(strided_slices(), int16_scales, seeds)
def test_strided_slice_int16(case, scale, seed):
    shape, begin, end, strides, begin_mask, end_mask = case
    options = {"BeginMask": begin_mask, "EndMask": end_mask}
    ranges, _ = index_ranges(shape, begin, end, strides, options)
    bounds = [constant(n, np.array(v, np.int32)) for n, v in (("begin", begin), ("end", end), ("strides", strides))]
    model = single_op(
        "STRIDED_SLICE",
        [activation("x", shape, scale), *bounds],
        [activation("y", [len(r) for r in ranges], scale)],
        options,
    )
    assert versions(model) == {"STRIDED_SLICE": 1}
    check(model, np.random.default_rng(seed))


@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.data(), int16_scales, seeds)
def test_gather_int16_matches_litert(dims, data, scale, seed):
    """From an activation along a non-batch axis, and from a constant int16 table with int32 ids: equal to LiteRT
    BUILTIN_REF (TFLite Micro has no int16 GATHER: test_tflite_micro_has_no_int16_gather)."""
    rng = np.random.default_rng(seed)
    if data.draw(st.booleans()):
        shape = (1, *dims)
        axis = data.draw(st.integers(1, len(shape) - 1))
        positions = rng.integers(0, shape[axis], data.draw(st.lists(st.integers(1, 3), max_size=2))).astype(np.int32)
        out_shape = (*shape[:axis], *positions.shape, *shape[axis + 1 :])
        model = single_op("GATHER", [activation("x", shape, scale), constant("positions", positions)],
                          [activation("y", out_shape, scale)], {"Axis": axis})  # fmt: skip
        x = edges(rng, shape)
        expected = np.take(x, positions, axis=axis)
    else:
        table = edges(rng, (dims[0] + 1, dims[-1]))
        ids_shape = (1, *dims[1:])
        model = single_op("GATHER", [constant("table", table, scale), Tensor("ids", ids_shape, np.int32)],
                          [activation("y", (*ids_shape, table.shape[1]), scale)], {"Axis": 0})  # fmt: skip
        x = rng.integers(0, table.shape[0], ids_shape).astype(np.int32)
        expected = table[x]
    assert versions(model) == {"GATHER": 4}
    [y] = reference.run(read(model), [x])
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(run_litert(model, [x], kernels="reference")[0], y)


def test_tflite_micro_has_no_int16_gather():
    model = single_op("GATHER", [activation("x", (1, 4, 3), 0.001), constant("positions", np.array([2, 0], np.int32))],
                      [activation("y", (1, 2, 3), 0.001)], {"Axis": 1})  # fmt: skip
    with pytest.raises(EdgeqError, match="TFLite Micro cannot load"):
        run_tflm(model, [np.zeros((1, 4, 3), np.int16)])
    assert "int16" not in lookup("GATHER").micro_types


@pytest.mark.parametrize(
    "opcode, in_shape, out_shape",
    [("DEPTH_TO_SPACE", (1, 2, 2, 8), (1, 4, 4, 2)), ("SPACE_TO_DEPTH", (1, 4, 4, 2), (1, 2, 2, 8))],
)
def test_depth_to_space_int16_is_refused_everywhere(opcode, in_shape, out_shape):
    """Neither runtime has the int16 kernel (both fail to prepare), so the reference refuses it too."""
    model = single_op(opcode, [activation("x", in_shape, 0.001)], [activation("y", out_shape, 0.001)], {"BlockSize": 2})
    x = np.zeros(in_shape, np.int16)
    for run in (run_litert, run_tflm):
        with pytest.raises(EdgeqError, match="cannot load"):
            run(model, [x])
    with pytest.raises(EdgeqError, match=f"{opcode} int16 is not supported by the integer reference"):
        reference.run(read(model), [x])
    assert "int16" not in lookup(opcode).verified and "int16" not in lookup(opcode).micro_types


@SETTINGS
@given(
    st.tuples(st.integers(1, 6), st.integers(1, 6)),
    st.tuples(st.integers(1, 16), st.integers(1, 16)),
    st.integers(1, 3),
    st.sampled_from([(False, False), (True, False), (False, True), (True, True)]),
    int16_scales,
    seeds,
)
def test_resize_nearest_neighbor_int16(input_size, output_size, channels, flags, scale, seed):
    x_shape = (1, *input_size, channels)
    model = single_op(
        "RESIZE_NEAREST_NEIGHBOR",
        [activation("x", x_shape, scale), constant("size", np.array(output_size, np.int32))],
        [activation("y", (1, *output_size, channels), scale)],
        {"AlignCorners": flags[0], "HalfPixelCenters": flags[1]},
    )
    assert versions(model) == {"RESIZE_NEAREST_NEIGHBOR": 4}
    check(model, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------- declarations

BIT_EXACT_INT16 = (
    "QUANTIZE", "DEQUANTIZE", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "RESHAPE", "TRANSPOSE",
    "PAD", "PADV2", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "RESIZE_NEAREST_NEIGHBOR",
)  # fmt: skip


@pytest.mark.parametrize("opcode", BIT_EXACT_INT16)
def test_int16_is_declared_bit_exact_and_run_by_tflite_micro(opcode):
    builtin = lookup(opcode)
    assert builtin.verified["int16"].startswith("bit-exact with TFLite Micro and LiteRT BUILTIN_REF")
    assert "int16" in builtin.micro_types


def test_mean_int16_of_more_values_than_an_int32_sum_holds_is_refused():
    model = single_op(
        "MEAN",
        [activation("x", (1, 257, 256, 1), 0.001), constant("axes", np.array([1, 2], np.int32))],
        [activation("y", (1, 1, 1, 1), 0.001)],
        {"KeepDims": True},
    )
    with pytest.raises(EdgeqError, match="int32 sum"):
        reference.run(read(model), [np.zeros((1, 257, 256, 1), np.int16)])
