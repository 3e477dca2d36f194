"""The integer reference kernels are bit-exact with LiteRT BUILTIN_REF and TFLite Micro: pooling, MEAN, data
movement, (de)quantization, and a batch of samples through a chain of every op.

As in test_reference_ops.py: single-op models from hypothesis-drawn shapes, scales, zero points and options, random
inputs through edgeq's reference and both interpreters, identical outputs required (tflite_cases.check).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from tflite_cases import (
    SETTINGS,
    act_scales,
    activation,
    assert_bit_exact,
    bias_for,
    check,
    constant,
    fused,
    int8_weights,
    paddings,
    seeds,
    single_op,
    zero_points,
)

from edgeq import reference
from edgeq.errors import EdgeqError
from edgeq.reference.conv import output_size_and_padding
from edgeq.targets.tflite.builtins import lookup
from edgeq.targets.tflite.interpreters import run_litert
from edgeq.targets.tflm.interpreter import run_tflm
from edgeq.tflite_format.flatbuffer import Graph, Tensor, read, write

# ------------------------------------------------------------------------------------------- pooling


@SETTINGS
@given(
    st.sampled_from(["AVERAGE_POOL_2D", "MAX_POOL_2D"]),
    st.integers(1, 2),
    st.integers(1, 10),
    st.integers(1, 10),
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 3),
    paddings,
    act_scales,
    zero_points,
    fused,
    seeds,
)
def test_pooling(opcode, batch, height, width, channels, fh, fw, sh, sw, padding, scale, zp, act, seed):
    out_h = output_size_and_padding(padding, height, fh, sh)[0]
    out_w = output_size_and_padding(padding, width, fw, sw)[0]
    assume(out_h >= 1 and out_w >= 1)
    model = single_op(
        opcode,
        [activation("x", (batch, height, width, channels), scale, zp)],
        [activation("y", (batch, out_h, out_w, channels), scale, zp)],
        {
            "Padding": padding,
            "StrideH": sh,
            "StrideW": sw,
            "FilterHeight": fh,
            "FilterWidth": fw,
            "FusedActivationFunction": act,
        },
    )
    check(model, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------- reductions


@SETTINGS
@given(
    st.integers(1, 2),
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(1, 6),
    st.booleans(),
    st.booleans(),
    act_scales,
    st.floats(0.05, 20.0),
    zero_points,
    zero_points,
    seeds,
)
def test_mean(batch, height, width, channels, keep_dims, same_encoding, s_in, ratio, zp_in, zp_out, seed):
    s_out, zp_out = (s_in, zp_in) if same_encoding else (s_in * ratio, zp_out)
    model = single_op(
        "MEAN",
        [
            activation("x", (batch, height, width, channels), s_in, zp_in),
            constant("axes", np.array([1, 2], np.int32)),
        ],
        [activation("y", (batch, 1, 1, channels) if keep_dims else (batch, channels), s_out, zp_out)],
        {"KeepDims": keep_dims},
    )
    check(model, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------- data movement


@SETTINGS
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
    st.integers(2, 3),
    st.data(),
    act_scales,
    zero_points,
    seeds,
)
def test_concatenation(shape, count, data, scale, zp, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=count, max_size=count))
    shapes = [tuple(size if d == axis % len(shape) else n for d, n in enumerate(shape)) for size in sizes]
    out_shape = tuple(sum(sizes) if d == axis % len(shape) else n for d, n in enumerate(shape))
    model = single_op(
        "CONCATENATION",
        [activation(f"x{i}", s, scale, zp) for i, s in enumerate(shapes)],
        [activation("y", out_shape, scale, zp)],
        {"Axis": axis, "FusedActivationFunction": "NONE"},
    )
    check(model, np.random.default_rng(seed))


def test_concatenation_of_differently_encoded_inputs_is_refused_everywhere():
    """TFLite's int8 CONCATENATION never rescales: both interpreters refuse the model, and so does the reference."""
    model = single_op(
        "CONCATENATION",
        [activation("a", (1, 2, 3), 0.02, 0), activation("b", (1, 2, 3), 0.03, 0)],
        [activation("y", (1, 2, 6), 0.03, 0)],
        {"Axis": 2, "FusedActivationFunction": "NONE"},
    )
    x = np.zeros((1, 2, 3), np.int8)
    for run in (reference.run, run_litert, run_tflm):
        with pytest.raises(EdgeqError):
            run(read(model) if run is reference.run else model, [x, x])


@SETTINGS
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
    st.sampled_from(["PAD", "PADV2"]),
    st.data(),
    act_scales,
    zero_points,
    st.integers(-128, 127),
    seeds,
)
def test_pad(shape, opcode, data, scale, zp, fill, seed):
    pads = np.array(
        data.draw(
            st.lists(
                st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=len(shape), max_size=len(shape)
            )
        ),
        np.int32,
    )
    out_shape = tuple(int(n + a + b) for n, (a, b) in zip(shape, pads, strict=True))
    inputs = [activation("x", tuple(shape), scale, zp), constant("paddings", pads)]
    if opcode == "PADV2":
        inputs.append(constant("fill", np.array([fill], np.int8), scale, zp))
    model = single_op(opcode, inputs, [activation("y", out_shape, scale, zp)])
    outputs = check(model, np.random.default_rng(seed))
    border = np.ones(out_shape, bool)
    border[tuple(slice(a, a + n) for n, (a, _) in zip(shape, pads, strict=True))] = False
    assert np.all(outputs[0][border] == (fill if opcode == "PADV2" else zp))


