"""The TFLite target: ONNX QDQ models lowered to .tflite compute what ONNX Runtime computes, to the LSB.

Every single-op model is built in ONNX, calibrated and quantized by edgeq (int8), lowered to TFLite and checked
twice: (1) edgeq's integer reference, LiteRT's reference kernels and TFLite Micro give identical integers;
(2) against the ONNX Runtime QDQ model with the same scales the final layer differs by at most 1 LSB per element
(TFLite requantizes with a dyadic multiplier and rounds half away from zero, ORT with a float scale and half even).
Inputs are on the input's quantization grid, so both runtimes start from the same integers. Whole models are in
test_target_tflite_models.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from tflite_cases import assert_bit_exact

from edgeq.data import ArrayData, input_specs
from edgeq.errors import EdgeqError
from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.pipeline import Pipeline
from edgeq.quantization.recipe import Recipe
from edgeq.reference.interface import dequantized, float_outputs, model_inputs
from edgeq.targets.tflite.interpreters import invoke_litert, litert_interpreter
from edgeq.targets.tflite.lower import lower
from edgeq.targets.tflite.validate import check_model
from edgeq.tflite_format.flatbuffer import read, write

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model(nodes, inputs, output, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "single_op",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return proto


def _quantize(proto: onnx.ModelProto, rng: np.random.Generator, inputs) -> ir.Model:
    model = ir.serde.deserialize_model(proto)
    calib = {name: rng.normal(0, 1, (24, *shape[1:])).astype(np.float32) for name, shape in inputs}
    calibration = Pipeline(Recipe(), progress=False).calibrate(model, ArrayData(calib, input_specs(model), "calib"))
    qdq, _ = Pipeline(Recipe()).quantize(calibration, "int8")
    return qdq


def _on_grid(graph, rng, inputs) -> dict[str, np.ndarray]:
    """Float inputs that quantize exactly (no rounding ties) to random integers of each input's grid."""
    feeds = {}
    for (name, shape), index in zip(inputs, graph.inputs, strict=True):
        q = graph.tensors[index].quantization
        ints = rng.integers(-128, 128, shape)
        feeds[name] = ((ints - q.zero_point[0]) * q.scale[0]).astype(np.float32)
    return feeds


def check_against_onnxruntime(
    proto: onnx.ModelProto, inputs, seed: int = 0, samples: int = 3, start: tuple[str, ...] = ()
) -> None:
    """Bit-exactness of the three integer runtimes, and at most 1 LSB against ORT on the final layer.

    START names intermediate tensors from which ORT continues with the integers the .tflite computed: the ops
    before them (e.g. the Mul that makes a follower op quantized) may already differ by 1 LSB, and the final layer
    would amplify that; the claim is about one layer given identical inputs.
    """
    rng = np.random.default_rng(seed)
    qdq = _quantize(proto, rng, inputs)
    model_bytes = write(lower(qdq).graph)
    graph = read(model_bytes)
    qdq_proto = to_proto(qdq)
    if start:  # ORT starts at the float tensors that the Q of each START tensor quantizes
        sources = [f"{name}_float" for name in start] + [n for n, _ in inputs if n not in start]
        qdq_proto = onnx.utils.Extractor(qdq_proto).extract_model(sources, [o.name for o in qdq_proto.graph.output])
    session = ort_session(qdq_proto)
    interpreter = litert_interpreter(model_bytes, kernels="reference", preserve_all_tensors=True)
    by_name = {t.name: i for i, t in enumerate(graph.tensors)}
    out_q = graph.tensors[graph.outputs[0]].quantization
    for _ in range(samples):
        feeds = _on_grid(graph, rng, inputs)
        tfl_inputs = model_inputs(graph, feeds)
        assert_bit_exact(model_bytes, tfl_inputs)
        tflite = float_outputs(graph, invoke_litert(interpreter, tfl_inputs))[0]
        for name in start:
            feeds.pop(name, None)
            feeds[f"{name}_float"] = dequantized(graph, by_name[name], interpreter.get_tensor(by_name[name]))
        onnx_out = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
        lsb = np.abs(tflite - onnx_out) / out_q.scale[0]
        assert tflite.shape == onnx_out.shape
        assert lsb.max() <= 1.001, f"{lsb.max():.2f} LSB; {np.count_nonzero(lsb > 0.5)} elements differ"


