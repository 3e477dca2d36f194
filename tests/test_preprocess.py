"""Preprocessing passes: the float function is unchanged, the graph becomes canonical."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from conftest import make_convnet
from onnx import TensorProto, helper

from edgeq.io.onnx_model import to_proto
from edgeq.io.session import session as ort_session
from edgeq.passes.div_to_mul import DivToMulPass
from edgeq.passes.fold_batchnorm import batchnorm_statistics
from edgeq.passes.preprocess import preprocess


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort_session(proto)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_batchnorm_folded_with_statistics_kept():
    proto = make_convnet()
    model = preprocess(ir.serde.deserialize_model(proto))
    ops = [n.op_type for n in model.graph]
    assert "BatchNormalization" not in ops
    stem = next(n for n in model.graph if n.op_type == "Conv" and batchnorm_statistics(n) is not None)
    gamma, beta = batchnorm_statistics(stem)
    bn = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_allclose(gamma, bn["bn.gamma"], rtol=1e-6)
    np.testing.assert_allclose(beta, bn["bn.beta"], rtol=1e-6)
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(to_proto(model), x), _run(proto, x), rtol=1e-5, atol=1e-6)


def test_constant_nodes_dropout_identity_and_symbolic_dims():
    w = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(w)),
        helper.make_node("Identity", ["x"], ["x_id"]),
        helper.make_node("Conv", ["x_id", "w"], ["c"]),
        helper.make_node("Dropout", ["c"], ["d"]),
        helper.make_node("Relu", ["d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", "W"])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    model = preprocess(ir.serde.deserialize_model(proto))
    assert [n.op_type for n in model.graph] == ["Conv", "Relu"]
    assert "w" in model.graph.initializers
    assert all(n.name for n in model.graph)
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(_run(to_proto(model), x), _run(proto, x), rtol=1e-6)


def test_intermediate_shapes_are_inferred():
    model = preprocess(ir.serde.deserialize_model(make_convnet()))
    for node in model.graph:
        for value in node.outputs:
            assert value.dtype is not None, value.name
            assert value.shape is not None, value.name


def test_division_by_a_constant_becomes_a_quantizable_mul():
    nodes = [
        helper.make_node("Div", ["x", "d"], ["s"], name="scale"),
        helper.make_node("Softmax", ["s"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
        initializer=[onnx.numpy_helper.from_array(np.array(4.0, np.float32), "d")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = preprocess(ir.serde.deserialize_model(proto))
    assert [n.op_type for n in model.graph] == ["Mul", "Softmax"]
    x = np.random.default_rng(2).normal(size=(3, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(to_proto(model), x), _run(proto, x), rtol=1e-6)


def test_division_by_a_tensor_or_zero_stays():
    nodes = [helper.make_node("Div", ["x", "z"], ["a"]), helper.make_node("Div", ["a", "x"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[onnx.numpy_helper.from_array(np.array([0.0, 2.0], np.float32), "z")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = preprocess(ir.serde.deserialize_model(proto))
    assert [n.op_type for n in model.graph] == ["Div", "Div"]


def test_one_divisor_shared_by_many_divisions_becomes_one_reciprocal():
    """onnx-simplifier shares one scalar initializer among many nodes (e.g. hard-swish's / 6): every Div becomes a
    Mul by one registered reciprocal, including Divs whose dividend has no annotated type. (The whole of
    preprocessing then folds the chain of Muls into one: passes.fold_affine.)"""
    nodes = [helper.make_node("Div", [src, "six"], [dst]) for src, dst in (("x", "a"), ("a", "b"), ("b", "y"))]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[onnx.numpy_helper.from_array(np.array(6.0, np.float32), "six")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = ir.serde.deserialize_model(proto)
    DivToMulPass()(model)
    ir.passes.common.RemoveUnusedNodesPass()(model)
    result = to_proto(model)
    onnx.checker.check_model(result, full_check=True)
    assert [n.op_type for n in result.graph.node] == ["Mul", "Mul", "Mul"]
    assert [t.name for t in result.graph.initializer] == ["six_reciprocal"]
    x = np.random.default_rng(3).normal(size=(1, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(result, x), _run(proto, x), rtol=1e-6)