@SETTINGS
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.booleans(), act_scales, zero_points, seeds)
def test_reshape(shape, with_wildcard, scale, zp, seed):
    size = int(np.prod(shape[1:]))
    new_shape = [shape[0], size] if size % 2 else [shape[0], 2, size // 2]
    stored = list(new_shape)
    if with_wildcard:
        stored[-1] = -1
    model = single_op(
        "RESHAPE",
        [activation("x", tuple(shape), scale, zp), constant("shape", np.array(stored, np.int32))],
        [activation("y", tuple(new_shape), scale, zp)],
    )
    check(model, np.random.default_rng(seed))


@SETTINGS
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=5),
    st.randoms(use_true_random=False),
    act_scales,
    zero_points,
    seeds,
)
def test_transpose(shape, random, scale, zp, seed):
    perm = list(range(len(shape)))
    random.shuffle(perm)
    model = single_op(
        "TRANSPOSE",
        [activation("x", tuple(shape), scale, zp), constant("perm", np.array(perm, np.int32))],
        [activation("y", tuple(shape[p] for p in perm), scale, zp)],
    )
    check(model, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------- (de)quantization


@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), act_scales, zero_points, seeds)
def test_quantize_float_to_int8(shape, scale, zp, seed):
    """Includes exact ties x = (k + 1/2) * S, which round away from zero."""
    rng = np.random.default_rng(seed)
    model = single_op(
        "QUANTIZE", [Tensor("x", tuple(shape), np.float32)], [activation("y", tuple(shape), scale, zp)]
    )
    x = (rng.normal(0, 60 * scale, shape)).astype(np.float32)
    ties = ((rng.integers(-140, 140, shape) + 0.5) * np.float32(scale)).astype(np.float32)
    x = np.where(rng.random(shape) < 0.5, ties, x).astype(np.float32)
    assert_bit_exact(model, [x])


@SETTINGS
@given(
    st.sampled_from([(np.int8, np.int8), (np.int8, np.uint8), (np.uint8, np.int8)]),
    act_scales,
    st.floats(0.2, 5.0),
    st.integers(0, 255),
    st.integers(0, 255),
    seeds,
)
def test_requantize(dtypes, s_in, ratio, zp_in, zp_out, seed):
    """int8 -> int8 and int8 <-> uint8 QUANTIZE (zero points drawn in [0, 255], shifted by 128 for int8)."""
    in_dtype, out_dtype = dtypes
    zp_in -= 128 if in_dtype == np.int8 else 0
    zp_out -= 128 if out_dtype == np.int8 else 0
    model = single_op(
        "QUANTIZE",
        [activation("x", (2, 5, 7), s_in, zp_in, in_dtype)],
        [activation("y", (2, 5, 7), s_in * ratio, zp_out, out_dtype)],
    )
    check(model, np.random.default_rng(seed))


def test_quantize_float_to_uint8_matches_litert():
    """TFLite Micro has no float -> uint8 QUANTIZE; LiteRT's reference kernel agrees with the reference."""
    rng = np.random.default_rng(0)
    scale, zp = 0.0173, 131
    model = single_op(
        "QUANTIZE", [Tensor("x", (4, 50), np.float32)], [activation("y", (4, 50), scale, zp, np.uint8)]
    )
    x = np.concatenate(
        [rng.normal(0, 1.5, (2, 50)), (rng.integers(-140, 140, (2, 50)) + 0.5) * np.float32(scale)]
    )
    x = x.astype(np.float32)
    np.testing.assert_array_equal(reference.run(read(model), [x])[0], run_litert(model, [x])[0])


