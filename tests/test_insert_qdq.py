"""QDQ planning and insertion: what is quantized, with which encodings, and that the result runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import make_convnet
from onnx import TensorProto, helper, numpy_helper

from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.passes.insert_qdq import InsertQDQPass
from edgeq.passes.preprocess import preprocess
from edgeq.quantization.plan import QUANTIZABLE_OPS, Exclusions, assign_encodings, plan_quantization
from edgeq.quantization.qparams import ACTIVATION_TYPES

RNG = np.random.default_rng(0)


def _minmax_ranges(model: ir.Model, names: list[str], x: np.ndarray) -> dict[str, tuple[float, float]]:
    proto = to_proto(model)
    del proto.graph.output[:]
    for name in names:
        proto.graph.output.append(helper.make_empty_tensor_value_info(name))
    outs = ort_session(proto).run(
        None, {"input": x}
    )
    return {n: (float(o.min()), float(o.max())) for n, o in zip(names, outs, strict=True)}


def _quantize(
    proto: onnx.ModelProto, x: np.ndarray, activation_type="int8", exclude=(), per_channel=True, weight_bits=8
):
    model = preprocess(ir.serde.deserialize_model(proto))
    plan = plan_quantization(model.graph, Exclusions(list(exclude)))
    ranges = _minmax_ranges(model, plan.calibration_tensors(), x)
    encodings = assign_encodings(plan, ranges, ACTIVATION_TYPES[activation_type])
    inserted = InsertQDQPass(plan, encodings, per_channel=per_channel, weight_bits=weight_bits)(model)
    out = to_proto(model)
    onnx.checker.check_model(out)
    return out, plan, encodings, inserted


def _run(proto, x):
    session = ort_session(proto)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _initializers(proto):
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_plan_fuses_activations_shares_pool_encodings_and_fixes_softmax():
    model = preprocess(ir.serde.deserialize_model(make_convnet()))
    plan = plan_quantization(model.graph)
    assert sorted(n.op_type for n in plan.quantized) == sorted(
        [
            "Conv",
            "Relu",
            "Conv",
            "Clip",
            "Conv",
            "Add",
            "MaxPool",
            "GlobalAveragePool",
            "Flatten",
            "Gemm",
            "Softmax",
        ]
    )
    assert {a.op_type for a in plan.fused_activation.values()} == {"Relu", "Clip"}
    assert plan.float_nodes == {}
    # the pooled tensor shares the Add's encoding; GlobalAveragePool has its own (its range is narrower)
    assert plan.group_of("pool") == plan.group_of("add")
    assert plan.group_of("gap") != plan.group_of("add")
    assert plan.group_of("flat") == plan.group_of("gap")
    assert plan.fixed_output == {"probs": "Softmax"}
    assert "probs" not in plan.calibration_tensors()


@pytest.mark.parametrize("activation_type", ["int8", "uint8"])
def test_quantized_model_runs_close_to_float(activation_type):
    proto = make_convnet()
    x = RNG.normal(size=(32, 3, 8, 8)).astype(np.float32)
    qdq, *_ = _quantize(proto, x, activation_type)
    ref, out = _run(proto, x), _run(qdq, x)
    assert [o.name for o in qdq.graph.output] == ["probs"]
    assert np.abs(ref - out).max() < 0.05
    assert (ref.argmax(1) == out.argmax(1)).mean() >= 0.9
    # Q after the fused Relu/Clip, not between Conv and activation
    producers = {o: n for n in qdq.graph.node for o in n.output}
    for node in qdq.graph.node:
        if node.op_type in ("Relu", "Clip"):
            assert producers[node.input[0]].op_type == "Conv"


def test_weights_biases_and_fixed_encodings():
    proto = make_convnet()
    x = RNG.normal(size=(16, 3, 8, 8)).astype(np.float32)
    qdq, plan, encodings, _ = _quantize(proto, x)
    inits = _initializers(qdq)
    dq = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    conv = next(n for n in qdq.graph.node if n.op_type == "Conv" and n.name == "dw")
    w_dq, b_dq = dq[conv.input[1]], dq[conv.input[2]]
    w_q, w_scale = inits[w_dq.input[0]], inits[w_dq.input[1]]
    assert w_q.dtype == np.int8 and np.abs(w_q).max() == 127 and w_q.min() >= -127
    assert w_scale.shape == (8,) and {a.name: a.i for a in w_dq.attribute} == {"axis": 0}
    assert np.all(inits[w_dq.input[2]] == 0)
    b_q, b_scale = inits[b_dq.input[0]], inits[b_dq.input[1]]
    assert b_q.dtype == np.int32
    s_in = encodings[conv.input[0]].scale
    np.testing.assert_array_equal(b_scale, (np.float32(s_in) * w_scale).astype(np.float32))
    softmax_q = next(
        n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "probs_float"
    )
    assert inits[softmax_q.input[1]] == np.float32(1 / 256) and inits[softmax_q.input[2]] == -128
    relu_q = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "relu_float")
    assert inits[relu_q.input[2]] == -128  # post-ReLU range starts at 0: the whole int8 range is used


def test_per_tensor_and_4bit_weights():
    proto = make_convnet()
    x = RNG.normal(size=(8, 3, 8, 8)).astype(np.float32)
    qdq, *_ = _quantize(proto, x, per_channel=False, weight_bits=4)
    inits = _initializers(qdq)
    for node in qdq.graph.node:
        if node.op_type == "Conv":
            w_dq = next(n for n in qdq.graph.node if n.output[0] == node.input[1])
            assert inits[w_dq.input[1]].shape == ()
            assert np.abs(inits[w_dq.input[0]]).max() == 7
    assert np.isfinite(_run(qdq, x)).all()


def test_exclude_keeps_nodes_float_and_reports_them():
    proto = make_convnet()
    x = RNG.normal(size=(8, 3, 8, 8)).astype(np.float32)
    qdq, plan, _, _ = _quantize(proto, x, exclude=["Gemm", "d.*"])
    assert plan.float_nodes["fc"] == "excluded" and plan.float_nodes["dw"] == "excluded"
    fc = next(n for n in qdq.graph.node if n.name == "fc")
    assert fc.input[1] == "fc.w"  # float weights


def _single_node_model(node, inputs, output_shape, inits):
    graph = helper.make_graph(
        [node],
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return proto


def test_conv_transpose_weights_use_axis_1_with_groups():
    w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)  # [Cin, Cout/group, kh, kw], group 2 -> Cout 6
    b = RNG.normal(size=6).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["input", "w", "b"], ["y"], group=2, strides=[2, 2])
    proto = _single_node_model(
        node,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 5, 5])],
        [1, 6, 11, 11],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    x = RNG.normal(size=(1, 4, 5, 5)).astype(np.float32)
    qdq, *_ = _quantize(proto, x)
    w_dq = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.name)
    assert {a.name: a.i for a in w_dq.attribute}["axis"] == 1
    assert _initializers(qdq)[w_dq.input[1]].shape == (3,)
    ref, out = _run(proto, x), _run(qdq, x)
    assert np.abs(ref - out).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_weight_axis_and_alpha_beta(trans_b):
    w = RNG.normal(size=(5, 7) if trans_b else (7, 5)).astype(np.float32)
    c = RNG.normal(size=5).astype(np.float32)
    node = helper.make_node("Gemm", ["input", "w", "c"], ["y"], transB=trans_b, alpha=0.5, beta=2.0)
    proto = _single_node_model(
        node,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 7])],
        [4, 5],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c")],
    )
    x = RNG.normal(size=(4, 7)).astype(np.float32)
    qdq, *_ = _quantize(proto, x)
    w_dq = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.name)
    assert {a.name: a.i for a in w_dq.attribute}["axis"] == (0 if trans_b else 1)
    gemm = next(n for n in qdq.graph.node if n.op_type == "Gemm")
    assert {a.name for a in gemm.attribute} <= {"transB", "transA"}
    ref, out = _run(proto, x), _run(qdq, x)
    assert np.abs(ref - out).max() < 0.03 * np.abs(ref).max()


def test_bias_overflow_raises_weight_scale_and_is_reported():
    w = np.full((2, 3, 1, 1), 1e-7, np.float32)  # tiny weights, huge bias: int32 bias would overflow
    b = np.array([1e4, 1e-6], np.float32)
    node = helper.make_node("Conv", ["input", "w", "b"], ["y"])
    proto = _single_node_model(
        node,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [1, 2, 4, 4],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    x = RNG.normal(size=(1, 3, 4, 4)).astype(np.float32)
    qdq, _, _, inserted = _quantize(proto, x)
    assert list(inserted.raised_bias_channels.values()) == [[0]]
    b_q = next(v for k, v in _initializers(qdq).items() if k.endswith("bias_quantized"))
    assert np.abs(b_q.astype(np.int64)).max() <= 2**30
    np.testing.assert_allclose(_run(qdq, x), _run(proto, x), rtol=1e-3, atol=1e-3)


def test_matmul_with_constant_weights_and_add_constant():
    w = RNG.normal(size=(6, 4)).astype(np.float32)
    k = RNG.normal(size=4).astype(np.float32)
    nodes = [  # a Relu between them: onnxruntime's folding would make MatMul + Add one Gemm
        helper.make_node("MatMul", ["input", "w"], ["m"], name="mm"),
        helper.make_node("Relu", ["m"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "k"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [3, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(k, "k")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    x = RNG.normal(size=(3, 6)).astype(np.float32)
    qdq, plan, *_ = _quantize(proto, x)
    assert [c.name for c in plan.constants] == ["k"]
    assert "k" not in _initializers(qdq) and "k_quantized" in _initializers(qdq)
    ref, out = _run(proto, x), _run(qdq, x)
    assert np.abs(ref - out).max() < 0.03 * np.abs(ref).max()


def test_data_movement_between_float_ops_stays_float():
    nodes = [
        helper.make_node("Exp", ["input"], ["e"], name="exp"),
        helper.make_node("Reshape", ["e", "shape"], ["y"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        initializer=[numpy_helper.from_array(np.array([3, 4], np.int64), "shape")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model = preprocess(ir.serde.deserialize_model(proto))
    plan = plan_quantization(model.graph)
    assert plan.quantized == [] and plan.tensors == []
    assert set(plan.float_nodes) == {"exp", "reshape"}


def _every_op_model() -> onnx.ModelProto:
    """One graph with every op type issue 2 lists, in shapes small enough to check exhaustively."""
    r = np.random.default_rng(3)

    def w(name, *shape, scale=0.4):
        return numpy_helper.from_array((r.normal(size=shape) * scale).astype(np.float32), name)

    def i64(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    def f32(name, values):
        return numpy_helper.from_array(np.array(values, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "c.w", "c.b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node(
            "ConvTranspose", ["relu", "ct.w"], ["ct"], name="ct", strides=[2, 2]
        ),  # 8x8 -> 16x16
        helper.make_node("MaxPool", ["ct"], ["mp"], name="mp", kernel_shape=[2, 2], strides=[2, 2]),  # 8x8
        helper.make_node(
            "AveragePool",
            ["mp"],
            ["ap"],
            name="ap",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            count_include_pad=0,
        ),
        helper.make_node("Pad", ["ap", "pads"], ["pad"], name="pad"),  # 10x10
        helper.make_node("Resize", ["pad", "", "scales"], ["rs"], name="rs", mode="nearest"),  # 5x5
        helper.make_node("Sigmoid", ["rs"], ["sig"], name="sig"),
        helper.make_node("Mul", ["rs", "sig"], ["swish"], name="swish"),
        helper.make_node("HardSwish", ["swish"], ["hsw"], name="hsw"),
        helper.make_node("HardSigmoid", ["rs"], ["hsg"], name="hsg"),
        helper.make_node("LeakyRelu", ["rs"], ["lr"], name="lr", alpha=0.1),
        helper.make_node("Concat", ["hsw", "hsg", "lr"], ["cat"], name="cat", axis=1),  # 12 channels
        helper.make_node("Clip", ["cat", "lo", "hi"], ["clip"], name="clip"),
        helper.make_node("Min", ["clip", "ceiling"], ["min"], name="min"),  # a per-channel clamp
        helper.make_node("Max", ["min", "floor"], ["max"], name="max"),
        helper.make_node("Transpose", ["max"], ["tr"], name="tr", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["tr", "shape"], ["rsh"], name="rsh"),  # [1, 25, 12]
        helper.make_node("MatMul", ["rsh", "mm.w"], ["mm"], name="mm"),  # [1, 25, 6]
        helper.make_node("Unsqueeze", ["mm", "axes"], ["unsq"], name="unsq"),  # [1, 1, 25, 6]
        helper.make_node("Squeeze", ["unsq", "axes"], ["sq"], name="sq"),
        helper.make_node("Add", ["sq", "bias"], ["add"], name="add"),
        helper.make_node("Flatten", ["add"], ["flat"], name="flat"),  # [1, 150]
        helper.make_node("Gemm", ["flat", "g.w", "g.b"], ["logits"], name="gemm", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"], name="gap"),
    ]
    inits = [
        w("c.w", 4, 3, 3, 3),
        w("c.b", 4, scale=0.1),
        w("ct.w", 4, 4, 2, 2),
        i64("pads", [0, 0, 1, 1, 0, 0, 1, 1]),
        f32("scales", [1, 1, 0.5, 0.5]),
        f32("lo", 0.0),
        f32("hi", 6.0),
        f32("ceiling", np.linspace(0.2, 30.0, 12).reshape(1, 12, 1, 1)),
        f32("floor", 0.05),
        i64("shape", [1, 25, 12]),
        w("mm.w", 12, 6),
        i64("axes", [1]),
        w("bias", 6, scale=0.2),
        w("g.w", 10, 150, scale=0.1),
        w("g.b", 10, scale=0.1),
    ]
    graph = helper.make_graph(
        nodes,
        "every_op",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10]),
            helper.make_tensor_value_info("gap", TensorProto.FLOAT, [1, 4, 1, 1]),
        ],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize("activation_type", ["int8", "uint8"])
def test_every_listed_op_is_quantized_and_runs(activation_type):
    proto = _every_op_model()
    x = RNG.normal(size=(1, 3, 8, 8)).astype(np.float32)
    qdq, plan, encodings, _ = _quantize(proto, x, activation_type)
    assert plan.float_nodes == {}
    # every quantizable op of the graph (the op types issue 2 listed) is quantized
    listed = {n.op_type for n in proto.graph.node} & QUANTIZABLE_OPS
    assert len(listed) >= 20 and {n.op_type for n in plan.quantized} == listed
    # data movement shares one encoding through the chain; concat inputs share theirs
    assert encodings["mp"] == encodings["ct"] == encodings["ap"] == encodings["pad"] == encodings["rs"]
    assert encodings["hsw"] == encodings["hsg"] == encodings["lr"] == encodings["cat"]
    # a clamp's group takes its output's range: the ceiling's 30 and the clip's wider input do not widen it
    assert encodings["clip"] == encodings["min"] == encodings["max"] == encodings["ceiling"]
    assert encodings["max"].scale < 6.0 / 255
    for name in ("probs", "gap"):
        session = ort_session(proto)
        ref = session.run([name], {"input": x})[0]
        out = ort_session(qdq).run(
            [name], {"input": x}
        )[0]
        assert np.abs(ref - out).max() < 0.05 * max(1.0, np.abs(ref).max()), name


def test_gemm_with_a_full_bias_keeps_it_float_and_exact():
    w = RNG.normal(size=(5, 7)).astype(np.float32)
    c = RNG.normal(size=(4, 5)).astype(np.float32)  # a per-row bias: not a per-channel int32 bias
    node = helper.make_node("Gemm", ["input", "w", "c"], ["y"], transB=1, beta=3.0)
    proto = _single_node_model(
        node,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 7])],
        [4, 5],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c")],
    )
    x = RNG.normal(size=(4, 7)).astype(np.float32)
    qdq, _, _, inserted = _quantize(proto, x)
    assert len(inserted.float_biases) == 1
    ref, out = _run(proto, x), _run(qdq, x)
    assert np.abs(ref - out).max() < 0.03 * np.abs(ref).max()