def _scaled_input(nodes, inits):
    """Prefix NODES (which read "m") with x * 1.5: ops that only follow others are quantized after an anchor."""
    return [helper.make_node("Mul", ["x", "k"], ["m"]), *nodes], [*inits, ("k", np.array(1.5, np.float32))]


def _weights(rng, *shape, scale=0.3):
    return (rng.normal(size=shape) * scale).astype(np.float32)


@SETTINGS
@given(
    c_in=st.integers(1, 5),
    c_out=st.integers(1, 6),
    kernel=st.sampled_from([1, 2, 3, 5]),
    stride=st.sampled_from([1, 2]),
    dilation=st.sampled_from([1, 2]),
    size=st.integers(6, 11),
    pad_kind=st.sampled_from(["none", "symmetric", "upper", "odd"]),
    activation=st.sampled_from([None, "Relu", "Relu6"]),
    depthwise=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_conv_and_depthwise(
    c_in, c_out, kernel, stride, dilation, size, pad_kind, activation, depthwise, seed
):
    rng = np.random.default_rng(seed)
    group = c_in if depthwise else 1
    if depthwise:
        c_out = c_in * (1 + c_out % 2)  # depth multiplier 1 or 2
    eff = (kernel - 1) * dilation + 1
    size = max(size, eff)
    pads = {
        "none": [0, 0, 0, 0],
        "symmetric": [eff // 2] * 4,
        "upper": [(eff - 1) // 2, (eff - 1) // 2, eff // 2, eff // 2],
        "odd": [1, 0, 0, 2],
    }[pad_kind]
    inits = [
        ("w", _weights(rng, c_out, c_in // group, kernel, kernel)),
        ("b", _weights(rng, c_out, scale=0.1)),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w", "b"],
            ["conv"],
            pads=pads,
            strides=[stride] * 2,
            dilations=[dilation] * 2,
            group=group,
        )
    ]
    out = "conv"
    if activation == "Relu":
        nodes.append(helper.make_node("Relu", ["conv"], ["y"]))
        out = "y"
    elif activation == "Relu6":
        inits += [("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32))]
        nodes.append(helper.make_node("Clip", ["conv", "lo", "hi"], ["y"]))
        out = "y"
    inputs = [("x", [1, c_in, size, size])]
    check_against_onnxruntime(_model(nodes, inputs, out, inits), inputs, seed)


@SETTINGS
@given(
    kind=st.sampled_from(["gemm_transB", "gemm", "matmul", "flatten_gemm"]),
    features=st.integers(1, 24),
    outputs=st.integers(1, 12),
    seed=st.integers(0, 1000),
)
def test_fully_connected(kind, features, outputs, seed):
    rng = np.random.default_rng(seed)
    if kind == "flatten_gemm":  # ONNX flattens C,H,W; TFLite H,W,C: the weight columns must be permuted
        c, h = 1 + features % 4, 3
        inputs = [("x", [1, c, h, h])]
        nodes, inits = _scaled_input(
            [
                helper.make_node("Flatten", ["m"], ["flat"]),
                helper.make_node("Gemm", ["flat", "w", "b"], ["y"], transB=1),
            ],
            [("w", _weights(rng, outputs, c * h * h)), ("b", _weights(rng, outputs, scale=0.1))],
        )
    else:
        inputs = [("x", [1, features])]
        shape = (outputs, features) if kind == "gemm_transB" else (features, outputs)
        inits = [("w", _weights(rng, *shape))]
        if kind == "matmul":
            nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        else:
            inits.append(("b", _weights(rng, outputs, scale=0.1)))
            nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=int(kind == "gemm_transB"))]
    check_against_onnxruntime(_model(nodes, inputs, "y", inits), inputs, seed, start=("m",) if kind == "flatten_gemm" else ())


@SETTINGS
@given(
    op=st.sampled_from(["Add", "Mul"]),
    operand=st.sampled_from(["activation", "channel_constant", "scalar_constant"]),
    relu=st.booleans(),
    channels=st.integers(1, 6),
    seed=st.integers(0, 1000),
)
def test_add_and_mul(op, operand, relu, channels, seed):
    rng = np.random.default_rng(seed)
    shape = [1, channels, 5, 4]
    inputs = [("a", shape)]
    inits = []
    if operand == "activation":
        inputs.append(("b", shape))
    elif operand == "channel_constant":
        inits.append(("b", _weights(rng, channels, 1, 1, scale=1.0)))
    else:
        inits.append(("b", np.array(0.7, np.float32)))
    # a product of two inputs gives the two operands different encodings (a constant scale would be folded into the
    # op after it by preprocessing)
    inputs.append(("c", shape))
    nodes = [helper.make_node("Mul", ["a", "c"], ["a3"]), helper.make_node(op, ["a3", "b"], ["z"])]
    out = "z"
    if relu:
        nodes.append(helper.make_node("Relu", ["z"], ["y"]))
        out = "y"
    check_against_onnxruntime(_model(nodes, inputs, out, inits), inputs, seed, start=("a3",))


def _bounded_layers(op, layer, operand, rng):
    """layer -> Relu -> op(x, bound) -> layer, as equalization writes a Relu6 between scaled layers: the bound
    is per channel ([1, C, 1, 1] after a Conv, [C] after a Gemm) or a scalar."""
    channels = 4
    per_channel = (1, channels, 1, 1) if layer == "conv" else (channels,)
    bound_shape = {"channel_constant": per_channel, "scalar_constant": ()}[operand]
    if layer == "conv":
        inputs = [("x", [1, 3, 6, 5])]
        inits = [("w1", _weights(rng, channels, 3, 3, 3)), ("w2", _weights(rng, 5, channels, 1, 1))]
        first = helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1])
        second = helper.make_node("Conv", ["bounded", "w2", "b2"], ["y"])
    else:
        inputs = [("x", [1, 7])]
        inits = [("w1", _weights(rng, channels, 7)), ("w2", _weights(rng, 5, channels))]
        first = helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1)
        second = helper.make_node("Gemm", ["bounded", "w2", "b2"], ["y"], transB=1)
    inits += [("b1", _weights(rng, channels, scale=0.1)), ("b2", _weights(rng, 5, scale=0.1))]
    # bounds inside the calibrated range, so the clamp is active on some elements
    inits.append(("bound", rng.uniform(0.1, 0.8, bound_shape).astype(np.float32)))
    relu = helper.make_node("Relu", ["h"], ["r"])
    nodes = [first, relu, helper.make_node(op, ["r", "bound"], ["bounded"]), second]
    return nodes, inputs, inits


@SETTINGS
@given(
    op=st.sampled_from(["Min", "Max"]),
    layer=st.sampled_from(["conv", "gemm"]),
    operand=st.sampled_from(["channel_constant", "scalar_constant"]),
    seed=st.integers(0, 1000),
)
def test_min_and_max_between_layers(op, layer, operand, seed):
    """Conv/Gemm -> Relu -> Min(x, B) -> Conv/Gemm: MINIMUM/MAXIMUM with B laid out NHWC, exact everywhere."""
    nodes, inputs, inits = _bounded_layers(op, layer, operand, np.random.default_rng(seed))
    proto = _model(nodes, inputs, "y", inits)
    check_against_onnxruntime(proto, inputs, seed, start=("bounded",))
    lowered = lower(_quantize(proto, np.random.default_rng(seed), inputs))
    opcode = "MINIMUM" if op == "Min" else "MAXIMUM"
    assert lowered.ops == {"CONV_2D" if layer == "conv" else "FULLY_CONNECTED": 2, opcode: 1}


@pytest.mark.parametrize("op", ["Min", "Max"])
def test_min_and_max_clamp_exactly_against_onnxruntime(op):
    """The clamp alone, from the tensor the .tflite computed before it: ORT's DQ -> Min -> Q of one encoding and
    TFLite's integer MINIMUM agree exactly (0 LSB), and the bound really clamps some elements."""
    rng = np.random.default_rng(3)
    nodes, inputs, inits = _bounded_layers(op, "conv", "channel_constant", rng)
    nodes = nodes[:-1]  # end at the clamp
    proto = _model(nodes, inputs, "bounded", inits)
    qdq = _quantize(proto, rng, inputs)
    model_bytes = write(lower(qdq).graph)
    graph = read(model_bytes)
    by_name = {t.name: i for i, t in enumerate(graph.tensors)}
    bound = graph.tensors[by_name["bound_dequantized_const"]]
    assert bound.shape == (1, 1, 1, 4) and not bound.quantization.per_channel
    qdq_proto = onnx.utils.Extractor(to_proto(qdq)).extract_model(["r_float"], ["bounded"])
    session = ort_session(qdq_proto)
    interpreter = litert_interpreter(model_bytes, kernels="reference", preserve_all_tensors=True)
    feeds = _on_grid(graph, rng, inputs)
    tfl_inputs = model_inputs(graph, feeds)
    [ints] = assert_bit_exact(model_bytes, tfl_inputs)
    invoke_litert(interpreter, tfl_inputs)
    r = dequantized(graph, by_name["r"], interpreter.get_tensor(by_name["r"]))
    onnx_out = session.run(None, {"r_float": r})[0]
    np.testing.assert_array_equal(float_outputs(graph, [ints])[0], onnx_out)
    real_bound = dequantized(graph, by_name["bound_dequantized_const"], bound.data)
    clamped = (r > real_bound) if op == "Min" else (r < real_bound)
    assert 0 < np.count_nonzero(clamped) < r.size


def test_min_with_a_bound_on_another_grid_is_refused():
    rng = np.random.default_rng(0)
    nodes, inputs, inits = _bounded_layers("Min", "conv", "channel_constant", rng)
    qdq = _quantize(_model(nodes, inputs, "y", inits), rng, inputs)
    bound_scale = qdq.graph.node("bound_DequantizeLinear").inputs[1]
    bound_scale.const_value = ir.tensor(bound_scale.const_value.numpy() * 2)
    with pytest.raises(EdgeqError, match="input and output encodings differ"):
        lower(qdq)
    lower(qdq, precision="float")  # float tensors have no encodings to share


def test_min_lowers_to_float_minimum_with_the_dequantized_bound():
    """precision="float": MINIMUM of float32 tensors; in LiteRT its output is exactly min(input, bound)."""
    rng = np.random.default_rng(1)
    nodes, inputs, inits = _bounded_layers("Min", "conv", "channel_constant", rng)
    qdq = _quantize(_model(nodes, inputs, "y", inits), rng, inputs)
    lowered = lower(qdq, precision="float")
    model_bytes = write(lowered.graph)
    check_model(model_bytes)
    graph = read(model_bytes)
    minimum = next(op for op in graph.operators if op.opcode == "MINIMUM")
    assert minimum.version == 1 and all(graph.tensors[i].dtype == np.float32 for i in minimum.inputs)
    bound = graph.tensors[minimum.inputs[1]].data
    bound_dq = qdq.graph.node("bound_DequantizeLinear")
    bound_q = bound_dq.inputs[0].const_value.numpy()
    scale, zero = (float(bound_dq.inputs[i].const_value.numpy()) for i in (1, 2))
    np.testing.assert_array_equal(bound, ((bound_q.astype(np.float32) - zero) * scale).reshape(1, 1, 1, -1))
    interpreter = litert_interpreter(model_bytes, kernels="reference", preserve_all_tensors=True)
    invoke_litert(interpreter, model_inputs(graph, {"x": rng.normal(0, 1, (1, 3, 6, 5)).astype(np.float32)}))
    before, after = (interpreter.get_tensor(i) for i in (minimum.inputs[0], minimum.outputs[0]))
    np.testing.assert_array_equal(after, np.minimum(before, bound))
    assert np.count_nonzero(after != before) > 0


@SETTINGS
@given(
    op=st.sampled_from(["MaxPool", "AveragePool"]),
    kernel=st.sampled_from([2, 3]),
    stride=st.sampled_from([1, 2]),
    pad=st.booleans(),
    size=st.integers(5, 9),
    seed=st.integers(0, 1000),
)
def test_pooling(op, kernel, stride, pad, size, seed):
    inputs = [("x", [1, 3, size, size])]
    attributes = {"kernel_shape": [kernel] * 2, "strides": [stride] * 2}
    if pad:  # SAME padding for this size when it is SAME-compatible, else an explicit PAD / PADV2
        attributes["pads"] = (
            [kernel // 2] * 4 if op == "MaxPool" else [(kernel - 1) // 2] * 2 + [kernel // 2] * 2
        )
    if op == "AveragePool" and pad:
        attributes["count_include_pad"] = 0
    nodes, inits = _scaled_input([helper.make_node(op, ["m"], ["y"], **attributes)], [])
    proto = _model(nodes, inputs, "y", inits)
    try:
        check_against_onnxruntime(proto, inputs, seed, start=("m",))
    except (
        EdgeqError
    ) as exc:  # pads that exclude themselves from the count and are not SAME: refused, clearly
        assert "are not TFLite SAME padding" in str(exc) and op == "AveragePool"


def test_concat_global_average_pool_then_flatten_and_gemm():
    rng = np.random.default_rng(0)
    inputs = [("a", [1, 4, 6, 5]), ("b", [1, 3, 6, 5])]
    nodes = [
        helper.make_node("Concat", ["a", "b"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["gap"]),
    ]
    check_against_onnxruntime(_model(nodes, inputs, "gap"), inputs)  # CONCATENATION + MEAN
    nodes += [
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["y"], transB=1),
    ]
    proto = _model(nodes, inputs, "y", [("w", _weights(rng, 5, 7))])
    check_against_onnxruntime(proto, inputs, start=("gap",))  # RESHAPE + FULLY_CONNECTED


@pytest.mark.parametrize(
    "op, attributes",
    [
        ("Sigmoid", {}),
        ("Softmax", {"axis": -1}),
        ("HardSwish", {}),
        ("LeakyRelu", {"alpha": 0.1}),
        ("LeakyRelu", {}),  # ONNX's default alpha, 0.01
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_nonlinear(op, attributes, seed):
    inputs = [("x", [1, 10])] if op == "Softmax" else [("x", [1, 3, 4, 5])]
    nodes, inits = _scaled_input([helper.make_node(op, ["m"], ["y"], **attributes)], [])
    check_against_onnxruntime(_model(nodes, inputs, "y", inits), inputs, seed, start=("m",))


def test_leaky_relu_lowers_with_its_own_output_encoding_and_to_float():
    """LEAKY_RELU reads alpha from the ONNX node and rescales to the encoding of its own Q; at float precision it
    is float32 LEAKY_RELU, and LiteRT computes exactly x if x > 0 else float32(alpha) * x."""
    inputs = [("x", [1, 3, 4, 5])]
    nodes, inits = _scaled_input([helper.make_node("LeakyRelu", ["m"], ["y"], alpha=0.3)], [])
    qdq = _quantize(_model(nodes, inputs, "y", inits), np.random.default_rng(0), inputs)
    graph = read(write(lower(qdq).graph))
    leaky = next(op for op in graph.operators if op.opcode == "LEAKY_RELU")
    assert leaky.options_type == "LeakyReluOptions" and leaky.options["Alpha"] == np.float32(0.3)
    assert leaky.version == 1
    x, y = (graph.tensors[leaky.inputs[0]], graph.tensors[leaky.outputs[0]])
    assert x.quantization.scale[0] != y.quantization.scale[0]
    model_bytes = write(lower(qdq, precision="float").graph)
    check_model(model_bytes)
    graph = read(model_bytes)
    leaky = next(op for op in graph.operators if op.opcode == "LEAKY_RELU")
    assert all(graph.tensors[i].dtype == np.float32 for i in [*leaky.inputs, *leaky.outputs])
    interpreter = litert_interpreter(model_bytes, kernels="reference", preserve_all_tensors=True)
    feeds = {"x": np.random.default_rng(1).normal(0, 1, (1, 3, 4, 5)).astype(np.float32)}
    invoke_litert(interpreter, model_inputs(graph, feeds))
    before, after = (interpreter.get_tensor(i) for i in (leaky.inputs[0], leaky.outputs[0]))
    np.testing.assert_array_equal(after, np.where(before > 0, before, before * np.float32(0.3)))
    assert np.count_nonzero(before < 0) > 0


@pytest.mark.parametrize(
    "mode, transform, nearest_mode",
    [
        ("nearest", "asymmetric", "floor"),
        ("nearest", "half_pixel", "round_prefer_ceil"),
        ("nearest", "align_corners", "round_prefer_ceil"),
        ("nearest", "tf_half_pixel_for_nn", "floor"),
        ("linear", "half_pixel", None),
        ("linear", "align_corners", None),
        ("linear", "asymmetric", None),
    ],
)
def test_resize(mode, transform, nearest_mode):
    inputs = [("x", [1, 2, 4, 5])]
    attributes = {"mode": mode, "coordinate_transformation_mode": transform}
    if nearest_mode:
        attributes["nearest_mode"] = nearest_mode
    nodes, inits = _scaled_input(
        [helper.make_node("Resize", ["m", "", "", "sizes"], ["y"], **attributes)],
        [("sizes", np.array([1, 2, 8, 7], np.int64))],
    )
    check_against_onnxruntime(_model(nodes, inputs, "y", inits), inputs, start=("m",))


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [0, 1, 3, 2]])
def test_transpose_and_pad(perm):
    inputs = [("x", [1, 3, 4, 5])]
    nodes, inits = _scaled_input(
        [
            helper.make_node("Pad", ["m", "pads"], ["p"]),
            helper.make_node("Transpose", ["p"], ["y"], perm=perm),
        ],
        [("pads", np.array([0, 0, 1, 2, 0, 1, 0, 1], np.int64))],
    )
    check_against_onnxruntime(_model(nodes, inputs, "y", inits), inputs, start=("m",))


def test_reshape_across_layouts():
    """A 4-D -> 3-D reshape of a feature map needs the data in ONNX order: one TRANSPOSE, then RESHAPE."""
    inputs = [("x", [1, 3, 4, 4])]
    inits = [("shape", np.array([1, 6, 8], np.int64)), ("k", np.array(2.0, np.float32))]
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["y"]),
    ]
    proto = _model(nodes, inputs, "y", inits)
    check_against_onnxruntime(proto, inputs, start=("m",))
    graph = lower(_quantize(proto, np.random.default_rng(0), inputs)).graph
    assert [op.opcode for op in graph.operators] == ["MUL", "TRANSPOSE", "RESHAPE"]


def test_unsupported_op_is_named():
    inputs = [("x", [1, 4])]
    nodes, inits = _scaled_input([helper.make_node("Hardmax", ["m"], ["y"])], [])
    qdq = _quantize(_model(nodes, inputs, "y", inits), np.random.default_rng(0), inputs)
    with pytest.raises(EdgeqError, match="unsupported: Hardmax at node_1: the TFLite target has no lowering"):
        lower(qdq)


def test_reshape_to_rows_of_other_axes_before_a_matmul():
    """[1, C, H, W] -> [C * H, W] rows read by a MatMul with constant weights (a text recognizer's sequence): only a
    reshape that keeps the batch axis as the rows can be absorbed into the weights' column order."""
    rng = np.random.default_rng(5)
    inputs = [("x", [1, 3, 6, 5])]
    fc = rng.normal(0, 0.5, (5, 7)).astype(np.float32)
    inits = [("w", _weights(rng, 4, 3, 1, 1)), ("shape", np.array([24, 5], np.int64)), ("fc", fc)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "fc"], ["y"]),
    ]
    check_against_onnxruntime(_model(nodes, inputs, "y", inits), inputs, start=("r",))