@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), act_scales, zero_points, seeds)
def test_dequantize(shape, scale, zp, seed):
    model = single_op(
        "DEQUANTIZE", [activation("x", tuple(shape), scale, zp)], [Tensor("y", tuple(shape), np.float32)]
    )
    check(model, np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------- batching


def batch_graph() -> Graph:
    """QUANTIZE, CONV, DEPTHWISE, both pools, PAD, two batch-moving TRANSPOSEs, CONCATENATION on the batch axis,
    MEAN, RESHAPE, FC, ADD, MUL and DEQUANTIZE chained on a batch-1 float input."""
    rng = np.random.default_rng(7)
    graph = Graph()

    def tensor(t):
        return graph.add_tensor(t)

    def op(opcode, inputs, output, **options):
        lookup(opcode).add_to(graph, inputs, [output], options)
        return output

    w1_scales = rng.uniform(0.002, 0.02, 4).astype(np.float32)
    w2_scales = rng.uniform(0.01, 0.05, 8).astype(np.float32)
    fc_scale = np.float32(0.01)
    x = tensor(Tensor("x", (1, 8, 8, 3), np.float32))
    q = op("QUANTIZE", [x], tensor(activation("q", (1, 8, 8, 3), 0.02, -5)))
    conv = op(
        "CONV_2D",
        [
            q,
            tensor(constant("w1", int8_weights(rng, (4, 3, 3, 3)), w1_scales)),
            tensor(bias_for(rng, 0.02, w1_scales, 4, 300)),
        ],
        tensor(activation("conv", (1, 8, 8, 4), 0.03, -128)),
        Padding="SAME",
        StrideH=1,
        StrideW=1,
        DilationHFactor=1,
        DilationWFactor=1,
        FusedActivationFunction="RELU",
    )
    dw = op(
        "DEPTHWISE_CONV_2D",
        [
            conv,
            tensor(constant("w2", int8_weights(rng, (1, 3, 3, 8)), w2_scales, axis=3)),
            tensor(bias_for(rng, 0.03, w2_scales, 8, 300)),
        ],
        tensor(activation("dw", (1, 4, 4, 8), 0.05, 3)),
        Padding="SAME",
        StrideH=2,
        StrideW=2,
        DepthMultiplier=2,
        DilationHFactor=1,
        DilationWFactor=1,
        FusedActivationFunction="RELU6",
    )
    pool_options = dict(
        Padding="SAME", StrideH=1, StrideW=1, FilterHeight=2, FilterWidth=2, FusedActivationFunction="NONE"
    )
    mx = op("MAX_POOL_2D", [dw], tensor(activation("max", (1, 4, 4, 8), 0.05, 3)), **pool_options)
    avg = op(
        "AVERAGE_POOL_2D",
        [mx],
        tensor(activation("avg", (1, 2, 2, 8), 0.05, 3)),
        **{**pool_options, "StrideH": 2, "StrideW": 2, "Padding": "VALID"},
    )
    pads = tensor(constant("pads", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32)))
    padded = op("PAD", [avg, pads], tensor(activation("pad", (1, 4, 4, 8), 0.05, 3)))
    perm = tensor(constant("perm", np.array([3, 1, 2, 0], np.int32)))
    moved = op("TRANSPOSE", [padded, perm], tensor(activation("moved", (8, 4, 4, 1), 0.05, 3)))
    back = op("TRANSPOSE", [moved, perm], tensor(activation("back", (1, 4, 4, 8), 0.05, 3)))
    joined = op(
        "CONCATENATION",
        [back, padded],
        tensor(activation("joined", (2, 4, 4, 8), 0.05, 3)),
        Axis=0,
        FusedActivationFunction="NONE",
    )
    axes = tensor(constant("axes", np.array([1, 2], np.int32)))
    mean = op("MEAN", [joined, axes], tensor(activation("mean", (2, 8), 0.02, -20)), KeepDims=False)
    flat = op(
        "RESHAPE",
        [mean, tensor(constant("shape", np.array([1, 16], np.int32)))],
        tensor(activation("flat", (1, 16), 0.02, -20)),
    )
    fc = op(
        "FULLY_CONNECTED",
        [
            flat,
            tensor(constant("w3", int8_weights(rng, (5, 16)), [fc_scale])),
            tensor(bias_for(rng, 0.02, [fc_scale], 5, 300)),
        ],
        tensor(activation("fc", (1, 5), 0.04, 2)),
        FusedActivationFunction="NONE",
        KeepNumDims=False,
    )
    offset = tensor(constant("offset", rng.integers(-128, 128, (1, 5)).astype(np.int8), 0.03, -1))
    added = op(
        "ADD", [fc, offset], tensor(activation("add", (1, 5), 0.05, 0)), FusedActivationFunction="NONE"
    )
    gain = tensor(constant("gain", rng.integers(-128, 128, (5,)).astype(np.int8), 0.01, 4))
    product = op(
        "MUL", [added, gain], tensor(activation("mul", (1, 5), 0.06, -3)), FusedActivationFunction="NONE"
    )
    y = op("DEQUANTIZE", [product], tensor(Tensor("y", (1, 5), np.float32)))
    graph.inputs, graph.outputs = [x], [y]
    return graph


def test_a_batch_of_samples_equals_the_samples_one_at_a_time():
    """The executor runs N samples through a batch-1 graph at once, including ops that move, concatenate or pad
    the batch axis; each sample's result equals its own run, and equals TFLite Micro on that sample."""
    graph = batch_graph()
    samples = np.random.default_rng(3).normal(0, 1, (5, 8, 8, 3)).astype(np.float32)
    batched = reference.run(graph, [samples])[0]
    one_by_one = [reference.run(graph, [sample[None]])[0] for sample in samples]
    np.testing.assert_array_equal(batched, np.concatenate(one_by_one))
    model = write(graph)
    for sample, expected in zip(samples, one_by_one, strict=True):
        np.testing.assert_array_equal(run_tflm(model, [sample[None]])[0], expected)
